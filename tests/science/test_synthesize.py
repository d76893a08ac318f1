"""`synthesize`: a tiny trained teacher's samples become a new prepared folder (base domains linked, the
synthetic domain holding every sampled token of the smallest whole number of pieces reaching the count,
plus one end-of-text closing each stream's unfinished last document), a student trains on the mix, bad
inputs fail clearly."""

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
from pretrainlab.science.synthesize import finished_documents, pieces_needed, synthesize

pytestmark = pytest.mark.usefixtures("one_thread")

SETTINGS = {"seq_len": 32, "batch_size": 16, "seed": 0, "device": "cpu", "precision": "fp32", "progress": False}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> tuple[Path, Path]:
    """(run folder, its prepared data): a tiny model trained for a few dozen steps on short documents, so
    it samples end-of-text every ten or twenty tokens; shared by this file."""
    from pretrainlab.train.trainer import Trainer

    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("teacher")
    rng = np.random.default_rng(0)
    data = make_prepared(
        tmp / "prepared",
        train={"alpha": random_docs(rng, 300, 2, 24), "beta": random_docs(rng, 40, 20, 60)},
        val={"alpha": random_docs(rng, 10, 2, 24), "beta": random_docs(rng, 5, 20, 60)},
    )
    cfg = tiny_run_config(tmp / "runs", data, train={"steps": 30, "checkpoint_every": None}, eval={"every": None},
                          optim={"lr": 1e-2})
    Trainer(cfg).fit()
    return tmp / "runs" / "tiny", data


def test_finished_documents_are_the_sampled_tokens_up_to_each_streams_last_end_of_text() -> None:
    pending = [np.array([7, 7]), np.array([], dtype=np.int64), np.array([5])]
    piece = np.array([[1, 2, EOT, 3], [4, EOT, 5, EOT], [6, 7, 8, 9]])
    flat, lengths, left = finished_documents(pending, piece, eot_id=EOT)
    assert flat.tolist() == [7, 7, 1, 2, EOT, 4, EOT, 5, EOT]  # nothing added, the open tails held back
    assert lengths.tolist() == [5, 2, 2]
    assert [x.tolist() for x in left] == [[3], [], [5, 6, 7, 8, 9]]
    flat, lengths, left = finished_documents(left, np.array([[EOT], [1], [EOT]]), eot_id=EOT)
    assert flat.tolist() == [3, EOT, 5, 6, 7, 8, 9, EOT] and lengths.tolist() == [2, 6]
    assert [x.tolist() for x in left] == [[], [1], []]


def test_pieces_needed_gives_the_smallest_multiple_of_a_piece_reaching_the_count() -> None:
    for tokens, streams, seq_len, pieces in ((1000, 16, 32, 2), (512, 16, 32, 1), (513, 16, 32, 2), (1, 1, 8, 1),
                                             (267_660, 64, 1024, 5), (400, 4, 8, 13)):
        assert pieces_needed(tokens, streams, seq_len) == pieces
        sampled = pieces * streams * seq_len
        assert sampled >= tokens > sampled - streams * seq_len


def test_writes_a_prepared_folder_with_the_base_and_every_sampled_token(teacher, tmp_path: Path) -> None:
    run, base_path = teacher
    out = synthesize([run], tokens=1000, out=tmp_path / "mix", **SETTINGS)
    data, base = PreparedData(out), PreparedData(base_path)  # opens: manifest valid, fingerprint matches
    assert data.domains == ["alpha", "beta", "synthetic"]
    shard = data.shard("synthetic", "train")
    assert data.shard("synthetic", "val").n_tokens == 0
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
    assert record["seed"] == 0 and record["seq_len"] == 32 and record["streams"] == 16  # min(16, 1000 / 32)
    # 2 pieces of 16 streams x 32 tokens: the smallest multiple of 512 reaching 1000, every token written
    assert record["tokens_requested"] == 1000 and record["tokens_sampled"] == 1024
    assert record["tokens"] == shard.n_tokens == record["tokens_sampled"] + record["appended_eot"]
    assert 0 <= record["appended_eot"] <= 16 and record["documents"] == shard.n_docs
    assert not {"unfinished_documents", "unfinished_tokens", "surplus_tokens"} & set(record)
    assert record["base"]["fingerprint"] == base.fingerprint and record["checkpoints"][0].endswith("step-30")
    assert record["teacher_cost"]["wall_s"] > 0 and record["teacher_cost"]["tokens_per_s"] > 0
    assert not list(tmp_path.glob("mix.tmp-*"))


