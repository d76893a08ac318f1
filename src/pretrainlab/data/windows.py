"""How one domain's token shard is cut into training rows of `seq_len + 1` tokens.

Two layouts, both visited in a fresh random order every epoch:

* `RandomWindows` (nanoGPT-style contiguous windows): windows of `seq_len + 1` tokens at stride
  `seq_len`, shifted by a per-epoch random phase so that window boundaries move between epochs.
  Rows cross document boundaries; every position is a real target.
* `PackedRows` (document-aligned packing, as in the "packed, no cross-document continuation" setups
  of OLMo/T5-style pipelines): each row starts at a document start and holds as many whole documents
  as fit, the rest is padding that carries no loss. A document longer than a row is cut into
  row-sized pieces, each of which starts its own row.

A layout's epoch order is a pure function of (seed, domain index, epoch), so the data order can be
recomputed from a counter instead of being saved.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EpochOrder:
    """One epoch of a domain: the row start shift and the order in which rows are visited."""

    epoch: int
    phase: int
    permutation: np.ndarray


class RandomWindows:
    """Contiguous windows of `seq_len + 1` tokens at stride `seq_len` with a random per-epoch phase.

    The number of windows per epoch is fixed (independent of the phase) so that a window counter maps
    to (epoch, position) by one division: `n_windows` windows fit for every phase in
    `[0, phase_range)`. When the shard holds at least two rows' worth of tokens the phase spans the
    whole `[0, seq_len)`; a shard with room for only one window shifts within its slack.
    """

    def __init__(self, n_tokens: int, seq_len: int) -> None:
        self.seq_len = seq_len
        self.row_len = seq_len + 1
        if n_tokens < self.row_len:
            self.n_windows = 0
            self.phase_range = 0
        else:
            self.n_windows = max(1, (n_tokens - seq_len) // seq_len)
            self.phase_range = min(seq_len, n_tokens - self.n_windows * seq_len)

    def epoch_order(self, seed: int, domain_index: int, epoch: int) -> EpochOrder:
        rng = np.random.default_rng([seed, domain_index, epoch])
        phase = int(rng.integers(self.phase_range))
        return EpochOrder(epoch, phase, rng.permutation(self.n_windows))

    def rows(self, order: EpochOrder, window_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Start offsets and real lengths of the given windows (every window is full)."""
        starts = order.phase + window_ids.astype(np.int64) * self.seq_len
        return starts, np.full(starts.shape, self.row_len, dtype=np.int64)

    @property
    def fill_rate(self) -> float:
        return 1.0 if self.n_windows else 0.0


def pack_rows(offsets: np.ndarray, row_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Document-aligned rows from document offsets: (start offset, real length) of each row.

    Documents are first cut into pieces of at most `row_len` tokens. Pieces are contiguous in the
    token stream, so a row holding pieces i..j-1 is the slice [bound[i], bound[j]). For every piece
    the furthest piece boundary within `row_len` tokens is found with one vectorised searchsorted;
    following that jump chain from piece 0 (one step per row, not per document) gives the rows of a
    greedy in-order packing.
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    doc_starts = offsets[:-1]
    doc_lens = np.diff(offsets)
    nonempty = doc_lens > 0
    doc_starts, doc_lens = doc_starts[nonempty], doc_lens[nonempty]
    if doc_lens.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy()
    if int(doc_lens.max()) <= row_len:
        piece_starts = doc_starts
    else:
        n_pieces = -(-doc_lens // row_len)
        first_piece = np.cumsum(n_pieces) - n_pieces
        piece_in_doc = np.arange(int(n_pieces.sum()), dtype=np.int64) - np.repeat(first_piece, n_pieces)
        piece_starts = np.repeat(doc_starts, n_pieces) + piece_in_doc * row_len
    total = int(piece_starts.size)
    bounds = np.append(piece_starts, offsets[-1])
    jump = np.searchsorted(bounds, piece_starts + row_len, side="right") - 1

    hops = jump.tolist()
    row_pieces = []
    i = 0
    while i < total:
        row_pieces.append(i)
        i = hops[i]
    first = np.asarray(row_pieces, dtype=np.int64)
    starts = bounds[first]
    return starts, bounds[jump[first]] - starts


class PackedRows:
    """Document-aligned rows of one shard, computed once from its offsets."""

    def __init__(self, offsets: np.ndarray, seq_len: int) -> None:
        self.seq_len = seq_len
        self.row_len = seq_len + 1
        self.starts, self.lengths = pack_rows(offsets, self.row_len)
        self.n_windows = int(self.starts.size)
        self.real_tokens = int(self.lengths.sum())

    def epoch_order(self, seed: int, domain_index: int, epoch: int) -> EpochOrder:
        rng = np.random.default_rng([seed, domain_index, epoch])
        return EpochOrder(epoch, 0, rng.permutation(self.n_windows))

    def rows(self, order: EpochOrder, window_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.starts[window_ids], self.lengths[window_ids]

    @property
    def fill_rate(self) -> float:
        """Fraction of row positions that hold real tokens (the rest is padding)."""
        return self.real_tokens / (self.n_windows * self.row_len) if self.n_windows else 0.0


def gather_rows(
    tokens: np.ndarray, starts: np.ndarray, lengths: np.ndarray, row_len: int, pad_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of `row_len` tokens read with one fancy index: (int64 tokens, bool real-token mask).

    Positions past a row's real length hold `pad_id` and are False in the mask.
    """
    ar = np.arange(row_len, dtype=np.int64)
    real = ar[None, :] < lengths[:, None]
    index = starts[:, None] + ar[None, :]
    padded = not bool(real.all())
    if padded:
        index = np.where(real, index, starts[:, None])
    rows = tokens[index].astype(np.int64)
    if padded:
        rows[~real] = pad_id
    return rows, real
