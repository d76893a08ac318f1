"""Validation windows: cut a val shard into non-overlapping rows so every target is scored exactly once.

A shard of `n` tokens has `n - 1` next-token targets (the first token has no context). Window `i` holds
tokens `[i * seq_len, i * seq_len + seq_len + 1)`: consecutive windows overlap by one token, which is the
last target of one window and the first input of the next, so each token after the first is a target in
exactly one window. The last window is padded and its padding masked, so nothing is dropped. This is the
non-overlapping ("stride = context") evaluation of GPT-2 / nanoGPT, with documents packed back to back as
in training (each document ends with the end-of-text token).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pretrainlab.data.shards import Shard


@dataclass(frozen=True)
class EvalWindows:
    """The scored rows of one domain.

    `tokens` is (rows, seq_len + 1) int64; `loss_mask` (same shape) is True on real tokens, so
    `loss_mask[:, 1:]` marks the targets that count. `n_targets` is how many targets are scored;
    `bytes_covered` is the UTF-8 byte count those targets stand for (the denominator of bits-per-byte).
    """

    domain: str
    tokens: np.ndarray
    loss_mask: np.ndarray
    n_targets: int
    bytes_covered: float

    @property
    def rows(self) -> int:
        return int(self.tokens.shape[0])


def make_windows(
    tokens: np.ndarray, seq_len: int, pad_id: int, max_targets: int | None = None
) -> tuple[np.ndarray, np.ndarray, int]:
    """(rows, seq_len + 1) windows at stride `seq_len` over `tokens`, padded and masked at the end.

    With `max_targets`, only the first `max_targets` targets (the first `max_targets + 1` tokens) are used.
    Returns (windows, loss_mask, n_targets).
    """
    if seq_len < 1:
        raise ValueError("seq_len must be >= 1")
    n = int(tokens.size)
    if max_targets is not None:
        n = min(n, max_targets + 1)
    n_targets = max(n - 1, 0)
    rows = -(-n_targets // seq_len)
    width = seq_len + 1
    out = np.full((rows, width), pad_id, dtype=np.int64)
    mask = np.zeros((rows, width), dtype=bool)
    if rows == 0:
        return out, mask, 0
    flat = np.asarray(tokens[:n], dtype=np.int64)
    # Window i starts at token i * seq_len; the column index is the offset inside the window.
    starts = np.arange(rows, dtype=np.int64)[:, None] * seq_len
    positions = starts + np.arange(width, dtype=np.int64)[None, :]
    valid = positions < n
    out[valid] = flat[positions[valid]]
    mask[valid] = True
    return out, mask, n_targets


def val_windows(shard: Shard, seq_len: int, pad_id: int, max_tokens: int | None = None) -> EvalWindows:
    """The validation windows of one shard, optionally capped at its first `max_tokens` targets.

    Bytes covered: the shard's UTF-8 bytes scaled by the fraction of its targets that are scored
    (`n_targets / (n_tokens - 1)`), which is all of its bytes when nothing is capped. Under a cap this is
    an approximation that assumes bytes are spread evenly over tokens; it keeps the figure comparable
    between capped and uncapped runs on the same data.
    """
    windows, mask, n_targets = make_windows(shard.tokens, seq_len, pad_id, max_tokens)
    total_targets = max(shard.n_tokens - 1, 0)
    fraction = n_targets / total_targets if total_targets else 0.0
    return EvalWindows(
        domain=shard.domain,
        tokens=windows,
        loss_mask=mask,
        n_targets=n_targets,
        bytes_covered=float(shard.n_bytes) * fraction,
    )
