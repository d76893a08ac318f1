"""Documents for PreSelect: read from a prepared folder (decoded from its shards) or from text / JSON Lines
files (split into documents exactly as `prepare` would), and written back as JSON Lines.

Every document keeps where it came from (`source`: a domain or a file, `id`: source plus position), its
text and its UTF-8 size in bytes, which PreSelect uses twice: to normalise a model's loss (bits per byte)
and to keep the top fraction of a corpus by size (the paper keeps the top 10% of characters).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pretrainlab.errors import DataError

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.bz2", ".jsonl.xz", ".json", ".ndjson")


@dataclass(frozen=True)
class Doc:
    """One document: `id` (source#position), `source` (a domain or a file), its text and UTF-8 bytes."""

    id: str
    source: str
    text: str
    n_bytes: int


def read_documents(
    paths: Sequence[str | Path],
    *,
    domains: Sequence[str] | None = None,
    split: str = "train",
    text_field: str = "text",
    doc_split: str = "file",
    separator: str = "<|endoftext|>",
    max_docs: int | None = None,
    seed: int = 0,
) -> list[Doc]:
    """The non-empty documents of `paths`: one prepared folder (its `domains`, default all, `split` shards)
    or text / JSON Lines files and globs (`.jsonl` etc. read `text_field`; other files split by `doc_split`:
    file, blank_lines, line or separator). With `max_docs`, a seeded random sample of that many, in order."""
    if not paths:
        raise DataError("no documents given", hint="name a prepared folder or text / .jsonl files")
    first = Path(paths[0])
    if (first / "manifest.json").is_file():
        if len(paths) > 1:
            raise DataError(f"{first} is a prepared folder; give it alone (got {len(paths)} paths)",
                            hint="read one prepared folder, or text / .jsonl files, per command")
        docs = _prepared_documents(first, domains, split)
    else:
        docs = _file_documents([str(p) for p in paths], text_field, doc_split, separator)
    if not docs:
        raise DataError(f"no non-empty documents in {', '.join(str(p) for p in paths)}",
                        hint="check the paths (and, for JSON Lines, --text-field)")
    if max_docs is not None:
        if max_docs < 1:
            raise DataError(f"max_docs must be >= 1 (got {max_docs})")
        if max_docs < len(docs):
            keep = np.sort(np.random.default_rng(seed).choice(len(docs), size=max_docs, replace=False))
            docs = [docs[i] for i in keep]
    return docs


def _prepared_documents(folder: Path, domains: Sequence[str] | None, split: str) -> list[Doc]:
    from pretrainlab.data.prepared import PreparedData

    data = PreparedData(folder)
    names = list(domains) if domains else data.domains
    tok = data.tokenizer
    docs: list[Doc] = []
    for domain in names:
        shard = data.shard(domain, split)
        ends = np.asarray(shard.offsets)
        for k in range(shard.n_docs):
            ids = np.asarray(shard.tokens[ends[k] : ends[k + 1]])
            if ids.size and ids[-1] == data.eot_id:
                ids = ids[:-1]
            text = ids.astype(np.uint8).tobytes().decode("utf-8", "replace") if tok.kind == "bytes" else tok.decode(ids)
            if text.strip():
                docs.append(Doc(f"{domain}/{split}#{k}", domain, text, len(text.encode("utf-8"))))
    return docs


def _file_documents(paths: list[str], text_field: str, doc_split: str, separator: str) -> list[Doc]:
    from pretrainlab.config import PrepareConfig, validate
    from pretrainlab.data.diagnostics import Diagnostics
    from pretrainlab.data.sources import open_source

    jsonl = [p for p in paths if p.lower().endswith(JSONL_SUFFIXES)]
    text = [p for p in paths if p not in jsonl]
    sources: list[dict[str, Any]] = []
    if jsonl:
        sources.append({"type": "jsonl", "domain": "docs", "paths": jsonl, "text_field": text_field})
    if text:
        sources.append({"type": "text", "domain": "docs", "paths": text, "split": doc_split, "separator": separator})
    cfg = validate(PrepareConfig, {"sources": sources}, source="preselect documents")
    diag = Diagnostics(strict=True)  # a bad JSON line is an error naming file:line, not a silent skip
    docs: list[Doc] = []
    for i, src_cfg in enumerate(cfg.sources):
        for d in open_source(src_cfg, i).documents(diag):
            if d.text.strip():
                body = d.text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
                docs.append(Doc(f"{d.file.display}#{d.index}", d.file.display, body, len(body.encode("utf-8"))))
    return docs


def jsonl_text(rows: Iterable[dict[str, Any]]) -> str:
    """Rows as JSON Lines (strict JSON, UTF-8 kept readable)."""
    return "".join(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n" for r in rows)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The objects of a JSON Lines file; DataError naming the file and line of a bad one."""
    if not path.is_file():
        raise DataError(f"{path} does not exist")
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg})", hint="write the file again") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object", hint="write the file again")
            rows.append(obj)
    return rows
