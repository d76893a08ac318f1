"""The infinite-compute claims on planted figures: each verdict follows its stated rule, including the
edge cases (no ensemble gain, non-monotone losses, overlapping intervals, diverged runs)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pretrainlab.recipes.infinite_compute import SCALES, Point
from pretrainlab.recipes.infinite_compute_claims import (
    _below,
    _chain,
    _distillation,
    _ensemble_asymptote,
    _ensemble_vs_largest,
    _monotone,
    _tuned_beats_default,
)
from pretrainlab.recipes.infinite_compute_protocol import Choice, choose
from pretrainlab.science.replication import Claim, ReplicationResult, mean_sd, spread_text, write_replication

TINY = SCALES["tiny"]


@dataclass
class FakeFit:
    params: dict[str, float]
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)


def test_distillation_share_and_no_gain() -> None:
    c = _distillation([3.0, 3.0], 2.9, [2.95, 2.96], TINY)  # gain 0.1; shares 50%, 40%
    assert c.holds is True and c.our_figure.startswith("45%")
    c = _distillation([3.0, 3.0], 2.9, [2.99, 2.98], TINY)  # 10%, 20%
    assert c.holds is False
    c = _distillation([3.0, 3.0], 3.1, [3.05, 3.02], TINY)  # the ensemble is worse than its members
    assert c.holds is False and "no gain" in c.our_figure


def test_monotone_prints_the_true_order() -> None:
    c = _monotone({"a": [3.05], "b": [3.25], "c": [3.0]}, ["a", "b", "c"])
    assert c.holds is False and "3.050 < 3.250 > 3.000" in c.our_figure
    assert _monotone({"a": [3.2, 3.3], "b": [3.1, 3.0]}, ["a", "b"]).holds is True
    assert _chain([1.0, 1.0]) == "1.000 = 1.000"


def test_tuned_beats_default_pairs_seeds_and_ignores_diverged_runs() -> None:
    curve = {"default": {"L": [3.10, 3.12, math.nan]}, "tuned": {"L": [3.05, 3.08, 3.0]}}
    c = _tuned_beats_default(curve, "L")
    assert c.holds is True and "1 non-finite left out" in c.spread
    curve["tuned"]["L"] = [3.09, 3.11, 3.0]
    assert _tuned_beats_default(curve, "L").holds is False


def test_asymptote_rule_needs_intervals_apart() -> None:
    low = FakeFit({"E": 2.0}, {"E": (1.9, 2.1)})
    high = FakeFit({"E": 2.5}, {"E": (2.3, 2.7)})
    overlapping = FakeFit({"E": 2.2}, {"E": (1.5, 2.9)})
    assert _below(low, high) is True
    assert _below(high, low) is False
    assert _below(low, overlapping) is None
    assert _ensemble_asymptote(low, high, [3.0, 2.9, 2.85], "").holds is True
    assert _ensemble_asymptote(low, high, [3.0, 3.1, 2.85], "").holds is False  # not falling with K
    assert _ensemble_asymptote(None, high, [3.0, 2.9], "too few points").holds is None


def test_ensemble_vs_largest_uses_the_best_single_model() -> None:
    assert _ensemble_vs_largest(2.80, [2.82, 2.90], TINY, "0.8M").holds is True
    assert _ensemble_vs_largest(2.80, [2.805, 2.90], TINY, "0.8M").holds is False
    assert _ensemble_vs_largest(2.80, [math.nan, 2.95], TINY, "0.8M").holds is True


class FakeBook:
    def __init__(self, losses: dict[tuple[str, float, int], float]) -> None:
        self.losses = losses

    def loss(self, p: Point) -> float:
        return self.losses[(p.size, p.weight_decay, p.epochs)]


def test_choose_picks_finite_minima_and_maps_sizes_to_the_nearest_grid_size(tmp_path: Path) -> None:
    losses: dict[tuple[str, float, int], float] = {}
    for size in TINY.grid_sizes:
        for wd in TINY.weight_decays:
            for e in TINY.epochs:
                losses[(size, wd, e)] = 3.0 + 0.01 * e - 0.05 * wd
    losses[("0.8M", 3.0, 32)] = math.nan  # diverged: never chosen
    choice = choose(TINY, FakeBook(losses), tmp_path)  # type: ignore[arg-type]
    assert isinstance(choice, Choice)
    assert choice.tuned["0.2M"] == (3.0, 8) and choice.tuned["0.1M"] == (3.0, 8)
    assert choice.tuned["0.8M"] == (3.0, 8) and choice.tuned["0.4M"] == (3.0, 8)
    assert choice.default_epochs["0.8M"] == 8


def test_spread_ignores_non_finite_and_json_has_no_nan(tmp_path: Path) -> None:
    assert math.isnan(mean_sd([math.nan])[0])
    assert spread_text([math.nan, math.inf]) == "no finite values; 2 non-finite left out"
    result = ReplicationResult("x", "p", "tiny", 1, 1.0, [Claim("c", "1", "nan", "-", None)],
                               details={"loss": math.nan, "nested": [1.0, math.inf]})
    data: dict[str, Any] = json.loads(write_replication(tmp_path, result).read_text())
    assert data["details"] == {"loss": None, "nested": [1.0, None]}
