"""The stability callback: NaN/Inf and loss-spike detection with the skip and abort policies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from helpers import tiny_run_config
from pretrainlab.cli import main
from pretrainlab.data.batch import Batch
from pretrainlab.objectives import OBJECTIVES, build_objective
from pretrainlab.train.callbacks import Callback, StepInfo
from pretrainlab.train.metrics import read_metrics
from pretrainlab.train.stability import StabilityCallback, TrainingAborted
from pretrainlab.train.trainer import Trainer


class Poisoned:
    """next_token, but the loss of every micro-batch of optimiser step `poison_step` (1-based) is NaN."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.poison_step = int(options.pop("poison_step"))
        self.accum = int(options.pop("accum", 1))
        self.inner = build_objective("next_token", options)
        self.calls = 0

    def __call__(self, model: torch.nn.Module, batch: Batch) -> Any:
        out = self.inner(model, batch)
        self.calls += 1
        if (self.calls - 1) // self.accum + 1 == self.poison_step:
            out.loss_sum = out.loss_sum * float("nan")
        return out


if "test_poisoned" not in OBJECTIVES:
    OBJECTIVES.register("test_poisoned")(Poisoned)


class Snapshots(Callback):
    """Copies of the parameters and optimiser state after each step."""

    def __init__(self) -> None:
        self.params: list[dict[str, torch.Tensor]] = []
        self.optim: list[list[dict[str, torch.Tensor]]] = []

    def on_step_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        self.params.append({n: p.detach().clone() for n, p in trainer.module.named_parameters()})
        self.optim.append(
            [{k: v.clone() for k, v in s.items()} for s in trainer.optimizer.state.values()]
        )


def poisoned_config(tmp_path: Path, data: Path, step: int, **stability: Any) -> Any:
    return tiny_run_config(
        tmp_path, data, objective="test_poisoned", objective_options={"poison_step": step, "accum": 2},
        train={"steps": 5, "micro_batch_size": 4}, callbacks=[{"name": "stability", "options": stability}],
    )


def test_skip_leaves_parameters_and_optimizer_state_bitwise_untouched(tmp_path: Path, tiny_prepared: Path) -> None:
    trainer = Trainer(poisoned_config(tmp_path, tiny_prepared, 3))
    snaps = Snapshots()
    trainer.callbacks.append(snaps)
    final = trainer.fit()

    for name, before in snaps.params[1].items():  # after step 2 == after the poisoned step 3
        assert torch.equal(before, snaps.params[2][name]), name
    for before, after in zip(snaps.optim[1], snaps.optim[2]):
        assert before.keys() == after.keys()
        assert all(torch.equal(before[k], after[k]) for k in before)  # exp_avg, exp_avg_sq and step
    assert not all(torch.equal(snaps.params[2][n], snaps.params[3][n]) for n in snaps.params[2])  # step 4 trains
    assert all(torch.isfinite(p).all() for p in trainer.module.parameters())

    lines = [r for r in read_metrics(trainer.run_dir / "metrics.jsonl") if "lr" in r]
    assert [r.get("skipped", False) for r in lines] == [False, False, True, False, False]
    assert lines[2]["loss"] is None  # NaN is written as null
    assert [r["skipped_steps"] for r in lines] == [0, 0, 1, 1, 1]
    assert final["skipped_steps"] == 1


def test_abort_raises_exit_code_3_naming_the_step(tmp_path: Path, tiny_prepared: Path) -> None:
    with pytest.raises(TrainingAborted, match=r"step 2: the loss is nan") as e:
        Trainer(poisoned_config(tmp_path, tiny_prepared, 2, policy="abort")).fit()
    assert e.value.exit_code == 3


def test_too_many_skips_abort(tmp_path: Path, tiny_prepared: Path) -> None:
    with pytest.raises(TrainingAborted, match=r"step 4: .*max_skips=0"):
        Trainer(poisoned_config(tmp_path, tiny_prepared, 4, max_skips=0)).fit()


def test_cli_exits_3_on_abort(tmp_path: Path, tiny_prepared: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = poisoned_config(tmp_path, tiny_prepared, 2, policy="abort")
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    assert main(["train", str(path)]) == 3
    assert "step 2" in capsys.readouterr().err


def info(step: int, loss: float, grad_norm: float = 1.0) -> StepInfo:
    return StepInfo(step=step, loss=loss, grad_norm=grad_norm, lr=1e-3, tokens=0)


def test_spike_detection_after_warmup_and_state_round_trip() -> None:
    cb = StabilityCallback(spike_factor=2.0, warmup_steps=3, max_skips=5)
    assert cb.on_before_optimizer_step(None, info(0, 10.0))  # type: ignore[arg-type]
    assert cb.on_before_optimizer_step(None, info(1, 25.0))  # type: ignore[arg-type]  # still warming up
    assert cb.on_before_optimizer_step(None, info(2, 9.0))  # type: ignore[arg-type]
    mean = cb.mean
    assert mean is not None
    assert not cb.on_before_optimizer_step(None, info(3, 2.5 * mean))  # type: ignore[arg-type]
    assert cb.mean == mean  # a skipped loss does not move the running mean
    assert not cb.on_before_optimizer_step(None, info(4, 1.0, grad_norm=float("inf")))  # type: ignore[arg-type]
    assert cb.skips == 2
    clone = StabilityCallback()
    clone.load_state_dict(cb.state_dict())
    assert clone.state_dict() == cb.state_dict()
