"""The `mixture` sweep axis (Dirichlet draws of data.weights) and list axes of data.weights mappings: the
draws are valid, distinct, seeded and follow alpha and the prior; every bad input fails before anything
runs, naming the axis or the point."""

from __future__ import annotations

import re
import statistics
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers import tiny_run_config  # noqa: E402

from pretrainlab.errors import ConfigError  # noqa: E402
from pretrainlab.science.mixture_axis import dirichlet_mixtures, round_weights  # noqa: E402
from pretrainlab.science.sweep_spec import _SAFE, MAX_NAME_LEN, resolve_sweep  # noqa: E402


def make_spec(tmp_path: Path, data: Path, axes: list[Any], **extra: Any) -> dict[str, Any]:
    base = tiny_run_config(tmp_path / "unused", data, train={"steps": 5}).model_dump(mode="json")
    return {"name": "s", "out_dir": str(tmp_path / "sweeps"), "base": base, "axes": axes, **extra}


def units(weights: dict[str, float]) -> int:
    return sum(round(w * 10_000) for w in weights.values())


def test_round_weights_keeps_4_decimals_summing_to_exactly_one() -> None:
    assert round_weights([1, 1, 1]) == [0.3334, 0.3333, 0.3333]  # the spare unit goes to the first tie
    assert round_weights([0.66666, 0.33334]) == [0.6667, 0.3333]
    assert round_weights([2, 0, 6]) == [0.25, 0.0, 0.75]
    for bad in ([], [0, 0], [1, -1], [float("nan"), 1]):
        with pytest.raises(ValueError):
            round_weights(bad)


def test_dirichlet_mixtures_are_seeded_distinct_and_on_the_simplex() -> None:
    domains = ["web", "code", "math"]
    first = dirichlet_mixtures(domains, 20, alpha=1.0, seed=0)
    assert first == dirichlet_mixtures(domains, 20, alpha=1.0, seed=0)
    assert first != dirichlet_mixtures(domains, 20, alpha=1.0, seed=1)
    assert dirichlet_mixtures(domains, 5, alpha=1.0, seed=0) == first[:5]  # growing n keeps the first points
    assert len({tuple(m.values()) for m in first}) == 20
    for m in first:
        assert list(m) == domains and all(0 <= w <= 1 and round(w, 4) == w for w in m.values()) and units(m) == 10_000
    with_uniform = dirichlet_mixtures(domains, 3, seed=0, include_uniform=True)
    assert with_uniform[0] == {"web": 0.3334, "code": 0.3333, "math": 0.3333} and with_uniform[1:] == first[:3]


def test_alpha_sets_the_spread_and_the_prior_sets_the_mean() -> None:
    def top_share(alpha: float) -> float:
        return statistics.fmean(max(m.values()) for m in dirichlet_mixtures("abcd", 200, alpha=alpha, seed=3))

    assert top_share(0.1) > 0.8 > 0.4 > top_share(20.0)  # small alpha: one domain dominates; large: near even
    draws = dirichlet_mixtures(["a", "b"], 300, alpha=20.0, seed=0, prior={"a": 3, "b": 1})
    assert statistics.fmean(m["a"] for m in draws) == pytest.approx(0.75, abs=0.01)
    with pytest.raises(ConfigError, match="distinct mixtures"):  # every draw sits on a corner of the simplex
        dirichlet_mixtures(["a", "b"], 100, alpha=1e-5, seed=0)


def test_mixture_axis_sets_data_weights_with_short_safe_stable_names(tmp_path: Path, tiny_prepared: Path) -> None:
    axes = [{"mixture": {"n": 4, "alpha": 1.0, "seed": 2, "include_uniform": True}},
            {"grid": {"optim.lr": [1e-3, 3e-3]}}]
    sweep = resolve_sweep(make_spec(tmp_path, tiny_prepared, axes))
    assert len(sweep.points) == 10
    weights = [p.config.data.weights for p in sweep.points[::2]]
    # domains default to the prepared data's (alpha, beta); the uniform mixture first, then the draws
    assert weights == dirichlet_mixtures(["alpha", "beta"], 4, seed=2, include_uniform=True)
    assert [p.origin for p in sweep.points[:3:2]] == ["axes[0].mixture.uniform, axes[1].grid",
                                                      "axes[0].mixture[0], axes[1].grid"]
    assert sweep.points[0].axes == {"data.weights": {"alpha": 0.5, "beta": 0.5}, "optim.lr": 1e-3}
    for p in sweep.points:
        assert re.fullmatch(r"weights-alpha[0-9.]+\+beta[0-9.]+_lr-0\.00[13]_s0-[0-9a-f]{10}", p.name), p.name
    assert [p.name for p in resolve_sweep(make_spec(tmp_path, tiny_prepared, axes)).points] == \
        [p.name for p in sweep.points]
    # many domains with long names: the name is shortened, still safe and unique
    long = [f"domain_with_a_long_name_{i}" for i in range(8)]
    spec = make_spec(tmp_path, tiny_prepared, [{"mixture": {"n": 3, "domains": long}}])
    names = [p.name for p in resolve_sweep(spec, check_data=False).points]
    assert len(set(names)) == 3 and all(len(n) <= MAX_NAME_LEN and not _SAFE.search(n) for n in names)


