"""Config errors of `train`: each names the field and says what to do, before anything is built."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from helpers import tiny_run_config
from pretrainlab.cli import main
from pretrainlab.config import RunConfig, load_config
from pretrainlab.errors import ConfigError, DataError
from pretrainlab.train.batch_plan import plan_batches
from pretrainlab.train.run_folder import load_run_config
from pretrainlab.train.trainer import Trainer


def write(tmp_path: Path, tree: dict) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def test_unknown_key_suggests_the_closest(tmp_path: Path) -> None:
    path = write(tmp_path, {"train": {"stepz": 10}})
    with pytest.raises(ConfigError, match=r"unknown key 'train.stepz'; did you mean 'train.steps'"):
        load_config(RunConfig, path)


def test_cli_reports_config_error_with_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, {"optim": {"lr": -1.0}})
    assert main(["train", str(path)]) == 2
    assert "optim.lr" in capsys.readouterr().err


@pytest.mark.parametrize(
    "train, seq_len, world, message",
    [
        ({"global_batch_tokens": 1000}, 32, 1, r"train.global_batch_tokens=1000 is not a multiple of data.seq_len=32"),
        ({"global_batch_tokens": 32 * 12, "micro_batch_size": 8}, 32, 1, r"train.micro_batch_size=8"),
        ({"global_batch_tokens": 32 * 8, "micro_batch_size": 4}, 32, 3, r"on 3 process\(es\)"),
    ],
)
def test_batch_divisibility(train: dict, seq_len: int, world: int, message: str) -> None:
    cfg = RunConfig.model_validate({"train": train, "data": {"seq_len": seq_len}})
    with pytest.raises(ConfigError, match=message) as e:
        plan_batches(cfg, world)
    assert e.value.hint


def test_batch_plan() -> None:
    cfg = RunConfig.model_validate(
        {"train": {"global_batch_tokens": 64 * 32, "micro_batch_size": 4}, "data": {"seq_len": 64}}
    )
    plan = plan_batches(cfg, world_size=2)
    assert (plan.global_rows, plan.rows_per_rank, plan.accum_steps, plan.tokens_per_step) == (32, 16, 4, 2048)


@pytest.mark.parametrize(
    "sections, error, message",
    [
        ({"train": {"global_batch_tokens": 100}}, ConfigError, r"train.global_batch_tokens"),
        ({"schedule": {"name": "cosin"}}, ConfigError, r"schedule.name.*'cosine'"),
        ({"optim": {"name": "adam_w"}}, ConfigError, r"optim.name.*'adamw'"),
        ({"callbacks": [{"name": "sigtrem"}]}, ConfigError, r"callbacks.0.name.*'sigterm'"),
        ({"objective": "next_tokn"}, ConfigError, r"objective.*'next_token'"),
        ({"model": {"n_layers": 2, "d_model": 30, "n_heads": 4}}, ConfigError, r"model.d_model=30"),
        ({"data": {"seq_len": 32, "weights": {"gamma": 1.0}}}, DataError, r"gamma"),
    ],
)
def test_errors_come_before_the_run_folder_or_model(
    tmp_path: Path, tiny_prepared: Path, sections: dict, error: type, message: str
) -> None:
    if "data" in sections:
        sections["data"]["path"] = str(tiny_prepared)
    cfg = tiny_run_config(tmp_path / "runs", tiny_prepared, **sections)
    with pytest.raises(error, match=message):
        Trainer(cfg)
    assert not (tmp_path / "runs").exists()


def test_missing_data_folder_is_a_data_error(tmp_path: Path) -> None:
    cfg = tiny_run_config(tmp_path / "runs", tmp_path / "nowhere")
    with pytest.raises(DataError, match="nowhere.*does not exist"):
        Trainer(cfg)


def test_load_run_config_of_a_non_run_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config.yaml is missing"):
        load_run_config(tmp_path)
