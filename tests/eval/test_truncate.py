"""`pretrainlab truncate` / `save_truncated` (eval/truncate.py): a trained low_rank run cut to a lower rank is a
run folder that `pretrainlab eval` reads, computing what `truncate_rank` computes in memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import make_prepared, markov_docs, tiny_run_config, train_run
from pretrainlab.cli import main
from pretrainlab.data.prepared import PreparedData
from pretrainlab.errors import ConfigError
from pretrainlab.eval.evaluate import evaluate
from pretrainlab.eval.load import load_run
from pretrainlab.eval.truncate import save_truncated
from pretrainlab.model.low_rank import LowRankLinear, truncate_rank

pytestmark = pytest.mark.usefixtures("one_thread")

LOW_RANK = {"n_layers": 2, "d_model": 32, "n_heads": 2, "linear": "low_rank",
            "linear_options": {"rank_fraction": 0.25, "alpha": 4, "ordered_dropout": True}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("truncate")
    rng = np.random.default_rng(0)
    data = make_prepared(root / "prepared", train={"a": markov_docs(rng, 40)}, val={"a": markov_docs(rng, 4)})
    run = train_run(tiny_run_config(root / "runs", data, name="lr", model=LOW_RANK, train={"steps": 6},
                                    optim={"lr": 1e-2}, eval={"every": None}))
    dense = train_run(tiny_run_config(root / "runs", data, name="dense", train={"steps": 2}, eval={"every": None}))
    return {"root": root, "data": data, "run": run, "dense": dense}


def _val_loss(model: torch.nn.Module, data: Path) -> float:
    return evaluate(model, PreparedData(data), seq_len=32, max_tokens_per_domain=512, batch_size=8,
                    device=torch.device("cpu"), autocast_dtype=None)["val_loss"]


def test_a_truncated_run_folder_evaluates_as_the_truncated_model(trained, tmp_path, capsys):
    model, cfg, *_ = load_run(trained["run"])
    full = _val_loss(model, trained["data"])
    assert {m.rank for m in model.modules() if isinstance(m, LowRankLinear)} == {8}
    truncate_rank(model, 3)
    in_memory = _val_loss(model, trained["data"])

    assert save_truncated(trained["run"], tmp_path / "r3", 3) == 3
    loaded, saved, *_ = load_run(tmp_path / "r3")
    assert saved.model.linear_options == {"rank": 3, "alpha": 1.5, "ordered_dropout": True}  # alpha/r kept: 0.5
    assert saved.name == "r3" and saved.init_from is None
    assert {m.rank for m in loaded.modules() if isinstance(m, LowRankLinear)} == {3}
    from_folder = _val_loss(loaded, trained["data"])
    print(f"val_loss rank 8 {full:.5f}, rank 3 in memory {in_memory:.5f}, rank 3 from the folder {from_folder:.5f}")
    assert from_folder == pytest.approx(in_memory, abs=1e-6) and abs(from_folder - full) > 1e-4

    capsys.readouterr()
    assert main(["eval", str(tmp_path / "r3")]) == 0  # the folder is a run eval reads
    assert f"{from_folder:.4f}" in capsys.readouterr().out

    # the command, with a fraction; a rank at or above the layers' keeps the model as it is
    assert main(["truncate", str(trained["run"]), "--rank", "0.5", "--out", str(tmp_path / "half")]) == 0
    assert load_run(tmp_path / "half")[1].model.linear_options["rank"] == 4
    assert save_truncated(trained["run"], tmp_path / "all", 100) == 8
    assert _val_loss(load_run(tmp_path / "all")[0], trained["data"]) == pytest.approx(full, abs=1e-6)


def test_truncate_errors_name_what_is_wrong(trained, tmp_path):
    with pytest.raises(ConfigError, match=r"model\.linear='dense'; truncate cuts the rank of a low_rank model"):
        save_truncated(trained["dense"], tmp_path / "d", 2)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    with pytest.raises(ConfigError, match=r"exists and is not an empty folder"):
        save_truncated(trained["run"], tmp_path / "busy", 2)
    with pytest.raises(ConfigError, match=r"--rank 0: rank 0 must be at least 1"):
        save_truncated(trained["run"], tmp_path / "zero", 0)
    assert not (tmp_path / "zero").exists()
