"""`synthesize`: a tiny trained teacher's samples become a new prepared folder (base domains linked, the
synthetic domain holding exactly the tokens asked), a student trains on the mix, bad inputs fail clearly."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import EOT, make_prepared, random_docs, tiny_run_config

from pretrainlab.cli import main
from pretrainlab.data.prepared import PreparedData
from pretrainlab.errors import ConfigError, DataError
from pretrainlab.science.synthesize import documents_of, synthesize

SETTINGS = {"seq_len": 32, "batch_size": 16, "seed": 0, "device": "cpu", "precision": "fp32", "progress": False}


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> tuple[Path, Path]:
    """(run folder, its prepared data): a tiny model trained for a few steps, shared by this file."""
    from pretrainlab.train.trainer import Trainer

    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("teacher")
    rng = np.random.default_rng(0)
    data = make_prepared(
        tmp / "prepared",
        train={"alpha": random_docs(rng, 120), "beta": random_docs(rng, 60, 50, 300)},
        val={"alpha": random_docs(rng, 10), "beta": random_docs(rng, 5, 50, 300)},
    )
    cfg = tiny_run_config(tmp / "runs", data, train={"steps": 4, "checkpoint_every": None}, eval={"every": None})
    Trainer(cfg).fit()
    return tmp / "runs" / "tiny", data


def test_documents_are_cut_at_end_of_text_and_total_is_exact() -> None:
    rows = np.array([[1, 2, EOT, 3], [4, EOT, 5, EOT], [6, 7, 8, 9]])
    flat, lengths = documents_of(rows, eot_id=EOT, limit=11)
    assert flat.tolist() == [1, 2, EOT, 3, EOT, 4, EOT, 5, EOT, 6, EOT]
    assert lengths.tolist() == [3, 2, 2, 2, 2]
    for limit in (14, 20, None):
        flat, lengths = documents_of(rows, eot_id=EOT, limit=limit)
        assert flat.tolist()[-5:] == [6, 7, 8, 9, EOT] and lengths.tolist() == [3, 2, 2, 2, 5]
    assert documents_of(rows, eot_id=EOT, limit=0)[0].size == 0


def test_writes_a_prepared_folder_with_the_base_and_exactly_the_asked_tokens(teacher, tmp_path: Path) -> None:
    run, base_path = teacher
    out = synthesize([run], tokens=1000, out=tmp_path / "mix", **SETTINGS)
    data, base = PreparedData(out), PreparedData(base_path)  # opens: manifest valid, fingerprint matches
    assert data.domains == ["alpha", "beta", "synthetic"]
    shard = data.shard("synthetic", "train")
    assert shard.n_tokens == 1000 and data.shard("synthetic", "val").n_tokens == 0
    ends = np.asarray(shard.offsets[1:]) - 1
    assert (np.asarray(shard.tokens)[ends] == EOT).all()  # every document ends with end-of-text
    docs = np.split(np.asarray(shard.tokens, dtype=np.int64), np.asarray(shard.offsets[1:-1]))
    assert shard.doc_bytes.tolist() == [int((d < 256).sum()) for d in docs]  # byte tokenizer: bytes = byte tokens
    assert not (np.asarray(shard.tokens) == 257).any()  # never padding
    for name in ("alpha", "beta"):
        for split in ("train", "val"):
            assert data.manifest["domains"][name][split] == base.manifest["domains"][name][split]
        assert os.path.samefile(out / name / "train.bin", base_path / name / "train.bin")  # hard-linked
    record = data.manifest["synthetic"]["synthetic"]
    assert record["teachers"] == [str(run)] and record["combine"] == "logits" and record["temperature"] == 1.0
    assert record["seed"] == 0 and record["seq_len"] == 32 and record["rows"] == 32
    assert record["base"]["fingerprint"] == base.fingerprint and record["checkpoints"][0].endswith("step-4")
    assert record["teacher_cost"]["wall_s"] > 0 and record["teacher_cost"]["tokens_per_s"] > 0
    assert not list(tmp_path.glob("mix.tmp-*"))


def test_same_seed_same_tokens_and_an_identical_pair_samples_like_one_teacher(teacher, tmp_path: Path) -> None:
    run, _ = teacher
    one = synthesize([run], tokens=300, out=tmp_path / "a", **SETTINGS)
    again = synthesize([run], tokens=300, out=tmp_path / "b", **SETTINGS)
    pair = synthesize([run, run], tokens=300, out=tmp_path / "c", **SETTINGS)
    other = synthesize([run], tokens=300, out=tmp_path / "d", **{**SETTINGS, "seed": 1})
    tokens = [(p / "synthetic" / "train.bin").read_bytes() for p in (one, again, pair, other)]
    assert tokens[0] == tokens[1] == tokens[2] != tokens[3]
    assert PreparedData(pair).manifest["synthetic"]["synthetic"]["teacher_cost"]["members"] == 2
    stacked = PreparedData(synthesize([run], tokens=50, data=one, out=tmp_path / "e", domain="more", **SETTINGS))
    assert sorted(stacked.domains) == ["alpha", "beta", "more", "synthetic"] and set(stacked.manifest["synthetic"]) == {
        "synthetic", "more"}


def test_a_student_trains_on_the_mix(teacher, tmp_path: Path) -> None:
    from pretrainlab.train.checkpoint import load_checkpoint
    from pretrainlab.train.trainer import Trainer

    run, _ = teacher
    out = synthesize([run], tokens=2000, out=tmp_path / "mix", **SETTINGS)
    cfg = tiny_run_config(tmp_path / "runs", out, train={"steps": 3, "checkpoint_every": None},
                          eval={"every": None}, name="student")
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"weights": {"synthetic": 3, "alpha": 1}})})
    Trainer(cfg).fit()
    lines = [json.loads(x) for x in (tmp_path / "runs" / "student" / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["event"] == "end" and lines[-1]["step"] == 3 and np.isfinite(lines[-1]["loss"])
    _, state = load_checkpoint(tmp_path / "runs" / "student" / "checkpoints" / "step-3")
    assert state["loader"]["weights"] == {"alpha": 0.25, "beta": 0.0, "synthetic": 0.75}
    assert state["loader"]["counters"]["synthetic"] > state["loader"]["counters"]["alpha"] > 0


def test_bad_inputs_fail_clearly_before_sampling(teacher, tmp_path: Path) -> None:
    run, base_path = teacher
    with pytest.raises(DataError, match="is the base data"):
        synthesize([run], tokens=100, out=base_path, overwrite=True, **SETTINGS)
    with pytest.raises(DataError, match="inside it"):
        synthesize([run], tokens=100, out=base_path / "more", **SETTINGS)
    other = make_prepared(tmp_path / "other", train={"gamma": random_docs(np.random.default_rng(1), 20)})
    with pytest.raises(DataError, match="a teacher's training data"):
        synthesize([run], tokens=100, data=other, out=base_path, overwrite=True, **SETTINGS)
    with pytest.raises(ConfigError, match="already in the base data"):
        synthesize([run], tokens=100, out=tmp_path / "x", domain="alpha", **SETTINGS)
    with pytest.raises(ConfigError, match="--domain"):
        synthesize([run], tokens=100, out=tmp_path / "x", domain="a/b", **SETTINGS)
    with pytest.raises(ConfigError, match="--tokens"):
        synthesize([run], tokens=0, out=tmp_path / "x", **SETTINGS)
    with pytest.raises(ConfigError, match="max_seq_len=32"):
        synthesize([run], tokens=100, out=tmp_path / "x", **{**SETTINGS, "seq_len": 64})
    with pytest.raises(ConfigError, match="run folder"):
        synthesize([tmp_path / "nope"], tokens=100, out=tmp_path / "x", **SETTINGS)
    keep = tmp_path / "keep"
    (keep / "notes.txt").parent.mkdir()
    (keep / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not a prepared-data folder"):
        synthesize([run], tokens=100, out=keep, overwrite=True, **SETTINGS)
    assert (keep / "notes.txt").read_text() == "mine" and not (tmp_path / "x").exists()


def test_an_existing_output_needs_overwrite(teacher, tmp_path: Path) -> None:
    run, _ = teacher
    out = synthesize([run], tokens=100, out=tmp_path / "mix", **SETTINGS)
    with pytest.raises(DataError, match="already exists"):
        synthesize([run], tokens=100, out=out, **SETTINGS)
    synthesize([run], tokens=200, out=out, overwrite=True, **SETTINGS)
    assert PreparedData(out).shard("synthetic", "train").n_tokens == 200


def test_cli(teacher, tmp_path: Path, capsys) -> None:
    run, _ = teacher
    argv = ["synthesize", str(run), "--tokens", "150", "--out", str(tmp_path / "mix"), "--seq-len", "16",
            "--batch-size", "4", "--device", "cpu", "--precision", "fp32", "--domain", "teacher_samples"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "synthesized 150 tokens" in printed and "tokens/s" in printed
    data = PreparedData(tmp_path / "mix")
    assert data.domain_tokens()["teacher_samples"] == 150
    assert data.manifest["synthetic"]["teacher_samples"]["rows"] == 10
    assert main(argv) == 2
    assert "already exists" in capsys.readouterr().err


def test_a_failure_while_writing_leaves_nothing_behind(teacher, tmp_path: Path, monkeypatch) -> None:
    import pretrainlab.science.synthesize as synth

    run, _ = teacher

    def broken(*args: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(synth, "document_bytes", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        synthesize([run], tokens=100, out=tmp_path / "mix", **SETTINGS)
    assert list(tmp_path.iterdir()) == []
