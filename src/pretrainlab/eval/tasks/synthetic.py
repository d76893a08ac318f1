"""Synthetic evaluations that generate their own examples (no file): the probes of Procedural Pretraining
(Jiang, Shinnick et al., ICML 2026, arXiv 2601.21725), which measure what a procedural warm-up is said to
teach: recall from context, tracking nested structure, copying.

- `needle_recall`: needle in a haystack. `needles` facts "The number of Mia is 482." are planted at random
  sentence boundaries of at most `length` words of filler (generated sentences, or a text file's with
  `filler: PATH`); the text ends with one fact's query, "The number of Mia is", and the model should
  continue " 482". Metrics: `acc`, greedy decoding writes the value exactly; `acc_choice`, the value is
  the most likely of the planted values (chance 1 / needles).
- `bracket_completion`: a k-Dyck prefix with brackets left open (`data/procedural/dyck.py`'s strings, the
  same symbols and separator as the `dyck` generator); the continuation closes them all, innermost first.
- `copy_accuracy`: `q w e |` then the string again, ` q w e` (the `copy` generator's format).

Both sequence tasks report `acc` (greedy decoding writes the whole continuation) and `acc_token` (the
share of continuation tokens greedy decoding gets right given the right ones before it, i.e. teacher-forced
per-token accuracy). Example i is a pure function of (seed, i), as the procedural generators are. Options
(beside the common ones): `n` examples, `seed`, and each task's lengths, e.g.

    tasks: {needle_recall: {n: 200, length: 80, needles: 3, filler: data/val.txt}, bracket_completion: {k: 4}}

A context longer than the model's window is an error (a haystack cut from the left loses its needles).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, ValidationError, model_validator

from pretrainlab.config import StrictModel
from pretrainlab.data.procedural.dyck import closing_sequence, dyck_symbols, pairs_of
from pretrainlab.data.procedural.haystack import filler_sentences, text_sentences
from pretrainlab.data.procedural.sequences import LETTERS
from pretrainlab.errors import ConfigError, DataError
from pretrainlab.eval.tasks.examples import Continuation, Example, MultipleChoice
from pretrainlab.eval.tasks.formats import FORMATS, Format
from pretrainlab.eval.tasks.prompts import Prompting, Tokenizer, attach, encode_pair, fewshot_prefixes
from pretrainlab.eval.tasks.registry import TASKS, TaskDef
from pretrainlab.eval.tasks.scorers import (
    SCORERS,
    EncodedChoices,
    EncodedRequests,
    LikelihoodEngine,
    Progress,
    Scorer,
    _run,
    encode_choices,
)

NAMES = ("Mia", "Leo", "Ava", "Max", "Zoe", "Sam", "Ivy", "Ben", "Eva", "Tom", "Amy", "Jack", "Lily", "Noah",
         "Emma", "Liam", "Rosa", "Omar", "Nina", "Hugo", "Ella", "Finn", "Lena", "Ravi", "Sara", "Theo", "Iris",
         "Kai", "Luca", "Maya", "Owen", "Ruby")


def example_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(index)])


class _Options(StrictModel):
    n: int = Field(default=100, ge=1, description="Examples generated.")
    seed: int = 0


class NeedleOptions(_Options):
    length: int = Field(default=60, ge=0, description="Most words of filler around the facts (whole sentences).")
    needles: int = Field(default=3, ge=1, le=len(NAMES), description="Facts planted; one is asked.")
    digits: int = Field(default=3, ge=1, le=9, description="Digits of each value.")
    filler: str = Field(default="generated", min_length=1, description="'generated' or a text file.")

    @model_validator(mode="after")
    def _enough_values(self) -> "NeedleOptions":
        if self.needles > 10**self.digits - (10 ** (self.digits - 1) if self.digits > 1 else 0):  # 0-9, 10-99, ...
            raise ValueError(f"{self.needles} distinct values of {self.digits} digit(s) do not exist")
        return self


class BracketOptions(_Options):
    k: int = Field(default=2, ge=1, le=30)
    min_length: int = Field(default=8, ge=1, description="Fewest symbols in the prefix.")
    max_length: int = Field(default=32, ge=1, description="Most symbols in the prefix.")
    max_depth: int = Field(default=8, ge=1)
    separator: str = " "

    @model_validator(mode="after")
    def _range(self) -> "BracketOptions":
        if self.min_length > self.max_length:
            raise ValueError(f"min_length {self.min_length} > max_length {self.max_length}")
        return self


class CopyOptions(_Options):
    min_length: int = Field(default=4, ge=1)
    max_length: int = Field(default=12, ge=1)
    alphabet: Literal["letters", "digits"] = "letters"
    separator: str = " "

    @model_validator(mode="after")
    def _range(self) -> "CopyOptions":
        if self.min_length > self.max_length:
            raise ValueError(f"min_length {self.min_length} > max_length {self.max_length}")
        return self


def _options(model: type[StrictModel], task: str, options: Mapping[str, Any]) -> Any:
    """The task's own options (the common ones are prompting's), a ConfigError naming tasks.<task>.<key>."""
    mine = {k: v for k, v in options.items() if k in model.model_fields}
    try:
        return model.model_validate(mine)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(x) for x in err["loc"])
        where = f"tasks.{task}.{key}" if key else f"tasks.{task}"
        raise ConfigError(f"{where}: {err['msg'].removeprefix('Value error, ')} (got {err.get('input')!r})",
                          hint=f"see the options of {task} in docs/procedural.md") from None


# ----------------------------------------------------------------------------------------------- needle


def _filler(o: NeedleOptions) -> list[str] | None:
    return None if o.filler == "generated" else text_sentences(Path(o.filler))


def _haystack(rng: np.random.Generator, o: NeedleOptions, pool: list[str] | None) -> list[str]:
    """Whole sentences holding at most `o.length` words (generated, or consecutive ones of the filler file
    from a random start); a first sentence longer than that is cut to `o.length` words."""
    out: list[str] = []
    words = 0
    start = int(rng.integers(0, len(pool))) if pool else 0
    while True:
        sentence = pool[(start + len(out)) % len(pool)] if pool else filler_sentences(rng, 1)[0]
        n = len(sentence.split())
        if words + n > o.length:
            if not out and o.length:
                out.append(" ".join(sentence.split()[: o.length]))
            return out
        out.append(sentence)
        words += n


def needle_example(rng: np.random.Generator, o: NeedleOptions, pool: list[str] | None, where: str) -> MultipleChoice:
    """Facts planted in filler and one asked at the end; the choices are every planted value."""
    names = [NAMES[int(i)] for i in rng.choice(len(NAMES), size=o.needles, replace=False)]
    low = 10 ** (o.digits - 1) if o.digits > 1 else 0
    values = [str(int(v)) for v in rng.choice(np.arange(low, 10**o.digits), size=o.needles, replace=False)]
    sentences = _haystack(rng, o, pool)
    slots = sorted(int(s) for s in rng.integers(0, len(sentences) + 1, size=o.needles))
    for j, slot in sorted(enumerate(slots), key=lambda p: -p[1]):  # from the back: earlier slots stay put
        sentences.insert(slot, f"The number of {names[j]} is {values[j]}.")
    gold = int(rng.integers(0, o.needles))
    context = " ".join(sentences) + f" The number of {names[gold]} is"
    return MultipleChoice(context, tuple(f" {v}" for v in values), gold, where)


def read_needle(path: Path | None, options: Mapping[str, Any]) -> list[Example]:
    o: NeedleOptions = _options(NeedleOptions, "needle_recall", options)
    pool = _filler(o)
    return [needle_example(example_rng(o.seed, i), o, pool, f"needle_recall example {i}") for i in range(o.n)]


# ----------------------------------------------------------------------------------------------- brackets


def bracket_example(rng: np.random.Generator, o: BracketOptions, where: str) -> Continuation:
    """A Dyck prefix of min_length..max_length symbols ending with brackets open, and the closing run."""
    n = 2 * (o.max_length // 2 + 1)  # a string longer than any prefix, cut where brackets are open
    while True:
        symbols = dyck_symbols(rng, o.k, n, o.max_depth, 0.5)
        opening = {a for a, _ in pairs_of(o.k)}
        depth, cuts = 0, []
        for i, s in enumerate(symbols[: o.max_length], start=1):
            depth += 1 if s in opening else -1
            if i >= o.min_length and depth > 0:
                cuts.append(i)
        if cuts:
            break
    prefix = symbols[: cuts[int(rng.integers(0, len(cuts)))]]
    closing = closing_sequence(prefix, o.k)
    sep = o.separator
    return Continuation(sep.join(prefix), sep + sep.join(closing), where)


def read_brackets(path: Path | None, options: Mapping[str, Any]) -> list[Example]:
    o: BracketOptions = _options(BracketOptions, "bracket_completion", options)
    return [bracket_example(example_rng(o.seed, i), o, f"bracket_completion example {i}") for i in range(o.n)]


# ----------------------------------------------------------------------------------------------- copy


def copy_example(rng: np.random.Generator, o: CopyOptions, where: str) -> Continuation:
    alphabet = LETTERS if o.alphabet == "letters" else "0123456789"
    n = int(rng.integers(o.min_length, o.max_length + 1))
    text = o.separator.join(alphabet[int(i)] for i in rng.integers(0, len(alphabet), size=n))
    return Continuation(f"{text} |", f" {text}", where)


def read_copy(path: Path | None, options: Mapping[str, Any]) -> list[Example]:
    o: CopyOptions = _options(CopyOptions, "copy_accuracy", options)
    return [copy_example(example_rng(o.seed, i), o, f"copy_accuracy example {i}") for i in range(o.n)]


# ----------------------------------------------------------------------------------------------- scorers


def _check_fits(enc: EncodedRequests, window: int) -> None:
    """Context and continuation must fit the window together: a context cut from the left loses its start
    (the needle, the opening brackets, the string to copy)."""
    for (ctx, cont), owner in zip(enc.requests, enc.owners):
        if len(ctx) + len(cont) > window + 1:
            raise DataError(
                f"{enc.wheres[owner]}: {len(ctx) + len(cont)} tokens do not fit the model's window of {window} "
                "(the context would be cut from the left)",
                hint="lower the task's length options (needle_recall: length, needles; the others: max_length), "
                "or evaluate a model with a longer max_seq_len",
            )


@dataclass
class _WholeRequests(EncodedRequests):
    def check_window(self, window: int) -> None:
        _check_fits(self, window)


@dataclass
class _WholeChoices(EncodedChoices):
    def check_window(self, window: int) -> None:
        _check_fits(self, window)


class RecallScorer(Scorer):
    """Needle recall: greedy exact match of the asked value (`acc`) and its rank among the planted values
    (`acc_choice`), from the same requests (one per planted value)."""

    kind = "multiple_choice"
    metrics = ("acc", "acc_choice", "n")

    def encode(self, examples: Sequence[Example], tokenizer: Tokenizer, prompting: Prompting, task: str,
               shots: Sequence[Example] | None = None) -> Any:
        return encode_choices(examples, tokenizer, prompting, task, shots, _WholeChoices(), label="value")

    def check_window(self, encoded: Any, window: int) -> None:
        _check_fits(encoded, window)

    def score(self, encoded: Any, engine: LikelihoodEngine, progress: Progress | None = None) -> dict[str, float]:
        enc: _WholeChoices = encoded
        scores = _run(engine, enc, progress)
        n = len(enc.golds)
        if not n:
            return {"acc": float("nan"), "acc_choice": float("nan"), "n": 0.0}
        by_example: list[list[Any]] = [[] for _ in range(n)]
        for s, owner in zip(scores, enc.owners):
            by_example[owner].append(s)
        hits = ranked = 0
        for group, gold in zip(by_example, enc.golds):
            hits += group[gold].greedy
            ranked += int(np.argmax([s.logprob for s in group])) == gold
        return {"acc": hits / n, "acc_choice": ranked / n, "n": float(n)}


@dataclass
class _TokenRequests(_WholeRequests):
    """One request per continuation token (the context plus the right tokens before it)."""

    n_examples: int = 0


class SequenceScorer(Scorer):
    """Exact match (`acc`) and teacher-forced per-token accuracy (`acc_token`) of a continuation: request j
    of an example is (context + the first j continuation tokens, token j), so `acc` is every token right."""

    kind = "language_modeling"
    metrics = ("acc", "acc_token", "n")

    def encode(self, examples: Sequence[Example], tokenizer: Tokenizer, prompting: Prompting, task: str,
               shots: Sequence[Example] | None = None) -> Any:
        n = prompting.n_scored(len(examples))
        prefixes = fewshot_prefixes(examples, n, prompting, task, shots)
        enc = _TokenRequests(n_examples=n)
        for i in range(n):
            ex = examples[i]
            assert isinstance(ex, Continuation)
            enc.wheres.append(ex.where)
            ctx, cont = encode_pair(tokenizer, attach(prefixes[i] + ex.context, prompting.delimiter,
                                                      ex.continuation), ex.continuation)
            if not cont:
                raise DataError(f"{ex.where}: the continuation is empty; there is nothing to score")
            for j in range(len(cont)):
                enc.add((ctx + cont[:j], cont[j : j + 1]), i, ex.where, "the continuation")
        return enc

    def check_window(self, encoded: Any, window: int) -> None:
        _check_fits(encoded, window)

    def score(self, encoded: Any, engine: LikelihoodEngine, progress: Progress | None = None) -> dict[str, float]:
        enc: _TokenRequests = encoded
        scores = _run(engine, enc, progress)
        n = enc.n_examples
        if not n:
            return {"acc": float("nan"), "acc_token": float("nan"), "n": 0.0}
        all_right = [True] * n
        for s, owner in zip(scores, enc.owners):
            all_right[owner] &= s.greedy
        return {"acc": sum(all_right) / n, "acc_token": sum(s.greedy for s in scores) / len(scores), "n": float(n)}


SCORERS.register("recall")(RecallScorer())
SCORERS.register("sequence")(SequenceScorer())

_NO_DELIMITER = {"delimiter": ""}  # the examples hold their own spacing, as the generators write it
for _name, _reader, _kind, _model, _scorer, _doc in (
    ("needle_recall", read_needle, "multiple_choice", NeedleOptions, "recall",
     "needle in a haystack: recall a planted value (greedy exact match; rank among the planted values)"),
    ("bracket_completion", read_brackets, "language_modeling", BracketOptions, "sequence",
     "close a k-Dyck prefix's open brackets (greedy exact match; per-token accuracy)"),
    ("copy_accuracy", read_copy, "language_modeling", CopyOptions, "sequence",
     "copy a random string (greedy exact match; per-token accuracy)"),
):
    FORMATS.register(_name)(Format(_reader, f"generated: {_doc}", _kind, needs_file=False,
                                   options=tuple(k for k in _model.model_fields if k != "seed"),
                                   defaults=_NO_DELIMITER))
    TASKS.register(_name)(TaskDef((_name,), _doc, scorer=_scorer))
