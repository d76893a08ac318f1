"""The SLTrain replication: its protocol end to end at a toy scale (replication.json with computed claims),
the equal-parameter rank, and each claim's rule on planted numbers (holds flips across the threshold)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from pretrainlab.recipes.sltrain_replication import (
    SCALES,
    Scale,
    arm_models,
    claim_beats_low_rank,
    claim_close_to_dense,
    claim_dense_best,
    equal_params_rank,
)
from pretrainlab.science.arms import non_embedding_params
from pretrainlab.science.replication import (
    REPLICATIONS,
    ReplicationContext,
    load_builtin_replications,
    write_replication,
)

pytestmark = pytest.mark.usefixtures("one_thread")


TOY = Scale(train_tokens=8192, val_tokens=1024, seq_len=32, batch_rows=4, steps=3, n_layers=1, d_model=16,
            n_heads=2, rank=4, density=0.05, lrs=(3e-3,), low_rank_lrs=(1e-2,))
PARAMS = {"dense": 100.0, "low_rank": 45.0, "sltrain": 44.0}


def test_registered() -> None:
    load_builtin_replications()
    assert REPLICATIONS.get("sltrain").default_seeds == 3


def test_low_rank_arm_has_nearly_sltrain_parameters() -> None:
    scale = SCALES["tiny"]
    sizes = {"n_layers": scale.n_layers, "d_model": scale.d_model, "n_heads": scale.n_heads}
    r = equal_params_rank(scale)
    sl = non_embedding_params({**sizes, "linear": "sparse_low_rank",
                               "linear_options": {"rank": scale.rank, "density": scale.density}})
    lr = non_embedding_params({**sizes, "linear": "low_rank", "linear_options": {"rank": r}})
    dense = non_embedding_params(sizes)
    assert r >= scale.rank and abs(lr - sl) / sl < 0.01
    assert 0.35 < sl / dense < 0.5  # about half the non-embedding parameters (the paper's ~43%)
    assert arm_models(scale)["low_rank"]["model.linear_options"]["rank"] == r


def test_claim_rules_flip_at_their_thresholds() -> None:
    assert claim_beats_low_rank([3.10, 3.12], [3.04, 3.06], PARAMS).holds is True  # 0.06 nats
    assert claim_beats_low_rank([3.10, 3.12], [3.06, 3.08], PARAMS).holds is False  # 0.04 nats
    c = claim_close_to_dense([3.0, 3.0], [3.14, 3.14], PARAMS)  # ratio 1.047
    assert c.holds is True and "44% of dense" in c.our_figure
    assert claim_close_to_dense([3.0, 3.0], [3.16, 3.16], PARAMS).holds is False  # ratio 1.053
    assert claim_close_to_dense([3.0], [3.0], {**PARAMS, "sltrain": 70.0}).holds is False  # not half the params
    assert claim_dense_best([3.0, 3.1], [3.05, 3.1]).holds is True
    assert claim_dense_best([3.0, 3.1], [2.9, 3.1]).holds is False
    assert claim_beats_low_rank([math.nan], [math.nan], PARAMS).holds is None


def test_protocol_runs_end_to_end(tiny_prepared: Path, tmp_path: Path, in_process: None) -> None:
    from pretrainlab.recipes.sltrain_replication import run_protocol

    ctx = ReplicationContext(out=tmp_path / "rep", scale="tiny", seeds=1, jobs=2, data=tiny_prepared)
    result = run_protocol(ctx, TOY)
    assert [c.holds in (True, False) for c in result.claims] == [True, True, True]
    assert result.details["seeds"] == [1]
    params = result.details["params_non_embedding"]
    assert params["sltrain"] < params["dense"] and abs(params["low_rank"] - params["sltrain"]) / params["dense"] < 0.1
    assert (ctx.out / "plots" / "train_loss.png").stat().st_size > 1000
    data = json.loads(write_replication(ctx.out, result).read_text())
    assert len(data["claims"]) == 3 and all(isinstance(c["holds"], bool) for c in data["claims"])
    assert all(len(v) == 1 and v[0] is not None for v in data["details"]["val_loss"].values())


def test_tune_lr_runs_each_arms_own_grid(tiny_prepared: Path, tmp_path: Path, in_process: None) -> None:
    from pretrainlab.recipes.sltrain_replication import base_tree
    from pretrainlab.science.arms import tune_lr

    ctx = ReplicationContext(out=tmp_path / "rep", scale="tiny", seeds=1, jobs=1, data=None)
    base = base_tree(str(tiny_prepared), seq_len=32, batch_rows=4, steps=2, n_layers=1, d_model=16, n_heads=2,
                     val_tokens=512)
    arms = {"a": {}, "b": {"model.d_model": 32}}
    chosen, losses = tune_lr(ctx, "grid", base, arms, {"a": [1e-3, 1e-2], "b": [3e-3]}, seed=0)
    assert set(losses["a"]) == {1e-3, 1e-2} and losses["b"] == {}  # b has nothing to choose: not run
    assert chosen["a"] == min(losses["a"], key=lambda lr: losses["a"][lr]) and chosen["b"] == 3e-3
    assert len(list((ctx.out / "sweeps" / "grid" / "runs").iterdir())) == 2
