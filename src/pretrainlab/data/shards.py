"""Token shards: the on-disk contract between `prepare` and the loader.

One shard per (domain, split), three flat little-endian files next to each other:

    <domain>/<split>.bin     tokens, uint16 when the vocabulary fits, else uint32
    <domain>/<split>.idx     int64 document start offsets into .bin, n_docs + 1 entries (last = n_tokens)
    <domain>/<split>.bytes   int64 UTF-8 byte count of each document (for bits-per-byte)

Every document ends with the end-of-text token. Files are written sequentially as documents arrive,
so memory stays bounded whatever the corpus size, and read back as memory maps.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

SPLITS = ("train", "val")


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype that holds every id of a `vocab_size` vocabulary."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def shard_paths(root: str | Path, domain: str, split: str) -> tuple[Path, Path, Path]:
    base = Path(root) / domain
    return base / f"{split}.bin", base / f"{split}.idx", base / f"{split}.bytes"


class ShardWriter:
    """Appends tokenized documents to one (domain, split) shard."""

    def __init__(self, root: str | Path, domain: str, split: str, dtype: np.dtype) -> None:
        self.dtype = np.dtype(dtype)
        self.bin_path, self.idx_path, self.bytes_path = shard_paths(root, domain, split)
        self.bin_path.parent.mkdir(parents=True, exist_ok=True)
        self._bin = open(self.bin_path, "wb")
        self._idx = open(self.idx_path, "wb")
        self._bytes = open(self.bytes_path, "wb")
        self.n_tokens = 0
        self.n_docs = 0
        self.n_bytes = 0
        self._hash = hashlib.sha256()  # of the token file: puts the content itself in the data fingerprint
        self._idx.write(np.zeros(1, dtype="<i8").tobytes())

    def write(self, tokens: np.ndarray, doc_lengths: np.ndarray, doc_bytes: np.ndarray) -> None:
        """Append documents given as one flat token array plus each document's length and byte count."""
        tokens = np.asarray(tokens)
        lengths = np.asarray(doc_lengths, dtype=np.int64)
        if int(lengths.sum()) != tokens.size:
            raise ValueError("document lengths do not add up to the token count")
        if tokens.size and int(tokens.max()) > np.iinfo(self.dtype).max:
            raise ValueError(f"token id {int(tokens.max())} does not fit {self.dtype}")
        raw = tokens.astype(self.dtype.newbyteorder("<"), copy=False).tobytes()
        self._bin.write(raw)
        self._hash.update(raw)
        ends = self.n_tokens + np.cumsum(lengths)
        self._idx.write(ends.astype("<i8").tobytes())
        self._bytes.write(np.asarray(doc_bytes, dtype="<i8").tobytes())
        self.n_tokens += int(tokens.size)
        self.n_docs += int(lengths.size)
        self.n_bytes += int(np.asarray(doc_bytes, dtype=np.int64).sum())

    @property
    def sha256(self) -> str:
        """sha256 of the token file written so far."""
        return self._hash.hexdigest()

    def close(self) -> None:
        for f in (self._bin, self._idx, self._bytes):
            f.flush()
            f.close()

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Shard:
    """Read-only memory-mapped view of one (domain, split) shard."""

    def __init__(self, root: str | Path, domain: str, split: str, dtype: np.dtype) -> None:
        self.domain = domain
        self.split = split
        bin_path, idx_path, bytes_path = shard_paths(root, domain, split)
        self.dtype = np.dtype(dtype)
        self.tokens = _memmap(bin_path, self.dtype)
        self.offsets = _memmap(idx_path, np.dtype("<i8"))
        self.doc_bytes = _memmap(bytes_path, np.dtype("<i8"))

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.size)

    @property
    def n_docs(self) -> int:
        return int(self.offsets.size) - 1

    @property
    def n_bytes(self) -> int:
        return int(self.doc_bytes.sum())


def _memmap(path: Path, dtype: np.dtype) -> np.ndarray:
    if path.stat().st_size == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r")
