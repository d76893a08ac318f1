"""replicate dedup: the planted corpus, the dedup bookkeeping, the claims' rules, and a toy end-to-end run."""

from __future__ import annotations

import json
from pathlib import Path

from pretrainlab.recipes.dedup_replication import (
    REPEATED,
    Scale,
    build_corpora,
    claim_dedup_catches,
    claim_dedup_recovers,
    claim_duplicates_hurt,
    dedup_quality,
)
from pretrainlab.science.replication import REPLICATIONS, ReplicationContext, load_builtin_replications, write_replication

TOY = Scale(train_bytes=30_000, heldout_bytes=2_000, dup_fraction=0.2, copies=3, seq_len=32, batch_rows=4, steps=3,
            n_layers=1, d_model=16, n_heads=2, lr=3e-3)


def docs(n: int, prefix: str) -> list[str]:
    """Distinct documents: word j of document i is unique to (prefix, i, j) half of the time."""
    return [f"{prefix} document {i}: " + " ".join(f"{prefix}{(i * 7 + j) % 97}x{j % 2 * i}" for j in range(120))
            for i in range(n)]


def test_registered():
    load_builtin_replications()
    assert REPLICATIONS.get("dedup").default_seeds == 3


def test_corpora_plant_copies_of_training_documents_only():
    corpora = build_corpora(TOY, {"a": docs(40, "a"), "b": docs(40, "b")}, "test")
    assert set(corpora.heldout) == {"a", "b", REPEATED}
    held = {t for d in ("a", "b") for t in corpora.heldout[d]}
    assert held and not held & set(corpora.clean)  # held-out text is never trained on
    originals = sorted({c for c in corpora.cluster if c >= 0})
    assert len(originals) == round(TOY.dup_fraction * len(corpora.clean))
    assert len(corpora.duplicated) == len(corpora.clean) * 1 + len(originals) * TOY.copies
    assert all(corpora.cluster.count(c) == TOY.copies + 1 for c in originals)
    assert corpora.heldout[REPEATED] == [corpora.clean[c] for c in originals]
    again = build_corpora(TOY, {"a": docs(40, "a"), "b": docs(40, "b")}, "test")
    assert again.duplicated == corpora.duplicated  # seeded


def test_dedup_quality_counts_clusters_and_false_removals():
    cluster = [-1, 0, 0, 0, -1, 5, 5]
    q = dedup_quality(cluster, removed={2, 3, 6})
    assert q["recall"] == 1.0 and q["false_rate"] == 0.0 and q["clusters_to_one"] == 1.0 and q["planted"] == 3
    q = dedup_quality(cluster, removed={1, 4})  # one of three copies, and a lone document
    assert q["recall"] == 1 / 3 and q["false_rate"] == 0.5 and q["clusters_to_one"] == 0.0


def test_claim_rules_flip_at_their_thresholds():
    assert claim_dedup_catches({"recall": 0.96, "false_rate": 0.0, "clusters_to_one": 1.0, "planted": 9}).holds
    assert not claim_dedup_catches({"recall": 0.94, "false_rate": 0.0, "clusters_to_one": 1.0, "planted": 9}).holds
    assert not claim_dedup_catches({"recall": 1.0, "false_rate": 0.02, "clusters_to_one": 1.0, "planted": 9}).holds
    assert claim_duplicates_hurt([2.0, 2.1], [2.03, 2.12]).holds
    assert not claim_duplicates_hurt([2.0, 2.1], [2.01, 2.11]).holds
    assert claim_dedup_recovers([2.0], [2.1], [2.04]).holds  # 60% of the gap won back
    assert not claim_dedup_recovers([2.0], [2.1], [2.06]).holds
    assert claim_dedup_recovers([2.0], [1.9], [1.95]).holds is None  # the duplicates did not hurt: not measurable


def test_protocol_runs_end_to_end(tmp_path: Path, in_process: None, monkeypatch) -> None:
    from pretrainlab.recipes import dedup_replication, filter_corpora

    monkeypatch.setattr(filter_corpora, "real_documents", lambda seed=0: ({"a": docs(30, "a"), "b": docs(30, "b")}, "toy"))
    ctx = ReplicationContext(out=tmp_path / "rep", scale="tiny", seeds=1, jobs=1, data=None)
    result = dedup_replication.run_protocol(ctx, TOY)
    assert result.details["dedup"]["recall"] >= 0.9 and result.details["dedup"]["false_rate"] == 0.0
    assert all(c.holds in (True, False, None) for c in result.claims)
    assert set(result.details["heldout_loss"]) == {"clean", "duplicated", "deduplicated"}
    assert result.details["train_bytes"]["duplicated"] > result.details["train_bytes"]["clean"]
    manifest = json.loads((Path(result.details["data"]["deduplicated"]) / "manifest.json").read_text())
    assert manifest["filters"][0]["name"] == "minhash_dedup" and manifest["filters"][0]["removed"] > 0
    data = json.loads(write_replication(ctx.out, result).read_text())
    assert len(data["claims"]) == 3 and any("memorisation" in n for n in data["notes"])
    assert any("pilot run" in n for n in data["notes"])  # the edit rate chosen after a pilot is said in the report
