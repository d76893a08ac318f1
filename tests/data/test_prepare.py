"""prepare(): a complete, reproducible prepared folder; whole-document validation; atomic output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pretrainlab.config import PrepareConfig, validate
from pretrainlab.data.prepare import prepare
from pretrainlab.data.prepared import PreparedData
from pretrainlab.errors import DataError


def config(tmp_path: Path, **tree) -> PrepareConfig:
    tree.setdefault("output", str(tmp_path / "out"))
    tree.setdefault("tokenizer", {"kind": "bytes"})
    return validate(PrepareConfig, tree)


def docs_of(data: PreparedData, domain: str, split: str) -> list[str]:
    shard = data.shard(domain, split)
    out = []
    for i in range(shard.n_docs):
        toks = shard.tokens[shard.offsets[i] : shard.offsets[i + 1]]
        assert int(toks[-1]) == data.eot_id
        out.append(data.tokenizer.decode(toks[:-1]))
    return out


def make_corpus(root: Path, n_files: int = 6, docs_per_file: int = 20) -> list[str]:
    root.mkdir(parents=True, exist_ok=True)
    all_docs = []
    for f in range(n_files):
        docs = [f"file {f} story {i}: once upon a time " + "word " * (i % 7) for i in range(docs_per_file)]
        (root / f"f{f:02d}.txt").write_text("<|endoftext|>".join(docs))
        all_docs += docs
    return all_docs


def test_two_domains_end_to_end(tmp_path, capsys):
    stories = make_corpus(tmp_path / "stories")
    (tmp_path / "code.jsonl").write_text("\n".join(json.dumps({"text": f"x = {i}\n"}) for i in range(30)))
    cfg = config(
        tmp_path,
        sources=[
            {"type": "text", "domain": "stories", "paths": [str(tmp_path / "stories" / "*.txt")], "split": "separator"},
            {"type": "jsonl", "domain": "code", "paths": [str(tmp_path / "code.jsonl")]},
        ],
        validation={"fraction": 0.2, "seed": 1},
        batch_bytes=500,  # many batches through the reader thread
    )
    out = prepare(cfg, progress=False)
    assert out == tmp_path / "out"
    data = PreparedData(out)
    assert sorted(data.domains) == ["code", "stories"]
    train, val = docs_of(data, "stories", "train"), docs_of(data, "stories", "val")
    assert sorted(train + val) == sorted(stories) and not set(train) & set(val)  # whole documents, each once
    assert 0 < len(val) < len(stories) * 0.4
    entry = data.manifest["domains"]["stories"]
    assert entry["train"]["bytes"] + entry["val"]["bytes"] == sum(len(d.encode()) for d in stories)
    assert [s["path"] for s in entry["sources"]] == [str(tmp_path / "stories" / f"f{f:02d}.txt") for f in range(6)]
    assert sorted(docs_of(data, "code", "train") + docs_of(data, "code", "val")) == sorted(f"x = {i}\n" for i in range(30))
    assert set(data.manifest["timing"]) == {"code", "stories"}
    assert "output" not in data.manifest["config"]
    printed = capsys.readouterr().out
    assert "stories" in printed and "bytes/token" in printed


def test_identical_inputs_give_identical_folders(tmp_path):
    make_corpus(tmp_path / "c", n_files=4)
    outs = []
    for name in ("a", "b"):
        cfg = config(
            tmp_path,
            output=str(tmp_path / name),
            sources=[{"type": "text", "domain": "d", "paths": [str(tmp_path / "c")], "split": "separator"}],
            tokenizer={"kind": "bpe", "vocab_size": 300, "train_sample_bytes": 3000},
            validation={"fraction": 0.1},
            batch_bytes=700 if name == "a" else 100_000,  # batching must not change the bytes
        )
        outs.append(prepare(cfg, progress=False))
    a, b = outs
    for rel in ("tokenizer.json", "d/train.bin", "d/train.idx", "d/train.bytes", "d/val.bin", "d/val.idx"):
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    ma, mb = (json.loads((p / "manifest.json").read_text()) for p in (a, b))
    ma.pop("timing"), mb.pop("timing")
    ma["config"].pop("batch_bytes"), mb["config"].pop("batch_bytes")
    assert ma["fingerprint"] != "" and {k: v for k, v in ma.items() if k != "fingerprint"} == {
        k: v for k, v in mb.items() if k != "fingerprint"
    }
    assert PreparedData(a).tokenizer.kind == "bpe" and PreparedData(a).vocab_size == 300


def test_same_config_same_fingerprint(tmp_path):
    make_corpus(tmp_path / "c", n_files=2)
    fps = []
    for name in ("a", "b"):
        cfg = config(tmp_path, output=str(tmp_path / name), sources=[{"type": "text", "domain": "d", "paths": [str(tmp_path / "c")]}])
        fps.append(PreparedData(prepare(cfg, progress=False)).fingerprint)
    assert fps[0] == fps[1]


def test_named_validation_files_go_whole_to_val(tmp_path, capsys):
    make_corpus(tmp_path / "c", n_files=3, docs_per_file=5)
    cfg = config(
        tmp_path,
        sources=[{"type": "text", "domain": "d", "paths": [str(tmp_path / "c" / "*.txt")], "split": "separator"}],
        validation={"fraction": 0.0, "files": [str(tmp_path / "c" / "f01.txt"), "*/nothing-*.txt"]},
    )
    data = PreparedData(prepare(cfg, progress=False))
    assert all(d.startswith("file 1 ") for d in docs_of(data, "d", "val")) and len(docs_of(data, "d", "val")) == 5
    assert not any(d.startswith("file 1 ") for d in docs_of(data, "d", "train"))
    assert "'*/nothing-*.txt' matched none" in capsys.readouterr().err


def test_empty_validation_split_is_a_warning(tmp_path, capsys):
    (tmp_path / "one.txt").write_text("a single document")
    cfg = config(tmp_path, sources=[{"type": "text", "domain": "d", "paths": [str(tmp_path / "one.txt")]}])
    data = PreparedData(prepare(cfg, progress=False))
    assert data.manifest["domains"]["d"]["val"]["documents"] == 0
    assert "domain 'd' has no validation documents" in capsys.readouterr().err


def test_max_documents_and_stdlib(tmp_path):
    cfg = config(tmp_path, sources=[{"type": "stdlib", "max_files": 3, "max_documents": 2}], validation={"fraction": 0})
    data = PreparedData(prepare(cfg, progress=False))
    assert data.manifest["domains"]["code"]["train"]["documents"] == 2
    assert data.shard("code", "train").n_tokens > 2


def test_existing_output_needs_overwrite(tmp_path):
    (tmp_path / "a.txt").write_text("first version")
    cfg = config(tmp_path, sources=[{"type": "text", "domain": "d", "paths": [str(tmp_path / "a.txt")]}])
    prepare(cfg, progress=False)
    with pytest.raises(DataError, match="already exists") as e:
        prepare(cfg, progress=False)
    assert "overwrite=true" in str(e.value)
    (tmp_path / "a.txt").write_text("second version!")
    cfg.overwrite = True
    data = PreparedData(prepare(cfg, progress=False))
    assert docs_of(data, "d", "train") == ["second version!"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "out"]


def test_failure_midway_leaves_no_folder(tmp_path):
    make_corpus(tmp_path / "c", n_files=2)
    (tmp_path / "late.jsonl").write_text('{"text": "fine"}\n{oops\n')
    cfg = config(
        tmp_path,
        sources=[
            {"type": "text", "domain": "d", "paths": [str(tmp_path / "c")]},
            {"type": "jsonl", "domain": "j", "paths": [str(tmp_path / "late.jsonl")]},
        ],
        strict=True,
    )
    with pytest.raises(DataError, match=r"late\.jsonl:2"):
        prepare(cfg, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "late.jsonl"]
    # the same failure with an old folder in place keeps the old folder untouched
    (tmp_path / "late.jsonl").write_text('{"text": "fine"}\n')
    prepare(cfg, progress=False)
    before = (tmp_path / "out" / "manifest.json").read_bytes()
    (tmp_path / "late.jsonl").write_text('{"text": "fine"}\n{oops\n')
    cfg.overwrite = True
    with pytest.raises(DataError):
        prepare(cfg, progress=False)
    assert (tmp_path / "out" / "manifest.json").read_bytes() == before


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs a named pipe to hold prepare mid-run")
def test_killed_prepare_leaves_nothing_that_looks_finished(tmp_path):
    (tmp_path / "a.txt").write_text("some text")
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)  # reading it blocks: prepare is mid-run for as long as we like
    cfg_path = tmp_path / "prep.yaml"
    cfg_path.write_text(
        json.dumps(
            {
                "sources": [{"type": "text", "domain": "d", "paths": [str(tmp_path / "a.txt"), str(fifo)]}],
                "tokenizer": {"kind": "bytes"},
                "output": str(tmp_path / "out"),
            }
        )
    )
    proc = subprocess.Popen([sys.executable, "-m", "pretrainlab", "prepare", str(cfg_path), "--no-progress"])
    try:
        deadline = time.time() + 60
        while not list(tmp_path.glob("out.tmp-*")) and time.time() < deadline:
            time.sleep(0.05)
        assert list(tmp_path.glob("out.tmp-*")), "prepare never started"
        time.sleep(0.2)
    finally:
        proc.kill()
        proc.wait()
    assert not (tmp_path / "out").exists()
    with pytest.raises(DataError):
        PreparedData(tmp_path / "out")
    fifo.unlink()
    (tmp_path / "pipe.txt").write_text("now a file")
    data = PreparedData(prepare(validate(PrepareConfig, json.loads(cfg_path.read_text())), progress=False))
    assert sorted(docs_of(data, "d", "train")) == ["now a file", "some text"]
    assert not list(tmp_path.glob("out.tmp-*")), "the stale temporary folder was not cleaned up"


def test_bpe_tokens_decode_to_the_documents(tmp_path):
    corpus = make_corpus(tmp_path / "c", n_files=2, docs_per_file=10)
    cfg = config(
        tmp_path,
        sources=[{"type": "text", "domain": "d", "paths": [str(tmp_path / "c")], "split": "separator"}],
        tokenizer={"kind": "bpe", "vocab_size": 300},
        validation={"fraction": 0},
    )
    data = PreparedData(prepare(cfg, progress=False))
    assert docs_of(data, "d", "train") == corpus
    assert data.dtype == np.uint16
    entry = data.manifest["domains"]["d"]["train"]
    assert entry["tokens"] < entry["bytes"]  # the BPE compresses
