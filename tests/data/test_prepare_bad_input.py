"""Bad input to `pretrainlab prepare`: one clear message naming the file/line, exit code 2 when fatal."""

from __future__ import annotations

import builtins
import json
import os
from pathlib import Path
from typing import Any

import pytest

from pretrainlab.cli import main
from pretrainlab.data import sources as sources_module
from pretrainlab.data.prepared import PreparedData


def run(tmp_path: Path, capsys, sources: list[dict[str, Any]], *overrides: str, **tree: Any) -> tuple[int, str]:
    tree = {"sources": sources, "tokenizer": {"kind": "bytes"}, "output": str(tmp_path / "out"), **tree}
    cfg = tmp_path / "prepare.yaml"
    cfg.write_text(json.dumps(tree))  # JSON is YAML
    capsys.readouterr()
    rc = main(["prepare", str(cfg), *overrides, "--no-progress"])
    return rc, capsys.readouterr().err


def text_source(*paths: Path, **kw: Any) -> dict[str, Any]:
    return {"type": "text", "domain": "d", "paths": [str(p) for p in paths], **kw}


def test_missing_path(tmp_path, capsys):
    rc, err = run(tmp_path, capsys, [text_source(tmp_path / "nowhere.txt")])
    assert rc == 2 and "sources[0]" in err and "nowhere.txt' does not exist" in err
    assert not (tmp_path / "out").exists()


def test_glob_matching_nothing(tmp_path, capsys):
    rc, err = run(tmp_path, capsys, [text_source(tmp_path / "**" / "*.md")])
    assert rc == 2 and "matches no files" in err and "*.md" in err


def test_unreadable_file(tmp_path, capsys, monkeypatch):
    secret = tmp_path / "secret.txt"
    secret.write_text("hidden")
    if os.geteuid() == 0:  # root reads anything: make open() refuse this one file as chmod would
        real_open = builtins.open

        def refusing_open(file, *args, **kwargs):
            if Path(file) == secret:
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(sources_module, "open", refusing_open, raising=False)
    else:
        secret.chmod(0)
    rc, err = run(tmp_path, capsys, [text_source(secret)])
    assert rc == 2 and f"{secret}: permission denied" in err and "chmod" in err
    assert not (tmp_path / "out").exists()


def test_invalid_utf8_is_a_warning_naming_the_file(tmp_path, capsys):
    (tmp_path / "latin1.txt").write_bytes("café crème".encode("latin-1"))
    (tmp_path / "ok.txt").write_text("fine")
    rc, err = run(tmp_path, capsys, [text_source(tmp_path / "latin1.txt", tmp_path / "ok.txt")])
    assert rc == 0
    assert f"{tmp_path / 'latin1.txt'}: 2 invalid UTF-8 sequence(s)" in err
    assert PreparedData(tmp_path / "out").manifest["domains"]["d"]["invalid_utf8_documents"] == 1


def test_empty_documents_are_skipped_and_counted(tmp_path, capsys):
    (tmp_path / "a.txt").write_text("one\n\n   \n\ntwo\n")
    (tmp_path / "blank.txt").write_text(" \n\t\n")
    rc, _ = run(tmp_path, capsys, [text_source(tmp_path / "a.txt", tmp_path / "blank.txt", split="line")])
    assert rc == 0
    entry = PreparedData(tmp_path / "out").manifest["domains"]["d"]
    assert entry["train"]["documents"] + entry["val"]["documents"] == 2
    assert entry["skipped_empty"] == 5


JSONL_LINES = [
    '{"text": "good one"}',
    "this is not json",
    '["a list"]',
    '{"content": "wrong field"}',
    '{"text": 42}',
    '{"text": "good two"}',
]


@pytest.mark.parametrize(
    ("line", "reason"),
    [(2, "not valid JSON"), (3, "not a JSON object but list"), (4, "no field 'text' (it has: content)"), (5, "field 'text' is int, not a string")],
)
def test_bad_jsonl_lines_are_reported_with_file_and_line(tmp_path, capsys, line, reason):
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(JSONL_LINES) + "\n")
    src = [{"type": "jsonl", "domain": "j", "paths": [str(path)]}]
    rc, err = run(tmp_path, capsys, src, "validation.fraction=0")
    assert rc == 0 and "skipped 4 bad line(s)" in err
    if line <= 4:  # the warning shows the first three examples
        assert f"{path}:{line}: {reason}" in err
    entry = PreparedData(tmp_path / "out").manifest["domains"]["j"]
    assert entry["bad_lines"] == 4 and entry["train"]["documents"] == 2
    # strict: the first bad line is fatal; put this line first to see its message
    path.write_text("\n".join([JSONL_LINES[0], JSONL_LINES[line - 1]]) + "\n")
    rc, err = run(tmp_path, capsys, src, "strict=true", "overwrite=true")
    assert rc == 2 and f"{path}:2: {reason}" in err and "strict=false" in err


