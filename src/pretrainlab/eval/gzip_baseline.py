"""The `gzip -9` yardstick: bits per byte a general-purpose compressor reaches on the held-out documents.

A language model's bits-per-byte is a compression rate (Shannon; see also Deletang et al. 2023,
"Language Modeling Is Compression"), so the first bar any model must clear is a standard compressor on
the same text. The text is recovered by decoding each validation document's tokens, which is exact for a
byte-level tokenizer; `validation_texts` checks that against the byte counts `prepare` recorded.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass

from pretrainlab.data.prepared import PreparedData
from pretrainlab.errors import DataError


@dataclass(frozen=True)
class GzipBaseline:
    """gzip -9 bits per byte: each document compressed alone, and all of them concatenated."""

    documents: int
    bytes: int
    per_document_bpb: float
    concatenated_bpb: float


def validation_texts(data: PreparedData, domain: str) -> list[str]:
    """The held-out documents of `domain` as text (end-of-text tokens removed), checked byte-exact."""
    shard = data.shard(domain, "val")
    tokenizer = data.tokenizer
    texts: list[str] = []
    for i in range(shard.n_docs):
        ids = [int(t) for t in shard.tokens[int(shard.offsets[i]) : int(shard.offsets[i + 1])] if t != data.eot_id]
        text = tokenizer.decode(ids)
        expected = int(shard.doc_bytes[i])
        if len(text.encode("utf-8")) != expected:
            raise DataError(
                f"{data.path / domain / 'val.bin'}: document {i} decodes to {len(text.encode('utf-8'))} bytes, "
                f"prepare recorded {expected}; the tokenizer does not round-trip this text",
                hint="use a byte-level tokenizer (tokenizer.kind=bpe or bytes) for a gzip comparison",
            )
        texts.append(text)
    return texts


def gzip_bits_per_byte(texts: list[str], level: int = 9) -> GzipBaseline:
    """Compress each text alone (sum of bits / sum of bytes) and the concatenation, at `level`.

    `mtime=0` keeps the output deterministic; the gzip header (about 20 bytes) is counted, as a
    `gzip -9` file on disk would be.
    """
    raw = [t.encode("utf-8") for t in texts]
    total = sum(len(b) for b in raw)
    if total == 0:
        raise DataError("there is no held-out text to compress", hint="prepare with validation.fraction > 0")
    per_doc_bits = sum(8 * len(gzip.compress(b, compresslevel=level, mtime=0)) for b in raw)
    concat_bits = 8 * len(gzip.compress(b"".join(raw), compresslevel=level, mtime=0))
    return GzipBaseline(
        documents=len(raw),
        bytes=total,
        per_document_bpb=per_doc_bits / total,
        concatenated_bpb=concat_bits / total,
    )


def gzip_baseline(data: PreparedData, domains: list[str] | None = None) -> GzipBaseline:
    """gzip -9 on the held-out documents of `domains` (default: all) of a prepared folder."""
    texts: list[str] = []
    for domain in domains or data.domains:
        texts.extend(validation_texts(data, domain))
    return gzip_bits_per_byte(texts)
