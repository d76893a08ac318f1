"""`pretrainlab quickstart` end to end at a toy size (whether it beats gzip is benchmarks/bench_quickstart.py's job)."""

import json
from pathlib import Path

import pytest

from pretrainlab.cli import main
from pretrainlab.errors import ConfigError
from pretrainlab.data.prepared import PreparedData
from pretrainlab.quickstart import _prepare_or_reuse, quickstart_configs

TINY = [
    "prepare.sources.0.max_files=12",
    "prepare.tokenizer.vocab_size=300",
    "prepare.tokenizer.train_sample_bytes=200000",
    "prepare.validation.fraction=0.3",
    "model.n_layers=1",
    "model.d_model=32",
    "model.n_heads=2",
    "data.seq_len=32",
    "train.global_batch_tokens=256",
    "train.micro_batch_size=8",
    "train.progress=false",
]


def test_overrides_go_to_their_section(tmp_path):
    prep, run = quickstart_configs(tmp_path / "q", ["prepare.tokenizer.vocab_size=1024", "model.n_layers=3"])
    assert prep.tokenizer.vocab_size == 1024 and run.model.n_layers == 3
    assert Path(prep.output) == tmp_path / "q" / "data" and Path(run.data.path) == tmp_path / "q" / "data"
    assert Path(run.out_dir) == tmp_path / "q"
    with pytest.raises(ConfigError, match="model.n_layer"):
        quickstart_configs(tmp_path / "q", ["model.n_layer=3"])
    with pytest.raises(ConfigError, match="prepare.*tokenizer.vocab"):
        quickstart_configs(tmp_path / "q", ["prepare.tokenizer.vocab=3"])


def test_quickstart_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "qs"
    assert main(["quickstart", "--out", str(out), "--minutes", "0.02", *TINY]) == 0
    text = capsys.readouterr().out
    assert "gzip -9, each file alone" in text and "gzip -9, files concatenated" in text
    assert "pretrainlab generate" in text and "def " in text
    record = json.loads((out / "quickstart.json").read_text())
    assert record["steps"] >= 1 and record["val_tokens"] > 0
    assert 0 < record["gzip_concatenated_bpb"] <= record["gzip_per_document_bpb"] < 8
    assert record["val_bpb"] > 0 and record["val_bytes"] > 0
    assert list((out / "run" / "checkpoints").glob("step-*"))
    # a second run reuses the prepared data when its config is the same, and prepares again otherwise
    prep, _ = quickstart_configs(out, TINY)
    assert _prepare_or_reuse(prep).fingerprint == PreparedData(out / "data").fingerprint
    assert "reusing the prepared data" in capsys.readouterr().out


def test_quickstart_without_validation_files_is_a_clear_error(tmp_path, capsys):
    args = [o for o in TINY if not o.startswith("prepare.validation")] + ["prepare.validation.fraction=0.0"]
    assert main(["quickstart", "--out", str(tmp_path / "qs"), "--minutes", "0.01", *args]) == 2
    assert "no validation documents" in capsys.readouterr().err


def test_thread_probe_keeps_the_faster_setting(tiny_prepared):
    import torch

    from pretrainlab.config import RunConfig
    from pretrainlab.quickstart import plan_threads

    before = torch.get_num_threads()
    cfg = RunConfig.model_validate({"data": {"path": str(tiny_prepared), "seq_len": 16},
                                    "model": {"n_layers": 1, "d_model": 16, "n_heads": 2},
                                    "train": {"global_batch_tokens": 64, "micro_batch_size": 4}})
    data = PreparedData(tiny_prepared)
    try:
        threads, step_s, timings = plan_threads(cfg, data, max_seconds=1.0)
        assert timings[threads] == step_s == min(timings.values()) and 1 in timings
        assert torch.get_num_threads() == threads
        pinned = cfg.model_copy(update={"train": cfg.train.model_copy(update={"threads": 1})})
        assert plan_threads(pinned, data, max_seconds=1.0)[0] == 1
    finally:
        torch.set_num_threads(before)


def test_gzip_verdict_names_the_stronger_gzip_figure():
    from pretrainlab.quickstart import gzip_verdict

    figures = {"gzip_per_document_bpb": 2.23, "gzip_concatenated_bpb": 2.11}
    assert gzip_verdict({"val_bpb": 1.5, **figures}).startswith("the model beats gzip -9 (1.500 vs 2.110")
    assert "but not on the files concatenated" in gzip_verdict({"val_bpb": 2.15, **figures})
    assert "does not beat" in gzip_verdict({"val_bpb": 2.5, **figures})
