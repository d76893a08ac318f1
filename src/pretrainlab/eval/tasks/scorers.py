"""Scorers: examples of one kind -> token-id requests (once) -> metrics (at every evaluation).

Each scorer works in two steps so the training callback tokenises a task file once and scores it many
times: `encode(examples, tokenizer, prompting)` builds the requests, `score(encoded, engine)` asks the
likelihood engine (`pretrainlab.eval.likelihood`) for their log-likelihoods and returns metrics.

- multiple_choice: `acc`, the choice with the highest summed log-likelihood is gold; `acc_norm`, the
  same with each log-likelihood divided by the choice's length in UTF-8 bytes (lm-evaluation-harness
  divides by characters; the two agree on ASCII);
- schema: `acc`, the continuation is most likely after the gold context;
- language_modeling: `acc`, greedy decoding produces every continuation token; `ppl`, exp(-mean over
  examples of the continuation's summed log-likelihood), lm-evaluation-harness's LAMBADA perplexity;
- minimal_pairs: `acc`, the good sentence's total log-likelihood (from end-of-text) is at least the bad
  one's: lm-evaluation-harness's BLiMP takes the argmax over [good, bad], and a tie picks the first, good;
- text: `loss` (nats per token), `ppl` = exp(loss), `bpb` = -sum log p / ln 2 / UTF-8 bytes.

Every scorer also reports `n`, the examples scored (tokens scored for `text`). `check_window` refuses a
continuation longer than the model's window, naming its line; `load_tasks(window=...)` runs it when a
task is loaded, so the training callback finds such a task before the first step.
All choices of a multiple-choice question share their context ids, so the engine runs the context once
and scores the choices in one batch (never a forward of the shared context per choice).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from pretrainlab.errors import DataError
from pretrainlab.eval.likelihood import ContinuationScore, score_continuations, score_rolling
from pretrainlab.eval.tasks.examples import Continuation, Example, MinimalPair, MultipleChoice, Schema, Text
from pretrainlab.eval.tasks.prompts import Prompting, Tokenizer, attach, encode_pair, fewshot_prefixes
from pretrainlab.registry import Registry

Request = tuple[list[int], list[int]]
Progress = Callable[[int], None]  # called with the number of examples just scored

# Requests handed to the engine per call: enough to batch well, few enough to report progress.
REQUESTS_PER_CALL = 2048


class LikelihoodEngine(Protocol):
    """What scorers need from a model: the two likelihood queries of `pretrainlab.eval.likelihood`."""

    window: int

    def continuations(self, requests: Sequence[Request]) -> list[ContinuationScore]: ...

    def rolling(self, tokens: Sequence[int]) -> tuple[float, int]: ...


@dataclass
class Engine:
    """The likelihood engine bound to one model, device and precision (`bos_id`: the end-of-text id)."""

    model: nn.Module
    bos_id: int
    device: torch.device | str = "cpu"
    autocast_dtype: torch.dtype | None = None

    @property
    def window(self) -> int:
        from pretrainlab.train.distributed import unwrap_model

        return int(unwrap_model(self.model).cfg.max_seq_len)  # type: ignore[union-attr]

    def continuations(self, requests: Sequence[Request]) -> list[ContinuationScore]:
        return score_continuations(
            self.model, requests, device=self.device, autocast_dtype=self.autocast_dtype, bos_id=self.bos_id
        )

    def rolling(self, tokens: Sequence[int]) -> tuple[float, int]:
        return score_rolling(
            self.model, tokens, device=self.device, autocast_dtype=self.autocast_dtype, bos_id=self.bos_id
        )


class Scorer:
    """Base class: `encode` once, `score` at every evaluation; `metrics` names what `score` returns.

    `encode` scores the first `prompting.n_scored(len(examples))` examples; few-shot demonstrations come
    from `shots` (another file's examples) when given, else from `examples` (see prompts.py).
    """

    kind: str = ""
    metrics: tuple[str, ...] = ()

    def encode(
        self,
        examples: Sequence[Example],
        tokenizer: Tokenizer,
        prompting: Prompting,
        task: str,
        shots: Sequence[Example] | None = None,
    ) -> Any:
        raise NotImplementedError

    def check_window(self, encoded: Any, window: int) -> None:
        """A DataError naming the line of the first continuation longer than `window` tokens."""
        if isinstance(encoded, EncodedRequests):
            encoded.check_window(window)

    def score(self, encoded: Any, engine: LikelihoodEngine, progress: Progress | None = None) -> dict[str, float]:
        raise NotImplementedError


SCORERS: Registry[Scorer] = Registry("task scorer")


@dataclass
class EncodedRequests:
    """(context ids, continuation ids) requests in example order: `owners[r]` is request r's example (0, 1,
    ...), `wheres[e]` the file and line of example e."""

    requests: list[Request] = field(default_factory=list)
    owners: list[int] = field(default_factory=list)
    wheres: list[str] = field(default_factory=list)

    def add(self, request: Request, owner: int, where: str, what: str) -> None:
        if not request[1]:
            raise DataError(f"{where}: {what} is empty; there is nothing to score", hint="remove or fix the example")
        self.requests.append(request)
        self.owners.append(owner)

    def check_window(self, window: int) -> None:
        """The engine scores a continuation whole: one longer than the model's window is an error."""
        for (_, cont), owner in zip(self.requests, self.owners):
            if len(cont) > window:
                raise DataError(
                    f"{self.wheres[owner]}: a continuation of {len(cont)} tokens does not fit the model's window "
                    f"of {window}",
                    hint="shorten or remove the example, or evaluate a model with a longer max_seq_len",
                )


