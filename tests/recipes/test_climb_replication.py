"""The CLIMB replication: its run trees validate, the claim rules flip at their thresholds, and the whole
pipeline (cluster, search with real proxy runs, final arms, replication.json) runs at a toy scale."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from helpers import make_prepared
from pretrainlab.recipes.climb_replication import (
    SCALES,
    Scale,
    claim_beats_random,
    claim_beats_uniform,
    claim_predictor,
    run_tree,
)
from pretrainlab.science.replication import REPLICATIONS, ReplicationContext, load_builtin_replications

pytestmark = pytest.mark.usefixtures("one_thread")

TOY = Scale(k_init=4, clusters=2, seq_len=16, batch_rows=4, proxy_steps=2, proxy_layers=1, proxy_d_model=16,
            proxy_heads=2, final_steps=2, final_layers=1, final_d_model=16, final_heads=2, budget=(3, 1), lr=3e-3,
            proxy_val_tokens=256, final_val_tokens=256)


def test_registered_and_trees_validate() -> None:
    from pretrainlab.config import RunConfig, validate

    load_builtin_replications()
    assert REPLICATIONS.get("climb").default_seeds == 3
    for scale in SCALES.values():
        assert sum(scale.budget) == 28 and scale.budget == (16, 8, 4)  # the paper's 4:2:1, papers-data.md 3c
        for final in (False, True):
            cfg = validate(RunConfig, run_tree("/data", scale, final=final), source="test")
            assert cfg.data.weights is None and cfg.eval.every is None
    from pretrainlab.science.arms import non_embedding_params

    assert 250_000 < non_embedding_params(run_tree("", SCALES["tiny"], final=False)["model"]) < 400_000  # ~0.3M


def test_claim_rules_flip_at_their_thresholds() -> None:
    assert claim_beats_uniform([3.10, 3.12], [3.07, 3.09]).holds is True  # 0.03 nats
    assert claim_beats_uniform([3.10, 3.12], [3.08, 3.10]).holds is False  # 0.02
    assert claim_beats_uniform([math.nan], [3.0]).holds is None
    assert claim_beats_random([3.0, 3.1], [3.0, 3.1]).holds is True  # equal is no worse
    assert claim_beats_random([3.0, 3.1], [3.01, 3.1]).holds is False
    assert claim_predictor(0.6, 0.1, 28, "gp").holds is True
    assert claim_predictor(0.59, 0.9, 28, "gp").holds is False
    assert claim_predictor(math.nan, math.nan, 28, "gp").holds is None


def _pool(path: Path) -> Path:
    rng = np.random.default_rng(0)
    words = {"wiki": "history battle city river century king empire war".split(),
             "news": "market stock team match election president bank shares".split(),
             "stories": "little girl dog happy played mom ball tree".split()}

    def docs(domain: str, n: int) -> list[list[int]]:
        return [list(" ".join(rng.choice(words[domain], size=30)).encode()) for _ in range(n)]

    return make_prepared(path, train={d: docs(d, 12) for d in words}, val={d: docs(d, 4) for d in words})


def test_protocol_runs_end_to_end(tmp_path: Path, in_process: None) -> None:
    from pretrainlab.recipes.climb_replication import run_protocol
    from pretrainlab.science.replication import write_replication

    ctx = ReplicationContext(out=tmp_path / "rep", scale="tiny", seeds=1, jobs=1, data=_pool(tmp_path / "pool"))
    result = run_protocol(ctx, TOY)
    assert [c.holds is None or isinstance(c.holds, bool) for c in result.claims] == [True] * 3
    details = result.details
    assert details["targets"] == ["wiki", "news"]
    assert len(details["search"]["candidates"]) == 4
    assert set(details["mixtures"]) == {"climb", "uniform", "best_random"}
    assert all(math.isfinite(v) for arm in details["target_test_loss"].values() for v in arm)
    assert (ctx.out / "mixture.yaml").is_file() and (ctx.out / "search.json").is_file()
    written = json.loads(write_replication(ctx.out, result).read_text())
    assert written["name"] == "climb" and len(written["claims"]) == 3
    # a second call reuses every run and the clustering
    again = run_protocol(ctx, TOY)
    assert again.details["target_test_loss"] == details["target_test_loss"]
