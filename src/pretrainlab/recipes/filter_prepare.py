"""Prepared byte-level folders for the data-filter replications (dedup, quality-filter).

`prepare_training` writes one training domain from a list of documents, optionally through prepare's
filter chain (so the replication exercises the same code a user runs); `prepare_heldout` writes documents
per domain entirely into the validation split, the shared text every arm is scored on. Both use the byte
tokenizer, so every folder shares one vocabulary, and both are reused when already complete (resume).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pretrainlab.recipes.filter_corpora import jsonl_text, write_jsonl

TRAIN_DOMAIN = "text"
VALIDATION_FRACTION = 0.02  # the runs' own end-of-training evaluation; the comparison uses the held-out folder


def prepare_training(folder: Path, texts: list[str], filters: list[dict[str, Any]] | None = None) -> Path:
    """`texts` (in this order) as domain `text` of a prepared folder at `folder`, through `filters`."""
    from pretrainlab.config import PrepareConfig, validate
    from pretrainlab.data.prepare import prepare

    if _complete_with(folder, [texts]):
        return folder
    source = write_jsonl(folder.parent / "sources" / f"{folder.name}.jsonl", texts)
    cfg = validate(PrepareConfig, {
        "sources": [{"type": "jsonl", "domain": TRAIN_DOMAIN, "paths": [source.as_posix()]}],
        "filters": filters or [],
        "tokenizer": {"kind": "bytes"},
        "validation": {"fraction": VALIDATION_FRACTION, "seed": 0},
        "output": str(folder),
        "overwrite": True,  # a folder left by another scale or corpus (its sources differ) is rebuilt
    }, source=f"replication data {folder.name}")
    return Path(prepare(cfg, progress=False))


def prepare_heldout(folder: Path, docs: dict[str, list[str]]) -> Path:
    """Each domain's documents, all in the validation split, at `folder` (no filters)."""
    from pretrainlab.config import PrepareConfig, validate
    from pretrainlab.data.prepare import prepare

    if _complete_with(folder, [v for v in docs.values() if v]):
        return folder
    files = {d: write_jsonl(folder.parent / "sources" / f"{folder.name}-{d}.jsonl", v) for d, v in docs.items() if v}
    cfg = validate(PrepareConfig, {
        "sources": [{"type": "jsonl", "domain": d, "paths": [p.as_posix()]} for d, p in files.items()],
        "tokenizer": {"kind": "bytes"},
        "validation": {"fraction": 0.0, "files": [p.as_posix() for p in files.values()]},
        "output": str(folder),
        "overwrite": True,
    }, source=f"replication held-out data {folder.name}")
    return Path(prepare(cfg, progress=False))


def _complete_with(folder: Path, texts_by_source: list[list[str]]) -> bool:
    """Whether `folder` is a finished prepare of exactly these documents: its manifest records, for each source
    file, the sha256 of the JSONL `write_jsonl` makes of them. A folder another scale or corpus left at the same
    path is rebuilt, never reused (resume must not train on stale data)."""
    import hashlib
    import json

    manifest = folder / "manifest.json"
    if not manifest.is_file():
        return False
    try:
        domains = json.loads(manifest.read_text(encoding="utf-8"))["domains"]
        recorded = {s["sha256"] for d in domains.values() for s in d.get("sources", [])}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    wanted = {hashlib.sha256(jsonl_text(t).encode("utf-8")).hexdigest() for t in texts_by_source}
    return wanted == recorded


def removed_indices(folder: Path) -> set[int]:
    """Line numbers (0-based) of the documents prepare's filters removed from the folder's one JSONL source."""
    import json

    path = folder / "removed.jsonl"
    if not path.is_file():
        return set()
    return {json.loads(line)["index"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}


def corpus_bytes(folder: Path) -> int:
    """UTF-8 bytes of every document (train and validation) of a prepared folder."""
    from pretrainlab.data.prepared import PreparedData

    domains = PreparedData(folder).manifest["domains"]
    return sum(e["train"]["bytes"] + e["val"]["bytes"] for e in domains.values())
