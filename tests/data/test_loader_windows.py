"""Window layouts: the vectorised packer against a plain reference, random-window geometry, gathering."""

from __future__ import annotations

import numpy as np
import pytest

from pretrainlab.data.windows import PackedRows, RandomWindows, gather_rows, pack_rows


def reference_pack(doc_lengths: list[int], row_len: int) -> list[tuple[int, int]]:
    """Greedy in-order packing written the obvious way: (start, length) per row."""
    rows: list[tuple[int, int]] = []
    pos = 0
    cur_start, cur_len = 0, 0
    for n in doc_lengths:
        pieces = [row_len] * (n // row_len) + ([n % row_len] if n % row_len else [])
        for piece in pieces:
            if cur_len and cur_len + piece <= row_len:
                cur_len += piece
            else:
                if cur_len:
                    rows.append((cur_start, cur_len))
                cur_start, cur_len = pos, piece
            pos += piece
    if cur_len:
        rows.append((cur_start, cur_len))
    return rows


@pytest.mark.parametrize("row_len", [1, 2, 7, 33, 500])
def test_pack_rows_matches_reference(row_len: int) -> None:
    rng = np.random.default_rng(row_len)
    lengths = [int(x) for x in rng.integers(1, 80, size=300)] + [1, 1, row_len, row_len + 1, 3 * row_len]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    starts, lens = pack_rows(offsets, row_len)
    assert list(zip(starts.tolist(), lens.tolist())) == reference_pack(lengths, row_len)


def test_pack_rows_of_an_empty_shard() -> None:
    starts, lens = pack_rows(np.zeros(1, dtype=np.int64), 9)
    assert starts.size == 0 and lens.size == 0
    assert PackedRows(np.zeros(1, dtype=np.int64), 8).n_windows == 0


@pytest.mark.parametrize("n_tokens", [17, 20, 32, 33, 34, 100, 1000])
def test_random_windows_fit_for_every_phase(n_tokens: int) -> None:
    w = RandomWindows(n_tokens, 16)
    assert w.n_windows >= 1 and 1 <= w.phase_range <= 16
    last_end = (w.phase_range - 1) + (w.n_windows - 1) * 16 + 17
    assert last_end <= n_tokens
    # No more than one window's worth of tokens is left unused at phase 0.
    assert n_tokens - w.n_windows * 16 < 2 * 16 + 1


def test_random_windows_too_small() -> None:
    assert RandomWindows(16, 16).n_windows == 0


def test_epoch_order_is_a_pure_function() -> None:
    w = RandomWindows(10_000, 16)
    a, b, c = w.epoch_order(1, 2, 3), w.epoch_order(1, 2, 3), w.epoch_order(1, 2, 4)
    assert a.phase == b.phase and np.array_equal(a.permutation, b.permutation)
    assert not np.array_equal(a.permutation, c.permutation)
    assert sorted(a.permutation.tolist()) == list(range(w.n_windows))


def test_gather_rows_pads_and_masks() -> None:
    tokens = np.arange(100, dtype=np.uint16)
    rows, real = gather_rows(tokens, np.array([10, 95]), np.array([5, 3]), 5, pad_id=999)
    assert rows.dtype == np.int64
    assert rows.tolist() == [[10, 11, 12, 13, 14], [95, 96, 97, 999, 999]]
    assert real.tolist() == [[True] * 5, [True, True, True, False, False]]
