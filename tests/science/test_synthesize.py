"""`synthesize`: a tiny trained teacher's samples become a new prepared folder (base domains linked, the
synthetic domain holding whole sampled documents, at least the tokens asked, and no token that was not
sampled), a student trains on the mix, bad inputs fail clearly."""

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
from pretrainlab.science.synthesize import finished_documents, first_documents, synthesize

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


def test_first_documents_are_the_fewest_whole_documents_reaching_the_count() -> None:
    flat, lengths = np.arange(9), np.array([3, 2, 4])
    for need, n in ((1, 1), (3, 1), (4, 2), (5, 2), (6, 3), (9, 3), (50, 3)):
        kept, kept_lengths = first_documents(flat, lengths, need)
        assert kept_lengths.tolist() == lengths[:n].tolist() and kept.tolist() == flat[: lengths[:n].sum()].tolist()


def test_writes_a_prepared_folder_with_the_base_and_whole_documents_reaching_the_count(teacher, tmp_path: Path) -> None:
    run, base_path = teacher
    out = synthesize([run], tokens=1000, out=tmp_path / "mix", **SETTINGS)
    data, base = PreparedData(out), PreparedData(base_path)  # opens: manifest valid, fingerprint matches
    assert data.domains == ["alpha", "beta", "synthetic"]
    shard = data.shard("synthetic", "train")
    lengths = np.diff(np.asarray(shard.offsets))
    assert 1000 <= shard.n_tokens < 1000 + lengths[-1] and data.shard("synthetic", "val").n_tokens == 0
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
    assert record["seed"] == 0 and record["seq_len"] == 32 and record["streams"] == 8  # 1000 / (4 rows of 32)
    assert record["tokens_requested"] == 1000 and record["tokens"] == shard.n_tokens
    assert record["documents"] == shard.n_docs
    # every sampled token is written, in a document left unfinished, or in a finished one past the count
    assert record["tokens_sampled"] == record["tokens"] + record["unfinished_tokens"] + record["surplus_tokens"]
    assert record["tokens_sampled"] % (8 * 32) == 0 and record["unfinished_documents"] <= 8
    assert record["base"]["fingerprint"] == base.fingerprint and record["checkpoints"][0].endswith("step-30")
    assert record["teacher_cost"]["wall_s"] > 0 and record["teacher_cost"]["tokens_per_s"] > 0
    assert not list(tmp_path.glob("mix.tmp-*"))


def test_every_written_token_was_sampled_and_documents_run_on_past_a_row(teacher, tmp_path: Path) -> None:
    """The domain is exactly the streams' finished documents in sampling order, cut at the count: no
    end-of-text is added where a row of `seq_len` tokens ends, and a document can span rows."""
    from pretrainlab.eval.members import load_members
    from pretrainlab.science.sampling import iter_sample_streams

    run, _ = teacher
    settings = {**SETTINGS, "seq_len": 8, "batch_size": 4}
    out = synthesize([run], tokens=400, out=tmp_path / "mix", **settings)
    data = PreparedData(out)
    record = data.manifest["synthetic"]["synthetic"]
    models, _, base = load_members([run])
    gen = iter_sample_streams(models, streams=4, piece_len=8, window=8, seed=0, eot_id=EOT, pad_id=257,
                              vocab_size=base.vocab_size)
    rows = np.concatenate([next(gen) for _ in range(record["tokens_sampled"] // 32)], axis=1)
    gen.close()
    finished = []  # (piece that finishes it, stream, position): the order documents are written in
    for stream, row in enumerate(rows):
        ends = np.flatnonzero(row == EOT)
        for start, end in zip(np.concatenate([[0], ends[:-1] + 1]), ends):
            finished.append((end // 8, stream, start, row[start : end + 1]))
    finished.sort(key=lambda f: f[:3])
    expected, total = [], 0
    for *_, doc in finished:
        if total >= 400:
            break
        expected.append(doc)
        total += doc.size
    written = np.asarray(data.shard("synthetic", "train").tokens, dtype=np.int64)
    np.testing.assert_array_equal(written, np.concatenate(expected))
    assert (written == EOT).sum() == len(expected) == record["documents"]  # one end-of-text per document
    written_docs = np.split(written, np.flatnonzero(written == EOT) + 1)[:-1]
    assert any(len(d) > 8 for d in written_docs)  # documents longer than a row of seq_len tokens are kept


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
    assert PreparedData(out).manifest["synthetic"]["synthetic"]["tokens_requested"] == 200
    assert PreparedData(out).shard("synthetic", "train").n_tokens >= 200


def test_cli(teacher, tmp_path: Path, capsys) -> None:
    run, _ = teacher
    argv = ["synthesize", str(run), "--tokens", "150", "--out", str(tmp_path / "mix"), "--seq-len", "16",
            "--batch-size", "4", "--device", "cpu", "--precision", "fp32", "--domain", "teacher_samples"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    data = PreparedData(tmp_path / "mix")
    record = data.manifest["synthetic"]["teacher_samples"]
    assert f"synthesized {record['tokens']:,} tokens in {record['documents']:,} documents (asked for 150)" in printed
    assert "tokens/s" in printed and f"left out {record['unfinished_tokens']:,} tokens" in printed
    assert data.domain_tokens()["teacher_samples"] == record["tokens"] >= 150
    assert record["streams"] == 3 and record["seq_len"] == 16  # 150 tokens: 3 streams of 4 rows of 16 or more
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


def test_teachers_that_never_finish_a_document_fail_clearly_and_leave_nothing(teacher, tmp_path: Path,
                                                                              monkeypatch) -> None:
    import pretrainlab.science.sampling as sampling

    run, _ = teacher
    sampled: list[int] = []

    def endless(models, *, streams, piece_len, **kw):  # a teacher that never samples end-of-text
        def pieces():
            while True:
                sampled.append(streams * piece_len)
                yield np.ones((streams, piece_len), dtype=np.int64)

        return pieces()

    monkeypatch.setattr(sampling, "iter_sample_streams", endless)
    with pytest.raises(DataError, match=r"finished too few documents: after sampling 1,056 tokens only 0"):
        synthesize([run], tokens=100, out=tmp_path / "mix", **SETTINGS)
    assert sum(sampled) == 1056  # one stream (100 tokens < 4 rows of 32), 32 at a time until 8 x (100 + 32)
    assert list(tmp_path.iterdir()) == []
