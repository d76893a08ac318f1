"""Held-out validation documents: whole named files, or a stable hash of each document's identity.

A document goes to validation when `hash(seed, domain, file, index) / 2**64 < fraction` (the same
streaming, order-independent rule as hash-based splits in OLMo / Dolma tooling): no document is ever cut
in two, the split does not depend on batch sizes or on the other sources, and adding files to a corpus
leaves the assignment of existing documents unchanged.
"""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import os
from pathlib import Path

from pretrainlab.config import ValidationConfig
from pretrainlab.data.sources import FileRef


class ValidationSplit:
    """Decides, document by document, whether it is held out."""

    def __init__(self, cfg: ValidationConfig) -> None:
        self.fraction = cfg.fraction
        self.seed = cfg.seed
        self.patterns = list(cfg.files)
        self._named: dict[Path, list[str]] = {}
        for pattern in self.patterns:
            expanded = os.path.expanduser(pattern)
            for p in glob.glob(expanded, recursive=True) if glob.has_magic(expanded) else [expanded]:
                if os.path.isfile(p):
                    self._named.setdefault(Path(p).resolve(), []).append(pattern)
        self._file_cache: dict[FileRef, bool] = {}
        self.matched_patterns: set[str] = set()
        self._threshold = int(self.fraction * 2**64)

    def is_val_file(self, ref: FileRef) -> bool:
        """Whether `ref` is named by `validation.files` (as a path on disk, or by its name / relative path)."""
        cached = self._file_cache.get(ref)
        if cached is not None:
            return cached
        hits = list(self._named.get(ref.path.resolve(), [])) if ref.path is not None and self._named else []
        hits += [p for p in self.patterns if any(fnmatch.fnmatchcase(name, p) for name in (ref.display, ref.rel))]
        self.matched_patterns.update(hits)
        hit = bool(hits)
        self._file_cache[ref] = hit
        return hit

    def is_val(self, domain: str, ref: FileRef, index: int) -> bool:
        if self.patterns and self.is_val_file(ref):
            return True
        if self._threshold == 0:
            return False
        key = f"{self.seed}\x00{domain}\x00{ref.rel}\x00{index}".encode()
        h = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")
        return h < self._threshold

    def unmatched_patterns(self) -> list[str]:
        return [p for p in self.patterns if p not in self.matched_patterns]