def _run(engine: LikelihoodEngine, enc: EncodedRequests, progress: Progress | None) -> list[ContinuationScore]:
    """All requests in calls of about REQUESTS_PER_CALL, never splitting one example's requests."""
    enc.check_window(engine.window)
    requests, owners = enc.requests, enc.owners
    out: list[ContinuationScore] = []
    start = 0
    while start < len(requests):
        end = min(start + REQUESTS_PER_CALL, len(requests))
        while end < len(requests) and owners[end] == owners[end - 1]:
            end += 1
        out.extend(engine.continuations(requests[start:end]))
        if progress is not None:
            progress(owners[end - 1] - (owners[start - 1] if start else -1))
        start = end
    return out


# ----------------------------------------------------------------------------------------------- choices


@dataclass
class EncodedChoices(EncodedRequests):
    """One request per choice (multiple choice) or per context option (schema), in example order."""

    lengths: list[int] = field(default_factory=list)  # UTF-8 bytes of each choice (acc_norm)
    golds: list[int] = field(default_factory=list)


def encode_choices(
    examples: Sequence[Example], tokenizer: Tokenizer, prompting: Prompting, task: str,
    shots: Sequence[Example] | None, enc: EncodedChoices, label: str = "choice",
) -> EncodedChoices:
    """One request per choice of each scored MultipleChoice example (few-shot prefix + context + delimiter,
    then the choice) into `enc`, with each choice's UTF-8 length and the gold index; `label` names a choice in
    error messages."""
    n = prompting.n_scored(len(examples))
    prefixes = fewshot_prefixes(examples, n, prompting, task, shots)
    for i in range(n):
        ex = examples[i]
        assert isinstance(ex, MultipleChoice)
        enc.wheres.append(ex.where)
        context = prefixes[i] + ex.context
        for j, choice in enumerate(ex.choices):
            enc.add(encode_pair(tokenizer, attach(context, prompting.delimiter, choice), choice), i, ex.where,
                    f"{label} {j}")
            enc.lengths.append(max(1, len(choice.encode("utf-8"))))
        enc.golds.append(ex.gold)
    return enc


class MultipleChoiceScorer(Scorer):
    kind = "multiple_choice"
    metrics = ("acc", "acc_norm", "n")

    def encode(
        self, examples: Sequence[Example], tokenizer: Tokenizer, prompting: Prompting, task: str,
        shots: Sequence[Example] | None = None,
    ) -> Any:
        return encode_choices(examples, tokenizer, prompting, task, shots, EncodedChoices())

    def score(self, encoded: Any, engine: LikelihoodEngine, progress: Progress | None = None) -> dict[str, float]:
        enc: EncodedChoices = encoded
        scores = _run(engine, enc, progress)
        lp = np.array([s.logprob for s in scores])
        norm = lp / np.array(enc.lengths, dtype=np.float64)
        acc, acc_norm = _argmax_hits(lp, norm, np.array(enc.owners), enc.golds)
        return _choice_metrics(acc, acc_norm, len(enc.golds), self.metrics)


def _argmax_hits(lp: np.ndarray, norm: np.ndarray, owners: np.ndarray, golds: list[int]) -> tuple[int, int]:
    """Questions whose best (raw, normalised) choice is gold; requests are contiguous per question."""
    if owners.size == 0:
        return 0, 0
    starts = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]])
    ends = np.r_[starts[1:], owners.size]
    acc = acc_norm = 0
    for q, (s, e) in enumerate(zip(starts, ends)):
        acc += int(np.argmax(lp[s:e]) == golds[q])
        acc_norm += int(np.argmax(norm[s:e]) == golds[q])
    return acc, acc_norm


def _choice_metrics(acc: int, acc_norm: int, n: int, names: tuple[str, ...]) -> dict[str, float]:
    out = {"acc": acc / n if n else math.nan, "acc_norm": acc_norm / n if n else math.nan, "n": float(n)}
    return {k: v for k, v in out.items() if k in names}


