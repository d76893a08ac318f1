"""The document filter interface: one rule set that keeps or removes a whole document, with the reason.

`prepare` runs a chain of filters (data/filters/chain.py) over every document in source order, before
the validation split, so a removed document is in neither split. A filter answers `reason(text)`: None
keeps the document, otherwise a short rule name ("min_words", "toxic_words", "near_duplicate", ...) that
the chain counts per filter and writes to the manifest. Stateful filters (near-duplicate detection
remembers what it kept) start over on `reset()`, which the chain calls before each pass, so two passes
over the same documents remove exactly the same ones.

A filter is registered by name (`register_filter` in registry.py); the config's `options` become its
constructor's keyword arguments. A constructor rejects a bad value with `FilterOptionError(key, message)`,
which the chain turns into a ConfigError naming `filters.<i>.options.<key>`.
"""

from __future__ import annotations

from typing import Any


class DocumentFilter:
    """Base class of prepare's document filters: `reason(text)` -> None (keep) or a rule name (remove)."""

    name: str = "filter"

    def reason(self, text: str) -> str | None:
        """None keeps `text`; a short rule name removes it (and is counted under that name)."""
        raise NotImplementedError

    def reset(self) -> None:
        """Forget any state from a previous pass (the default: a stateless filter has none)."""


class FilterOptionError(ValueError):
    """A constructor option with a bad value; `key` is the option's name (reported as filters.<i>.options.<key>)."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}")


def check_range(key: str, value: Any, lo: float | None = None, hi: float | None = None, *, integer: bool = False) -> None:
    """Raise FilterOptionError unless `value` is a number (an int when `integer`) within [lo, hi]."""
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise FilterOptionError(key, f"must be {'an integer' if integer else 'a number'} (got {value!r})")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f"in [{lo}, {hi}]" if lo is not None and hi is not None else (f">= {lo}" if lo is not None else f"<= {hi}")
        raise FilterOptionError(key, f"must be {bounds} (got {value!r})")
