"""A tiny name -> object registry, so recipes add components without editing the code that uses them.

Every pluggable part (norms, MLPs, attention, linear layers, objectives, and later optimisers,
callbacks...) lives in one `Registry`; configs refer to entries by name, and an unknown name is a
`ConfigError` that lists the valid names and suggests the closest one.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Generic, TypeVar

from pretrainlab.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind (e.g. kind="norm"): `register(name)` decorator, `get(name)`, `names()`."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator adding `obj` under `name`; registering a name twice is a programming error."""

        def add(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return add

    def get(self, name: str, *, field: str | None = None) -> T:
        """The entry called `name`; ConfigError naming the kind (and config `field`) when unknown."""
        try:
            return self._entries[name]
        except KeyError:
            pass
        where = f"{field}={name!r}" if field else f"{name!r}"
        close = difflib.get_close_matches(str(name), self.names(), n=1, cutoff=0.5)
        suggestion = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"{where} is not a known {self.kind}{suggestion} (valid: {', '.join(self.names()) or 'none'})",
            hint=f"use one of the registered {self.kind} names"
            + (f", e.g. {field}={close[0]}" if field and close else ""),
        ) from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
