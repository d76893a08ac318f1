"""The five kinds of task example every reader produces, whatever the file's layout.

A reader turns a file into a list of these; a scorer scores a list of one kind. Each example keeps
`where` ("file:line") so a problem found after reading (e.g. a choice that encodes to no tokens) still
names the line it came from.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MultipleChoice:
    """`context` followed by one of `choices`; `choices[gold]` is right (ARC, HellaSwag, PIQA, COPA...)."""

    context: str
    choices: tuple[str, ...]
    gold: int
    where: str = ""
    kind = "multiple_choice"


@dataclass(frozen=True)
class Schema:
    """One `continuation` after each of `contexts`; it is most likely after `contexts[gold]` (WinoGrande)."""

    contexts: tuple[str, ...]
    continuation: str
    gold: int
    where: str = ""
    kind = "schema"


@dataclass(frozen=True)
class Continuation:
    """`continuation` should follow `context` exactly, token for token under greedy decoding (LAMBADA)."""

    context: str
    continuation: str
    where: str = ""
    kind = "language_modeling"


@dataclass(frozen=True)
class MinimalPair:
    """Two sentences differing minimally; `good` should get the higher total log-likelihood (BLiMP)."""

    good: str
    bad: str
    where: str = ""
    kind = "minimal_pairs"


@dataclass(frozen=True)
class Text:
    """A text whose perplexity and bits per byte are measured."""

    text: str
    where: str = ""
    kind = "text"


Example = MultipleChoice | Schema | Continuation | MinimalPair | Text
