"""The Ray executor runs a sweep's points as Ray tasks (a local 2-CPU Ray instance); skipped without ray."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers import tiny_run_config  # noqa: E402

from pretrainlab.science.executors import RayExecutor  # noqa: E402
from pretrainlab.science.sweep import run_sweep  # noqa: E402


@pytest.fixture
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def test_ray_executor_runs_a_two_point_sweep(tmp_path: Path, tiny_prepared: Path, local_ray: None) -> None:
    base = tiny_run_config(tmp_path / "unused", tiny_prepared, train={"steps": 3}).model_dump(mode="json")
    spec: dict[str, Any] = {"name": "ray", "out_dir": str(tmp_path / "sweeps"), "base": base, "executor": "ray",
                            "axes": [{"grid": {"optim.lr": [1e-3, 3e-3]}}]}
    rows = run_sweep(spec, quiet=True)
    assert [(r["name"], r["status"], r["step"]) for r in rows] == [("lr-0.001_s0", "done", 3), ("lr-0.003_s0", "done", 3)]
    folder = tmp_path / "sweeps" / "ray"
    for r in rows:
        log = (folder / "logs" / f"{r['name']}.log").read_text()
        assert "train.threads=1" in log and "done: 3 steps" in log  # the point's own train.threads is kept
    # threads for points that leave train.threads unset: a fair share of the 2 CPUs
    assert RayExecutor().cluster_threads(1) == 2 and RayExecutor().cluster_threads(2) == 1
