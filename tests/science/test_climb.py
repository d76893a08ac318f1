"""CLIMB's search (science/climb.py) on cheap fake objectives: deterministic per seed, the 4:2:1 budget,
a planted objective found, the predictor's choice and Spearman, the written log and config fragment, and
clear errors for a bad proxy config."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from pretrainlab.errors import ConfigError
from pretrainlab.science.climb import climb_search, sample_mixtures, size_prior, write_search
from pretrainlab.science.mixture_predictor import fit_predictor, spearman

DOMAINS = [f"cluster{i:02d}" for i in range(8)]
SIZES = [30, 20, 15, 10, 10, 8, 5, 2]


def planted(favoured: str):
    """A smooth loss that falls with the favoured cluster's weight (and dislikes concentration elsewhere)."""
    calls: list[int] = []

    def objective(mixtures: list[dict[str, float]]) -> list[float]:
        calls.append(len(mixtures))
        return [float(-0.3 * math.log(m[favoured] + 0.02) + 0.5 * sum(v * v for v in m.values())) for m in mixtures]

    objective.calls = calls  # type: ignore[attr-defined]
    return objective


def test_same_seed_same_candidates_and_choice() -> None:
    a = climb_search(DOMAINS, SIZES, planted("cluster05"), seed=7, predictor="ridge", pool=2000)
    b = climb_search(DOMAINS, SIZES, planted("cluster05"), seed=7, predictor="ridge", pool=2000)
    c = climb_search(DOMAINS, SIZES, planted("cluster05"), seed=8, predictor="ridge", pool=2000)
    assert [x.weights for x in a.candidates] == [x.weights for x in b.candidates]
    assert a.chosen == b.chosen and a.chosen_predicted == b.chosen_predicted
    assert [x.weights for x in a.candidates] != [x.weights for x in c.candidates]
    assert [x.iteration for x in a.candidates] == [1] * 16 + [2] * 8 + [3] * 4
    assert all(x.predicted is None for x in a.candidates[:16]) and all(x.predicted is not None for x in a.candidates[16:])
    assert len({tuple(x.weights.values()) for x in a.candidates}) == 28  # never the same mixture twice
    for x in a.candidates:
        assert abs(sum(x.weights.values()) - 1.0) < 1e-9 and min(x.weights.values()) >= 0


@pytest.mark.parametrize("predictor", ["ridge", "hgb"])
def test_planted_objective_gets_at_least_twice_the_uniform_weight(predictor: str) -> None:
    objective = planted("cluster06")  # a small cluster: the size-weighted prior gives it ~5%
    result = climb_search(DOMAINS, SIZES, objective, seed=0, predictor=predictor, pool=2000)
    assert objective.calls == [16, 8, 4]  # type: ignore[attr-defined]
    assert result.chosen is not None and result.chosen["cluster06"] >= 2 * (1 / len(DOMAINS))
    first = result.best_measured(iteration=1)
    assert first is not None and result.best_measured().measured <= first.measured


def test_auto_predictor_reports_every_model_and_picks_the_best_ranked() -> None:
    rng = np.random.default_rng(0)
    x = sample_mixtures(rng, size_prior([1.0] * 4), 14)
    y = -np.log(x[:, 2] + 0.05)
    fitted = fit_predictor(x, y, kind="auto", seed=0)
    assert set(fitted.cv_spearman) == {"gp", "ridge", "hgb"}
    assert fitted.cv_spearman[fitted.kind] == max(v for v in fitted.cv_spearman.values() if math.isfinite(v))
    assert fitted.cv_spearman[fitted.kind] > 0.8
    assert spearman(fitted.predict(x), y) > 0.9
    assert math.isnan(spearman(np.ones(5), np.arange(5.0)))
    with pytest.raises(ConfigError, match="non-finite"):
        fit_predictor(x[:3], np.array([1.0, np.nan, 2.0]))
    with pytest.raises(ConfigError, match="unknown mixture predictor"):
        fit_predictor(x, y, kind="lightgbm")


def test_failed_proxies_are_logged_and_left_out_of_the_fit() -> None:
    base = planted("cluster01")

    def flaky(mixtures: list[dict[str, float]]) -> list[float]:
        values = base(mixtures)
        return [math.nan if i == 0 else v for i, v in enumerate(values)]

    result = climb_search(DOMAINS, SIZES, flaky, budget=(6, 3), seed=0, predictor="ridge", pool=500)
    assert sum(math.isnan(c.measured) for c in result.candidates) == 2
    assert result.chosen is not None


def test_prior_and_budget_checks() -> None:
    alpha = size_prior([3, 1, 0], concentration=2.0)
    assert alpha[0] == pytest.approx(4.5) and alpha[2] == pytest.approx(0.05)
    with pytest.raises(ConfigError, match=">= 2 domains"):
        size_prior([1.0])
    with pytest.raises(ConfigError, match="budget"):
        climb_search(DOMAINS, SIZES, planted("cluster00"), budget=(2, 1))
    with pytest.raises(ConfigError, match="same domain twice"):
        climb_search(["a", "a"], [1, 1], planted("a"))
    for top_n in (0, -3):  # 0 used to mean the default, a negative number the budget itself
        with pytest.raises(ConfigError, match=f"top_n {top_n}: must be an integer >= 1"):
            climb_search(DOMAINS, SIZES, planted("cluster00"), top_n=top_n)


def test_log_and_fragment_are_written_and_valid(tmp_path: Path) -> None:
    from pretrainlab.config import DataConfig

    result = climb_search(DOMAINS, SIZES, planted("cluster03"), budget=(4, 2), seed=0, predictor="ridge", pool=200)
    paths = write_search(tmp_path / "out", result, "/data/clusters", {"targets": ["wiki"]})
    log = json.loads(paths["search"].read_text())
    assert len(log["candidates"]) == 6 and log["targets"] == ["wiki"]
    assert {"predicted", "measured", "weights", "iteration"} <= set(log["candidates"][0])
    fragment = yaml.safe_load(paths["mixture"].read_text())
    cfg = DataConfig.model_validate(fragment["data"])
    assert cfg.path == "/data/clusters" and set(cfg.weights or {}) <= set(DOMAINS)


def test_search_mixture_checks_the_proxy_config(tmp_path: Path) -> None:
    from helpers import make_prepared, random_docs
    from pretrainlab.science.climb import search_mixture
    from pretrainlab.science.replication import ReplicationContext

    rng = np.random.default_rng(0)
    data = make_prepared(tmp_path / "d", train={"a": random_docs(rng, 20), "b": random_docs(rng, 20)},
                         val={"a": random_docs(rng, 3), "b": []})
    ctx = ReplicationContext(out=tmp_path / "s", scale="climb", seeds=1, jobs=1, data=None)
    base = {"data": {"path": str(data), "seq_len": 16}}
    with pytest.raises(ConfigError, match="sets data.weights"):
        search_mixture(ctx, {"data": {**base["data"], "weights": {"a": 1.0}}}, ["a"])
    with pytest.raises(ConfigError, match="target 'wiki' is not a domain"):
        search_mixture(ctx, base, ["wiki"])
    with pytest.raises(ConfigError, match="target 'b' .* has no validation tokens"):
        search_mixture(ctx, base, ["b"])
