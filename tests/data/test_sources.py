"""Sources: each type streams the right documents in a sorted order and hashes what it read."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
import random
import re
import zipfile

import pytest

from pretrainlab.config import HFDiskSource, JsonlSource, ParquetSource, StdlibSource, TextSource, ZipSource
from pretrainlab.data.diagnostics import Diagnostics
from pretrainlab.data.sources import decode_utf8, open_source, resolve_paths, split_documents
from pretrainlab.errors import DataError


def texts(source, diag=None) -> list[str]:
    return [d.text for d in source.documents(diag or Diagnostics())]


@pytest.mark.parametrize(
    ("mode", "text", "expected"),
    [
        ("file", "a\n\nb\n", ["a\n\nb\n"]),
        ("separator", "one<|endoftext|>two<|endoftext|>three", ["one", "two", "three"]),
        ("blank_lines", "p1 l1\np1 l2\n\n  \n\np2\n\np3\n", ["p1 l1\np1 l2", "p2", "p3"]),
        ("line", "x\r\ny\n\nz\n", ["x", "y", "", "z"]),
    ],
)
def test_split_is_independent_of_chunk_boundaries(mode, text, expected):
    assert list(split_documents([text], mode, "<|endoftext|>")) == expected
    for size in (1, 2, 3, 5):
        chunks = [text[i : i + size] for i in range(0, len(text), size)]
        assert list(split_documents(chunks, mode, "<|endoftext|>")) == expected, size


@pytest.mark.parametrize("mode", ["separator", "line", "blank_lines"])
def test_split_on_random_text_matches_the_one_chunk_result(mode):
    rng = random.Random(0)
    pieces = ["a", "b c", "<|endoftext|>", "<|end", "\n", "\r\n", "  ", "\n\n", " \n \n"]
    for _ in range(300):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 25)))
        whole = list(split_documents([text], mode, "<|endoftext|>"))
        if mode == "separator":
            assert whole == [p for i, p in enumerate(text.split("<|endoftext|>")) if p or i < text.count("<|endoftext|>")]
        for size in (1, 3, 7):
            chunks = [text[i : i + size] for i in range(0, len(text), size)]
            assert list(split_documents(chunks, mode, "<|endoftext|>")) == whole, (text, size)


def test_resolve_paths_globs_folders_and_order(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in ("d/b.txt", "d/a.txt", "d/sub/c.txt", "d/.hidden", "d/sub/x.md"):
        (tmp_path / name).write_text(name)
    refs = resolve_paths([str(tmp_path / "d" / "**" / "*.txt")], "src")
    assert [r.rel for r in refs] == ["a.txt", "b.txt", "sub/c.txt"]
    refs = resolve_paths([str(tmp_path / "d"), str(tmp_path / "d" / "a.txt")], "src")  # duplicates dropped
    assert [r.rel for r in refs] == ["a.txt", "b.txt", "sub/c.txt", "sub/x.md"]
    with pytest.raises(DataError, match="does not exist"):
        resolve_paths([str(tmp_path / "nope.txt")], "src")
    with pytest.raises(DataError, match="matches no files"):
        resolve_paths([str(tmp_path / "d" / "*.json")], "src")


def test_text_source_hashes_each_file(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"first<|endoftext|>second")
    (tmp_path / "b.txt").write_bytes(b"third")
    src = open_source(TextSource(domain="t", paths=[str(tmp_path / "*.txt")], split="separator"), 0)
    docs = list(src.documents(Diagnostics()))
    assert [(d.text, d.file.rel, d.index) for d in docs] == [("first", "a.txt", 0), ("second", "a.txt", 1), ("third", "b.txt", 0)]
    assert [r.sha256 for r in src.records] == [
        hashlib.sha256(b"first<|endoftext|>second").hexdigest(),
        hashlib.sha256(b"third").hexdigest(),
    ]
    assert [r.bytes for r in src.records] == [24, 5]


def test_invalid_utf8_is_replaced_and_counted(tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"ok\n\xff\xfe broken\n")
    diag = Diagnostics()
    src = open_source(TextSource(domain="t", paths=[str(tmp_path / "bad.txt")], split="line"), 0)
    assert texts(src, diag) == ["ok", "\ufffd\ufffd broken"]
    assert diag.invalid_utf8_documents["t"] == 1
    assert any("bad.txt" in w and "invalid UTF-8" in w for w in diag.warnings())
    assert decode_utf8(b"a\xffb") == ("a\ufffdb", 1)


def test_jsonl_source_reads_field_and_reports_bad_lines(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"text": "a"}\nnot json\n[1]\n{"body": "b"}\n{"text": 3}\n\n{"text": "c"}\n')
    diag = Diagnostics()
    src = open_source(JsonlSource(domain="j", paths=[str(path)]), 0)
    docs = list(src.documents(diag))
    assert [(d.text, d.index) for d in docs] == [("a", 0), ("c", 6)]
    assert diag.bad_lines["j"] == 4
    (warning,) = diag.warnings()
    assert f"{path}:2: not valid JSON" in warning and "(and 1 more)" in warning
    with pytest.raises(DataError, match=r"x\.jsonl:2: not valid JSON"):
        list(src.documents(Diagnostics(strict=True)))


def test_parquet_source_reads_in_row_batches(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rows = [f"document {i}" for i in range(2500)] + [None]
    pq.write_table(pa.table({"id": list(range(len(rows))), "content": rows}), tmp_path / "p.parquet", row_group_size=700)
    diag = Diagnostics()
    src = open_source(ParquetSource(domain="p", paths=[str(tmp_path / "p.parquet")], text_field="content"), 0)
    assert texts(src, diag) == rows[:-1]
    assert diag.bad_lines["p"] == 1
    assert src.records[0].sha256 == hashlib.sha256((tmp_path / "p.parquet").read_bytes()).hexdigest()
    wrong = open_source(ParquetSource(domain="p", paths=[str(tmp_path / "p.parquet")]), 0)
    with pytest.raises(DataError, match="no column 'text'.*content"):
        texts(wrong)


def test_zip_source_filters_members_in_sorted_order(tmp_path):
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as z:
        z.writestr("corpus/b.txt", "bee")
        z.writestr("corpus/a.txt", "ay")
        z.writestr("corpus/README", "skip me")
    src = open_source(ZipSource(domain="z", paths=[str(tmp_path / "a.zip")], members="corpus/*.txt"), 0)
    docs = list(src.documents(Diagnostics()))
    assert [(d.text, d.file.rel) for d in docs] == [("ay", "a.zip/corpus/a.txt"), ("bee", "a.zip/corpus/b.txt")]
    assert len(src.records) == 1 and src.records[0].bytes == (tmp_path / "a.zip").stat().st_size


def test_stdlib_source_is_code_without_tests():
    src = open_source(StdlibSource(max_files=5), 0)
    docs = list(src.documents(Diagnostics()))
    assert len(docs) == 5 and all(d.file.rel.endswith(".py") for d in docs)
    assert [d.file.rel for d in docs] == sorted(d.file.rel for d in docs)
    everything = open_source(StdlibSource(), 0).files
    rels = [f.rel for f in everything]
    assert "os.py" in rels
    assert not any(
        part in ("test", "tests", "idle_test", "site-packages") for r in rels for part in r.split("/")[:-1]
    )
    assert not any(r.rsplit("/", 1)[-1].startswith("test_") for r in rels)


@pytest.mark.skipif(importlib.util.find_spec("datasets") is None, reason="the optional `datasets` package is not installed")
def test_hf_disk_source(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"text": ["one", "two", "three"]}).save_to_disk(str(tmp_path / "ds"))
    src = open_source(HFDiskSource(domain="h", path=str(tmp_path / "ds")), 0)
    assert texts(src) == ["one", "two", "three"]
    assert src.records


def test_hf_disk_without_datasets_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if it were not installed: import fails
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "dataset_info.json").write_text(json.dumps({}))
    src = open_source(HFDiskSource(domain="h", path=str(tmp_path / "ds")), 0)
    with pytest.raises(DataError, match=r"pip install pretrainlab\[datasets\]"):
        texts(src)


def test_zip_skips_macos_resource_forks_and_hidden_members(tmp_path):
    import zipfile

    from pretrainlab.config import ZipSource

    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("docs/one.txt", "one")
        z.writestr("__MACOSX/docs/._one.txt", b"\x00\x05\x16\x07binary")
        z.writestr("docs/.hidden.txt", "hidden")
    src = open_source(ZipSource(domain="z", paths=[str(path)]), 0)
    assert texts(src) == ["one"]


def test_blank_lines_split_handles_crlf():
    from pretrainlab.data.sources import split_documents

    assert list(split_documents(iter(["a\r\n\r\nb\r\n\r\nc\r\n"]), "blank_lines", "")) == ["a", "b", "c"]


@pytest.mark.parametrize("suffix", [".gz", ".bz2", ".xz"])
def test_compressed_jsonl_and_text_files_are_read(tmp_path: Path, suffix: str) -> None:
    import bz2
    import gzip
    import lzma

    from pretrainlab.data.sources import open_stream

    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}[suffix]
    payload = b'{"text": "first"}\n{"text": "second"}\n'
    path = tmp_path / f"docs.jsonl{suffix}"
    with opener(path, "wb") as f:
        f.write(payload)
    with open_stream(path, path.name) as f:
        assert list(f) == payload.splitlines(keepends=True)
    broken = tmp_path / f"broken.jsonl{suffix}"
    broken.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(DataError, match=f"broken.jsonl{re.escape(suffix)}: not a readable"):
        with open_stream(broken, broken.name) as f:
            f.read()
