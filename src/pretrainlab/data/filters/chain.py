"""The filter chain of `prepare`: the configured filters applied in order to every document.

A document goes through the filters in config order and stops at the first that removes it (so a later
filter never sees, nor indexes, a document an earlier one removed). The chain runs over the sources in
their order, on training and validation documents alike, before the validation split: a near-duplicate
of a training document is removed from validation too, so nothing leaks. Every decision is a fixed
function of the documents and the options (stateful filters are `reset()` before a pass), so preparing
the same data twice removes exactly the same documents.

Per filter it records the documents it saw and removed, the bytes removed, the count per reason, the
count per domain, and the first `EXAMPLES` removed documents of each reason (truncated to `EXAMPLE_CHARS`,
with their file and index) for the manifest and the prepare summary, plus every removed document's id
(`removed`, written by prepare as `removed.jsonl`).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pretrainlab.config import FilterConfig
from pretrainlab.data.filters.base import DocumentFilter
from pretrainlab.data.filters.registry import build_filter
from pretrainlab.errors import ConfigError

EXAMPLES = 5
EXAMPLE_CHARS = 200


@dataclass
class FilterStats:
    """What one filter of the chain did in a pass."""

    name: str
    domains: list[str] | None
    options: dict[str, Any]
    seen: int = 0
    removed: int = 0
    removed_bytes: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    by_domain: dict[str, dict[str, int]] = field(default_factory=dict)
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    seen_bytes: int = 0
    seconds: float = 0.0  # CPU seconds in `reason`; not in the manifest (timings would change its fingerprint)

    def manifest_entry(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "domains": self.domains,
            "options": self.options,
            "seen": self.seen,
            "removed": self.removed,
            "removed_bytes": self.removed_bytes,
            "seen_bytes": self.seen_bytes,
            "reasons": dict(sorted(self.reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
            "by_domain": self.by_domain,
            "examples": self.examples,
        }


@dataclass(frozen=True)
class Removal:
    """One removed document: which filter (index in the chain) and why, and where the document came from."""

    filter_index: int
    reason: str
    domain: str
    source: int
    file: str
    index: int

    def as_dict(self, names: list[str]) -> dict[str, Any]:
        return {"filter": names[self.filter_index], "filter_index": self.filter_index, "reason": self.reason,
                "domain": self.domain, "source": self.source, "file": self.file, "index": self.index}


class FilterChain:
    """The configured filters in order; `check(domain, text, ...)` keeps or removes one document."""

    def __init__(self, configs: list[FilterConfig], domains: list[str]) -> None:
        known = list(dict.fromkeys(domains))
        for i, cfg in enumerate(configs):
            for d in cfg.domains or []:
                if d not in known:
                    raise ConfigError(
                        f"filters.{i}.domains: {d!r} is not a domain of the sources (they have: {', '.join(known)})",
                        hint="name domains as the sources' `domain` fields do, or leave out `domains` for all",
                    )
        self.configs = list(configs)
        self.filters: list[DocumentFilter] = [build_filter(cfg, i) for i, cfg in enumerate(configs)]
        self._scopes = [frozenset(cfg.domains) if cfg.domains is not None else None for cfg in configs]
        self.reset()

    def __bool__(self) -> bool:
        return bool(self.filters)

    @property
    def names(self) -> list[str]:
        return [cfg.name for cfg in self.configs]

    def reset(self) -> None:
        """Fresh statistics and filter state, for a new pass over the documents."""
        for f in self.filters:
            f.reset()
        self.stats = [FilterStats(cfg.name, list(cfg.domains) if cfg.domains is not None else None, dict(cfg.options))
                      for cfg in self.configs]
        self.removed: list[Removal] = []

    def check(self, domain: str, text: str, *, source: int = 0, file: str = "", index: int = 0) -> bool:
        """Whether the document is kept; a removal is counted under the filter that made it."""
        n_bytes = -1
        for i, (f, scope, stats) in enumerate(zip(self.filters, self._scopes, self.stats)):
            if scope is not None and domain not in scope:
                continue
            if n_bytes < 0:
                n_bytes = len(text.encode("utf-8", "surrogatepass"))
            start = time.thread_time()  # CPU time of this thread: the per-core speed, whatever else runs
            reason = f.reason(text)
            stats.seconds += time.thread_time() - start
            stats.seen += 1
            stats.seen_bytes += n_bytes
            per_domain = stats.by_domain.setdefault(domain, {"seen": 0, "removed": 0})
            per_domain["seen"] += 1
            if reason is None:
                continue
            stats.removed += 1
            stats.removed_bytes += n_bytes
            stats.reasons[reason] += 1
            per_domain["removed"] += 1
            examples = stats.examples.setdefault(reason, [])
            if len(examples) < EXAMPLES:
                examples.append({"source": source, "file": file, "index": index, "text": _excerpt(text)})
            self.removed.append(Removal(i, reason, domain, source, file, index))
            return False
        return True

    def manifest_entry(self) -> list[dict[str, Any]]:
        """Per filter, in chain order: seen, removed, removed_bytes, reasons, by_domain, examples."""
        return [s.manifest_entry() for s in self.stats]

    def removed_by(self, domain: str | None = None) -> str:
        """'filters.0 quality removed 12 (min_words 10, stop_words 2); ...' for the filters that removed any
        document (of `domain`)."""
        parts = []
        for i, s in enumerate(self.stats):
            n = s.removed if domain is None else s.by_domain.get(domain, {}).get("removed", 0)
            if n:
                reasons = Counter(r.reason for r in self.removed if r.filter_index == i
                                  and (domain is None or r.domain == domain))
                top = ", ".join(f"{k} {v}" for k, v in reasons.most_common(4))
                parts.append(f"filters.{i} {s.name!r} removed {n} ({top})")
        return "; ".join(parts) or "no filter removed any"


def _excerpt(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= EXAMPLE_CHARS else flat[: EXAMPLE_CHARS - 3] + "..."
