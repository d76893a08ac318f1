"""The SPDF replication: the protocol end to end at a smoke scale (1 seed, a few steps: pre-training dense and
masked, dense fine-tuning from each, claims computed, replication.json written), and each claim's rule on
planted figures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from helpers import make_prepared

from pretrainlab.errors import DataError
from pretrainlab.recipes.spdf_replication import (
    SCALES,
    Figures,
    Scale,
    flops_claim,
    gap_claim,
    ordered_claim,
    prepare_domains,
    pretrain_arms,
)
from pretrainlab.science.replication import (
    REPLICATIONS,
    ReplicationContext,
    load_builtin_replications,
    write_replication,
)

pytestmark = pytest.mark.usefixtures("one_thread")

SMOKE = Scale(n_layers=1, d_model=16, n_heads=2, seq_len=32, batch_rows=4, pretrain_tokens=4096,
              finetune_tokens=2048, val_tokens=256, pretrain_steps=4, finetune_steps=2, lr=3e-3, finetune_lr=1e-3,
              sparsities=(0.75,))  # one sparse arm: 2 pre-training + 3 fine-tuning runs


def figures(pre: dict[str, list[float]], ft: dict[str, list[float]]) -> Figures:
    return Figures(pretrain=pre, finetune=ft, scratch=[3.5, 3.6],
                   flops={"dense": 6.0e6, "sparse50": 4.0e6, "sparse75": 2.4e6},
                   tokens_per_s={"dense": [5000.0, 5100.0], "sparse50": [4000.0, 4100.0], "sparse75": [4050.0, 4000.0]},
                   sparsity={"sparse50": 0.5, "sparse75": 0.75})


def test_ordered_claim_needs_strictly_rising_means() -> None:
    ft = {"dense": [3.0, 3.0], "sparse50": [3.0, 3.0], "sparse75": [3.0, 3.0]}
    c = ordered_claim(figures({"dense": [2.0, 2.1], "sparse50": [2.2, 2.25], "sparse75": [2.4, 2.3]}, ft))
    assert c.holds is True and "dense 2.050 < sparse50 2.225 < sparse75 2.350" in c.our_figure
    c = ordered_claim(figures({"dense": [2.0, 2.1], "sparse50": [2.4, 2.5], "sparse75": [2.4, 2.3]}, ft))
    assert c.holds is False and "sparse50 2.450 > sparse75 2.350" in c.our_figure
    c = ordered_claim(figures({"dense": [2.0, math.nan], "sparse50": [math.nan], "sparse75": [2.4]}, ft))
    assert c.holds is None


def test_gap_claim_is_paired_by_seed_and_halving_is_the_rule() -> None:
    pre = {"dense": [2.0, 2.2], "sparse50": [2.1, 2.3], "sparse75": [2.2, 2.4]}  # 75% gaps 0.2, 0.2
    shrunk = {"dense": [3.0, 3.1], "sparse50": [3.03, 3.13], "sparse75": [3.1, 3.2]}  # 75% gaps 0.1 = half
    c = gap_claim(figures(pre, shrunk), "sparse75")
    assert c.holds is True and "+0.200 -> +0.100" in c.our_figure and "50%" in c.our_figure
    kept = {**shrunk, "sparse75": [3.12, 3.22]}  # 0.12: kept 60%
    assert gap_claim(figures(pre, kept), "sparse75").holds is False
    assert gap_claim(figures(pre, shrunk), "sparse50").holds is True  # 0.1 -> 0.03
    no_gap = {**pre, "sparse75": [1.9, 2.1]}
    c = gap_claim(figures(no_gap, shrunk), "sparse75")
    assert c.holds is None and "no pre-training gap" in c.our_figure


def test_flops_claim_rule_and_measured_speed() -> None:
    ft = {"dense": [3.0], "sparse50": [3.0], "sparse75": [3.0]}
    f = figures({"dense": [2.0], "sparse50": [2.1], "sparse75": [2.2]}, ft)
    c = flops_claim(f, "sparse75")
    assert c.holds is True and c.our_figure.startswith("2.50x fewer FLOPs") and "speed-up 0.80x" in c.our_figure
    f.flops["sparse75"] = 3.5e6
    assert flops_claim(f, "sparse75").holds is False


def test_arms_and_data_choice(tiny_prepared: Path, tmp_path: Path) -> None:
    assert list(pretrain_arms(SCALES["tiny"])) == ["dense", "sparse50", "sparse75"]
    ctx = ReplicationContext(out=tmp_path / "rep", scale="tiny", seeds=1, jobs=1, data=tiny_prepared)
    data = prepare_domains(ctx)
    assert (data.pretrain, data.finetune) == (["alpha"], "beta")  # the last domain is held out
    one = make_prepared(tmp_path / "one", train={"alpha": [[1, 2, 3]]})
    with pytest.raises(DataError, match="at least two domains"):
        prepare_domains(ReplicationContext(out=tmp_path / "rep", scale="tiny", seeds=1, jobs=1, data=one))


def test_registered() -> None:
    load_builtin_replications()
    assert REPLICATIONS.get("spdf").default_seeds == 3


@pytest.mark.slow
def test_protocol_runs_end_to_end(tiny_prepared: Path, tmp_path: Path) -> None:
    from pretrainlab.recipes.spdf_replication import run_protocol

    ctx = ReplicationContext(out=tmp_path / "rep", scale="tiny", seeds=1, jobs=2, data=tiny_prepared)
    result = run_protocol(ctx, SMOKE)
    assert len(result.claims) == 3 and all(c.holds in (True, False, None) for c in result.claims)
    path = write_replication(ctx.out, result)
    data = json.loads(path.read_text())
    assert set(data["details"]["finetune_val_loss"]) == {"dense", "sparse75"}
    assert (ctx.out / "plots" / "spdf.png").stat().st_size > 1000
    flops = data["details"]["flops_per_token"]
    assert flops["sparse75"] < flops["dense"]
    # holds computed by the rule from the recorded figures (at this toy width the head dominates: ratio < 2)
    assert data["claims"][-1]["holds"] is (flops["dense"] / flops["sparse75"] >= 2)
    assert data["claims"][0]["holds"] is (data["details"]["pretrain_val_loss"]["sparse75"][0]
                                          > data["details"]["pretrain_val_loss"]["dense"][0])
    run = Path(data["details"]["runs"]["finetune"]["sparse75"][0])
    ends = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"end"' in line]
    assert ends[-1]["flops_per_token"] == flops["dense"]  # fine-tuned densely: the mask is gone
    assert all(len(v) == 5 and min(v) > 0 for v in data["details"]["tokens_per_s"].values())  # timed rounds

    # A second run redoes nothing: the fine-tuning runs (init_from fills and records the model) are skipped too.
    metrics = sorted((ctx.out / "sweeps").glob("*/runs/*/metrics.jsonl"))
    assert len(metrics) == 5
    before = {p: p.stat().st_mtime_ns for p in metrics}
    again = run_protocol(ctx, SMOKE)
    assert {p: p.stat().st_mtime_ns for p in metrics} == before
    assert [c.holds for c in again.claims[:2]] == [c.holds for c in result.claims[:2]]
