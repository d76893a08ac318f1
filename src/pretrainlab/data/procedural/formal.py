"""Formal languages: counting languages (`anbn`: a^n b^n, a^n b^n c^n) and a random regular language
(`regular`: strings accepted by a random DFA), procedural data types beside Dyck's context-free one.

- `anbn`: one string `a a a b b b` (n = min_n..max_n, each of `symbols` n times in order).
- `regular`: a DFA with `states` states over the first `alphabet` letters is drawn once from the
  source's seed (every document comes from the same language); a document is one accepted string of
  `min_length..max_length` letters, drawn uniformly among the accepted strings of its length (exact counts
  by dynamic programming), so the model sees the language, not a biased walk.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import Field, field_validator, model_validator

from pretrainlab.config import StrictModel
from pretrainlab.data.procedural.registry import Generator, register_generator
from pretrainlab.errors import ConfigError

DFA_ATTEMPTS = 100


class AnBnOptions(StrictModel):
    symbols: str = Field(default="ab", min_length=2, description="Each symbol n times, in this order.")
    min_n: int = Field(default=1, ge=1)
    max_n: int = Field(default=32, ge=1)
    separator: str = " "

    @field_validator("symbols")
    @classmethod
    def _distinct(cls, v: str) -> str:
        if len(set(v)) != len(v):
            raise ValueError("symbols must be distinct characters")
        return v

    @model_validator(mode="after")
    def _range(self) -> "AnBnOptions":
        if self.min_n > self.max_n:
            raise ValueError(f"min_n {self.min_n} > max_n {self.max_n}")
        return self


@register_generator("anbn")
class AnBn(Generator):
    """a^n b^n (or a^n b^n c^n ... with more `symbols`)."""

    Options = AnBnOptions

    def sample(self, rng: np.random.Generator) -> str:
        o: AnBnOptions = self.options  # type: ignore[assignment]
        n = int(rng.integers(o.min_n, o.max_n + 1))
        return o.separator.join(s for s in o.symbols for _ in range(n))


class RegularOptions(StrictModel):
    states: int = Field(default=6, ge=1, le=64)
    alphabet: int = Field(default=4, ge=1, le=26, description="The first N letters a, b, c, ...")
    accepting: float = Field(default=0.3, gt=0.0, le=1.0, description="Share of states that accept (at least one).")
    min_length: int = Field(default=8, ge=1)
    max_length: int = Field(default=64, ge=1, le=4096)
    separator: str = " "

    @model_validator(mode="after")
    def _range(self) -> "RegularOptions":
        if self.min_length > self.max_length:
            raise ValueError(f"min_length {self.min_length} > max_length {self.max_length}")
        return self


@dataclass(frozen=True)
class DFA:
    """transitions[q][a] is the next state; state 0 starts."""

    transitions: tuple[tuple[int, ...], ...]
    accepting: frozenset[int]
    letters: str

    def accepts(self, word: str) -> bool:
        q = 0
        for ch in word:
            if ch not in self.letters:
                return False
            q = self.transitions[q][self.letters.index(ch)]
        return q in self.accepting


def random_dfa(rng: np.random.Generator, o: RegularOptions) -> DFA:
    letters = "abcdefghijklmnopqrstuvwxyz"[: o.alphabet]
    table = rng.integers(0, o.states, size=(o.states, o.alphabet))
    n_accept = max(1, round(o.accepting * o.states))
    accepting = frozenset(int(q) for q in rng.choice(o.states, size=n_accept, replace=False))
    return DFA(tuple(tuple(int(x) for x in row) for row in table), accepting, letters)


def accepted_counts(dfa: DFA, max_length: int) -> list[list[int]]:
    """counts[l][q]: accepted strings of exactly l letters read from state q (exact integers)."""
    n = len(dfa.transitions)
    counts = [[1 if q in dfa.accepting else 0 for q in range(n)]]
    for _ in range(max_length):
        prev = counts[-1]
        counts.append([sum(prev[r] for r in dfa.transitions[q]) for q in range(n)])
    return counts


@register_generator("regular")
class Regular(Generator):
    """Strings of a random regular language (see the module docstring)."""

    Options = RegularOptions

    def setup(self) -> None:
        o: RegularOptions = self.options  # type: ignore[assignment]
        for attempt in range(DFA_ATTEMPTS):
            dfa = random_dfa(np.random.default_rng([self.seed, 0xDFA, attempt]), o)
            counts = accepted_counts(dfa, o.max_length)
            lengths = [n for n in range(o.min_length, o.max_length + 1) if counts[n][0] > 0]
            if lengths:
                self.dfa, self.counts, self.lengths = dfa, counts, lengths
                return
        raise ConfigError(
            f"regular: no DFA of {DFA_ATTEMPTS} drawn with seed {self.seed} accepts a string of "
            f"{o.min_length}..{o.max_length} letters",
            hint="widen the length range, or raise accepting / states",
        )

    def sample(self, rng: np.random.Generator) -> str:
        o: RegularOptions = self.options  # type: ignore[assignment]
        length = self.lengths[int(rng.integers(0, len(self.lengths)))]
        q, out = 0, []
        for left in range(length, 0, -1):
            weights = [self.counts[left - 1][r] for r in self.dfa.transitions[q]]
            # an integer draw in proportion to the accepted completions (counts overflow floats)
            pick = int(rng.integers(0, 2**62)) * sum(weights) >> 62
            for a, w in enumerate(weights):
                if pick < w:
                    break
                pick -= w
            out.append(self.dfa.letters[a])
            q = self.dfa.transitions[q][a]
        return o.separator.join(out)
