"""The synthetic tasks (needle_recall, bracket_completion, copy_accuracy): a model that follows each task's
rule from the context alone scores 100%, models with uniform or random logits score at chance; the
examples are what they claim to be; options and windows are checked before scoring."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace
from typing import Callable

import numpy as np
import pytest
import torch
from torch import nn

from pretrainlab.cli import main
from pretrainlab.data.procedural.dyck import closing_sequence, is_dyck
from pretrainlab.data.tokenizer import TextTokenizer
from pretrainlab.errors import ConfigError, DataError
from pretrainlab.eval.tasks import FORMATS, evaluate_tasks, parse_task_args, resolve_tasks

from .task_helpers import EOT

V = 258
Rule = Callable[[str], "str | None"]


class ByteModel(nn.Module):
    """A stand-in model for the likelihood engine: the hidden state at position t is the logit vector for
    the token after x[:, :t+1]; `logits` is the identity. `oracle` puts all the mass on the byte that
    `rule(text so far)` names (uniform where it names none); `table` (V, V) gives logits from the last token."""

    def __init__(self, rule: Rule | None = None, table: torch.Tensor | None = None, window: int = 2048) -> None:
        super().__init__()
        self.cfg = SimpleNamespace(max_seq_len=window)
        self.rule, self.table = rule, table

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.table is not None:
            return self.table[x]
        out = np.zeros((*x.shape, V), dtype=np.float32)
        if self.rule is not None:
            for b, row in enumerate(x.tolist()):
                text = bytes(i if i < 256 else 0 for i in row).decode("ascii", errors="replace")
                for t in range(len(row)):
                    nxt = self.rule(text[: t + 1])
                    if nxt:
                        out[b, t, ord(nxt)] = 30.0
        return torch.from_numpy(out)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return h


def oracle(rule: Rule) -> ByteModel:
    return ByteModel(rule=rule)


def uniform() -> ByteModel:
    return ByteModel()


def random_logits() -> ByteModel:
    return ByteModel(table=torch.randn(V, V, generator=torch.Generator().manual_seed(0)) * 3)


def needle_rule(text: str) -> str | None:
    """The asked value, read from the fact planted earlier in the text."""
    if not text.endswith(("is", " ", *"0123456789")):
        return None
    m = re.search(r"The number of (\w+) is( \d*)?$", text[-40:])
    if not m:
        return None
    fact = re.search(rf"The number of {m[1]} is (\d+)\.", text)
    want = f" {fact[1]}" if fact else ""
    done = m[2] or ""
    return want[len(done)] if len(done) < len(want) else None


def bracket_rule(text: str) -> str | None:
    """Close the innermost open bracket (a space between symbols)."""
    if not text.endswith(" "):
        return " "
    try:
        closing = closing_sequence(text.split(), 3)
    except ValueError:
        return None
    return closing[0] if closing else None


def copy_rule(text: str, miss_last: bool = False) -> str | None:
    """The string before " |" again; with `miss_last`, a wrong last byte."""
    if " |" not in text:
        return None
    source, done = text.split(" |", 1)
    want = f" {source}"
    if miss_last and len(done) == len(want) - 1:
        return "#"
    return want[len(done)] if len(done) < len(want) else None


TASKS = {
    "needle_recall": ({"n": 60, "length": 30, "needles": 3}, needle_rule, {"acc": 0.0, "acc_choice": 1 / 3}),
    "bracket_completion": ({"n": 60, "k": 3}, bracket_rule, {"acc": 0.0, "acc_token": 0.0}),
    "copy_accuracy": ({"n": 60}, copy_rule, {"acc": 0.0, "acc_token": 0.0}),
}


def score(model: nn.Module, name: str, options: dict) -> dict[str, float]:
    out = evaluate_tasks(model, TextTokenizer.bytes(), resolve_tasks({name: options}), eot_id=EOT, device="cpu")
    return {k.rsplit("/", 1)[1]: v for k, v in out.items()}


@pytest.mark.parametrize("name", list(TASKS))
def test_an_oracle_scores_100_and_uniform_or_random_logits_score_chance(name: str) -> None:
    options, rule, chance = TASKS[name]
    best = score(oracle(rule), name, options)
    assert best["n"] == options["n"] and all(best[m] == 1.0 for m in chance), best
    for model in (uniform(), random_logits()):
        got = score(model, name, options)
        for metric, level in chance.items():
            assert abs(got[metric] - level) <= 0.15, (metric, got)


def test_per_token_accuracy_counts_each_token() -> None:
    """A copier that gets every byte but the last: no exact match, and exactly (m - 1) / m of the tokens."""
    options = {"n": 30}
    got = score(oracle(lambda t: copy_rule(t, miss_last=True)), "copy_accuracy", options)
    spec = resolve_tasks({"copy_accuracy": options})[0]
    lengths = [len(ex.continuation) for ex in FORMATS.get("copy_accuracy").read(None, spec.options)]
    assert got["acc"] == 0.0
    assert got["acc_token"] == pytest.approx(sum(m - 1 for m in lengths) / sum(lengths))


def test_needle_examples_plant_every_value_once_and_ask_one() -> None:
    spec = resolve_tasks({"needle_recall": {"n": 40, "needles": 4, "length": 30, "seed": 5}})[0]
    examples = FORMATS.get("needle_recall").read(None, spec.options)
    for ex in examples:
        facts = re.findall(r"The number of (\w+) is (\d+)\.", ex.context)
        assert sorted(f" {v}" for _, v in facts) == sorted(ex.choices) and len(facts) == 4
        asked = re.search(r"The number of (\w+) is$", ex.context)[1]
        assert dict(facts)[asked] == ex.choices[ex.gold].strip()
        filler = len(ex.context.split()) - 6 * 4 - 5  # the facts' and the question's words
        assert 20 <= filler <= 30  # whole generated sentences (~8-12 words), at most `length` words
    assert {ex.gold for ex in examples} == {0, 1, 2, 3}
    assert FORMATS.get("needle_recall").read(None, spec.options) == examples  # a pure function of the seed


def test_needle_filler_from_a_text_file(tmp_path) -> None:
    path = tmp_path / "filler.txt"
    path.write_text("Alpha beta gamma delta. Epsilon zeta eta theta. Iota kappa lambda mu.\n")
    spec = resolve_tasks({"needle_recall": {"n": 5, "filler": str(path), "length": 12}})[0]
    for ex in FORMATS.get("needle_recall").read(None, spec.options):
        assert "Alpha beta" in ex.context or "Epsilon zeta" in ex.context
        assert "farmer" not in ex.context
    spec = resolve_tasks({"needle_recall": {"filler": str(tmp_path / "none.txt")}})[0]
    with pytest.raises(DataError, match="none.txt does not exist"):
        FORMATS.get("needle_recall").read(None, spec.options)


def test_bracket_and_copy_examples_are_right() -> None:
    spec = resolve_tasks({"bracket_completion": {"n": 50, "k": 4, "separator": "", "min_length": 3}})[0]
    for ex in FORMATS.get("bracket_completion").read(None, spec.options):
        assert 3 <= len(ex.context) <= 32 and ex.continuation  # some bracket is left open
        assert is_dyck(list(ex.context + ex.continuation), 4)
    spec = resolve_tasks({"copy_accuracy": {"n": 20, "alphabet": "digits"}})[0]
    for ex in FORMATS.get("copy_accuracy").read(None, spec.options):
        assert ex.context == f"{ex.continuation.strip()} |" and set(ex.continuation) <= set(" 0123456789")


def test_options_and_windows_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"tasks.bracket_completion.k: .*less than or equal to 30"):
        FORMATS.get("bracket_completion").read(None, {"k": 31})
    with pytest.raises(ConfigError, match="unknown option"):
        resolve_tasks({"copy_accuracy": {"lenght": 3}})
    with pytest.raises(ConfigError, match="tasks.needle_recall"):
        FORMATS.get("needle_recall").read(None, {"needles": 11, "digits": 1})
    examples = FORMATS.get("needle_recall").read(None, {"needles": 10, "digits": 1, "n": 3})  # 0..9: ten values
    assert len(examples) == 3
    small = ByteModel(window=64)
    with pytest.raises(DataError, match="(?s)do not fit the model's window of 64.*length"):
        score(small, "needle_recall", {"n": 2, "length": 50})


def test_tasks_are_named_on_the_command_line_and_in_a_run_config(tmp_path, tiny_prepared, capsys) -> None:
    from helpers import tiny_run_config, train_run
    from pretrainlab.train.metrics import read_metrics

    assert set(parse_task_args(["needle_recall", "bracket_completion", "copy_accuracy"])) == {
        "needle_recall", "bracket_completion", "copy_accuracy"}
    cfg = tiny_run_config(tmp_path / "runs", tiny_prepared, data={"path": str(tiny_prepared), "seq_len": 640},
                          train={"steps": 2, "global_batch_tokens": 640, "micro_batch_size": 1},
                          tasks={"tasks": {"copy_accuracy": {"n": 4}}})
    run = train_run(cfg)
    evals = [r for r in read_metrics(run / "metrics.jsonl") if "task/copy_accuracy/acc_token" in r]
    assert evals and evals[-1]["task/copy_accuracy/n"] == 4
    assert main(["eval", str(run), "--tasks", "needle_recall", "bracket_completion", "--limit", "2"]) == 0
    assert "needle_recall" in capsys.readouterr().out
    saved = json.loads(next(run.glob("tasks-step*.json")).read_text())["results"]
    assert {r["task"]: set(r["metrics"]) for r in saved.values()} == {
        "needle_recall": {"acc", "acc_choice", "n"}, "bracket_completion": {"acc", "acc_token", "n"}}
