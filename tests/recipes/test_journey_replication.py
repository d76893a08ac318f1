"""The Journey Matters replication: the protocol end to end at a smoke scale (1 seed, a few steps: pruning
windows and sizes, claims computed, replication.json written), and each claim's rule on planted figures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from pretrainlab.recipes.journey_replication import (
    SCALES,
    FitPoint,
    Scale,
    fit_claim,
    fit_point,
    size_arms,
    window_arms,
    window_claim,
)
from pretrainlab.science.replication import (
    REPLICATIONS,
    ReplicationContext,
    load_builtin_replications,
    write_replication,
)

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = SCALES["tiny"]
SMOKE = Scale(sizes=(("a", 1, 16, 2), ("b", 1, 32, 2)), window_size="b", sparsity=0.6,
              windows=((0.0, 0.5), (0.25, 0.75)), recommended=(0.25, 0.75), seq_len=32, batch_rows=4, steps=8,
              lr=3e-3, train_tokens=4096, val_tokens=256, size_seeds=1)


def test_arms_cover_windows_and_sizes() -> None:
    arms = window_arms(TINY)
    assert list(arms) == ["dense", "prune 0-0.5", "prune 0.25-0.75", "prune 0.5-1"]
    assert arms["prune 0.5-1"]["callbacks"] == [
        {"name": "gradual_pruning", "options": {"sparsity": 0.6, "start": 0.5, "end": 1.0}}]
    assert all(a["model.d_model"] == 96 for a in arms.values())
    assert list(size_arms(TINY)) == ["dense d64", "prune 0.25-0.75 d64", "dense d128", "prune 0.25-0.75 d128"]


def test_window_claim_margin() -> None:
    losses = {"dense": [2.9, 2.9], "prune 0-0.5": [3.05, 3.06], "prune 0.25-0.75": [3.0, 3.02],
              "prune 0.5-1": [3.0, 3.0]}
    c = window_claim(TINY, losses)  # 3.010 vs best other 3.000: within 0.01
    assert c.holds is True and "vs best other prune 0.5-1 3.000 (+0.010)" in c.our_figure
    losses["prune 0.25-0.75"] = [3.02, 3.02]
    assert window_claim(TINY, losses).holds is False
    losses["prune 0.5-1"] = [math.nan, math.nan]  # a diverged window is left out; the others still compare
    assert window_claim(TINY, losses).holds is True


def _law(n: float) -> float:
    return 2.0 + 40.0 / n ** 0.4


def test_fit_claim_prefers_the_count_the_losses_follow() -> None:
    widths = (2e5, 4e5, 8e5)
    follow_avg, follow_final = [], []
    for n in widths:  # dense: final = average; pruned to 40% with N-bar 70% of the start
        follow_avg += [FitPoint("dense", n, n, _law(n)), FitPoint("pruned", 0.4 * n, 0.7 * n, _law(0.7 * n))]
        follow_final += [FitPoint("dense", n, n, _law(n)), FitPoint("pruned", 0.4 * n, 0.7 * n, _law(0.4 * n))]
    follow_avg.append(FitPoint("late", 0.4 * 4e5, 0.85 * 4e5, _law(0.85 * 4e5)))
    follow_final.append(FitPoint("late", 0.4 * 4e5, 0.85 * 4e5, _law(0.4 * 4e5) + 0.002))
    c = fit_claim(follow_avg)
    assert c.holds is True and c.our_figure.startswith("R^2 1.000 (N-bar")
    assert fit_claim(follow_final).holds is False
    c = fit_claim(follow_avg[:5])
    assert c.holds is None and "only 5 runs" in c.our_figure


def test_fit_point_counts() -> None:
    dense = fit_point("dense", {"params_non_embedding": 1000, "val_loss": 3.0})
    assert (dense.final_params, dense.avg_params) == (1000, 1000)
    pruned = fit_point("p", {"params_non_embedding": 1000, "live_params": 460, "avg_params": 730.5, "val_loss": 3.1})
    assert (pruned.final_params, pruned.avg_params, pruned.loss) == (460, 730.5, 3.1)


def test_registered() -> None:
    load_builtin_replications()
    assert REPLICATIONS.get("journey").default_seeds == 3


@pytest.mark.slow
def test_protocol_runs_end_to_end(tiny_prepared: Path, tmp_path: Path) -> None:
    from pretrainlab.recipes.journey_replication import run_protocol

    ctx = ReplicationContext(out=tmp_path / "rep", scale="tiny", seeds=1, jobs=2, data=tiny_prepared)
    result = run_protocol(ctx, SMOKE)
    assert len(result.claims) == 2
    data = json.loads(write_replication(ctx.out, result).read_text())
    losses = data["details"]["window_val_loss"]
    best_other = losses["prune 0-0.5"][0]
    assert data["claims"][0]["holds"] is (losses["prune 0.25-0.75"][0] <= best_other + 0.01)
    assert data["claims"][1]["holds"] is None and "only 5 runs" in data["claims"][1]["our_figure"]
    points = {p["arm"]: p for p in data["details"]["fit_points"]}
    assert set(points) == {"dense", "prune 0-0.5", "prune 0.25-0.75", "dense a", "prune 0.25-0.75 a"}
    dense, pruned = points["dense"], points["prune 0.25-0.75"]
    assert dense["final_params"] == dense["avg_params"]
    # pruned to 40% of the projections by the end; the mean over training lies between
    assert pruned["final_params"] < pruned["avg_params"] < dense["avg_params"]
    assert points["prune 0-0.5"]["avg_params"] < pruned["avg_params"]  # pruned earlier: fewer on average
    assert (ctx.out / "plots" / "journey.png").stat().st_size > 1000
