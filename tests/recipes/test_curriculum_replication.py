"""The curriculum replication: its arms are valid runs with equal tokens per domain, the claim rules flip at
their thresholds, the fallback QA domain is well formed, and the pipeline runs end to end at a toy scale
(in-process sweeps, every stage switch happening, replication.json with computed claims)."""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers import make_prepared, random_docs  # noqa: E402

from pretrainlab.config import RunConfig, validate  # noqa: E402
from pretrainlab.errors import DataError  # noqa: E402
from pretrainlab.recipes.curriculum_data import arithmetic_question, gsm8k_qa_jsonl, prepare_domains  # noqa: E402
from pretrainlab.recipes.curriculum_replication import (  # noqa: E402
    CURRICULUM,
    SCALES,
    Scale,
    arm_overrides,
    average_weights,
    base_tree,
    claim_direct,
    claim_general,
    claim_order,
    claim_target,
    stages_tree,
)
from pretrainlab.science.replication import (  # noqa: E402
    REPLICATIONS,
    ReplicationContext,
    load_builtin_replications,
    write_replication,
)
from pretrainlab.science.sweep_spec import set_dotted  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

TOY = Scale(seq_len=32, batch_rows=4, steps=8, n_layers=1, d_model=16, n_heads=2, lr=3e-3, val_tokens=256, evals=1)


def qa_share(stages: list[dict]) -> float:
    """Tokens-weighted QA share of a data.stages tree."""
    bounds = [s.get("until_fraction", 1.0) for s in stages]
    spans = [b - a for a, b in zip([0.0] + bounds[:-1], bounds)]
    return sum(span * s["weights"]["qa"] / sum(s["weights"].values()) for span, s in zip(spans, stages))


def test_arms_are_valid_runs_with_equal_tokens_per_domain(tmp_path: Path) -> None:
    load_builtin_replications()
    assert REPLICATIONS.get("curriculum").default_seeds == 3
    arms = arm_overrides()
    assert list(arms) == ["shuffled", "curriculum", "reverse", "direct"]
    assert arms["shuffled"] == {"data.weights": {"general": 0.875, "qa": 0.125}}
    assert stages_tree(CURRICULUM) == [
        {"weights": {"general": 1.0, "qa": 0.0}, "until_fraction": 0.75},
        {"weights": {"general": 0.7, "qa": 0.3}, "until_fraction": 0.875},
        {"weights": {"general": 0.3, "qa": 0.7}},
    ]
    assert [s["weights"]["qa"] for s in arms["reverse"]["data.stages"]] == [0.7, 0.3, 0.0]
    for name in ("curriculum", "reverse"):  # the same tokens per domain as shuffled
        assert qa_share(arms[name]["data.stages"]) == pytest.approx(average_weights(CURRICULUM)["qa"])
    assert qa_share(arms["direct"]["data.stages"]) == pytest.approx(0.175)
    for scale in SCALES.values():
        assert scale.steps % 8 == 0  # every stage bound on a batch boundary
        for overrides in arms.values():
            tree = base_tree(scale, tmp_path / "data")
            for key, value in overrides.items():
                set_dotted(tree, key, value, where="arm")
            cfg = validate(RunConfig, tree, source="arm")
            assert cfg.train.steps == scale.steps and cfg.data.seq_len == scale.seq_len


def test_claim_rules_flip_at_their_thresholds() -> None:
    assert claim_target([2.10, 2.12], [2.07, 2.09]).holds is True  # 0.03 lower with the curriculum
    assert claim_target([2.10, 2.12], [2.09, 2.11]).holds is False  # 0.01
    assert claim_target([float("nan")], [2.0]).holds is None
    assert claim_general([2.00, 2.02], [2.04, 2.06]).holds is True  # 0.04 worse: within 0.05
    assert claim_general([2.00, 2.02], [2.06, 2.08]).holds is False  # 0.06 worse
    assert claim_order([2.20, 2.22], [2.10, 2.12]).holds is True
    assert claim_order([2.10, 2.12], [2.10, 2.12]).holds is False
    assert claim_direct([2.10, 2.12], [2.04, 2.06]).holds is True  # 0.06 worse general loss
    assert claim_direct([2.08, 2.10], [2.04, 2.06]).holds is False
    c = claim_target([2.1, 2.3, 2.2], [2.0, 2.1, 2.2])
    assert c.our_figure.startswith("+0.100 nats") and "over 3 seeds" in c.spread


