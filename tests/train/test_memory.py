"""`pretrainlab memory`: closed-form counts, the activation formula against what autograd really keeps,
a 1B config sized without allocating, the end line's measured peak and estimate, clear errors."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from pretrainlab.cli import main
from pretrainlab.config import RunConfig
from pretrainlab.model import build_model, resolve_model_config
from pretrainlab.train.memory import (
    current_rss_bytes,
    estimate_columns,
    estimate_memory,
)
from tests.helpers import make_prepared, random_docs, tiny_run_config, train_run

pytestmark = pytest.mark.usefixtures("one_thread")

LINEARS = {
    "dense": {},
    "low_rank": {"rank": 8},
    "sparse_low_rank": {"rank": 8, "density": 0.05},
    "masked": {"sparsity": 0.5},
}


def _run_cfg(**model: Any) -> RunConfig:
    tree = {"data": {"path": "/nonexistent/prepared", "seq_len": 32},
            "model": {"n_layers": 2, "d_model": 64, "n_heads": 4, "n_kv_heads": 2, "vocab_size": 300, **model},
            "train": {"micro_batch_size": 4, "global_batch_tokens": 4 * 32, "precision": "fp32"},
            "eval": {"batch_size": 2}}
    return RunConfig.model_validate(tree)


def _estimate(cfg: RunConfig, dtype: torch.dtype | None = None) -> Any:
    model_cfg = resolve_model_config(cfg.model, vocab_size=300, seq_len=cfg.data.seq_len)
    return model_cfg, estimate_memory(cfg, model_cfg, micro_batch_size=cfg.train.micro_batch_size,
                                      global_rows=cfg.train.global_batch_tokens // cfg.data.seq_len,
                                      compute_dtype=dtype)


def test_dense_adamw_closed_form() -> None:
    cfg = _run_cfg()
    model_cfg, est = _estimate(cfg)
    model = build_model(model_cfg)
    n = sum(p.numel() for p in model.parameters())
    assert est.params == n and est.trainable == n
    assert est.param_bytes == 4 * n and est.grad_bytes == 4 * n
    n_tensors = len(list(model.parameters()))
    assert est.optim_detail["moments"] == 2 * n * 4  # AdamW: exp_avg and exp_avg_sq, fp32
    assert est.optim_bytes == 2 * n * 4 + 4 * n_tensors  # plus one fp32 step counter per tensor
    assert est.buffer_bytes == model.rope.numel() * 4
    assert est.weight_copy_bytes == 0  # fp32: no autocast copies
    assert est.head_kind == "full"  # vocabulary 300 < 1024: plain logits
    from pretrainlab.model import flops_per_token

    assert est.flops_per_token == flops_per_token(model_cfg, 32)


def _saved_bytes(model: torch.nn.Module, tokens: torch.Tensor, dtype: torch.dtype | None) -> int:
    """Bytes of the unique storages autograd keeps for backward in model(tokens), the model's own
    parameters and buffers excluded: the ground truth the activation formula must match."""
    own = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        if s.data_ptr() not in own:
            seen[s.data_ptr()] = s.nbytes()
        return t

    ctx = contextlib.nullcontext() if dtype is None else torch.autocast("cpu", dtype=dtype)
    with ctx, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(tokens)
    return sum(seen.values())


@pytest.mark.parametrize("linear", list(LINEARS))
@pytest.mark.parametrize("dtype", [None, torch.bfloat16], ids=["fp32", "bf16"])
def test_activation_estimate_equals_saved_tensors(linear: str, dtype: torch.dtype | None) -> None:
    cfg = _run_cfg(linear=linear, linear_options=LINEARS[linear])
    model_cfg, est = _estimate(cfg, dtype)
    torch.manual_seed(0)
    model = build_model(model_cfg).train()
    tokens = torch.randint(0, 300, (cfg.train.micro_batch_size, cfg.data.seq_len))
    measured = _saved_bytes(model, tokens, dtype)
    estimated = est.activation_bytes + est.weight_copy_bytes
    assert estimated == pytest.approx(measured, rel=0.005), (linear, dtype, estimated, measured)


@pytest.mark.parametrize("variant", [{"bias": True}, {"qk_norm": True}, {"norm": "layernorm", "mlp": "gelu"},
                                     {"linear": "low_rank", "linear_options": {"rank": 8}, "bias": True}],
                         ids=["bias", "qk_norm", "layernorm-gelu", "low_rank-bias"])
@pytest.mark.parametrize("dtype", [None, torch.bfloat16], ids=["fp32", "bf16"])
def test_activation_estimate_of_model_variants(variant: dict[str, Any], dtype: torch.dtype | None) -> None:
    cfg = _run_cfg(**variant)
    model_cfg, est = _estimate(cfg, dtype)
    model = build_model(model_cfg).train()
    tokens = torch.randint(0, 300, (cfg.train.micro_batch_size, cfg.data.seq_len))
    measured = _saved_bytes(model, tokens, dtype)
    assert est.activation_bytes + est.weight_copy_bytes == pytest.approx(measured, rel=0.005), variant


def test_1b_config_sizes_in_seconds_without_allocating() -> None:
    small = _run_cfg()
    estimate_columns(small, [])  # imports and first-call caches outside the measurement
    cfg = RunConfig.model_validate({
        "data": {"path": "/nonexistent/prepared", "seq_len": 2048},
        "model": {"preset": "1b", "vocab_size": 32000},
        "optim": {"name": "adamw"},
        "train": {"micro_batch_size": 4, "global_batch_tokens": 4 * 2048, "precision": "bf16"},
    })
    rss0 = current_rss_bytes()
    t0 = time.perf_counter()
    columns, notes = estimate_columns(cfg, [])
    elapsed = time.perf_counter() - t0
    growth = current_rss_bytes() - rss0
    assert elapsed < 10.0
    assert growth < 200 << 20, f"RSS grew by {growth >> 20} MiB (the fp32 weights alone are 3.9 GiB)"
    recipe, dense = columns
    assert 1.0e9 < recipe.params < 1.1e9  # TinyLlama shape: 22 x 2048, GQA 4 KV heads, 5632 hidden
    assert recipe.optim_detail["moments"] == 8 * recipe.trainable
    assert any("model.vocab_size=32000" in n for n in notes)


def test_recipes_change_params_and_state_and_masked_saves_nothing() -> None:
    dense = _estimate(_run_cfg())[1]
    low = _estimate(_run_cfg(linear="low_rank", linear_options={"rank": 8}))[1]
    masked = _estimate(_run_cfg(linear="masked", linear_options={"sparsity": 0.5}))[1]
    assert low.params < dense.params and low.optim_bytes < dense.optim_bytes
    assert low.flops_per_token < dense.flops_per_token
    assert masked.params == dense.params and masked.optim_bytes == dense.optim_bytes
    assert masked.matmul_params < dense.matmul_params  # theoretical FLOPs count the live weights only
    assert any("save no time on CPU" in n for n in masked.notes)
    galore = RunConfig.model_validate({**_run_cfg().model_dump(), "optim": {"name": "galore",
                                                                           "options": {"rank": 4, "min_dim": 16}}})
    g = _estimate(galore)[1]
    assert g.params == dense.params and g.optim_bytes < dense.optim_bytes


def _write_cfg(tmp_path: Path, tree: dict[str, Any]) -> str:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(tree))
    return str(path)


def test_command_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write_cfg(tmp_path, {"data": {"path": str(tmp_path / "none"), "seq_len": 32},
                                 "model": {"n_layers": 2, "d_model": 64, "n_heads": 4},
                                 "train": {"micro_batch_size": 4, "global_batch_tokens": 128}})
    assert main(["memory", path, "model.vocab_size=300", "model.linear=low_rank", "model.linear_options.rank=8",
                 "--optim", "galore"]) == 0
    out = capsys.readouterr().out
    for text in ("optimiser state", "activations", "total (peak estimate)", "dense + adamw", "low_rank + galore",
                 "FLOPs per token", "vocabulary from model.vocab_size=300"):
        assert text in out, text
    assert main(["memory", path, "model.vocab_size=300", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    recipe, dense = data["columns"]
    assert recipe["params"] == dense["params"] and recipe["grad_bytes"] == 4 * recipe["trainable"]


def test_command_errors_name_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write_cfg(tmp_path, {"data": {"path": str(tmp_path / "none")}})
    assert main(["memory", path]) == 2
    err = capsys.readouterr().err
    assert "data.path" in err and "model.vocab_size" in err
    assert main(["memory", path, "model.vocab_size=300", "model.linear=lowrank"]) == 2
    assert "model.linear" in capsys.readouterr().err
    assert main(["memory", path, "model.vocab_size=300", "--optim", "adamx"]) == 2
    assert "optim.name" in capsys.readouterr().err
    assert main(["memory", str(tmp_path / "missing.yaml")]) == 2


def test_command_reads_vocab_from_prepared_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = make_prepared(tmp_path / "data", {"web": random_docs(np.random.default_rng(0), 5)})
    path = _write_cfg(tmp_path, {"data": {"path": str(data), "seq_len": 32},
                                 "model": {"n_layers": 1, "d_model": 32, "n_heads": 2},
                                 "train": {"micro_batch_size": 2, "global_batch_tokens": 64}})
    assert main(["memory", path, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["columns"][0]["params"] > 258 * 32  # byte vocabulary embedding


def test_end_line_has_peak_and_estimate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    data = make_prepared(tmp_path / "data", {"web": random_docs(rng, 40)}, {"web": random_docs(rng, 5)})
    run = train_run(tiny_run_config(tmp_path / "runs", data, train={"steps": 2}))
    assert "memory       estimate" in capsys.readouterr().out
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    end = [r for r in lines if r.get("event") == "end"][-1]
    assert end["peak_memory_mb"] > 50  # the interpreter and torch alone
    assert end["memory_estimate_mb"] > end["memory_baseline_mb"] > 50


def test_the_cuda_peak_is_reset_when_a_trainer_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CUDA's allocator peak is reset at trainer start (the end line's peak is the run's own); the CPU's
    ru_maxrss is the process's lifetime peak and cannot be: nothing is called there."""
    import pretrainlab.train.memory as memory
    from pretrainlab.train.trainer import Trainer

    calls: list[str] = []
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: calls.append(str(device)))
    memory.reset_peak_memory(torch.device("cpu"))
    assert calls == []
    memory.reset_peak_memory(torch.device("cuda", 0))
    assert calls == ["cuda:0"]
    seen: list[torch.device] = []
    monkeypatch.setattr(memory, "reset_peak_memory", lambda device: seen.append(device))
    rng = np.random.default_rng(0)
    data = make_prepared(tmp_path / "data", {"web": random_docs(rng, 10)})
    trainer = Trainer(tiny_run_config(tmp_path / "runs", data, train={"steps": 2}))
    assert seen == [trainer.device]


def test_report_says_masked_matmuls_save_no_time(tmp_path: Path) -> None:
    from pretrainlab.science.report_doc import Para
    from pretrainlab.science.report_run import MASKED_FLOPS_NOTE, RunData, run_section

    class _Target:
        def file(self, name: str) -> Path:
            return tmp_path / f"{name}.png"

        def block(self, written: Any, caption: str) -> Any:
            return Para(caption)

    run = RunData(tmp_path, {"model": {"linear": "masked"}}, {}, [], [], None)
    blocks = run_section(run, _Target())  # type: ignore[arg-type]
    assert any(isinstance(b, Para) and b.text == MASKED_FLOPS_NOTE for b in blocks)
    assert "save no time on CPU" in MASKED_FLOPS_NOTE
    dense = RunData(tmp_path, {"model": {"linear": "dense"}}, {}, [], [], None)
    plain = run_section(dense, _Target())  # type: ignore[arg-type]
    assert not any(isinstance(b, Para) and b.text == MASKED_FLOPS_NOTE for b in plain)
