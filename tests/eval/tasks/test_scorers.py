"""Every scorer against log-likelihoods computed by hand (one explicit full forward + log-softmax per
sequence, no engine), and multiple choice never forwarding a shared context once per choice."""

from __future__ import annotations

import math

import numpy as np
import pytest

import torch

from pretrainlab.eval.tasks import Engine, evaluate_tasks, resolve_tasks

from .task_helpers import EOT, SEQ, greedy_text, ll, logprobs, write_jsonl

pytestmark = pytest.mark.usefixtures("one_thread")

MC_ROWS = [
    {"query": "The cat sat on the", "choices": ["mat.", "moon and the stars.", "x"], "gold": 0},
    {"query": "Water is", "choices": ["wet", "dry as a bone", "blue"], "gold": 2},
    {"query": "One two", "choices": ["three", "four!"], "gold": 1},
    {"query": "Q: a?", "choices": ["yes", "no", "maybe so"], "gold": 1},
]


def run(model, tok, name, spec, **kw):
    """One task's metrics, {metric: value}; `spec` is a path or a {path, format, options...} mapping."""
    spec = spec if isinstance(spec, dict) else str(spec)
    out = evaluate_tasks(model, tok, resolve_tasks({name: spec}), eot_id=EOT, device="cpu", **kw)
    return {k.rsplit("/", 1)[1]: v for k, v in out.items()}


@pytest.fixture
def spy(monkeypatch):
    """Every (request, log-likelihood) the engine answers, in order: what was scored, exactly."""
    seen: list[tuple[tuple[list[int], list[int]], float]] = []
    continuations = Engine.continuations

    def recording(self, requests):
        out = continuations(self, requests)
        seen.extend(((list(c), list(t)), r.logprob) for (c, t), r in zip(requests, out))
        return out

    monkeypatch.setattr(Engine, "continuations", recording)
    return seen


def check_requests(model, spy, pairs: list[tuple[str, str]]) -> list[float]:
    """The engine was asked exactly `pairs` (context, continuation) as byte ids, and answered each with the
    hand-computed log-likelihood; returns those."""
    assert [req for req, _ in spy] == [(list(c.encode()), list(t.encode())) for c, t in pairs]
    want = [ll(model, c, t)[0] for c, t in pairs]
    assert [lp for _, lp in spy] == pytest.approx(want, abs=1e-4)
    return want


def test_multiple_choice_acc_and_acc_norm(model, tok, tmp_path, spy):
    got = run(model, tok, "multiple_choice", write_jsonl(tmp_path / "mc.jsonl", MC_ROWS))
    # delimiter " ": the prompt's trailing space moves onto the choice, as lm-evaluation-harness does
    pairs = [(row["query"], " " + c) for row in MC_ROWS for c in row["choices"]]
    lps = iter(check_requests(model, spy, pairs))
    acc = acc_norm = 0
    for row in MC_ROWS:
        lp = np.array([next(lps) for _ in row["choices"]])
        lens = np.array([len(c.encode()) for c in row["choices"]])  # the choice's bytes, without the space
        acc += int(np.argmax(lp) == row["gold"])
        acc_norm += int(np.argmax(lp / lens) == row["gold"])
    assert acc != acc_norm  # the two metrics differ on these rows: each is checked
    assert got == {"acc": acc / 4, "acc_norm": acc_norm / 4, "n": 4.0}


def test_registered_task_uses_its_delimiter(model, tok, tmp_path, spy):
    got = run(model, tok, "arc_easy", write_jsonl(tmp_path / "arc.jsonl", MC_ROWS[:2]))
    pairs = [(r["query"] + "\nAnswer:", " " + c) for r in MC_ROWS[:2] for c in r["choices"]]
    lps = check_requests(model, spy, pairs)
    hits = sum(int(np.argmax(lps[3 * i : 3 * i + 3]) == r["gold"]) for i, r in enumerate(MC_ROWS[:2]))
    assert got["acc"] == hits / 2


def test_schema_scores_the_continuation_under_each_context(model, tok, tmp_path):
    rows = [{"context_options": ["Ann beat Bo so Ann", "Ann beat Bo so Bo"], "continuation": "cried.", "gold": 1},
            {"context_options": ["It is hot so", "It is cold so", "Blue"], "continuation": "we swim.", "gold": 0}]
    got = run(model, tok, "winogrande", write_jsonl(tmp_path / "w.jsonl", rows))
    hits = sum(int(np.argmax([ll(model, c, " " + r["continuation"])[0] for c in r["context_options"]]) == r["gold"])
               for r in rows)
    assert got == {"acc": hits / 2, "n": 2.0}


def test_language_modeling_greedy_accuracy_and_perplexity(model, tok, tmp_path):
    rows = []
    for ctx in ("abc", "hello", "xyz", "The", "mmm", "q", "zz", "Once upon"):
        cont = greedy_text(model, ctx, 3)
        if cont is not None:
            rows.append({"context": ctx, "continuation": cont})  # greedy decoding writes it: a hit
    assert rows, "no context whose greedy continuation is printable"
    rows.append({"context": "abc", "continuation": "\x01\x02"})  # almost surely a miss
    spec = {"path": str(write_jsonl(tmp_path / "l.jsonl", rows)), "format": "language_modeling", "delimiter": ""}
    got = run(model, tok, "lm", spec)
    refs = [ll(model, r["context"], r["continuation"]) for r in rows]
    assert sum(g for _, g in refs) == len(rows) - 1
    assert got["n"] == len(rows)
    assert got["acc"] == pytest.approx((len(rows) - 1) / len(rows))
    # lm-evaluation-harness's LAMBADA perplexity: exp(-mean over examples of the continuation's log-likelihood)
    assert got["ppl"] == pytest.approx(math.exp(-sum(lp for lp, _ in refs) / len(rows)), rel=1e-5)


