"""replicate quality-filter: the mixed corpus, removal bookkeeping, the claims' rules, a toy end-to-end run."""

from __future__ import annotations

import json
from pathlib import Path

from pretrainlab.recipes.quality_filter_replication import (
    JUNK,
    Scale,
    build_corpus,
    claim_clean_gain,
    claim_rules_separate,
    claim_tradeoff,
    removal_rates,
)
from pretrainlab.science.replication import REPLICATIONS, ReplicationContext, load_builtin_replications, write_replication

from ..data.test_filters import CLEAN

TOY = Scale(train_bytes=20_000, heldout_bytes=2_000, junk_share=0.35, seq_len=32, batch_rows=4, steps=3,
            n_layers=1, d_model=16, n_heads=2, lr=3e-3)


def prose(n: int, tag: str) -> list[str]:
    return [CLEAN.replace("river", f"river {tag}{i}") for i in range(n)]


def test_registered():
    load_builtin_replications()
    assert REPLICATIONS.get("quality-filter").default_seeds == 3


def test_corpus_mixes_junk_at_its_share_and_holds_out_both():
    corpus = build_corpus(TOY, {"a": prose(30, "a"), "b": prose(30, "b")}, "test")
    junk_bytes = sum(len(t.encode()) for t, k in zip(corpus.texts, corpus.kinds) if k.startswith(f"{JUNK}:"))
    total = sum(len(t.encode()) for t in corpus.texts)
    assert 0.3 < junk_bytes / total < 0.45
    assert set(corpus.heldout) == {"a", "b", JUNK} and all(corpus.heldout.values())
    assert not {t for d in ("a", "b") for t in corpus.heldout[d]} & set(corpus.texts)
    assert len({k.split(":")[1] for k in corpus.kinds if k.startswith(f"{JUNK}:")}) >= 5  # many kinds of junk


def test_removal_rates_and_claim_rules():
    kinds = ["a", "a", "junk:x", "junk:x", "junk:y", "b"]
    rates = removal_rates(kinds, {2, 3, 4, 5})
    assert rates["junk"] == 1.0 and rates["real"] == 1 / 3 and rates["by_kind"]["junk:x"] == [2, 2]
    assert not claim_rules_separate(rates).holds  # a third of the real documents lost
    assert claim_rules_separate(removal_rates(kinds, {2, 3, 4})).holds
    assert claim_clean_gain([2.10, 2.20], [2.06, 2.16]).holds
    assert not claim_clean_gain([2.10, 2.20], [2.08, 2.18]).holds
    assert claim_tradeoff([1.0, 1.1], [1.2, 1.3]).holds and not claim_tradeoff([1.2, 1.3], [1.0, 1.1]).holds


def test_protocol_runs_end_to_end(tmp_path: Path, in_process: None, monkeypatch) -> None:
    from pretrainlab.recipes import filter_corpora, quality_filter_replication

    monkeypatch.setattr(filter_corpora, "real_documents", lambda seed=0: ({"a": prose(20, "a"), "b": prose(20, "b")}, "toy"))
    ctx = ReplicationContext(out=tmp_path / "rep", scale="tiny", seeds=1, jobs=1, data=None)
    result = quality_filter_replication.run_protocol(ctx, TOY)
    assert result.claims[0].holds is True  # every generated junk document removed, no real one
    assert all(c.holds in (True, False) for c in result.claims)
    assert result.details["train_bytes"]["quality_filtered"] < result.details["train_bytes"]["unfiltered"]
    assert set(result.details["per_domain_loss"]["unfiltered"]) == {"a", "b", JUNK}
    manifest = json.loads((Path(result.details["data"]["quality_filtered"]) / "manifest.json").read_text())
    assert manifest["filters"][0]["name"] == "quality" and manifest["filters"][0]["removed"] > 0
    data = json.loads(write_replication(ctx.out, result).read_text())
    assert len(data["claims"]) == 3


def test_prepared_replication_data_is_reused_only_when_it_holds_the_same_documents(tmp_path) -> None:
    from pretrainlab.data.prepared import PreparedData
    from pretrainlab.recipes.filter_prepare import prepare_training

    folder = tmp_path / "data" / "unfiltered"
    first = [f"document number {i} with a few words in it" for i in range(40)]
    prepare_training(folder, first)
    fingerprint = PreparedData(folder).fingerprint
    prepare_training(folder, first)  # the same documents: reused as is
    assert PreparedData(folder).fingerprint == fingerprint
    other = [f"another corpus, document {i}, at another scale" for i in range(60)]  # e.g. --scale small, same --out
    prepare_training(folder, other)
    assert PreparedData(folder).fingerprint != fingerprint
    assert PreparedData(folder).manifest["domains"]["text"]["train"]["documents"] + \
        PreparedData(folder).manifest["domains"]["text"]["val"]["documents"] == 60
