"""Shared fixtures: tiny corpora and prepared folders made in milliseconds."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from helpers import make_prepared, random_docs  # noqa: E402


@pytest.fixture
def tiny_prepared(tmp_path: Path) -> Path:
    """Two domains of random byte documents with a validation split (byte tokenizer, vocab 258)."""
    rng = np.random.default_rng(0)
    return make_prepared(
        tmp_path / "prepared",
        train={"alpha": random_docs(rng, 200), "beta": random_docs(rng, 100, 50, 400)},
        val={"alpha": random_docs(rng, 20), "beta": random_docs(rng, 10, 50, 400)},
    )


@pytest.fixture(scope="module")
def one_thread():
    """Tiny matmuls: one thread is fastest, and the test machine is shared. Use it with
    `pytestmark = pytest.mark.usefixtures("one_thread")` in a module of tiny models."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class InProcessExecutor:
    """Runs a sweep's points one by one in this process (no interpreter start per run: the test stays fast)."""

    name = "local"
    jobs = 1

    def prepare(self) -> None:
        return None

    def check(self, tasks: Any) -> None:
        return None

    def request_stop(self, signum: int) -> None:
        return None

    def run(self, tasks: Any, on_start: Any, on_end: Any, on_stop: Any = None) -> None:
        from pretrainlab.train.entry import train_from_cli

        for task in tasks:
            on_start(task, 1, None)
            on_end(task, train_from_cli(str(task.config_path), ["train.threads=1"], resume=task.resume))


@pytest.fixture
def in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """run_arms' sweeps run their points in this process."""
    from pretrainlab.science import sweep

    original = sweep.run_sweep

    def run_sweep(spec: Any, **kwargs: Any) -> Any:
        return original(spec, **{**kwargs, "executor": InProcessExecutor(), "jobs": None})

    monkeypatch.setattr(sweep, "run_sweep", run_sweep)