def test_qa_documents_are_worked_question_answer_pairs(tmp_path: Path) -> None:
    rng = random.Random(0)
    for _ in range(200):
        text = arithmetic_question(rng)
        q, a = text.split("\nAnswer: ")
        assert q.startswith("Question: ") and q.endswith("?")
        *steps, last = a.split("\n")
        for step in steps:  # every worked step is correct arithmetic
            for x, op, y, z in re.findall(r"(\d+) ([-+*]) (\d+) = (\d+)", step):
                assert eval(f"{x} {op} {y}") == int(z)
        assert last == f"#### {steps[-1].split(' = ')[1].split()[0]}"
    src = tmp_path / "gsm8k.jsonl"
    src.write_text('{"question": "Q1?", "answer": "2 + 2 = 4\\n#### 4"}\n\n{"question": "Q2?"}\n')
    with pytest.raises(DataError, match=r"gsm8k.jsonl:3: not a GSM8K line"):
        gsm8k_qa_jsonl(src, tmp_path / "out.jsonl")
    src.write_text('{"question": "Q1?", "answer": "2 + 2 = 4\\n#### 4"}\n')
    out = gsm8k_qa_jsonl(src, tmp_path / "out.jsonl")
    assert json.loads(out.read_text()) == {"text": "Question: Q1?\nAnswer: 2 + 2 = 4\n#### 4"}


def test_data_must_have_the_two_domains(tmp_path: Path, tiny_prepared: Path) -> None:
    with pytest.raises(DataError, match=r"needs domains \['general', 'qa'\]; it has \['alpha', 'beta'\]"):
        prepare_domains(tmp_path, tiny_prepared)


def test_protocol_runs_end_to_end(tmp_path: Path, in_process: None) -> None:
    from pretrainlab.recipes.curriculum_replication import run_protocol
    from pretrainlab.train.metrics import read_metrics

    rng = np.random.default_rng(0)
    data = make_prepared(tmp_path / "prepared",
                         train={"general": random_docs(rng, 60), "qa": random_docs(rng, 60)},
                         val={"general": random_docs(rng, 8), "qa": random_docs(rng, 8)})
    ctx = ReplicationContext(out=tmp_path / "rep", scale="tiny", seeds=1, jobs=1, data=data)
    result = run_protocol(ctx, TOY)
    assert len(result.claims) == 4 and all(c.holds in (True, False) for c in result.claims)
    runs = result.details["runs"]
    assert list(runs) == ["shuffled", "curriculum", "reverse", "direct"]
    lines = [r for r in read_metrics(Path(runs["curriculum"][0]) / "metrics.jsonl") if "lr" in r]
    qa_weight = [r["domain_weights"]["qa"] for r in lines]
    assert qa_weight == [0.0] * 6 + [0.3, 0.7]  # stages switch at 75% and 87.5% of the 8 steps
    assert all(r["domain_weights"]["qa"] == 0.125 for r in read_metrics(Path(runs["shuffled"][0]) / "metrics.jsonl")
               if "lr" in r)
    assert (ctx.out / "plots" / "domain_val_loss.png").is_file() and (ctx.out / "plots" / "train_loss.png").is_file()
    saved = json.loads(write_replication(ctx.out, result).read_text())
    assert all(isinstance(v[0], float) for v in saved["details"]["val_loss_target"].values())
    assert any("Realised QA share" in n for n in saved["notes"])
