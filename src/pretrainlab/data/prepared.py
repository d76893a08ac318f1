"""A prepared-data folder, as written by `pretrainlab prepare` and read by everything after it.

    <folder>/manifest.json      what is in the folder (below), with a fingerprint of all of it
    <folder>/tokenizer.json     the tokenizer (absent for the byte tokenizer, which needs no file)
    <folder>/<domain>/<split>.{bin,idx,bytes}   token shards (see `shards.py`)

manifest.json:
    {"format": "pretrainlab-prepared/1",
     "tokenizer": {"kind", "vocab_size", "eot_id", "pad_id", "sha256"},
     "dtype": "uint16" | "uint32",
     "domains": {name: {"train": {"documents", "tokens", "bytes", "sha256" (of the .bin)}, "val": {...},
                        "skipped_empty", "invalid_utf8_documents", "bad_lines",
                        "sources": [{"path", "sha256", "bytes"}]}},
     "timing": {name: seconds},       (not part of the fingerprint)
     "config": the resolved PrepareConfig,
     "fingerprint": sha256 of the canonical JSON of everything above except timing}
"""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from pretrainlab.data.shards import SPLITS, Shard
from pretrainlab.errors import DataError

MANIFEST_FORMAT = "pretrainlab-prepared/1"


def fingerprint_of(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest's canonical JSON, leaving out the fingerprint itself and timings."""
    content = {k: v for k, v in manifest.items() if k not in ("fingerprint", "timing")}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class PreparedData:
    """Opens a prepared-data folder: manifest, tokenizer and memory-mapped shards."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        manifest_path = self.path / "manifest.json"
        if not self.path.is_dir():
            raise DataError(
                f"prepared-data folder {str(self.path)!r} does not exist",
                hint="run `pretrainlab prepare CONFIG.yaml` first, or fix data.path",
            )
        if not manifest_path.is_file():
            raise DataError(
                f"{manifest_path} is missing: {self.path} is not a complete prepared-data folder",
                hint="prepare it again (an interrupted prepare never leaves a manifest)",
            )
        try:
            self.manifest: dict[str, Any] = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"{manifest_path}: not valid JSON ({e})", hint="prepare the data again") from None
        if self.manifest.get("format") != MANIFEST_FORMAT:
            raise DataError(
                f"{manifest_path}: unknown format {self.manifest.get('format')!r} (expected {MANIFEST_FORMAT!r})",
                hint="prepare the data again with this version of pretrainlab",
            )
        if fingerprint_of(self.manifest) != self.manifest.get("fingerprint"):
            raise DataError(
                f"{manifest_path}: the fingerprint does not match the content; the manifest was edited",
                hint="prepare the data again",
            )
        self._shards: dict[tuple[str, str], Shard] = {}

    @property
    def fingerprint(self) -> str:
        return str(self.manifest["fingerprint"])

    @property
    def domains(self) -> list[str]:
        return list(self.manifest["domains"].keys())

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.manifest["dtype"])

    @property
    def vocab_size(self) -> int:
        return int(self.manifest["tokenizer"]["vocab_size"])

    @property
    def eot_id(self) -> int:
        return int(self.manifest["tokenizer"]["eot_id"])

    @property
    def pad_id(self) -> int:
        return int(self.manifest["tokenizer"]["pad_id"])

    def shard(self, domain: str, split: str) -> Shard:
        """The memory-mapped shard of one domain and split ('train' or 'val')."""
        if domain not in self.manifest["domains"]:
            raise DataError(
                f"domain {domain!r} is not in {self.path} (it has: {', '.join(self.domains)})",
                hint="fix the domain name in the config",
            )
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}")
        key = (domain, split)
        if key not in self._shards:
            try:
                shard = Shard(self.path, domain, split, self.dtype)
            except FileNotFoundError as e:
                raise DataError(f"{e.filename} is missing from {self.path}", hint="prepare the data again") from None
            expected = self.manifest["domains"][domain][split]
            if shard.n_tokens != expected["tokens"] or shard.n_docs != expected["documents"]:
                raise DataError(
                    f"{self.path / domain / (split + '.bin')}: holds {shard.n_tokens} tokens in {shard.n_docs} "
                    f"documents, the manifest says {expected['tokens']} in {expected['documents']}",
                    hint="the folder was changed after prepare; prepare the data again",
                )
            self._shards[key] = shard
        return self._shards[key]

    def domain_tokens(self, split: str = "train") -> dict[str, int]:
        return {d: int(self.manifest["domains"][d][split]["tokens"]) for d in self.domains}

    @cached_property
    def tokenizer(self) -> Any:
        """The `TextTokenizer` saved with the data."""
        from pretrainlab.data.tokenizer import TextTokenizer

        return TextTokenizer.from_prepared(self.path, self.manifest["tokenizer"])
