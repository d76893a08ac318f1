"""The `hf` source (local files through Hugging Face `datasets`) and `hf_disk`: the same documents, tokens and
validation split as the native sources on the same files, offline, nothing written to the home folder, and one
clear error for a missing package, file or field."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import pytest

pytest.importorskip("datasets")
pa = pytest.importorskip("pyarrow")
import pyarrow.parquet as pq  # noqa: E402

from pretrainlab.config import HFDatasetSource, PrepareConfig, validate  # noqa: E402
from pretrainlab.data.diagnostics import Diagnostics  # noqa: E402
from pretrainlab.data.prepare import prepare  # noqa: E402
from pretrainlab.data.sources import open_source  # noqa: E402
from pretrainlab.errors import DataError  # noqa: E402

TEXTS = [f"document {i}: " + "the quick brown fox " * (i % 5) + ("ünïcode" if i % 3 == 0 else "") for i in range(60)]


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any connection attempt fails the test: the sources must work offline."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def write_files(root: Path) -> dict[str, Path]:
    """The same documents as JSON Lines (two files), Parquet (two files, small row groups) and CSV."""
    root.mkdir(parents=True, exist_ok=True)
    halves = (TEXTS[:35], TEXTS[35:])
    paths = {}
    for i, half in enumerate(halves):
        (root / f"part{i}.jsonl").write_text("".join(json.dumps({"id": n, "text": t}) + "\n" for n, t in enumerate(half)))
        pq.write_table(pa.table({"id": list(range(len(half))), "text": half}), root / f"part{i}.parquet", row_group_size=8)
        with open(root / f"part{i}.csv", "w", encoding="utf-8", newline="") as f:
            import csv

            w = csv.writer(f)
            w.writerow(["id", "text"])
            w.writerows(enumerate(half))
    paths.update(jsonl=root / "*.jsonl", parquet=root / "*.parquet", csv=root / "*.csv")
    return paths


def run_prepare(tmp_path: Path, name: str, source: dict, **tree) -> dict:
    tree.setdefault("tokenizer", {"kind": "bytes"})
    cfg = validate(
        PrepareConfig,
        {"sources": [{"domain": "web", **source}], "output": str(tmp_path / "out" / name),
         "validation": {"fraction": 0.2, "seed": 3}, **tree},
    )
    prepare(cfg, progress=False)
    return json.loads((tmp_path / "out" / name / "manifest.json").read_text())["domains"]["web"]


def split_counts(domain: dict) -> dict:
    return {s: {k: domain[s][k] for k in ("documents", "tokens", "bytes", "sha256")} for s in ("train", "val")}


def texts(source, diag=None) -> list[str]:
    return [d.text for d in source.documents(diag or Diagnostics())]


@pytest.mark.parametrize(("fmt", "native"), [("json", "jsonl"), ("parquet", "parquet")])
def test_prepare_matches_the_native_source(tmp_path, fmt, native):
    paths = write_files(tmp_path / "in")
    files = [str(paths[native])]
    tok = {"kind": "bpe", "vocab_size": 300, "min_frequency": 1}
    ours = run_prepare(tmp_path, "hf", {"type": "hf", "format": fmt, "paths": files}, tokenizer=tok)
    theirs = run_prepare(tmp_path, "native", {"type": native, "paths": files}, tokenizer=tok)
    assert split_counts(ours) == split_counts(theirs)  # same documents, same split, same tokens
    assert ours["train"]["documents"] + ours["val"]["documents"] == len(TEXTS)
    assert ours["val"]["documents"] > 0
    assert [s["sha256"] for s in ours["sources"]] == [s["sha256"] for s in theirs["sources"]]


def test_csv_and_non_streaming_give_the_same_tokens(tmp_path):
    paths = write_files(tmp_path / "in")
    jsonl = run_prepare(tmp_path, "jsonl", {"type": "jsonl", "paths": [str(paths["jsonl"])]}, validation={"fraction": 0.0})
    csv = run_prepare(tmp_path, "csv", {"type": "hf", "format": "csv", "paths": [str(paths["csv"])]}, validation={"fraction": 0.0})
    assert split_counts(csv)["train"] == split_counts(jsonl)["train"]
    cached = run_prepare(
        tmp_path, "cached", {"type": "hf", "format": "parquet", "paths": [str(paths["parquet"])], "streaming": False},
        validation={"fraction": 0.0},
    )
    assert split_counts(cached)["train"] == split_counts(jsonl)["train"]


def test_save_to_disk_folder_through_prepare(tmp_path):
    import datasets

    paths = write_files(tmp_path / "in")
    datasets.Dataset.from_dict({"text": TEXTS, "n": list(range(len(TEXTS)))}).save_to_disk(str(tmp_path / "saved"))
    saved = run_prepare(tmp_path, "saved", {"type": "hf_disk", "path": str(tmp_path / "saved")}, validation={"fraction": 0.0})
    jsonl = run_prepare(tmp_path, "jsonl", {"type": "jsonl", "paths": [str(paths["jsonl"])]}, validation={"fraction": 0.0})
    assert split_counts(saved)["train"] == split_counts(jsonl)["train"]


def test_cli_prepare_end_to_end(tmp_path, capsys):
    from pretrainlab.cli import main

    paths = write_files(tmp_path / "in")
    cfg = tmp_path / "prepare.yaml"
    cfg.write_text(
        f"sources:\n  - type: hf\n    format: parquet\n    domain: web\n    paths: [{json.dumps(str(paths['parquet']))}]\n"
        f"tokenizer: {{kind: bytes}}\noutput: {json.dumps(str(tmp_path / 'out'))}\n"
    )
    assert main(["prepare", str(cfg), "--no-progress"]) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    web = manifest["domains"]["web"]
    assert web["train"]["documents"] + web["val"]["documents"] == len(TEXTS)
    assert len(web["sources"]) == 2


READ_SCRIPT = """
import json, socket, sys

