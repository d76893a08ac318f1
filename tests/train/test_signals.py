"""Graceful SIGTERM/SIGINT: finish the step, write a checkpoint, exit 128 + signal (143 for SIGTERM)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from helpers import tiny_run_config
from pretrainlab.train.callbacks import CALLBACKS, Callback, register_callback
from pretrainlab.train.checkpoint import list_checkpoints, load_checkpoint
from pretrainlab.train.metrics import read_metrics
from pretrainlab.train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[2]


class SelfSignal(Callback):
    """Sends this process `signum` at the start of step `at` (1-based), mid-training."""

    def __init__(self, at: int, signum: int = int(signal.SIGTERM)) -> None:
        self.at = at
        self.signum = signum

    def on_step_start(self, trainer: Trainer) -> None:
        if trainer.step + 1 == self.at:
            os.kill(os.getpid(), self.signum)


if "test_self_signal" not in CALLBACKS:
    register_callback("test_self_signal")(SelfSignal)


def test_sigterm_finishes_the_step_and_checkpoints(tmp_path: Path, tiny_prepared: Path) -> None:
    before = signal.getsignal(signal.SIGTERM)
    cfg = tiny_run_config(
        tmp_path, tiny_prepared, train={"steps": 20}, callbacks=[{"name": "test_self_signal", "options": {"at": 4}}]
    )
    trainer = Trainer(cfg)
    trainer.fit()
    assert trainer.exit_code == 143
    assert trainer.step == 4  # the step in progress when the signal came was completed
    assert [p.name for p in list_checkpoints(trainer.run_dir)] == ["step-4"]
    assert signal.getsignal(signal.SIGTERM) == before  # handlers restored
    rows = read_metrics(trainer.run_dir / "metrics.jsonl")
    assert rows[-1]["step"] == 4 and not any(r.get("event") == "end" for r in rows)


def test_sigint_exits_130(tmp_path: Path, tiny_prepared: Path) -> None:
    cfg = tiny_run_config(
        tmp_path, tiny_prepared, train={"steps": 20},
        callbacks=[{"name": "test_self_signal", "options": {"at": 2, "signum": int(signal.SIGINT)}}],
    )
    trainer = Trainer(cfg)
    trainer.fit()
    assert (trainer.exit_code, trainer.step) == (130, 2)


def test_sigterm_to_a_cli_run_writes_a_checkpoint_and_exits_143(tmp_path: Path, tiny_prepared: Path) -> None:
    cfg: dict[str, Any] = tiny_run_config(tmp_path / "runs", tiny_prepared, train={"steps": 100000}).model_dump(
        mode="json"
    )
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pretrainlab", "train", str(path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    metrics = tmp_path / "runs" / "tiny" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.is_file() and len(read_metrics(metrics)) >= 2):
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "the run did not start training within 120 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, out
    (ckpt,) = list_checkpoints(tmp_path / "runs" / "tiny")
    _, state = load_checkpoint(ckpt)
    assert ckpt.name == f"step-{state['trainer']['step']}"
    assert str(ckpt) in out and "--resume" in out
