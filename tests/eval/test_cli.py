"""`pretrainlab eval` and `pretrainlab generate` on a tiny trained run, and their errors."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import make_prepared, random_docs
from pretrainlab.cli import main
from pretrainlab.config import RunConfig
from pretrainlab.data.prepared import PreparedData


def _train_tiny(cfg: RunConfig) -> Path:
    """~10 steps of a 2-layer x 32 model through the Trainer (which checkpoints at the end)."""
    from pretrainlab.train.trainer import Trainer

    Trainer(cfg).fit()
    return Path(cfg.out_dir) / cfg.name


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(run folder, prepared folder): one tiny run shared by the tests of this file (train once)."""
    tmp_path = tmp_path_factory.mktemp("tiny_run")
    rng = np.random.default_rng(0)
    tiny_prepared = make_prepared(
        tmp_path / "prepared",
        train={"alpha": random_docs(rng, 200), "beta": random_docs(rng, 100, 50, 400)},
        val={"alpha": random_docs(rng, 20), "beta": random_docs(rng, 10, 50, 400)},
    )
    cfg = RunConfig.model_validate(
        {
            "name": "tiny",
            "out_dir": str(tmp_path / "runs"),
            "data": {"path": str(tiny_prepared), "seq_len": 32},
            "model": {"n_layers": 2, "d_model": 32, "n_heads": 2},
            "train": {"steps": 10, "global_batch_tokens": 128, "micro_batch_size": 4, "progress": False,
                      "precision": "fp32", "log_every": 5},
            "eval": {"max_tokens_per_domain": 500, "batch_size": 4},
        }
    )
    return _train_tiny(cfg), tiny_prepared


@pytest.fixture
def tiny_run(trained) -> Path:
    return trained[0]


@pytest.fixture
def tiny_prepared(trained) -> Path:
    return trained[1]


def test_eval_prints_table_and_writes_json(tiny_run, tiny_prepared, capsys):
    assert main(["eval", str(tiny_run)]) == 0
    out = capsys.readouterr().out
    assert "alpha" in out and "beta" in out and "bits/byte" in out
    record = json.loads((tiny_run / f"eval-{tiny_prepared.name}.json").read_text())
    m = record["metrics"]
    assert set(m) >= {"val_loss", "val_bpb", "val_loss/alpha", "val_bpb/beta", "val_tokens"}
    assert 0 < m["val_loss"] < 2 * np.log(258)
    assert record["step"] == 10 and record["data_fingerprint"] == PreparedData(tiny_prepared).fingerprint


def test_eval_on_other_data_with_same_tokenizer(tiny_run, tmp_path):
    rng = np.random.default_rng(7)
    other = make_prepared(tmp_path / "other", train={"gamma": random_docs(rng, 5)}, val={"gamma": random_docs(rng, 5)})
    assert main(["eval", str(tiny_run), "--data", str(other)]) == 0
    record = json.loads((tiny_run / "eval-other.json").read_text())
    assert "val_bpb/gamma" in record["metrics"]


def test_eval_refuses_another_tokenizer(tiny_run, tmp_path, capsys):
    rng = np.random.default_rng(8)
    other = make_prepared(tmp_path / "o", train={"g": random_docs(rng, 3)}, val={"g": random_docs(rng, 3)},
                          vocab_size=300, eot_id=298, pad_id=299)
    assert main(["eval", str(tiny_run), "--data", str(other)]) == 2
    err = capsys.readouterr().err
    assert "different tokenizer" in err and "vocab_size" in err


def test_eval_errors_for_bad_run_path_and_missing_checkpoints(tiny_run, tmp_path, capsys):
    assert main(["eval", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    tiny_run = Path(shutil.copytree(tiny_run, tmp_path / "copy"))
    shutil.rmtree(tiny_run / "checkpoints")
    assert main(["eval", str(tiny_run)]) == 2
    assert "no complete checkpoint" in capsys.readouterr().err
    assert main(["generate", str(tiny_run)]) == 2


def test_generate_is_deterministic_per_seed(tiny_run, capsys):
    args = ["generate", str(tiny_run), "--prompt", "ab", "--max-tokens", "20", "--seed", "3"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert first.startswith("ab")
    assert main(args) == 0
    assert capsys.readouterr().out == first
    assert main(["generate", str(tiny_run), "--prompt", "ab", "--temperature", "0", "--max-tokens", "10"]) == 0
    assert main(["generate", str(tiny_run), "--temperature", "-1"]) == 2
    assert "--temperature" in capsys.readouterr().err
