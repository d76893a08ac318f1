"""Test helpers: build a prepared-data folder straight from token lists, in milliseconds.

The folder is a real one (shards + manifest with a valid fingerprint, byte tokenizer) that
`PreparedData`, the loader and the trainer read like any other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pretrainlab.data.prepared import MANIFEST_FORMAT, fingerprint_of
from pretrainlab.data.shards import ShardWriter, token_dtype

BYTE_VOCAB = 258  # 256 bytes + end-of-text (256) + padding (257)
EOT, PAD = 256, 257


def make_prepared(
    path: str | Path,
    train: dict[str, list[list[int]]],
    val: dict[str, list[list[int]]] | None = None,
    vocab_size: int = BYTE_VOCAB,
    eot_id: int = EOT,
    pad_id: int = PAD,
) -> Path:
    """Write documents (token lists, end-of-text appended here) per domain and split; return the folder."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    dtype = token_dtype(vocab_size)
    val = val or {d: [] for d in train}
    domains: dict[str, Any] = {}
    for domain in train:
        entry: dict[str, Any] = {"skipped_empty": 0, "invalid_utf8_documents": 0, "bad_lines": 0, "sources": []}
        for split, docs in (("train", train[domain]), ("val", val.get(domain, []))):
            with ShardWriter(path, domain, split, dtype) as w:
                if docs:
                    toks = [np.asarray(list(d) + [eot_id]) for d in docs]
                    w.write(np.concatenate(toks), np.array([t.size for t in toks]), np.array([len(d) for d in docs]))
            entry[split] = {"documents": w.n_docs, "tokens": w.n_tokens, "bytes": w.n_bytes, "sha256": w.sha256}
        domains[domain] = entry
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "tokenizer": {"kind": "bytes", "vocab_size": vocab_size, "eot_id": eot_id, "pad_id": pad_id, "sha256": ""},
        "dtype": dtype.name,
        "domains": domains,
        "config": {},
    }
    manifest["fingerprint"] = fingerprint_of(manifest)
    import json

    (path / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return path


def random_docs(rng: np.random.Generator, n_docs: int, min_len: int = 5, max_len: int = 200) -> list[list[int]]:
    """Byte documents of random lengths."""
    return [list(rng.integers(0, 256, size=int(rng.integers(min_len, max_len)))) for _ in range(n_docs)]


def tiny_run_config(out_dir: str | Path, data_path: str | Path, **sections: Any) -> Any:
    """A RunConfig for a sub-second CPU run: 2 layers x 32 wide, seq_len 32, fp32, 1 thread, no progress bar.

    `sections` are merged one level deep into the defaults, e.g. `train={"steps": 5}`.
    """
    from pretrainlab.config import RunConfig

    tree: dict[str, Any] = {
        "name": "tiny",
        "out_dir": str(out_dir),
        "data": {"path": str(data_path), "seq_len": 32},
        "model": {"n_layers": 2, "d_model": 32, "n_heads": 2},
        "optim": {"lr": 3e-3},
        "schedule": {"warmup_steps": 2},
        "train": {"steps": 10, "global_batch_tokens": 32 * 8, "micro_batch_size": 8, "precision": "fp32",
                  "progress": False, "log_every": 1,
                  "threads": 1},  # tiny matmuls: one thread is fastest, and the test machine is shared
        "eval": {"max_tokens_per_domain": 512, "batch_size": 8},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(tree.get(key), dict):
            tree[key] = {**tree[key], **value}
        else:
            tree[key] = value
    return RunConfig.model_validate(tree)


def markov_docs(rng: np.random.Generator, n_docs: int, length: int = 120, chain: int = 123) -> list[list[int]]:
    """Byte documents from a sparse Markov chain over 32 symbols (`chain` seeds its table): learnable in a few
    dozen tiny steps, so runs trained from different seeds make confident, different predictions."""
    table = np.random.default_rng(chain).integers(0, 32, size=32)
    docs = []
    for _ in range(n_docs):
        x = [int(rng.integers(0, 32))]
        for _ in range(length - 1):
            x.append(int(table[x[-1]]) if rng.random() < 0.8 else int(rng.integers(0, 32)))
        docs.append([97 + t for t in x])
    return docs


def train_run(cfg: Any) -> Path:
    """Train `cfg` in this process and return its run folder."""
    from pretrainlab.train.trainer import Trainer

    Trainer(cfg).fit()
    return Path(cfg.out_dir) / cfg.name
