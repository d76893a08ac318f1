"""The low-rank-tricks replication: its protocol end to end at a toy scale (five arms, the tricks' callbacks
firing, replication.json with computed claims), the period scaling, and the claim rules on planted numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from pretrainlab.recipes.low_rank_tricks_replication import (
    SCALES,
    Scale,
    arm_overrides,
    claim_dense_best,
    claim_tricks_help,
)
from pretrainlab.science.replication import (
    REPLICATIONS,
    ReplicationContext,
    load_builtin_replications,
    write_replication,
)

pytestmark = pytest.mark.usefixtures("one_thread")


TOY = Scale(train_tokens=8192, val_tokens=1024, seq_len=32, batch_rows=4, steps=4, n_layers=1, d_model=16,
            n_heads=2, rank=4, lrs=(3e-3,), low_rank_lrs=(1e-2,))


def test_registered_and_period_scaled_to_the_run() -> None:
    load_builtin_replications()
    assert REPLICATIONS.get("low-rank-tricks").default_seeds == 3
    assert SCALES["tiny"].every == 7  # 400 steps x 200 / 11000
    assert TOY.every == 1
    arms = arm_overrides(SCALES["tiny"])
    assert list(arms) == ["dense", "low_rank", "refactorize", "momentum_reset", "both", "both_reset_step",
                          "both_slow"]
    assert arms["both_reset_step"]["callbacks"][1]["options"] == {"every": 7, "second": True, "reset_step": True}
    assert all(c["options"]["every"] == 50 for c in arms["both_slow"]["callbacks"])
    assert [c["name"] for c in arms["both"]["callbacks"]] == ["refactorize", "momentum_reset"]
    assert all(c["options"]["every"] == 7 for c in arms["both"]["callbacks"])
    assert arms["low_rank"]["model.linear_options"]["rank"] == SCALES["tiny"].d_model // 4


def test_claim_rules_flip_at_their_thresholds() -> None:
    assert claim_tricks_help([3.10, 3.12], [3.07, 3.09]).holds is True  # 0.03 nats
    assert claim_tricks_help([3.10, 3.12], [3.09, 3.11]).holds is False  # 0.01 nats
    assert claim_tricks_help([math.nan], [3.0]).holds is None
    losses = {"dense": [3.0, 3.02], "low_rank": [3.2, 3.2], "both": [3.05, 3.03]}
    c = claim_dense_best(losses)
    assert c.holds is True and c.our_figure.startswith("best low-rank arm both")
    losses["both"] = [2.99, 3.0]
    assert claim_dense_best(losses).holds is False


def test_protocol_runs_end_to_end(tiny_prepared: Path, tmp_path: Path, in_process: None) -> None:
    from pretrainlab.recipes.low_rank_tricks_replication import run_protocol
    from pretrainlab.train.metrics import read_metrics

    ctx = ReplicationContext(out=tmp_path / "rep", scale="tiny", seeds=1, jobs=2, data=tiny_prepared)
    result = run_protocol(ctx, TOY)
    assert len(result.claims) == 2 and all(c.holds in (True, False) for c in result.claims)
    runs = result.details["runs"]
    assert list(runs) == ["dense", "low_rank", "refactorize", "momentum_reset", "both", "both_reset_step",
                          "both_slow"]
    both = [r for r in read_metrics(Path(runs["both"][0]) / "metrics.jsonl") if "lr" in r]
    assert both and all(r.get("refactorized", 0) > 0 and r.get("momentum_reset", 0) > 0 for r in both)
    assert not any("refactorized" in r for r in read_metrics(Path(runs["low_rank"][0]) / "metrics.jsonl"))
    data = json.loads(write_replication(ctx.out, result).read_text())
    assert [c["holds"] in (True, False) for c in data["claims"]] == [True, True]
    assert any("Loss spikes" in n for n in data["notes"])