def test_lambada_puts_a_space_before_the_word(model, tok, tmp_path):
    rows = [{"context": "I don't care about", "continuation": "signs"}, {"context": "5 + 5 =", "continuation": " 10"}]
    got = run(model, tok, "lambada", write_jsonl(tmp_path / "l.jsonl", rows))
    lps = [ll(model, "I don't care about", " signs")[0], ll(model, "5 + 5 =", " 10")[0]]
    assert got["ppl"] == pytest.approx(math.exp(-sum(lps) / 2), rel=1e-5)


def test_minimal_pairs_compare_whole_sentences_from_end_of_text(model, tok, tmp_path):
    rows = [{"sentence_good": g, "sentence_bad": b} for g, b in
            [("The cats run.", "The cats runs."), ("Who did you see?", "Who did you saw?"), ("a", "b"), ("xy", "yx")]]
    got = run(model, tok, "blimp", write_jsonl(tmp_path / "b.jsonl", rows))
    hits = sum(ll(model, "", r["sentence_good"])[0] > ll(model, "", r["sentence_bad"])[0] for r in rows)
    assert 0 < hits < 4  # the check below is not vacuous
    assert got == {"acc": hits / 4, "n": 4.0}


@pytest.mark.parametrize("n_bytes", [40, SEQ, 150])  # within one window, exactly one, three windows
def test_text_loss_perplexity_and_bits_per_byte(model, tok, tmp_path, n_bytes):
    text = ("pretraining é " * 20)[: n_bytes - 1]  # "é" is 2 bytes: bytes and tokens differ from characters
    text = text.encode()[:n_bytes].decode(errors="ignore")
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    got = run(model, tok, "text", tmp_path / "t.txt")
    ids = [EOT] + list(text.encode())
    total = 0.0
    for start in range(0, len(ids) - 1, SEQ):  # disjoint windows of SEQ predictions, each on its own tokens
        window = ids[start : start + SEQ + 1]
        lp = logprobs(model, window[:-1])
        total += float(lp.gather(-1, torch.tensor(window[1:])[:, None]).sum())
    n = len(ids) - 1
    assert got["n"] == n
    assert got["loss"] == pytest.approx(-total / n, rel=1e-5)
    assert got["ppl"] == pytest.approx(math.exp(-total / n), rel=1e-5)
    assert got["bpb"] == pytest.approx(-total / math.log(2) / len(text.encode()), rel=1e-5)


def test_multiple_choice_runs_each_shared_context_once(model, tok, tmp_path, monkeypatch):
    """The choices of a question share context ids: the context is forwarded once per question, not per choice."""
    rows = [{"query": "A shared context, " * 2 + str(i), "choices": ["alpha", "beta", "gamma", "delta"],
             "gold": 0} for i in range(5)]
    calls: list[tuple[int, int]] = []
    forward = type(model).forward

    def counting(self, tokens, cache=None):
        calls.append(tuple(tokens.shape))
        return forward(self, tokens, cache)

    monkeypatch.setattr(type(model), "forward", counting)
    run(model, tok, "multiple_choice", write_jsonl(tmp_path / "mc.jsonl", rows))
    ctx_len = len(rows[0]["query"])
    with_context = [c for c in calls if c[1] >= ctx_len]
    assert sum(b for b, _ in with_context) == len(rows)  # each context forwarded once (equal lengths: together)
    assert sum(b * t for b, t in calls) < len(rows) * 4 * ctx_len / 2  # far fewer tokens than per-choice forwards


def test_limit_scores_the_first_examples(model, tok, tmp_path):
    got = run(model, tok, "multiple_choice", write_jsonl(tmp_path / "mc.jsonl", MC_ROWS), limit=2)
    first_two = run(model, tok, "multiple_choice", write_jsonl(tmp_path / "mc2.jsonl", MC_ROWS[:2]))
    assert got == first_two and got["n"] == 2


class FixedEngine:
    """An engine whose every continuation gets the same log-likelihood: all ties."""

    window = 1000

    def continuations(self, requests):
        from pretrainlab.eval.likelihood import ContinuationScore

        return [ContinuationScore(-3.0, False, len(c)) for _, c in requests]


def test_minimal_pair_ties_count_as_correct_as_in_lm_eval(tok):
    """lm-evaluation-harness's BLiMP takes argmax over [good, bad]; a tie picks the first, the good sentence."""
    from pretrainlab.eval.tasks import SCORERS
    from pretrainlab.eval.tasks.examples import MinimalPair
    from pretrainlab.eval.tasks.prompts import Prompting

    scorer = SCORERS.get("minimal_pairs")
    encoded = scorer.encode([MinimalPair("ab", "ba"), MinimalPair("cd", "dc")], tok, Prompting(), "blimp")
    assert scorer.score(encoded, FixedEngine()) == {"acc": 1.0, "n": 2.0}


def test_text_limit_scores_the_first_lines(model, tok, tmp_path):
    (tmp_path / "t.txt").write_text("one line\nanother line\n" + "more text\n" * 1000)
    got = run(model, tok, "text", tmp_path / "t.txt", limit=2)
    assert got["n"] == len("one line\nanother line")  # bytes are tokens: the first two lines only
    (tmp_path / "two.txt").write_text("one line\nanother line\n")
    assert got == run(model, tok, "text", tmp_path / "two.txt")