def test_unparsable_tokenizer_file(tmp_path, capsys):
    (tmp_path / "a.txt").write_text("text")
    (tmp_path / "tok.json").write_text('{"version": "1.0", "model": ')
    rc, err = run(tmp_path, capsys, [text_source(tmp_path / "a.txt")], "tokenizer.kind=file", f"tokenizer.path={tmp_path / 'tok.json'}")
    assert rc == 2 and f"{tmp_path / 'tok.json'}: not a valid tokenizer.json" in err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("out.tmp-*"))


def test_token_ids_beyond_the_dtype(tmp_path, capsys):
    from tokenizers import Tokenizer, models, pre_tokenizers

    # A (broken) word-level file: 3 entries, one of them with id 70000, so its vocabulary size says uint16.
    tok = Tokenizer(models.WordLevel({"<|endoftext|>": 0, "[UNK]": 1, "hello": 70000}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "odd.json"))
    (tmp_path / "a.txt").write_text("hello world")
    rc, err = run(tmp_path, capsys, [text_source(tmp_path / "a.txt")], "tokenizer.kind=file", f"tokenizer.path={tmp_path / 'odd.json'}")
    assert rc == 2 and f"the tokenizer loaded from {tmp_path / 'odd.json'} produced token id 70000" in err
    assert "uint16" in err and not (tmp_path / "out").exists()


def test_source_with_no_documents(tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("   \n")
    (tmp_path / "good.txt").write_text("a real document")
    rc, err = run(tmp_path, capsys, [text_source(tmp_path / "good.txt"), text_source(tmp_path / "empty.txt", domain="e")])
    assert rc == 2 and "sources[1] (text, domain 'e') yielded no documents" in err and "empty.txt" in err
    assert not (tmp_path / "out").exists()


def test_existing_output_is_refused(tmp_path, capsys):
    (tmp_path / "a.txt").write_text("text")
    (tmp_path / "out").mkdir()
    rc, err = run(tmp_path, capsys, [text_source(tmp_path / "a.txt")])
    assert rc == 2 and f"{tmp_path / 'out'}' already exists" in err and "overwrite=true" in err
    rc, _ = run(tmp_path, capsys, [text_source(tmp_path / "a.txt")], "overwrite=true")
    assert rc == 0 and PreparedData(tmp_path / "out").domains == ["d"]


def test_output_inside_a_source_folder_is_refused_and_nothing_is_deleted(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("alpha text\n")
    rc, err = run(tmp_path, capsys, [text_source(corpus)], output=str(corpus), overwrite=True)
    assert rc == 2 and "not a prepared-data folder" in err
    assert (corpus / "a.txt").read_text() == "alpha text\n"
    # A first prepare into a subfolder works; the second would read its own output as data: refused.
    assert run(tmp_path, capsys, [text_source(corpus)], output=str(corpus / "prep"))[0] == 0
    rc, err = run(tmp_path, capsys, [text_source(corpus)], output=str(corpus / "prep"), overwrite=True)
    assert rc == 2 and "inside the output folder" in err
    assert (corpus / "a.txt").exists() and PreparedData(corpus / "prep")


def test_lone_surrogate_in_jsonl_is_replaced_and_counted(tmp_path, capsys):
    path = tmp_path / "s.jsonl"
    path.write_text('{"text": "hello \\ud800 world"}\n{"text": "fine"}\n')
    rc, err = run(tmp_path, capsys, [{"type": "jsonl", "domain": "d", "paths": [str(path)]}])
    assert rc == 0 and "s.jsonl" in err and "invalid UTF-8" in err
    data = PreparedData(tmp_path / "out")
    assert data.manifest["domains"]["d"]["train"]["documents"] + data.manifest["domains"]["d"]["val"]["documents"] == 2


def test_utf8_bom_does_not_cost_the_first_jsonl_line(tmp_path, capsys):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"text": "first"}\n{"text": "second"}\n')
    rc, err = run(tmp_path, capsys, [{"type": "jsonl", "domain": "d", "paths": [str(path)]}, ], strict=True)
    assert rc == 0, err
    entry = PreparedData(tmp_path / "out").manifest["domains"]["d"]
    assert entry["train"]["documents"] + entry["val"]["documents"] == 2 and entry["bad_lines"] == 0
