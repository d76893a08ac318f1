"""A fixed token budget cut from prepared data: the data-constrained setting of scaling studies.

Kim et al. (2025, *Pre-training under infinite compute*) fix the number of unique training tokens D and
let compute grow (epochs, parameters, ensembles). `write_token_budget` builds such a world from any
prepared folder: exactly `train_tokens` training tokens and about `val_tokens` validation tokens per
domain, as chunks drawn at seeded random positions (so a budget of 64k tokens samples the whole corpus
rather than its first few files). Each chunk becomes a document ending with end-of-text; its byte count
is measured by decoding it, so bits-per-byte stay exact.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from pretrainlab.data.prepared import MANIFEST_FORMAT, PreparedData, fingerprint_of
from pretrainlab.data.shards import Shard, ShardWriter
from pretrainlab.errors import DataError


def write_token_budget(
    source: str | Path,
    out: str | Path,
    *,
    train_tokens: int,
    val_tokens: int,
    chunk_tokens: int = 1024,
    seed: int = 0,
    domains: list[str] | None = None,
) -> PreparedData:
    """Write a prepared folder at `out` holding `train_tokens` training tokens (split evenly over `domains`,
    default all; one fewer per domain at worst) and up to `val_tokens` validation tokens per domain, drawn
    from `source` as non-overlapping chunks of `chunk_tokens` (the last one shorter). Reuses `out` when it
    already holds this exact cut; any other content there is an error.
    """
    src = PreparedData(source)
    domains = list(domains or src.domains)
    missing = [d for d in domains if d not in src.domains]
    if missing:
        raise DataError(f"domain {missing[0]!r} is not in {src.path}", hint=f"it has: {', '.join(src.domains)}")
    if train_tokens < 2 * len(domains) or chunk_tokens < 2:
        raise DataError(f"a token budget of {train_tokens} is too small for {len(domains)} domain(s)")
    recipe = {"source": src.fingerprint, "train_tokens": train_tokens, "val_tokens": val_tokens,
              "chunk_tokens": chunk_tokens, "seed": seed, "domains": domains}
    out = Path(out)
    if (out / "manifest.json").is_file():
        try:
            existing = PreparedData(out)
            if existing.manifest.get("config", {}).get("token_budget") == recipe:
                return existing
        except DataError:
            pass
        raise DataError(
            f"{out} already holds other data", hint="pick another folder or delete it (it is not this token budget)"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        manifest = _write(src, tmp, recipe, domains)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
        if (src.path / "tokenizer.json").is_file():
            shutil.copy2(src.path / "tokenizer.json", tmp / "tokenizer.json")
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return PreparedData(out)


def _write(src: PreparedData, root: Path, recipe: dict[str, Any], domains: list[str]) -> dict[str, Any]:
    per_domain = [recipe["train_tokens"] // len(domains)] * len(domains)
    per_domain[0] += recipe["train_tokens"] - sum(per_domain)
    entries: dict[str, Any] = {}
    for d_index, (domain, budget) in enumerate(zip(domains, per_domain)):
        entry: dict[str, Any] = {"skipped_empty": 0, "invalid_utf8_documents": 0, "bad_lines": 0, "sources": []}
        for s_index, (split, tokens) in enumerate((("train", budget), ("val", recipe["val_tokens"]))):
            # One stream per (domain, split): the validation cut does not depend on the training budget, and a
            # smaller training budget is a prefix (subset) of a larger one.
            rng = np.random.default_rng([recipe["seed"], d_index, s_index])
            shard = src.shard(domain, split)
            if split == "train" and shard.n_tokens < tokens:
                raise DataError(
                    f"domain {domain!r} of {src.path} has {shard.n_tokens:,} training tokens, fewer than the "
                    f"budget's {tokens:,}",
                    hint="lower the token budget or prepare more data",
                )
            chunks = _chunks(shard, min(tokens, shard.n_tokens), recipe["chunk_tokens"], rng)
            written = sum(c.size + 1 for c in chunks)
            if split == "train" and written < tokens - 1:
                raise DataError(
                    f"domain {domain!r} of {src.path}: only {written:,} of the budget's {tokens:,} training "
                    f"tokens fit in whole chunks of {recipe['chunk_tokens']}",
                    hint="lower the token budget or the chunk size, or prepare more data",
                )
            with ShardWriter(root, domain, split, src.dtype) as w:
                for chunk in chunks:
                    doc = np.append(chunk, src.eot_id).astype(np.int64)
                    w.write(doc, np.array([doc.size]), np.array([_utf8_bytes(src, chunk)]))
            entry[split] = {"documents": w.n_docs, "tokens": w.n_tokens, "bytes": w.n_bytes, "sha256": w.sha256}
        entries[domain] = entry
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "tokenizer": dict(src.manifest["tokenizer"]),
        "dtype": src.dtype.name,
        "domains": entries,
        "config": {"token_budget": recipe, "source_config": src.manifest.get("config", {})},
    }
    manifest["fingerprint"] = fingerprint_of(manifest)
    return manifest


def _chunks(shard: Shard, tokens: int, chunk_tokens: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Non-overlapping chunks at random chunk-aligned positions, `tokens` in all counting the end-of-text
    each chunk gets (one fewer when only one token is left). Source document boundaries inside a chunk stay."""
    if tokens <= 0 or shard.n_tokens == 0:
        return []
    content = chunk_tokens - 1
    n_slots = max(1, shard.n_tokens // content)
    out: list[np.ndarray] = []
    left = tokens
    for slot in rng.permutation(n_slots):
        if left <= 1:
            break
        take = min(content, left - 1)
        start = int(slot) * content
        piece = np.asarray(shard.tokens[start : start + take])
        if piece.size == 0:
            continue
        out.append(piece)
        left -= piece.size + 1
    return out


def _utf8_bytes(data: PreparedData, tokens: np.ndarray) -> int:
    if data.manifest["tokenizer"].get("kind") == "bytes":
        return int(np.count_nonzero(tokens < 256))
    return len(data.tokenizer.decode([int(t) for t in tokens]).encode("utf-8"))
