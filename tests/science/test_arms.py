"""run_arms: arms x seeds as one sweep, results per arm in seed order, a second call retrains nothing.

The sweep runs its points in this process (the subprocess executor and resume across processes are
tested in test_sweep.py)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from pretrainlab.errors import ConfigError, PretrainlabError
from pretrainlab.science.arms import ArmResult, pick_lrs, plot_train_curves, run_arms
from pretrainlab.science.replication import ReplicationContext

pytestmark = pytest.mark.usefixtures("one_thread")


def _base(data: Path) -> dict[str, Any]:
    return {
        "data": {"path": str(data), "seq_len": 16},
        "model": {"n_layers": 1, "d_model": 16, "n_heads": 2},
        "optim": {"lr": 3e-3},
        "schedule": {"warmup_steps": 1},
        "train": {"steps": 3, "global_batch_tokens": 16 * 4, "micro_batch_size": 4, "precision": "fp32",
                  "progress": False, "log_every": 1, "threads": 1},
        "eval": {"max_tokens_per_domain": 128, "batch_size": 4},
    }


def test_run_arms_runs_each_arm_per_seed_and_resumes(tiny_prepared: Path, tmp_path: Path, in_process: None) -> None:
    ctx = ReplicationContext(out=tmp_path / "rep", scale="tiny", seeds=2, jobs=2, data=None)
    arms = {"base": {}, "wide": {"model.d_model": 32}}
    res = run_arms(ctx, "demo", _base(tiny_prepared), arms, seeds=[3, 4], quiet=True)
    assert list(res) == ["base", "wide"]
    for arm in res.values():
        assert isinstance(arm, ArmResult) and len(arm.runs) == 2 and arm.seeds == [3, 4]
        assert all(r.parent == ctx.out / "sweeps" / "demo" / "runs" and r.is_dir() for r in arm.runs)
        assert all(math.isfinite(v) for v in arm.values("val_loss"))
        assert all(math.isnan(v) for v in arm.values("no_such_key"))
    assert [e["step"] for e in res["base"].ends] == [3, 3]
    assert res["wide"].values("params_non_embedding")[0] > res["base"].values("params_non_embedding")[0]
    assert res["base"].runs[0].name.endswith("_s3") and res["base"].runs[1].name.endswith("_s4")

    metrics = sorted((ctx.out / "sweeps" / "demo" / "runs").glob("*/metrics.jsonl"))
    assert len(metrics) == 4
    before = {p: p.stat().st_mtime_ns for p in metrics}
    again = run_arms(ctx, "demo", _base(tiny_prepared), arms, seeds=[3, 4], quiet=True)
    assert {p: p.stat().st_mtime_ns for p in metrics} == before  # nothing retrained
    assert again["wide"].values("val_loss") == res["wide"].values("val_loss")
    assert plot_train_curves(again, tmp_path / "curves.png").stat().st_size > 1000


def test_run_arms_refuses_twin_arms_and_no_seeds(tmp_path: Path) -> None:
    ctx = ReplicationContext(out=tmp_path, scale="tiny", seeds=1, jobs=1, data=None)
    with pytest.raises(ConfigError, match="same overrides"):
        run_arms(ctx, "x", {}, {"a": {"optim.lr": 1e-3}, "b": {"optim.lr": 1e-3}}, seeds=[0])
    with pytest.raises(ConfigError, match="no seeds"):
        run_arms(ctx, "x", {}, {"a": {}}, seeds=[])


def test_pick_lrs_takes_the_lowest_finite_loss() -> None:
    losses = {"a": {1e-3: 3.2, 3e-3: 3.1, 1e-2: math.nan}, "b": {1e-3: 3.0, 3e-3: 3.0, 1e-2: 3.05}}
    assert pick_lrs(losses) == {"a": 3e-3, "b": 1e-3}  # a diverged run never wins; ties go to the smaller lr
    with pytest.raises(PretrainlabError, match="every learning rate of arm 'c'"):
        pick_lrs({"c": {1e-2: math.nan, 3e-2: math.inf}}, where="grid")