class SchemaScorer(Scorer):
    kind = "schema"
    metrics = ("acc", "n")

    def encode(
        self, examples: Sequence[Example], tokenizer: Tokenizer, prompting: Prompting, task: str,
        shots: Sequence[Example] | None = None,
    ) -> Any:
        n = prompting.n_scored(len(examples))
        prefixes = fewshot_prefixes(examples, n, prompting, task, shots)
        enc = EncodedChoices()
        for i in range(n):
            ex = examples[i]
            assert isinstance(ex, Schema)
            enc.wheres.append(ex.where)
            for option in ex.contexts:
                prompt = attach(prefixes[i] + option, prompting.delimiter, ex.continuation)
                enc.add(encode_pair(tokenizer, prompt, ex.continuation), i, ex.where, "the continuation")
                enc.lengths.append(1)
            enc.golds.append(ex.gold)
        return enc

    def score(self, encoded: Any, engine: LikelihoodEngine, progress: Progress | None = None) -> dict[str, float]:
        enc: EncodedChoices = encoded
        scores = _run(engine, enc, progress)
        lp = np.array([s.logprob for s in scores])
        acc, _ = _argmax_hits(lp, lp, np.array(enc.owners), enc.golds)
        return _choice_metrics(acc, 0, len(enc.golds), self.metrics)


# ----------------------------------------------------------------------------------------------- continuations


class LanguageModelingScorer(Scorer):
    kind = "language_modeling"
    metrics = ("acc", "ppl", "n")

    def encode(
        self, examples: Sequence[Example], tokenizer: Tokenizer, prompting: Prompting, task: str,
        shots: Sequence[Example] | None = None,
    ) -> Any:
        n = prompting.n_scored(len(examples))
        prefixes = fewshot_prefixes(examples, n, prompting, task, shots)
        enc = EncodedRequests()
        for i in range(n):
            ex = examples[i]
            assert isinstance(ex, Continuation)
            enc.wheres.append(ex.where)
            prompt = attach(prefixes[i] + ex.context, prompting.delimiter, ex.continuation)
            enc.add(encode_pair(tokenizer, prompt, ex.continuation), i, ex.where, "the continuation")
        return enc

    def score(self, encoded: Any, engine: LikelihoodEngine, progress: Progress | None = None) -> dict[str, float]:
        enc: EncodedRequests = encoded
        scores = _run(engine, enc, progress)
        n = len(scores)
        if not n:
            return {"acc": math.nan, "ppl": math.nan, "n": 0.0}
        return {
            "acc": sum(s.greedy for s in scores) / n,
            "ppl": math.exp(-sum(s.logprob for s in scores) / n),
            "n": float(n),
        }


class MinimalPairsScorer(Scorer):
    kind = "minimal_pairs"
    metrics = ("acc", "n")

    def encode(
        self, examples: Sequence[Example], tokenizer: Tokenizer, prompting: Prompting, task: str,
        shots: Sequence[Example] | None = None,
    ) -> Any:
        enc = EncodedRequests()
        for i, ex in enumerate(examples[: prompting.n_scored(len(examples))]):
            assert isinstance(ex, MinimalPair)
            enc.wheres.append(ex.where)
            for what, sentence in (("sentence_good", ex.good), ("sentence_bad", ex.bad)):
                enc.add(encode_pair(tokenizer, "", sentence), i, ex.where, what)  # scored from end-of-text
        return enc

    def score(self, encoded: Any, engine: LikelihoodEngine, progress: Progress | None = None) -> dict[str, float]:
        enc: EncodedRequests = encoded
        scores = _run(engine, enc, progress)
        n = len(scores) // 2
        # lm-evaluation-harness: argmax over [good, bad], a tie picks the first (good)
        hits = sum(scores[2 * i].logprob >= scores[2 * i + 1].logprob for i in range(n))
        return {"acc": hits / n if n else math.nan, "n": float(n)}


# ----------------------------------------------------------------------------------------------- text


@dataclass
class EncodedTexts:
    tokens: list[list[int]]
    n_bytes: int


class TextScorer(Scorer):
    kind = "text"
    metrics = ("loss", "ppl", "bpb", "n")

    def encode(
        self, examples: Sequence[Example], tokenizer: Tokenizer, prompting: Prompting, task: str,
        shots: Sequence[Example] | None = None,
    ) -> Any:
        """The scored examples (the first `limit` lines of a text file) joined by "\n" into one text."""
        lines = [ex.text for ex in examples[: prompting.n_scored(len(examples))] if isinstance(ex, Text)]
        text = "\n".join(lines)
        return EncodedTexts([list(tokenizer.encode(text))] if text else [], len(text.encode("utf-8")))

    def score(self, encoded: Any, engine: LikelihoodEngine, progress: Progress | None = None) -> dict[str, float]:
        enc: EncodedTexts = encoded
        logprob, n = 0.0, 0
        for tokens in enc.tokens:
            lp, k = engine.rolling(tokens)
            logprob, n = logprob + lp, n + k
            if progress is not None:
                progress(1)
        if not n:
            return {"loss": math.nan, "ppl": math.nan, "bpb": math.nan, "n": 0.0}
        loss = -logprob / n
        return {"loss": loss, "ppl": math.exp(loss), "bpb": -logprob / math.log(2) / enc.n_bytes, "n": float(n)}


for _scorer in (MultipleChoiceScorer(), SchemaScorer(), LanguageModelingScorer(), MinimalPairsScorer(), TextScorer()):
    SCORERS.register(_scorer.kind)(_scorer)