def test_mixture_axis_can_be_changed_from_the_command_line(tmp_path: Path, tiny_prepared: Path) -> None:
    spec = make_spec(tmp_path, tiny_prepared, [{"mixture": {"n": 2, "prior": {"alpha": 1, "beta": 1}}}])
    sweep = resolve_sweep(spec, ["axes.0.mixture.n=3", "axes.0.mixture.prior.alpha=4", "axes.0.mixture.alpha=5"])
    assert [p.config.data.weights for p in sweep.points] == dirichlet_mixtures(
        ["alpha", "beta"], 3, alpha=5, prior={"alpha": 4, "beta": 1})


def test_a_list_axis_of_weight_mappings_sweeps_the_mixture(tmp_path: Path, tiny_prepared: Path) -> None:
    axes = [{"list": [{"data.weights": {"alpha": 3, "beta": 1}}, {"data.weights": {"alpha": 1, "beta": 1}}]}]
    sweep = resolve_sweep(make_spec(tmp_path, tiny_prepared, axes))
    assert [p.config.data.weights for p in sweep.points] == [{"alpha": 3, "beta": 1}, {"alpha": 1, "beta": 1}]
    assert re.fullmatch(r"weights-alpha3\+beta1_s0-[0-9a-f]{10}", sweep.points[0].name)
    grid = [{"grid": {"data.weights": [{"alpha": 1}, {"beta": 1}]}}]
    assert [p.config.data.weights for p in resolve_sweep(make_spec(tmp_path, tiny_prepared, grid)).points] == \
        [{"alpha": 1}, {"beta": 1}]


BAD_CASES = [
    ([{"mixture": {"n": 2, "domains": ["alpha", "gamma"]}}], {},
     "point 'weights-alpha", "data.weights names domain 'gamma', which the prepared data does not have"),
    ([{"list": [{"data.weights": {"alpha": 1, "betta": 1}}]}], {},
     "(axes[0].list[0]): data.weights names domain 'betta'", "did you mean 'beta'?"),
    ([{"mixture": {"n": 2, "alpha": 0}}], {}, "axes[0]: mixture.alpha: Input should be greater than 0", ""),
    ([{"mixture": {"n": 0}}], {}, "axes[0]: mixture.n: Input should be greater than or equal to 1", ""),
    ([{"mixture": {"n": 2, "domains": ["alpha"]}}], {}, "a mixture needs at least 2 domains", ""),
    ([{"mixture": {"n": 2, "domains": ["alpha", "beta"], "prior": {"alpha": 1}}}], {},
     "prior must give every domain of domains and no other (missing ['beta'])", ""),
    ([{"mixture": {"n": 2, "prior": {"alpha": 1, "beta": -1}}}], {}, "prior['beta'] must be a finite number > 0", ""),
    ([{"mixture": {"n": 2, "prior": {"alpha": 1}}}], {}, "axes[0].mixture.prior: give every domain of", "alpha, beta"),
    ([{"mixture": {"n": 2, "sed": 1}}], {}, "axes[0]: unknown key 'mixture.sed'; did you mean 'mixture.seed'?", ""),
    ([{"mixture": {"n": 50, "domains": ["alpha", "beta"], "alpha": 0.001}}], {},
     "axes[0].mixture: only", "distinct mixtures of 2 domains found for n=50"),
    ([{"mixture": {"n": 2}}], {"overrides": {"data.stages": [{"weights": {"alpha": 1}}]}},
     "axes[0].mixture[0]", "give either data.weights or data.stages"),
    ([{"mixture": {"n": 2}}, {"list": [{"data.weights": {"alpha": 1}}]}], {},
     "axes[0] and axes[1] both set 'data.weights'", ""),
]


@pytest.mark.parametrize("axes, extra, message, more", BAD_CASES, ids=[m[:40] for _, _, m, _ in BAD_CASES])
def test_bad_mixture_axes_fail_before_anything_runs(
    tmp_path: Path, tiny_prepared: Path, axes: list[Any], extra: dict[str, Any], message: str, more: str
) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_sweep(make_spec(tmp_path, tiny_prepared, axes, **extra))
    assert message in str(info.value) and more in str(info.value)
    assert not (tmp_path / "sweeps").exists()


def test_without_reading_the_data_the_domains_must_be_listed(tmp_path: Path, tiny_prepared: Path) -> None:
    spec = make_spec(tmp_path, tiny_prepared, [{"mixture": {"n": 2}}])
    with pytest.raises(ConfigError, match=r"axes\[0\].mixture: list the domains to mix"):
        resolve_sweep(spec, check_data=False)
    spec["axes"][0]["mixture"]["domains"] = ["web", "code"]  # not in the data, but the data is not read
    assert len(resolve_sweep(spec, check_data=False).points) == 2
