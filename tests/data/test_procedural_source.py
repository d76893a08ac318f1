"""`type: procedural` sources through `pretrainlab prepare` on the command line: the generated corpus is
tokenized beside real text, recorded in the manifest, the same on every run, and bad options fail first."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pretrainlab.cli import main
from pretrainlab.data.prepared import PreparedData


def _config(tmp_path: Path, sources: list[dict], out: str = "out") -> Path:
    path = tmp_path / f"{out}.yaml"
    path.write_text(yaml.safe_dump({
        "sources": sources,
        "tokenizer": {"kind": "bytes"},
        "validation": {"fraction": 0.1},
        "output": str(tmp_path / out),
    }))
    return path


DYCK = {"type": "procedural", "domain": "dyck", "generator": "dyck", "documents": 400, "seed": 3,
        "options": {"k": 3, "max_depth": 4, "separator": ""}}


def test_prepare_cli_with_a_procedural_source(tmp_path: Path) -> None:
    story = tmp_path / "story.txt"
    story.write_text("Once upon a time there was a fox.\n\nIt ran far away.\n\nThe end.\n" * 20)
    text = {"type": "text", "domain": "natural", "paths": [str(story)], "split": "blank_lines"}
    sets = {"type": "procedural", "domain": "sets", "generator": "set_ops", "documents": 50, "max_documents": 30}
    assert main(["prepare", str(_config(tmp_path, [DYCK, text, sets])), "--no-progress"]) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    dyck = manifest["domains"]["dyck"]
    assert dyck["train"]["documents"] + dyck["val"]["documents"] == 400 and dyck["val"]["documents"] > 0
    assert dyck["sources"][0]["path"] == "<procedural:dyck seed 3>" and len(dyck["sources"][0]["sha256"]) == 64
    sets_docs = manifest["domains"]["sets"]
    assert sets_docs["train"]["documents"] + sets_docs["val"]["documents"] == 30  # max_documents caps it
    # a source cut short by max_documents is still recorded, with the bytes of the documents it generated
    assert [r["path"] for r in sets_docs["sources"]] == ["<procedural:set_ops seed 0>"]
    assert sets_docs["sources"][0]["bytes"] == sets_docs["train"]["bytes"] + sets_docs["val"]["bytes"]
    data = PreparedData(tmp_path / "out")
    assert set(data.domains) == {"dyck", "natural", "sets"}
    # the same config gives the same corpus, byte for byte
    assert main(["prepare", str(_config(tmp_path, [DYCK, text, sets], out="again")), "--no-progress"]) == 0
    again = json.loads((tmp_path / "again" / "manifest.json").read_text())
    assert again["domains"]["dyck"] == dyck and again["fingerprint"] == manifest["fingerprint"]


@pytest.mark.parametrize("options,field", [
    ({"k": 99}, "sources.1.options.k"),
    ({"max_dept": 3}, "sources.1.options.max_dept"),
])
def test_bad_options_fail_before_any_work_naming_the_field(tmp_path: Path, capsys, options: dict,
                                                            field: str) -> None:
    story = tmp_path / "a.txt"
    story.write_text("some text\n")
    text = {"type": "text", "domain": "natural", "paths": [str(story)]}
    bad = {**DYCK, "options": options}
    assert main(["prepare", str(_config(tmp_path, [text, bad])), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert field in err and "docs/procedural.md" in err
    assert not (tmp_path / "out").exists()


def test_unknown_generator_is_one_error(tmp_path: Path, capsys) -> None:
    bad = {**DYCK, "generator": "dyke", "options": {}}
    assert main(["prepare", str(_config(tmp_path, [bad])), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "sources.0.generator='dyke'" in err and "did you mean 'dyck'" in err