def test_the_domain_is_the_streams_tokens_with_one_end_of_text_closing_each_unfinished_tail(teacher,
                                                                                          tmp_path: Path) -> None:
    """Token for token: the documents in the order they finish (piece, then stream), no end-of-text added
    where a row of `seq_len` tokens ends (a document can span rows), then each stream's non-empty tail
    with exactly one appended end-of-text."""
    from pretrainlab.eval.members import load_members
    from pretrainlab.science.sampling import iter_sample_streams

    run, _ = teacher
    settings = {**SETTINGS, "seq_len": 8, "batch_size": 4}
    out = synthesize([run], tokens=400, out=tmp_path / "mix", **settings)
    data = PreparedData(out)
    record = data.manifest["synthetic"]["synthetic"]
    assert record["streams"] == 4 and record["tokens_sampled"] == 416  # 13 pieces of 4 x 8: least multiple >= 400
    models, _, base = load_members([run])
    gen = iter_sample_streams(models, streams=4, piece_len=8, window=8, seed=0, eot_id=EOT, pad_id=257,
                              vocab_size=base.vocab_size)
    rows = np.concatenate([next(gen) for _ in range(13)], axis=1)
    gen.close()
    finished, tails = [], []  # finished: (piece that finishes it, stream, position, document)
    for stream, row in enumerate(rows):
        ends = np.flatnonzero(row == EOT)
        for start, end in zip(np.concatenate([[0], ends[:-1] + 1]).astype(int), ends):
            finished.append((end // 8, stream, start, row[start : end + 1]))
        tail = row[ends[-1] + 1 :] if ends.size else row
        if tail.size:
            tails.append(np.append(tail, EOT))
    finished.sort(key=lambda f: f[:3])
    expected = [doc for *_, doc in finished] + tails
    assert tails  # the check covers closed tails (seed 0 leaves some streams mid-document)
    shard = data.shard("synthetic", "train")
    written = np.asarray(shard.tokens, dtype=np.int64)
    np.testing.assert_array_equal(written, np.concatenate(expected))
    assert np.diff(np.asarray(shard.offsets)).tolist() == [len(d) for d in expected]  # the document boundaries
    assert record["appended_eot"] == len(tails) and record["documents"] == len(expected) == (written == EOT).sum()
    assert record["tokens"] == written.size == record["tokens_sampled"] + record["appended_eot"]
    assert any(len(d) > 8 for d in expected)  # documents longer than a row of seq_len tokens are kept whole


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
    record = PreparedData(out).manifest["synthetic"]["synthetic"]
    assert record["tokens_requested"] == 200 and record["tokens_sampled"] == 224  # 7 streams x 32, all written
    assert PreparedData(out).shard("synthetic", "train").n_tokens == 224 + record["appended_eot"]


def test_cli(teacher, tmp_path: Path, capsys) -> None:
    run, _ = teacher
    argv = ["synthesize", str(run), "--tokens", "150", "--out", str(tmp_path / "mix"), "--seq-len", "16",
            "--batch-size", "4", "--device", "cpu", "--precision", "fp32", "--domain", "teacher_samples"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    data = PreparedData(tmp_path / "mix")
    record = data.manifest["synthetic"]["teacher_samples"]
    assert f"synthesized {record['tokens']:,} tokens in {record['documents']:,} documents (asked for 150)" in printed
    assert "sampled 192 tokens in 4 streams of 3 x 16 tokens" in printed and "tokens/s" in printed
    assert f"{record['appended_eot']} unfinished last document" in printed
    assert data.domain_tokens()["teacher_samples"] == record["tokens"] == 192 + record["appended_eot"]
    assert record["streams"] == 4 and record["seq_len"] == 16  # 3 pieces of 4 x 16: the least multiple >= 150
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


def test_a_teacher_that_never_samples_end_of_text_gives_one_document_per_stream(teacher, tmp_path: Path,
                                                                                 monkeypatch) -> None:
    import pretrainlab.science.sampling as sampling

    run, _ = teacher
    sampled: list[int] = []

    def fake(last: int):
        def streams_of(models, *, streams, piece_len, **kw):  # each piece: rows of 1s, ending with `last`
            def pieces():
                while True:
                    sampled.append(streams * piece_len)
                    piece = np.ones((streams, piece_len), dtype=np.int64)
                    piece[:, -1] = last
                    yield piece

            return pieces()

        return streams_of

    monkeypatch.setattr(sampling, "iter_sample_streams", fake(1))  # never an end-of-text
    record = PreparedData(synthesize([run], tokens=100, out=tmp_path / "a", **SETTINGS)).manifest["synthetic"][
        "synthetic"]
    assert sum(sampled) == 128  # 4 streams (min(16, 100 / 32)), one piece of 32 each, then sampling stops
    assert record["streams"] == 4 and record["tokens_sampled"] == 128 and record["appended_eot"] == 4
    assert record["documents"] == 4 and record["tokens"] == 132
    shard = PreparedData(tmp_path / "a").shard("synthetic", "train")
    assert np.asarray(shard.tokens).tolist() == ([1] * 32 + [EOT]) * 4

    sampled.clear()
    monkeypatch.setattr(sampling, "iter_sample_streams", fake(EOT))  # every stream ends on a sampled end-of-text
    record = PreparedData(synthesize([run], tokens=600, out=tmp_path / "b", **SETTINGS)).manifest["synthetic"][
        "synthetic"]
    assert sum(sampled) == 1024 and record["tokens_sampled"] == 1024 == record["tokens"]  # nothing appended
    assert record["appended_eot"] == 0 and record["documents"] == 32  # 16 streams x 2 pieces
