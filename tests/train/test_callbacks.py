"""The callback interface: registry, defaults, hook order, metrics keys, skipping, stopping, state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from helpers import tiny_run_config
from pretrainlab.config import CallbackConfig
from pretrainlab.errors import ConfigError
from pretrainlab.train.callbacks import CALLBACKS, Callback, StepInfo, build_callbacks, register_callback
from pretrainlab.train.checkpoint import list_checkpoints, load_checkpoint
from pretrainlab.train.metrics import read_metrics
from pretrainlab.train.trainer import Trainer


class Recorder(Callback):
    """Logs every hook call; adds a key to metrics; keeps a counter as checkpointed state."""

    def __init__(self, skip_step: int | None = None, stop_step: int | None = None) -> None:
        self.calls: list[str] = []
        self.skip_step = skip_step
        self.stop_step = stop_step
        self.counter = 0

    def on_train_start(self, trainer: Trainer) -> None:
        self.calls.append("train_start")

    def on_step_start(self, trainer: Trainer) -> None:
        self.calls.append(f"step_start:{trainer.step}")

    def on_before_optimizer_step(self, trainer: Trainer, info: StepInfo) -> bool:
        self.calls.append(f"before_opt:{info.step}")
        return info.step + 1 != self.skip_step

    def on_step_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        self.counter += 1
        metrics["recorder_counter"] = self.counter
        if trainer.step == self.stop_step:
            trainer.request_stop("recorder asked", checkpoint=True)

    def on_eval(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        self.calls.append(f"eval:{metrics['step']}")

    def on_checkpoint_save(self, trainer: Trainer) -> None:
        self.calls.append(f"checkpoint:{trainer.step}")

    def on_train_end(self, trainer: Trainer) -> None:
        self.calls.append("train_end")

    def state_dict(self) -> dict[str, Any]:
        return {"counter": self.counter}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.counter = state["counter"]


if "recorder" not in CALLBACKS:
    register_callback("recorder")(Recorder)


def recorder_of(trainer: Trainer) -> Recorder:
    return next(cb for cb in trainer.callbacks if isinstance(cb, Recorder))


def test_defaults_are_added_and_can_be_disabled() -> None:
    assert [cb.name for cb in build_callbacks([])] == ["stability", "sigterm"]
    cbs = build_callbacks([CallbackConfig(name="recorder"), CallbackConfig(name="sigterm", options={"enabled": False})])
    assert [cb.name for cb in cbs] == ["recorder", "stability"]


def test_unknown_or_duplicate_callback_and_bad_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"callbacks\.0\.name.*'stability'"):
        build_callbacks([CallbackConfig(name="stabilty")])
    with pytest.raises(ConfigError, match=r"callbacks\.1\.name.*listed twice"):
        build_callbacks([CallbackConfig(name="recorder"), CallbackConfig(name="recorder")])
    with pytest.raises(ConfigError, match=r"callbacks\.0\.options.*spike_factr"):
        build_callbacks([CallbackConfig(name="stability", options={"spike_factr": 2})])
    with pytest.raises(ConfigError, match=r"callbacks\.0\.options.*policy"):
        build_callbacks([CallbackConfig(name="stability", options={"policy": "ignore"})])


def test_hooks_run_in_order_and_add_metrics(tmp_path: Path, tiny_prepared: Path) -> None:
    cfg = tiny_run_config(
        tmp_path, tiny_prepared, train={"steps": 2, "checkpoint_every": 1}, eval={"every": 1},
        callbacks=[{"name": "recorder"}],
    )
    trainer = Trainer(cfg)
    trainer.fit()
    assert recorder_of(trainer).calls == [
        "train_start",
        "step_start:0", "before_opt:0", "eval:1", "checkpoint:1",
        "step_start:1", "before_opt:1", "eval:2", "checkpoint:2",
        "train_end",
    ]
    lines = [r for r in read_metrics(trainer.run_dir / "metrics.jsonl") if "lr" in r]
    assert [r["recorder_counter"] for r in lines] == [1, 2]


def test_a_vetoed_step_leaves_parameters_and_optimizer_untouched(tmp_path: Path, tiny_prepared: Path) -> None:
    cfg = tiny_run_config(
        tmp_path, tiny_prepared, train={"steps": 3}, callbacks=[{"name": "recorder", "options": {"skip_step": 3}}]
    )
    trainer = Trainer(cfg)
    snapshots: list[dict[str, torch.Tensor]] = []

    class Snap(Callback):
        def on_step_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
            snapshots.append({n: p.detach().clone() for n, p in trainer.module.named_parameters()})

    trainer.callbacks.append(Snap())
    trainer.fit()
    assert all(torch.equal(snapshots[1][n], snapshots[2][n]) for n in snapshots[1])
    assert not all(torch.equal(snapshots[0][n], snapshots[1][n]) for n in snapshots[0])
    steps = {int(s["step"]) for s in trainer.optimizer.state.values()}
    assert steps == {2}  # Adam's step count did not advance on the vetoed step
    last = [r for r in read_metrics(trainer.run_dir / "metrics.jsonl") if "lr" in r][-1]
    assert last["skipped"] is True


def test_request_stop_checkpoints_and_state_is_saved_by_name(tmp_path: Path, tiny_prepared: Path) -> None:
    cfg = tiny_run_config(
        tmp_path, tiny_prepared, train={"steps": 8}, callbacks=[{"name": "recorder", "options": {"stop_step": 3}}]
    )
    trainer = Trainer(cfg)
    trainer.fit()
    assert trainer.step == 3 and trainer.exit_code == 0
    (ckpt,) = list_checkpoints(trainer.run_dir)
    assert ckpt.name == "step-3"
    _, state = load_checkpoint(ckpt)
    assert state["callbacks"]["recorder"] == {"counter": 3}
    assert state["trainer"]["step"] == 3
    assert not any(r.get("event") == "end" for r in read_metrics(trainer.run_dir / "metrics.jsonl"))

    no_stop = cfg.model_copy(update={"callbacks": [cfg.callbacks[0].model_copy(update={"options": {}})]})
    resumed = Trainer(no_stop, resume=True)
    assert recorder_of(resumed).counter == 3 and resumed.step == 3
    resumed.fit()
    assert recorder_of(resumed).counter == 8
