"""Dyck languages: k bracket types, properly nested (`dyck`) or balanced per type only (`shuffled_dyck`).

The warm-up data of Procedural Pretraining (Jiang, Shinnick et al., ICML 2026, arXiv 2601.21725): a
model trained first on k-Dyck strings learns to track open brackets (a stack), and the attention
patterns that takes transfer to natural text. `shuffled_dyck` (the paper's k-Dyck-shuffle) closes any
open type, not only the latest, so each type is balanced but the nesting is not. `shuffle_tokens: true`
permutes a Dyck string's symbols (the same counts, no structure): the paper's shuffled-token control.

A document is one string of `min_length..max_length` symbols (even: every bracket is closed), nesting at
most `max_depth`, symbols joined by `separator` ("( [ ] ) { }" with the default " "). Bracket pairs:
`() [] {} <>`, then `A a`, `B b`, ... (upper case opens, lower case closes) for k > 4: k <= 30.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import Field, model_validator

from pretrainlab.config import StrictModel
from pretrainlab.data.procedural.registry import Generator, register_generator

PAIRS: tuple[tuple[str, str], ...] = (("(", ")"), ("[", "]"), ("{", "}"), ("<", ">")) + tuple(
    (c, c.lower()) for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


class DyckOptions(StrictModel):
    k: int = Field(default=2, ge=1, le=len(PAIRS), description="Bracket types.")
    min_length: int = Field(default=32, ge=2, description="Fewest symbols in a string.")
    max_length: int = Field(default=128, ge=2, description="Most symbols in a string.")
    max_depth: int = Field(default=16, ge=1, description="Deepest nesting (open brackets at once).")
    p_open: float = Field(default=0.5, gt=0.0, lt=1.0, description="Probability of opening where both are allowed.")
    separator: str = Field(default=" ", description="Between symbols ('' writes them side by side).")
    shuffle_tokens: bool = Field(default=False, description="Permute the symbols: the structure-free control.")

    @model_validator(mode="after")
    def _lengths(self) -> "DyckOptions":
        if self.min_length > self.max_length:
            raise ValueError(f"min_length {self.min_length} > max_length {self.max_length}")
        if self.min_length == self.max_length and self.min_length % 2:
            raise ValueError("a Dyck string has an even length: make min_length..max_length hold an even number")
        return self


def pairs_of(k: int) -> tuple[tuple[str, str], ...]:
    """The first k bracket pairs."""
    return PAIRS[:k]


def _n_symbols(rng: np.random.Generator, o: Any) -> int:
    lo, hi = (o.min_length + 1) // 2, o.max_length // 2
    return 2 * int(rng.integers(lo, hi + 1))


def dyck_symbols(rng: np.random.Generator, k: int, n: int, max_depth: int, p_open: float) -> list[str]:
    """A random properly nested string of exactly n (even) symbols, nesting at most max_depth."""
    pairs = pairs_of(k)
    coin, kinds = rng.random(n), rng.integers(0, k, size=n)
    out: list[str] = []
    stack: list[int] = []
    for i in range(n):
        left = n - i
        depth = len(stack)
        if depth and (depth == left or depth == max_depth or coin[i] >= p_open):
            out.append(pairs[stack.pop()][1])
        else:
            t = int(kinds[i])
            stack.append(t)
            out.append(pairs[t][0])
    return out


def shuffled_dyck_symbols(rng: np.random.Generator, k: int, n: int, max_depth: int, p_open: float) -> list[str]:
    """n (even) symbols where every type is balanced (never closed before it is opened, all closed at the
    end, at most max_depth open at once) but a close may match any open type, not only the latest."""
    pairs = pairs_of(k)
    coin, kinds, picks = rng.random(n), rng.integers(0, k, size=n), rng.random(n)
    counts = [0] * k
    out: list[str] = []
    depth = 0
    for i in range(n):
        left = n - i
        if depth and (depth == left or depth == max_depth or coin[i] >= p_open):
            open_types = [t for t in range(k) if counts[t]]
            t = open_types[int(picks[i] * len(open_types))]
            counts[t] -= 1
            depth -= 1
            out.append(pairs[t][1])
        else:
            t = int(kinds[i])
            counts[t] += 1
            depth += 1
            out.append(pairs[t][0])
    return out


def is_dyck(symbols: Sequence[str], k: int) -> bool:
    """Whether `symbols` is properly nested and closes every bracket (a word of the k-Dyck language)."""
    pairs = pairs_of(k)
    opening = {o: c for o, c in pairs}
    closing = {c for _, c in pairs}
    stack: list[str] = []
    for s in symbols:
        if s in opening:
            stack.append(opening[s])
        elif s in closing:
            if not stack or stack.pop() != s:
                return False
        else:
            return False
    return not stack


def nesting_depth(symbols: Sequence[str], k: int) -> int:
    """The most brackets open at once (opens minus closes, over every prefix)."""
    opening = {o for o, _ in pairs_of(k)}
    depth = best = 0
    for s in symbols:
        depth += 1 if s in opening else -1
        best = max(best, depth)
    return best


def closing_sequence(prefix: Sequence[str], k: int) -> list[str]:
    """The symbols that close a properly nested prefix's open brackets, innermost first."""
    pairs = pairs_of(k)
    opening = {o: c for o, c in pairs}
    stack: list[str] = []
    for s in prefix:
        if s in opening:
            stack.append(opening[s])
        else:
            if not stack or stack.pop() != s:
                raise ValueError(f"not a Dyck prefix: {s!r} closes nothing open")
    return stack[::-1]


def split_symbols(text: str, separator: str) -> list[str]:
    """A document's symbols (every symbol is one character)."""
    return text.split(separator) if separator else list(text)


@register_generator("dyck")
class Dyck(Generator):
    """k-Dyck strings: properly nested brackets of k types (see the module docstring)."""

    Options = DyckOptions

    def sample(self, rng: np.random.Generator) -> str:
        o: DyckOptions = self.options  # type: ignore[assignment]
        symbols = dyck_symbols(rng, o.k, _n_symbols(rng, o), o.max_depth, o.p_open)
        if o.shuffle_tokens:
            symbols = [symbols[i] for i in rng.permutation(len(symbols))]
        return o.separator.join(symbols)


@register_generator("shuffled_dyck")
class ShuffledDyck(Generator):
    """k-Dyck-shuffle strings: each type balanced, nesting not respected (see the module docstring)."""

    Options = DyckOptions

    def sample(self, rng: np.random.Generator) -> str:
        o: DyckOptions = self.options  # type: ignore[assignment]
        symbols = shuffled_dyck_symbols(rng, o.k, _n_symbols(rng, o), o.max_depth, o.p_open)
        if o.shuffle_tokens:
            symbols = [symbols[i] for i in rng.permutation(len(symbols))]
        return o.separator.join(symbols)
