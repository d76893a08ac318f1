"""The Journey Matters replication: the protocol end to end at a smoke scale (1 seed, a few steps: pruning
windows and sizes, claims computed, replication.json written), and each claim's rule on planted figures."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pretrainlab.recipes.journey_replication import (
    SCALES,
    FitPoint,
    Scale,
    arm_means,
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


@dataclass
class FakeFit:
    params: dict[str, float]


def _fits(r2_avg: float, r2_final: float) -> dict[str, tuple[Any, float, float, str]]:
    return {"avg": (FakeFit({"alpha": 0.4}), r2_avg, 0.01, ""), "final": (FakeFit({"alpha": 0.3}), r2_final, 0.02, "")}


def test_fit_claim_fits_power_laws_and_prefers_the_count_the_losses_follow() -> None:
    points = []
    for n in (2e5, 4e5, 8e5):  # dense: final = average; pruned to 40% with N-bar 70% of the start
        points += [FitPoint(f"dense {n:g}", n, n, _law(n)), FitPoint(f"pruned {n:g}", 0.4 * n, 0.7 * n, _law(0.7 * n))]
    c = fit_claim(points)  # the losses follow the N-bar law exactly
    assert c.holds is True and c.our_figure.startswith("R^2 1.000 (N-bar: alpha 0.40)")


def test_fit_claim_rule_on_planted_fits() -> None:
    points = [FitPoint(f"arm{i}", 1e5 * (i + 1), 1e5 * (i + 1), 3.0 - 0.1 * i) for i in range(6)]
    assert fit_claim(points, _fits(0.9, 0.8)).holds is True
    assert fit_claim(points, _fits(0.8, 0.9)).holds is False
    c = fit_claim(points, _fits(0.9, 0.8), mean_fits=_fits(0.95, 0.7))
    assert "over the 6 arms' seed means: R^2 0.950 vs 0.700" in c.spread
    failed = {"avg": (None, math.nan, math.nan, "loss does not fall"), "final": _fits(0.9, 0.8)["final"]}
    c = fit_claim(points, failed)
    assert c.holds is None and "N-bar fit: loss does not fall" in c.our_figure
    c = fit_claim(points[:5], _fits(0.9, 0.8))
    assert c.holds is None and "only 5 runs" in c.our_figure


def test_arm_means_average_seeds_and_skip_non_finite() -> None:
    pts = [FitPoint("a", 1.0, 2.0, 3.0), FitPoint("a", 1.0, 2.0, 3.2), FitPoint("b", 4.0, 4.0, math.nan)]
    means = arm_means(pts)
    assert len(means) == 1 and means[0].arm == "a" and means[0].loss == pytest.approx(3.1)


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


def test_printed_table_keeps_provenance_tags(capsys: pytest.CaptureFixture[str]) -> None:
    from pretrainlab.science.replication import ReplicationResult, print_claims

    points = [FitPoint(f"a{i}", 1e5 * (i + 1), 1e5 * (i + 1), 3.0 - 0.1 * i) for i in range(6)]
    claim = fit_claim(points, _fits(0.9, 0.8))
    print_claims(ReplicationResult("journey", "p", "tiny", 1, 60.0, [claim], notes=["n [mem]"]))
    out = capsys.readouterr().out
    assert "[abs]" in out and "n [mem]" in out  # rich markup would eat them
