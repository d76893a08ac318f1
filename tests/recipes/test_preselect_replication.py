"""The preselect replication: config trees validate, the claims' rules flip at their thresholds, the data
helpers cut and split documents as stated, and the whole protocol runs end to end at a toy scale on
planted data (reference runs, scoring, classifier, three selections, the arms' runs, replication.json)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from pretrainlab.config import RunConfig, validate
from pretrainlab.recipes.preselect_docs import Doc
from pretrainlab.recipes.preselect_pool import MAX_DOC_BYTES, MIN_DOC_BYTES, _sized, build_pool, domain_shares
from pretrainlab.recipes.preselect_replication import (
    SCALES,
    Scale,
    claim_beats_perplexity,
    claim_beats_random,
    claim_compute,
    mixtures,
    positive_level,
    run_tree,
    steps_to_reach,
)
from pretrainlab.science.replication import REPLICATIONS, ReplicationContext, load_builtin_replications, write_replication
from tests.helpers import make_prepared
from tests.recipes.test_preselect import chain_text, noise_text

pytestmark = pytest.mark.usefixtures("one_thread")

TOY = Scale(ref_docs=10, cand_docs=20, bench_docs=5, eval_docs=5, scored_docs=30, min_positives=3, n_refs=3,
            ref_layers=1, ref_width=16, ref_steps=6, n_layers=1, d_model=16, n_heads=2, steps=2, evals=2, lr=3e-3,
            seq_len=32, batch_rows=4, val_tokens=512)


def test_registered_and_trees_validate() -> None:
    load_builtin_replications()
    assert REPLICATIONS.get("preselect").default_seeds == 3
    for scale in SCALES.values():
        ref = run_tree("data/ref", n_layers=scale.ref_layers, d_model=scale.ref_width, n_heads=2,
                       steps=scale.ref_steps, lr=scale.lr, scale=scale)
        ref["data"]["weights"] = mixtures([f"d{i}" for i in range(8)], scale.n_refs)[0]
        arm = run_tree("data/arm", n_layers=scale.n_layers, d_model=scale.d_model, n_heads=scale.n_heads,
                       steps=scale.steps, lr=scale.lr, scale=scale, eval_every=scale.steps // scale.evals)
        for tree in (ref, arm):
            cfg = validate(RunConfig, {"name": "x", **tree})
            assert cfg.train.global_batch_tokens == scale.seq_len * scale.batch_rows


def test_mixtures_are_seeded_distributions() -> None:
    mixes = mixtures(["a", "b", "c"], 4)
    assert mixes == mixtures(["a", "b", "c"], 4) and len({json.dumps(m) for m in mixes}) == 4
    assert all(abs(sum(m.values()) - 1) < 1e-3 and min(m.values()) >= 0 for m in mixes)


def test_positive_level_is_one_unless_too_few_reach_it() -> None:
    s = np.array([1.0, 1.0, 0.9, 0.9, 0.8, np.nan])
    assert positive_level(s, 2) == 1.0
    assert positive_level(s, 3) == 0.9 and positive_level(s, 5) == 0.8


def test_claim_rules_flip_at_their_thresholds() -> None:
    assert claim_beats_random([2.0, 2.1], [1.94, 2.04]).holds is True  # 0.06 >= 0.05
    assert claim_beats_random([2.0, 2.1], [1.96, 2.06]).holds is False  # 0.04
    assert claim_beats_random([math.nan], [1.0]).holds is None
    assert claim_beats_perplexity([2.0, 2.0], [1.99, 2.0]).holds is True
    assert claim_beats_perplexity([2.0, 2.0], [2.0, 2.0]).holds is False
    assert claim_compute([2.5, 1.6]).holds is True and claim_compute([2.5, 0.0]).holds is False
    assert "reached in 1 of 2 seeds" in claim_compute([2.5, 0.0]).our_figure


def test_steps_to_reach_interpolates_between_evaluations() -> None:
    curve = [(50, 3.0), (100, 2.0), (150, 1.5)]
    assert steps_to_reach(curve, 2.5) == 75.0
    assert steps_to_reach(curve, 3.5) == 50.0  # reached at the first evaluation
    assert math.isnan(steps_to_reach(curve, 1.0))


def test_documents_are_cut_to_size_and_pool_splits_are_disjoint(tmp_path: Path) -> None:
    long = "\n".join("x" * 300 for _ in range(20))
    pieces = _sized([Doc("d", "f", long, len(long)), Doc("e", "f", "short", 5)], "dom")
    assert all(MIN_DOC_BYTES <= p.n_bytes <= MAX_DOC_BYTES for p in pieces) and "".join(p.text for p in pieces) == long
    assert {p.source for p in pieces} == {"dom"}
    data = _planted(tmp_path)
    pool = build_pool(data, ref_docs=10, cand_docs=20, bench_docs=5, eval_docs=5)
    assert list(pool.reference) == ["chain", "noise"]
    for name in pool.reference:
        assert not {d.id for d in pool.reference[name]} & {d.id for d in pool.candidates[name]}
    assert len(pool.bench) == 5 and len(pool.evaluation) == 5
    assert not {d.id for d in pool.bench} & {d.id for d in pool.evaluation}
    cands = pool.candidates["chain"] + pool.candidates["noise"]
    assert domain_shares(cands, np.arange(len(cands)) < 20) == {"chain": 1.0, "noise": 0.0}


def _planted(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)

    def enc(texts: list[str]) -> list[list[int]]:
        return [list(t.encode()) for t in texts]

    return make_prepared(
        tmp_path / "planted",
        train={"chain": enc([chain_text(rng, 100) for _ in range(40)]),
               "noise": enc([noise_text(rng, 100) for _ in range(40)]), "target": enc([chain_text(rng, 100)])},
        val={"target": enc([chain_text(rng, 100) for _ in range(12)])})


def test_protocol_runs_end_to_end(tmp_path: Path, in_process: None) -> None:
    from pretrainlab.recipes.preselect_replication import run_protocol

    ctx = ReplicationContext(out=tmp_path / "rep", scale="tiny", seeds=1, jobs=1, data=_planted(tmp_path))
    result = run_protocol(ctx, TOY)
    assert [c.holds in (True, False, None) for c in result.claims] == [True] * 3
    d = result.details
    assert d["shares"]["preselect"]["chain"] == 1.0  # the planted valuable domain
    kept = d["kept_bytes"]
    assert max(kept.values()) - min(kept.values()) <= 100  # equal bytes (within one document)
    assert all(len(c[0]) == 2 for c in d["curves"].values())  # evaluations at steps 1 and 2
    assert (ctx.out / "classifier.npz").is_file() and (ctx.out / "plots" / "target_loss.png").is_file()
    data = json.loads(write_replication(ctx.out, result).read_text())
    assert len(data["claims"]) == 3 and any("Predictive strength" in n for n in data["notes"])
    assert any("100% one source (chain)" in n for n in data["notes"])
