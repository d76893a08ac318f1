"""The procedural-warmup replication: its run trees validate, the curve arithmetic and the claims' rules
flip where they say, and a 2-step smoke of the whole protocol (stage 1, natural stage from init_from, the
needle task scored after training, replication.json)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from pretrainlab.config import RunConfig, validate
from pretrainlab.eval.tasks import FORMATS
from pretrainlab.recipes.procedural_warmup_data import CORPORA, loss_at, tokens_to_reach
from pretrainlab.recipes.procedural_warmup_replication import (
    SCALES,
    Scale,
    base_tree,
    claim_control,
    claim_fewer_tokens,
    claim_lower_loss,
    claim_needle,
    dyck_floor,
    fraction_to_reach,
    natural_arms,
    task_specs,
    warmup_arms,
)
from pretrainlab.science.replication import (
    REPLICATIONS,
    ReplicationContext,
    load_builtin_replications,
    write_replication,
)
from pretrainlab.science.sweep_spec import set_dotted

pytestmark = pytest.mark.usefixtures("one_thread")

TOY = Scale(seq_len=128, batch_rows=1, natural_steps=2, warmup_steps=2, n_layers=1, d_model=16, n_heads=2, lr=3e-3,
            eval_every=1, val_tokens=256, dyck_k=2, dyck_depth=4, dyck_length=32, dyck_documents=40, needle_n=4,
            needle_words=0, needles=2)


@pytest.mark.parametrize("scale", list(SCALES))
def test_registered_and_every_run_tree_validates(scale: str) -> None:
    load_builtin_replications()
    assert REPLICATIONS.get("procedural-warmup").default_seeds == 3
    s = SCALES[scale]
    base = base_tree(Path("prepared"), s)
    trees = {f"warmup {a}": o for a, o in warmup_arms(s).items()}
    trees.update({f"natural {a}": o for a, o in natural_arms({"dyck": Path("w1"), "dyck_shuffled": Path("w2")}).items()})
    trees["natural"] = {}
    for name, overrides in trees.items():
        tree = json.loads(json.dumps(base))
        for key, value in overrides.items():
            set_dotted(tree, key, value, where=name)
        cfg = validate(RunConfig, tree, source=name)
        assert cfg.data.seq_len == s.seq_len
    assert warmup_arms(s)["dyck"]["data.weights"] == {"dyck": 1.0} and warmup_arms(s)["dyck"]["train.steps"] == \
        s.warmup_steps
    # the after-training tasks fit the window in bytes (a cut haystack would lose its facts)
    fillers = ["generated"] + [str(p) for p in [CORPORA / "tinystories" / "tinystories_val.txt"] if p.is_file()]
    for filler in fillers:
        tasks = task_specs(s, filler)
        needles = FORMATS.get("needle_recall").read(None, tasks["needle_recall"])
        assert max(len((ex.context + max(ex.choices)).encode()) for ex in needles) <= s.seq_len + 1
        brackets = FORMATS.get("bracket_completion").read(None, tasks["bracket_completion"])
        assert max(len(ex.context + ex.continuation) for ex in brackets) <= s.seq_len + 1


def test_curve_arithmetic() -> None:
    curve = [(0.0, 3.0), (100.0, 2.0), (200.0, 1.5)]
    assert tokens_to_reach(curve, 2.5) == 50.0 and tokens_to_reach(curve, 3.5) == 0.0
    assert tokens_to_reach(curve, 1.0) is None
    assert loss_at(curve, 150.0) == 1.75 and loss_at(curve, 300.0) is None
    baseline = [(100.0, 2.2), (200.0, 2.0)]
    assert fraction_to_reach(curve, baseline) == 0.5  # the baseline's final 2.0 reached at 100 of its 200 tokens
    assert fraction_to_reach([(100.0, 2.5), (200.0, 2.1)], baseline) == 1.0  # never reached: counted as 1.0
    assert math.isnan(fraction_to_reach(curve, []))


def test_claim_rules_flip_at_their_thresholds() -> None:
    assert claim_fewer_tokens([0.85, 0.95]).holds is True  # mean 0.90
    assert claim_fewer_tokens([0.95, 0.9]).holds is False
    assert claim_fewer_tokens([math.nan]).holds is None
    assert claim_lower_loss([2.00, 2.02], [1.99, 2.01]).holds is True  # 0.01 nats
    assert claim_lower_loss([2.00, 2.02], [1.995, 2.015]).holds is False
    assert claim_needle([0.30, 0.40], [0.36, 0.45], 3).holds is True  # +5.5 points
    assert claim_needle([0.30, 0.40], [0.33, 0.44], 3).holds is False
    assert claim_control([2.0], [1.995]).holds is True  # a gain under 0.01 nats is no gain
    assert claim_control([2.0], [1.98]).holds is False


def test_dyck_floor_is_below_the_stackless_loss() -> None:
    with_stack, without = dyck_floor(SCALES["tiny"]), dyck_floor(SCALES["tiny"], stack=False)
    assert 0.9 < with_stack < without < with_stack + np.log(4)


def test_protocol_runs_end_to_end(tmp_path: Path, in_process: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from pretrainlab.recipes import procedural_warmup_data, procedural_warmup_replication
    from pretrainlab.train.metrics import read_metrics

    story = tmp_path / "stories.txt"
    story.write_text("".join(f"Once there was a cat number {i}. It sat in the sun all day.<|endoftext|>"
                             for i in range(300)))
    monkeypatch.setattr(procedural_warmup_data, "natural_source",
                        lambda: ({"type": "text", "domain": "natural", "paths": [str(story)], "split": "separator",
                                  "separator": "<|endoftext|>"}, "test stories", "generated"))
    ctx = ReplicationContext(out=tmp_path / "rep", scale="tiny", seeds=2, jobs=1, data=None)
    result = procedural_warmup_replication.run_protocol(ctx, TOY)
    assert [c.holds in (True, False) for c in result.claims] == [True] * 4
    runs = result.details["runs"]
    assert [len(runs[a]) for a in ("natural", "dyck", "dyck_shuffled")] == [2, 2, 2]
    warmups = result.details["warmup_runs"]
    for arm in ("dyck", "dyck_shuffled"):
        for seed in range(2):  # each seed's natural stage starts from that seed's stage-1 run
            cfg = yaml.safe_load((Path(runs[arm][seed]) / "config.yaml").read_text())
            assert cfg["init_from"] == warmups[arm][seed] and cfg["seed"] == seed
            assert cfg["callbacks"] == [{"name": "reinit_embeddings", "options": {}}]
            warm = yaml.safe_load((Path(warmups[arm][seed]) / "config.yaml").read_text())
            assert warm["data"]["weights"] == {arm: 1.0} and warm["train"]["steps"] == TOY.warmup_steps
    assert [r["step"] for r in read_metrics(Path(runs["dyck"][0]) / "metrics.jsonl") if "val_loss/natural" in r
            and "event" not in r] == [1, 2]
    assert set(result.details["tasks"]["dyck"][0]) >= {"needle_recall/acc", "needle_recall/acc_choice",
                                                        "bracket_completion/acc_token"}
    assert (Path(runs["natural"][0]) / "tasks-step2.json").is_file()
    data = json.loads(write_replication(ctx.out, result).read_text())
    assert len(data["claims"]) == 4 and (ctx.out / "plots" / "natural_val_loss.png").is_file()
    assert any(n.startswith("Natural validation loss along the natural stage") for n in data["notes"])
