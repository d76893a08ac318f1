"""The filter chain in `prepare`: applied before the validation split, deterministic and reproducible,
reported in the manifest, removed.jsonl and the summary; the tokenizer learns from filtered text; config
errors name the field."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from pretrainlab.config import FilterConfig, PrepareConfig, validate
from pretrainlab.data.filters.chain import FilterChain
from pretrainlab.data.prepare import prepare
from pretrainlab.data.prepared import PreparedData
from pretrainlab.errors import ConfigError, DataError

from .test_filters import CLEAN, made_up_words


def docs_of(data: PreparedData, domain: str, split: str) -> list[str]:
    shard = data.shard(domain, split)
    return [data.tokenizer.decode(shard.tokens[shard.offsets[i] : shard.offsets[i + 1] - 1]) for i in range(shard.n_docs)]


def web_corpus(path: Path, seed: int = 0) -> tuple[list[str], set[int]]:
    """JSONL of 60 distinct prose-like documents, junk ones (too short) and near-duplicate copies; returns the
    texts and the line numbers a quality + dedup chain should remove."""
    rng = random.Random(seed)
    vocab = made_up_words(rng, 3000)
    texts, junk, prose = [], set(), []
    for i in range(60):
        prose.append(len(texts))
        texts.append("The " + " ".join(rng.choice(vocab) for _ in range(300)) + " and the end of it.")
        if i % 10 == 9:
            texts.append("buy now")
            junk.add(len(texts) - 1)
        if i % 6 == 5:  # a copy of an earlier document with two words changed (word 5-gram Jaccard 0.93)
            words = texts[prose[i - 3]].split()
            words[5], words[150] = "changed", "words"
            texts.append(" ".join(words))
            junk.add(len(texts) - 1)
    path.write_text("\n".join(json.dumps({"text": t}) for t in texts) + "\n")
    return texts, junk


def config(tmp_path: Path, filters: list, **tree) -> PrepareConfig:
    tree.setdefault("output", str(tmp_path / "out"))
    tree.setdefault("tokenizer", {"kind": "bytes"})
    tree.setdefault("validation", {"fraction": 0.3, "seed": 3})
    tree.setdefault("sources", [{"type": "jsonl", "domain": "web", "paths": [str(tmp_path / "web.jsonl")]}])
    return validate(PrepareConfig, {**tree, "filters": filters})


QUALITY_DEDUP = [{"name": "quality", "options": {"min_words": 20}}, {"name": "minhash_dedup"}]


def test_chain_removes_junk_and_near_duplicates_across_splits_reproducibly(tmp_path, capsys):
    texts, junk = web_corpus(tmp_path / "web.jsonl")
    out = prepare(config(tmp_path, QUALITY_DEDUP), progress=False)
    data = PreparedData(out)
    kept = docs_of(data, "web", "train") + docs_of(data, "web", "val")
    assert sorted(kept) == sorted(t for i, t in enumerate(texts) if i not in junk)  # no copy left in any split
    removed = [json.loads(line) for line in (out / "removed.jsonl").read_text().splitlines()]
    assert {r["index"] for r in removed} == junk
    assert {r["reason"] for r in removed} == {"min_words", "near_duplicate"}
    stats = data.manifest["filters"]
    assert [f["name"] for f in stats] == ["quality", "minhash_dedup"]
    assert stats[0]["seen"] == len(texts) and stats[0]["reasons"] == {"min_words": 6}
    assert stats[1]["seen"] == len(texts) - 6 and stats[1]["removed"] == len(junk) - 6  # removed docs go no further
    assert stats[0]["removed_bytes"] == 6 * len("buy now")
    example = stats[1]["examples"]["near_duplicate"][0]
    assert example["file"].endswith("web.jsonl") and example["text"].startswith("The ") and len(example["text"]) <= 200
    assert stats[0]["by_domain"] == {"web": {"seen": len(texts), "removed": 6}}
    printed = capsys.readouterr().out
    assert "document filters" in printed and "near_duplicate" in printed and "min_words" in printed

    again = prepare(config(tmp_path, QUALITY_DEDUP, output=str(tmp_path / "again")), progress=False)
    assert (again / "removed.jsonl").read_bytes() == (out / "removed.jsonl").read_bytes()
    assert PreparedData(again).fingerprint == data.fingerprint


def test_filters_apply_only_to_their_domains_and_max_documents_counts_kept(tmp_path):
    web_corpus(tmp_path / "web.jsonl")
    (tmp_path / "notes.jsonl").write_text("\n".join(json.dumps({"text": f"note {i}"}) for i in range(10)) + "\n")
    sources = [{"type": "jsonl", "domain": "web", "paths": [str(tmp_path / "web.jsonl")], "max_documents": 20},
               {"type": "jsonl", "domain": "notes", "paths": [str(tmp_path / "notes.jsonl")]}]
    cfg = config(tmp_path, [{"name": "quality", "options": {"min_words": 20}, "domains": ["web"]}], sources=sources)
    data = PreparedData(prepare(cfg, progress=False))
    entry = data.manifest["domains"]
    assert entry["web"]["train"]["documents"] + entry["web"]["val"]["documents"] == 20  # 20 kept, junk skipped
    assert entry["notes"]["train"]["documents"] + entry["notes"]["val"]["documents"] == 10  # short, but not filtered
    assert set(data.manifest["filters"][0]["by_domain"]) == {"web"}


def test_tokenizer_is_trained_on_filtered_text(tmp_path):
    rng = random.Random(1)
    vocab = made_up_words(rng, 400)
    lines = [" ".join(rng.choice(vocab) for _ in range(60)) for _ in range(40)]
    lines += ["qqxqqxqqx " * 300] * 3  # a removed document that would dominate BPE merges
    (tmp_path / "web.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in lines) + "\n")
    (tmp_path / "bad.txt").write_text("qqxqqxqqx\n")
    tokenizer = {"kind": "bpe", "vocab_size": 300}
    base = prepare(config(tmp_path, [], tokenizer=tokenizer, output=str(tmp_path / "base")), progress=False)
    assert "qqxqqxqqx" in "".join(json.loads((base / "tokenizer.json").read_text())["model"]["vocab"])
    cfg = config(tmp_path, [{"name": "toxicity", "options": {"wordlist": str(tmp_path / "bad.txt")}}], tokenizer=tokenizer)
    out = prepare(cfg, progress=False)
    assert "qqx" not in "".join(json.loads((out / "tokenizer.json").read_text())["model"]["vocab"])


def test_a_filter_removing_a_whole_domain_is_a_data_error(tmp_path):
    web_corpus(tmp_path / "web.jsonl")
    with pytest.raises(DataError, match=r"removed every document of domain 'web'.*filters\.0 'quality' removed \d+ "
                                        r"\(min_words \d+\)") as e:
        prepare(config(tmp_path, [{"name": "quality", "options": {"min_words": 10_000}}]), progress=False)
    assert "filters.<i>.domains" in str(e.value)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("out.tmp-*"))


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"filters\.1\.name='qualty' is not a known document filter; did you mean "
                                          r"'quality'\? \(valid: .*minhash_dedup.*quality.*toxicity"):
        FilterChain([FilterConfig(name="toxicity"), FilterConfig(name="qualty")], ["web"])
    with pytest.raises(ConfigError, match=r"filters\.0\.options\.max_words must be an integer"):
        FilterChain([FilterConfig(name="quality", options={"max_words": "many"})], ["web"])
    with pytest.raises(ConfigError, match=r"filters\.0\.domains: 'wbe' is not a domain of the sources \(they have: web"):
        FilterChain([FilterConfig(name="quality", domains=["wbe"])], ["web", "code"])


def test_chain_stops_at_the_first_removal_and_resets():
    chain = FilterChain([FilterConfig(name="toxicity"), FilterConfig(name="minhash_dedup")], ["web"])
    rude = CLEAN + " shit"
    assert chain.check("web", CLEAN) and not chain.check("web", CLEAN) and not chain.check("web", rude)
    assert [s.seen for s in chain.stats] == [3, 2] and [s.removed for s in chain.stats] == [1, 1]
    assert [(r.filter_index, r.reason) for r in chain.removed] == [(1, "near_duplicate"), (0, "toxic_words")]
    chain.reset()
    assert chain.check("web", CLEAN) and chain.removed == [] and chain.stats[0].seen == 1


def test_the_shipped_example_config_builds_its_chain():
    from pretrainlab.config import load_yaml

    cfg = validate(PrepareConfig, load_yaml(Path(__file__).resolve().parents[2] / "configs" / "prepare_filters.yaml"))
    chain = FilterChain(cfg.filters, [s.domain for s in cfg.sources])
    assert chain.names == ["quality", "toxicity", "minhash_dedup"]
