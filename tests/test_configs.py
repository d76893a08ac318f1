"""Every shipped YAML config validates against its root model (a typo in an example fails here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pretrainlab.config import PrepareConfig, RunConfig, load_yaml, validate

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "configs").glob("*.yaml")) + sorted((ROOT / "src" / "pretrainlab" / "configs").glob("*.yaml"))


def test_configs_are_shipped() -> None:
    names = {p.name for p in SHIPPED}
    assert {"tiny_test.yaml", "train_stdlib.yaml"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_config_validates(path: Path) -> None:
    tree = load_yaml(path)
    if set(tree) == {"prepare", "run"}:  # quickstart: both roots in one file
        validate(PrepareConfig, tree["prepare"], source=f"{path}:prepare")
        validate(RunConfig, tree["run"], source=f"{path}:run")
    elif "sources" in tree:
        validate(PrepareConfig, tree, source=str(path))
    elif "axes" in tree:  # a sweep file: every point's config gets the pre-build checks (data not opened)
        from pretrainlab.science.sweep_spec import resolve_sweep

        resolve_sweep(path, check_data=False)
    else:
        cfg = validate(RunConfig, tree, source=str(path))
        from pretrainlab.optim import check_optimizer, check_schedule
        from pretrainlab.train.batch_plan import plan_batches
        from pretrainlab.train.callbacks import build_callbacks

        plan_batches(cfg)  # the cross-field checks a train run makes before building anything
        check_schedule(cfg.schedule, cfg.train.steps)
        check_optimizer(cfg.optim)
        build_callbacks(cfg.callbacks)
