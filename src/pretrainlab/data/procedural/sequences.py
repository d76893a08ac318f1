"""Sequence transforms (Procedural Pretraining's Identity, Reverse, Sort and Set tasks): input -> output.

Every document holds `per_document` examples, one a line. Items are letters (a-z), digits (0-9) or numbers
(0..vocab-1, written in decimal) joined by `separator`; the input has `min_length..max_length` items:

- `copy`     `q w e | q w e`             the input again
- `reverse`  `q w e ~ e w q`             the input reversed
- `sort`     `q w e -> e q w`            sorted (numbers by value, letters alphabetically)
- `set_ops`  `{3 1 4} union {1 5} = {1 3 4 5}`   union, intersection or difference of two sets (elements
             in random order in the operands, sorted in the result; `{}` is the empty set)

The paper computes the loss on the outputs only; here the whole document is the training text.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from pretrainlab.config import StrictModel
from pretrainlab.data.procedural.registry import Generator, register_generator

LETTERS = "abcdefghijklmnopqrstuvwxyz"
DIGITS = "0123456789"
MARKERS = {"copy": "|", "reverse": "~", "sort": "->"}
SET_OPERATIONS = ("union", "intersection", "difference")


class SequenceOptions(StrictModel):
    alphabet: Literal["letters", "digits", "numbers"] = "letters"
    vocab: int | None = Field(default=None, ge=2, description="Distinct items (default: all 26 letters, 10 "
                              "digits, or 100 numbers).")
    min_length: int = Field(default=4, ge=1)
    max_length: int = Field(default=16, ge=1)
    separator: str = " "
    per_document: int = Field(default=1, ge=1, description="Examples per document, one a line.")

    @model_validator(mode="after")
    def _check(self) -> "SequenceOptions":
        if self.min_length > self.max_length:
            raise ValueError(f"min_length {self.min_length} > max_length {self.max_length}")
        limit = {"letters": len(LETTERS), "digits": len(DIGITS)}.get(self.alphabet)
        if limit is not None and self.vocab is not None and self.vocab > limit:
            raise ValueError(f"vocab {self.vocab} > the {limit} {self.alphabet} there are")
        if self.alphabet == "numbers" and not self.separator:
            raise ValueError("numbers need a separator (e.g. ' ') to be read back")
        return self


def items_of(alphabet: str, vocab: int | None) -> list[str]:
    """The item alphabet, in sort order."""
    if alphabet == "letters":
        return list(LETTERS[: vocab or len(LETTERS)])
    if alphabet == "digits":
        return list(DIGITS[: vocab or len(DIGITS)])
    return [str(i) for i in range(vocab or 100)]


def random_items(rng: np.random.Generator, o: SequenceOptions) -> list[str]:
    """An input sequence: `min_length..max_length` items drawn uniformly (with repeats)."""
    items = items_of(o.alphabet, o.vocab)
    n = int(rng.integers(o.min_length, o.max_length + 1))
    return [items[int(i)] for i in rng.integers(0, len(items), size=n)]


def sort_key(alphabet: str) -> type:
    return int if alphabet == "numbers" else str


class _Transform(Generator):
    Options = SequenceOptions

    def output(self, items: list[str]) -> list[str]:
        raise NotImplementedError

    def sample(self, rng: np.random.Generator) -> str:
        o: SequenceOptions = self.options  # type: ignore[assignment]
        sep, marker = o.separator, MARKERS[self.name]
        lines = []
        for _ in range(o.per_document):
            items = random_items(rng, o)
            lines.append(f"{sep.join(items)} {marker} {sep.join(self.output(items))}")
        return "\n".join(lines)


@register_generator("copy")
class Copy(_Transform):
    """`x | x`: the input repeated (Identity in the paper)."""

    def output(self, items: list[str]) -> list[str]:
        return list(items)


@register_generator("reverse")
class Reverse(_Transform):
    """`x ~ reversed(x)`."""

    def output(self, items: list[str]) -> list[str]:
        return items[::-1]


@register_generator("sort")
class Sort(_Transform):
    """`x -> sorted(x)` (numbers by value)."""

    def output(self, items: list[str]) -> list[str]:
        return sorted(items, key=sort_key(self.options.alphabet))  # type: ignore[attr-defined]


class SetOptions(StrictModel):
    universe: int = Field(default=20, ge=1, description="Elements are the numbers 0..universe-1.")
    min_size: int = Field(default=0, ge=0)
    max_size: int = Field(default=6, ge=0)
    operations: list[Literal["union", "intersection", "difference"]] = Field(
        default_factory=lambda: list(SET_OPERATIONS), min_length=1
    )
    per_document: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _check(self) -> "SetOptions":
        if self.min_size > self.max_size:
            raise ValueError(f"min_size {self.min_size} > max_size {self.max_size}")
        if self.max_size > self.universe:
            raise ValueError(f"max_size {self.max_size} > universe {self.universe}: a set has distinct elements")
        return self


def set_text(elements: list[int]) -> str:
    return "{" + " ".join(str(e) for e in elements) + "}"


def apply_set_operation(op: str, a: set[int], b: set[int]) -> set[int]:
    return {"union": a | b, "intersection": a & b, "difference": a - b}[op]


@register_generator("set_ops")
class SetOps(Generator):
    """`{a...} op {b...} = {result}` (see the module docstring)."""

    Options = SetOptions

    def sample(self, rng: np.random.Generator) -> str:
        o: SetOptions = self.options  # type: ignore[assignment]
        lines = []
        for _ in range(o.per_document):
            a, b = (rng.choice(o.universe, size=int(rng.integers(o.min_size, o.max_size + 1)), replace=False)
                    for _ in range(2))
            op = o.operations[int(rng.integers(0, len(o.operations)))]
            result = sorted(apply_set_operation(op, set(a.tolist()), set(b.tolist())))
            lines.append(f"{set_text(a.tolist())} {op} {set_text(b.tolist())} = {set_text(result)}")
        return "\n".join(lines)
