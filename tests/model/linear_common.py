"""Shared by the linear-parameterisation tests: closed-form shapes and a run killed after its step-3
checkpoint and resumed."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from helpers import make_prepared, markov_docs, tiny_run_config, train_run  # noqa: E402

from pretrainlab.config import ModelConfig  # noqa: E402
from pretrainlab.train.checkpoint import list_checkpoints  # noqa: E402


def projections(cfg: ModelConfig) -> list[tuple[int, int]]:
    """(in, out) of every attention and MLP projection of a resolved config (fused qkv and gate_up)."""
    assert cfg.d_model and cfg.n_heads and cfg.n_kv_heads and cfg.mlp_hidden and cfg.n_layers
    d, hd, h = cfg.d_model, cfg.d_model // cfg.n_heads, cfg.mlp_hidden
    block = [(d, (cfg.n_heads + 2 * cfg.n_kv_heads) * hd), (cfg.n_heads * hd, d), (d, 2 * h), (h, d)]
    return block * cfg.n_layers


def norm_params(cfg: ModelConfig) -> int:
    """RMSNorm gains: two per block and the final norm."""
    assert cfg.d_model and cfg.n_layers
    return (2 * cfg.n_layers + 1) * cfg.d_model


def markov_prepared(path: Path) -> Path:
    """A learnable corpus (sparse Markov chain over 32 bytes): losses fall within a few dozen tiny steps."""
    rng = np.random.default_rng(0)
    return make_prepared(path, train={"m": markov_docs(rng, 60)}, val={"m": markov_docs(rng, 6)})


def train_lines(run_dir: Path) -> list[dict[str, Any]]:
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [x for x in lines if "loss" in x and "event" not in x]


def killed_and_resumed(out_dir: Path, data: Path, model: dict[str, Any], keys: tuple[str, ...] = ("loss",),
                       **sections: Any) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Train 6 steps (checkpoints at 3 and 6) and record (step, *keys) per step; then drop the step-6
    checkpoint, as if the run had been killed after step 5, resume it and record again."""
    from pretrainlab.train.trainer import Trainer

    train = {"steps": 6, "checkpoint_every": 3, "keep_checkpoints": 3, **sections.pop("train", {})}
    cfg = tiny_run_config(out_dir, data, model=model, train=train, **sections)
    run = train_run(cfg)
    full = [(x["step"], *(x.get(k) for k in keys)) for x in train_lines(run)]
    ckpts = list_checkpoints(run)
    assert [p.name for p in ckpts] == ["step-3", "step-6"]
    shutil.rmtree(ckpts[-1])
    Trainer(cfg, resume=True).fit()
    resumed = [(x["step"], *(x.get(k) for k in keys)) for x in train_lines(run)]
    return full, resumed