def refuse(*args, **kwargs):
    raise AssertionError(f"network access attempted: {args}")

socket.socket.connect = refuse
socket.create_connection = refuse
from pretrainlab.config import HFDatasetSource  # datasets is imported by the read, with this HOME
from pretrainlab.data.diagnostics import Diagnostics
from pretrainlab.data.sources import open_source

out = {}
for fmt, pattern in json.loads(sys.argv[1]):
    src = open_source(HFDatasetSource(domain="w", format=fmt, paths=[pattern]), 0)
    out[fmt] = {"texts": [d.text for d in src.documents(Diagnostics())], "files": [r.path for r in src.records]}
print(json.dumps(out))
"""


def test_streaming_is_offline_and_writes_nothing_to_home(tmp_path):
    """In a fresh process whose HOME, HF_HOME and XDG cache are an empty folder (so `datasets` and
    `huggingface_hub` take their cache paths from it at import): reading every format leaves it empty."""
    import subprocess

    home = tmp_path / "home"
    home.mkdir()
    paths = write_files(tmp_path / "in")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "XDG_", "TRANSFORMERS_"))}
    env.update(HOME=str(home), HF_HOME=str(home / ".cache" / "huggingface"), XDG_CACHE_HOME=str(home / ".cache"),
               PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[2] / "src"), env.get("PYTHONPATH", "")]))
    jobs = [(fmt, str(paths[key])) for fmt, key in (("parquet", "parquet"), ("json", "jsonl"), ("csv", "csv"))]
    done = subprocess.run([sys.executable, "-c", READ_SCRIPT, json.dumps(jobs)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    for fmt, key in (("parquet", "parquet"), ("json", "jsonl"), ("csv", "csv")):
        assert got[fmt]["texts"] == TEXTS, fmt
        assert got[fmt]["files"] == [str(tmp_path / "in" / f"part{i}.{key}") for i in (0, 1)]
    assert list(home.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "in"]  # nothing in the current folder either


def test_offline_mode_is_set_only_around_the_reads(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    paths = write_files(tmp_path / "in")
    src = open_source(HFDatasetSource(domain="w", format="parquet", paths=[str(paths["parquet"])]), 0)
    assert texts(src) == TEXTS
    assert "HF_DATASETS_OFFLINE" not in os.environ


def test_text_format_gives_one_document_per_line(tmp_path):
    (tmp_path / "b.txt").write_text("third\n")
    (tmp_path / "a.txt").write_text("first\n\nsecond\n")
    src = open_source(HFDatasetSource(domain="t", format="text", paths=[str(tmp_path / "*.txt")]), 0)
    docs = list(src.documents(Diagnostics()))
    assert [(d.text, d.file.rel, d.index) for d in docs] == [
        ("first", "a.txt", 0), ("", "a.txt", 1), ("second", "a.txt", 2), ("third", "b.txt", 0)
    ]  # empty lines are documents here; prepare skips and counts them as empty


def test_non_string_values_are_skipped_and_counted(tmp_path):
    pq.write_table(pa.table({"text": ["a", None, "b"]}), tmp_path / "n.parquet")
    (tmp_path / "m.jsonl").write_text('{"text": "x"}\n{"text": 5}\n{"text": null}\n{"text": "y"}\n')
    (tmp_path / "c.csv").write_text("text,n\nhello,1\n,2\nworld,3\n")
    diag = Diagnostics()
    for fmt, name, expected in (("parquet", "n.parquet", ["a", "b"]), ("json", "m.jsonl", ["x", "y"]),
                                ("csv", "c.csv", ["hello", "world"])):
        src = open_source(HFDatasetSource(domain="d", format=fmt, paths=[str(tmp_path / name)]), 0)
        assert texts(src, diag) == expected
    assert diag.bad_lines["d"] == 4
    warnings = "\n".join(diag.warnings())
    assert f"{tmp_path / 'm.jsonl'}: skipped 2 bad row(s): row 2: 'text' is int, not a string; row 3:" in warnings
    assert f"{tmp_path / 'n.parquet'}: skipped 1 bad row(s): row 2: 'text' is null" in warnings
    with pytest.raises(DataError, match=r"n\.parquet: row 2: 'text' is null, not a string[\s\S]*remove that row"):
        texts(open_source(HFDatasetSource(domain="d", format="parquet", paths=[str(tmp_path / "n.parquet")]), 0),
              Diagnostics(strict=True))


def test_max_documents(tmp_path):
    paths = write_files(tmp_path / "in")
    web = run_prepare(tmp_path, "few", {"type": "hf", "format": "parquet", "paths": [str(paths["parquet"])],
                                         "max_documents": 7}, validation={"fraction": 0.0})
    assert web["train"]["documents"] == 7


def test_missing_field_names_it_and_the_columns(tmp_path):
    paths = write_files(tmp_path / "in")
    for fmt, key in (("parquet", "parquet"), ("json", "jsonl"), ("csv", "csv")):
        src = open_source(HFDatasetSource(domain="w", format=fmt, paths=[str(paths[key])], text_field="body"), 0)
        with pytest.raises(DataError, match=r"part0\.\w+: no column 'body' \(it has: id, text\)") as e:
            texts(src)
        assert "sources[0].text_field" in str(e.value)


def test_missing_file_and_wrong_format(tmp_path):
    with pytest.raises(DataError, match=r"sources\[0\] \(hf parquet.*nope\.parquet' does not exist"):
        open_source(HFDatasetSource(domain="w", format="parquet", paths=[str(tmp_path / "nope.parquet")]), 0)
    with pytest.raises(DataError, match="matches no files"):
        open_source(HFDatasetSource(domain="w", format="json", paths=[str(tmp_path / "*.jsonl")]), 0)
    (tmp_path / "x.jsonl").write_text('{"text": "a"}\n')
    src = open_source(HFDatasetSource(domain="w", format="parquet", paths=[str(tmp_path / "x.jsonl")]), 0)
    with pytest.raises(DataError, match=r"x\.jsonl: not readable as parquet"):
        texts(src)


def test_without_datasets_says_what_to_install(tmp_path, monkeypatch):
    (tmp_path / "x.jsonl").write_text('{"text": "a"}\n')
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if it were not installed: import fails
    src = open_source(HFDatasetSource(domain="w", format="json", paths=[str(tmp_path / "x.jsonl")]), 0)
    with pytest.raises(DataError, match=r"needs the `datasets` package[\s\S]*pip install pretrainlab\[datasets\]"):
        texts(src)
