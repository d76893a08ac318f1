"""The training loop end to end on tiny models: run folder, metrics, learning, accumulation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from helpers import make_prepared, random_docs, tiny_run_config
from pretrainlab.config import RunConfig
from pretrainlab.errors import ConfigError, DataError
from pretrainlab.train.callbacks import Callback
from pretrainlab.train.metrics import MetricsWriter, read_metrics
from pretrainlab.train.run_folder import load_run_config
from pretrainlab.train.trainer import Trainer

TRAIN_KEYS = {"step", "tokens", "loss", "lr", "tokens_per_s", "mfu", "grad_norm"}


@pytest.fixture
def learnable(tmp_path: Path) -> Path:
    """Documents that repeat a short byte pattern: next-token loss can fall far below ln(258)."""
    rng = np.random.default_rng(1)
    patterns = [list(rng.integers(97, 123, size=n)) for n in (3, 5, 7)]
    docs = [(patterns[i % 3] * 40)[: int(rng.integers(60, 120))] for i in range(120)]
    return make_prepared(tmp_path / "learnable", train={"text": docs}, val={"text": docs[:6]})


def test_tiny_run_writes_the_run_folder(
    tmp_path: Path, tiny_prepared: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tiny_run_config(tmp_path / "runs", tiny_prepared, train={"steps": 4, "log_every": 2}, eval={"every": 2})
    final = Trainer(cfg).fit()
    run = tmp_path / "runs" / "tiny"
    out = capsys.readouterr().out
    for expected in ("without embeddings)", "FLOPs/token", "256 tokens/step", "1 accumulation step", "fp32 on cpu"):
        assert expected in out
    assert "step 2/4  loss" in out  # no TTY: plain log lines every log_every steps

    assert load_run_config(run) == cfg  # config.yaml round-trips to the same resolved config
    env = json.loads((run / "env.json").read_text())
    assert {"python", "torch", "pretrainlab", "device", "threads", "git_commit", "hostname"} <= env.keys()

    rows = read_metrics(run / "metrics.jsonl")
    train = [r for r in rows if "loss" in r and "event" not in r]
    evals = [r for r in rows if "val_loss" in r and "event" not in r]
    assert [r["step"] for r in train] == [1, 2, 4]  # first step, then every log_every, and the last
    for r in train:
        assert TRAIN_KEYS <= r.keys()
        assert r["tokens"] == r["step"] * 256
    assert [r["step"] for r in evals] == [2, 4]
    assert {"val_bpb", "val_loss/alpha", "val_bpb/beta", "tokens"} <= evals[0].keys()
    end = rows[-1]
    assert end["event"] == "end" and end["tokens"] == 4 * 256 and end["wall_s"] > 0
    assert end["val_loss"] == pytest.approx(final["val_loss"])
    assert (run / "checkpoints" / "step-4").is_dir()


def test_loss_decreases_on_a_learnable_corpus(tmp_path: Path, learnable: Path) -> None:
    cfg = tiny_run_config(
        tmp_path / "runs", learnable, optim={"lr": 1e-2}, train={"steps": 30}, schedule={"warmup_steps": 3}
    )
    Trainer(cfg).fit()
    losses = [r["loss"] for r in read_metrics(tmp_path / "runs" / "tiny" / "metrics.jsonl") if "loss" in r][:-1]
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:3])


def test_grad_accumulation_matches_one_big_micro_batch(tmp_path: Path, tiny_prepared: Path) -> None:
    def losses(micro: int, name: str) -> list[float]:
        cfg = tiny_run_config(
            tmp_path / "runs", tiny_prepared, name=name, train={"steps": 6, "micro_batch_size": micro},
            eval={"max_tokens_per_domain": 1},
        )
        trainer = Trainer(cfg)
        assert trainer.plan.accum_steps == 8 // micro
        trainer.fit()
        return [r["loss"] for r in read_metrics(trainer.run_dir / "metrics.jsonl") if "lr" in r]

    accumulated, single = losses(2, "accum"), losses(8, "single")
    assert len(single) == 6
    assert accumulated == pytest.approx(single, abs=1e-5)


def test_packed_mode_weights_tokens_by_target_count(tmp_path: Path, tiny_prepared: Path) -> None:
    cfg = tiny_run_config(
        tmp_path / "runs", tiny_prepared, data={"path": str(tiny_prepared), "seq_len": 32, "mode": "packed"},
        train={"steps": 2, "micro_batch_size": 2},
    )
    final = Trainer(cfg).fit()
    assert np.isfinite(final["loss"])


def test_existing_run_folder_needs_overwrite_or_resume(tmp_path: Path, tiny_prepared: Path) -> None:
    cfg = tiny_run_config(tmp_path / "runs", tiny_prepared, train={"steps": 1}, schedule={"warmup_steps": 0})
    Trainer(cfg).fit()
    (tmp_path / "runs" / "tiny" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="already holds a run") as e:
        Trainer(cfg)
    assert "overwrite=true" in str(e.value)
    Trainer(cfg.model_copy(update={"overwrite": True})).fit()
    rows = read_metrics(tmp_path / "runs" / "tiny" / "metrics.jsonl")
    assert [r.get("event") for r in rows].count("end") == 1  # the old run's lines are gone
    assert (tmp_path / "runs" / "tiny" / "notes.txt").read_text() == "mine"  # never anything else


class StopAt(Callback):
    def __init__(self, step: int, checkpoint: bool) -> None:
        self.step, self.checkpoint = step, checkpoint

    def on_step_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        if trainer.step == self.step:
            trainer.request_stop("test", checkpoint=self.checkpoint)


def test_resume_truncates_metrics_and_continues_exactly(tmp_path: Path, tiny_prepared: Path) -> None:
    full = tiny_run_config(tmp_path / "a", tiny_prepared, train={"steps": 6, "deterministic": True})
    Trainer(full).fit()
    reference = [r for r in read_metrics(tmp_path / "a" / "tiny" / "metrics.jsonl") if "lr" in r]

    half = tiny_run_config(
        tmp_path / "b", tiny_prepared, train={"steps": 6, "deterministic": True, "checkpoint_every": 3}
    )
    trainer = Trainer(half)
    trainer.callbacks.append(StopAt(4, checkpoint=False))  # dies after step 4; the newest checkpoint is step 3
    trainer.fit()
    metrics = tmp_path / "b" / "tiny" / "metrics.jsonl"
    assert [r["step"] for r in read_metrics(metrics)] == [1, 2, 3, 4]
    with open(metrics, "a") as f:  # a torn line, as a killed run may leave
        f.write('{"step": 5, "lo')
    resumed_trainer = Trainer(half, resume=True)
    assert resumed_trainer.step == 3
    resumed_trainer.fit()
    resumed = [r for r in read_metrics(metrics) if "lr" in r]
    assert [r["step"] for r in resumed] == list(range(1, 7))
    assert [r["loss"] for r in resumed] == [r["loss"] for r in reference]  # bitwise on CPU, deterministic
    assert [r["grad_norm"] for r in resumed] == [r["grad_norm"] for r in reference]


def test_metrics_writer_truncation(tmp_path: Path) -> None:
    w = MetricsWriter(tmp_path / "m.jsonl")
    for s in (1, 2, 3):
        w.write({"step": s, "loss": float(s)})
    w.write({"step": 3, "val_loss": 1.0})
    w.write({"event": "end", "step": 3})
    w.write({"step": 4, "loss": float("nan")})
    w.close()
    assert read_metrics(tmp_path / "m.jsonl")[-1]["loss"] is None  # strict JSON: NaN written as null
    w.truncate_after(2)
    assert [r["step"] for r in read_metrics(tmp_path / "m.jsonl")] == [1, 2]


def test_shipped_tiny_config_trains(tmp_path: Path, tiny_prepared: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    tree = yaml.safe_load((root / "configs" / "tiny_test.yaml").read_text())
    tree["data"]["path"] = str(tiny_prepared)
    tree["out_dir"] = str(tmp_path / "runs")
    tree["train"].update(steps=2, threads=1, progress=False)
    tree["schedule"]["warmup_steps"] = 1
    final = Trainer(RunConfig.model_validate(tree)).fit()
    assert final["step"] == 2


def test_resume_on_changed_data_needs_allow_fingerprint_change(tmp_path: Path, tiny_prepared: Path) -> None:
    cfg = tiny_run_config(tmp_path / "runs", tiny_prepared, train={"steps": 4})
    trainer = Trainer(cfg)
    trainer.callbacks.append(StopAt(2, checkpoint=True))
    trainer.fit()
    rng = np.random.default_rng(7)
    other = make_prepared(tmp_path / "other", train={"alpha": random_docs(rng, 50), "beta": random_docs(rng, 50)})
    moved = cfg.model_copy(update={"data": cfg.data.model_copy(update={"path": str(other)})})
    with pytest.raises(DataError, match="data.allow_fingerprint_change=true"):
        Trainer(moved, resume=True)
    allowed = moved.model_copy(update={"data": moved.data.model_copy(update={"allow_fingerprint_change": True})})
    assert Trainer(allowed, resume=True).fit()["step"] == 4


def test_precision_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    from pretrainlab.train import precision

    cpu = torch.device("cpu")
    assert precision.autocast_dtype("fp32", cpu) is None
    assert precision.autocast_dtype("bf16", cpu) is torch.bfloat16
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert precision.autocast_dtype("auto", cpu) is torch.bfloat16
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert precision.autocast_dtype("auto", cpu) is None
    with pytest.raises(ConfigError, match="train.precision"):
        precision.autocast_dtype("fp8", cpu)


def test_per_domain_training_loss_is_logged_by_domain_name(tmp_path: Path, tiny_prepared: Path) -> None:
    cfg = tiny_run_config(tmp_path / "runs", tiny_prepared, train={"steps": 2, "log_every": 1})
    cfg = cfg.model_copy(update={"objective_options": {"per_domain": True}})
    Trainer(cfg).fit()
    rows = [r for r in read_metrics(tmp_path / "runs" / "tiny" / "metrics.jsonl") if "lr" in r]
    for r in rows:
        per_domain = {k: v for k, v in r.items() if k.startswith("loss/")}
        assert per_domain and set(per_domain) <= {"loss/alpha", "loss/beta"}
        assert not any(k.startswith(("loss_sum/", "tokens/")) for k in r)
        assert min(per_domain.values()) <= r["loss"] <= max(per_domain.values())
