"""Haystack filler: plain generated sentences ("The quiet farmer walks to the old river."), the text a
needle-in-a-haystack evaluation hides its facts in, and a procedural source of easy natural-like text.

`filler_sentences(rng, n)` draws n sentences from a small template grammar; `text_sentences(path)` reads
a text file's sentences instead (real filler, e.g. a corpus's validation split). Both are deterministic.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from pydantic import Field, model_validator

from pretrainlab.config import StrictModel
from pretrainlab.data.procedural.registry import Generator, register_generator
from pretrainlab.errors import DataError

ADJECTIVES = ("quiet", "old", "small", "bright", "green", "tall", "warm", "busy", "calm", "dark", "happy",
              "little", "long", "soft", "cold", "young")
NOUNS = ("farmer", "river", "garden", "teacher", "dog", "market", "window", "bird", "village", "road",
         "baker", "forest", "child", "boat", "house", "tree", "school", "cat", "hill", "friend")
VERBS = ("walks to", "looks at", "waits near", "sings about", "runs past", "thinks about", "sits by",
         "talks to", "paints", "finds")
ENDINGS = ("in the morning", "after lunch", "every day", "at night", "in the rain", "with a smile", "again",
           "for a while")
MAX_FILLER_BYTES = 8 << 20  # a filler file is read up to here (enough sentences for any haystack)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def filler_sentence(rng: np.random.Generator) -> str:
    a1, a2 = (ADJECTIVES[int(i)] for i in rng.integers(0, len(ADJECTIVES), size=2))
    n1, n2 = (NOUNS[int(i)] for i in rng.integers(0, len(NOUNS), size=2))
    verb = VERBS[int(rng.integers(0, len(VERBS)))]
    tail = f" {ENDINGS[int(rng.integers(0, len(ENDINGS)))]}" if rng.random() < 0.5 else ""
    return f"The {a1} {n1} {verb} the {a2} {n2}{tail}."


def filler_sentences(rng: np.random.Generator, n: int) -> list[str]:
    """n generated sentences."""
    return [filler_sentence(rng) for _ in range(n)]


def text_sentences(path: str | Path, *, min_words: int = 3) -> list[str]:
    """The sentences of a UTF-8 text file (its first MAX_FILLER_BYTES), whitespace collapsed, split after
    . ! or ?; sentences of fewer than `min_words` words are dropped. DataError when none is left."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"filler file {path} does not exist", hint="give a text file, or filler: generated")
    with open(p, "rb") as f:
        text = f.read(MAX_FILLER_BYTES).decode("utf-8", errors="replace")
    sentences = [" ".join(s.split()) for s in _SENTENCE_END.split(text)]
    out = [s for s in sentences if len(s.split()) >= min_words]
    if not out:
        raise DataError(f"filler file {path} holds no sentences of {min_words}+ words", hint="give a text file")
    return out


class HaystackOptions(StrictModel):
    min_sentences: int = Field(default=4, ge=1)
    max_sentences: int = Field(default=12, ge=1)

    @model_validator(mode="after")
    def _range(self) -> "HaystackOptions":
        if self.min_sentences > self.max_sentences:
            raise ValueError(f"min_sentences {self.min_sentences} > max_sentences {self.max_sentences}")
        return self


@register_generator("haystack")
class Haystack(Generator):
    """Paragraphs of generated filler sentences."""

    Options = HaystackOptions

    def sample(self, rng: np.random.Generator) -> str:
        o: HaystackOptions = self.options  # type: ignore[assignment]
        return " ".join(filler_sentences(rng, int(rng.integers(o.min_sentences, o.max_sentences + 1))))
