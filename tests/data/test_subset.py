"""A fixed token budget cut from prepared data: exact counts, nested budgets, a fixed validation cut."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pretrainlab.data.prepared import PreparedData
from pretrainlab.data.subset import write_token_budget
from pretrainlab.errors import DataError


def test_budget_has_the_asked_tokens_and_valid_bytes(tiny_prepared: Path, tmp_path: Path) -> None:
    out = write_token_budget(tiny_prepared, tmp_path / "b", train_tokens=4000, val_tokens=600, chunk_tokens=64)
    assert isinstance(out, PreparedData)
    train = out.domain_tokens("train")
    assert sum(train.values()) in (4000, 3999, 3998)  # one fewer per domain at worst
    assert set(train) == {"alpha", "beta"}
    for d in out.domains:
        shard = out.shard(d, "train")
        ends = shard.offsets[1:] - 1
        assert np.all(shard.tokens[ends] == out.eot_id)  # every chunk is a document ending in end-of-text
        assert shard.n_bytes == int(np.count_nonzero(np.asarray(shard.tokens) < 256))
        assert 0 < out.shard(d, "val").n_tokens <= 600


def test_smaller_budget_is_a_subset_and_validation_is_the_same(tiny_prepared: Path, tmp_path: Path) -> None:
    big = write_token_budget(tiny_prepared, tmp_path / "big", train_tokens=4000, val_tokens=500, chunk_tokens=64)
    small = write_token_budget(tiny_prepared, tmp_path / "small", train_tokens=1000, val_tokens=500, chunk_tokens=64)
    for d in big.domains:
        b, s = np.asarray(big.shard(d, "train").tokens), np.asarray(small.shard(d, "train").tokens)
        assert np.array_equal(b[: s.size - 1], s[: s.size - 1])
        assert np.array_equal(np.asarray(big.shard(d, "val").tokens), np.asarray(small.shard(d, "val").tokens))


def test_reuses_the_same_cut_and_refuses_other_content(tiny_prepared: Path, tmp_path: Path) -> None:
    first = write_token_budget(tiny_prepared, tmp_path / "b", train_tokens=2000, val_tokens=300, chunk_tokens=64)
    again = write_token_budget(tiny_prepared, tmp_path / "b", train_tokens=2000, val_tokens=300, chunk_tokens=64)
    assert again.fingerprint == first.fingerprint
    with pytest.raises(DataError, match="already holds other data"):
        write_token_budget(tiny_prepared, tmp_path / "b", train_tokens=1000, val_tokens=300, chunk_tokens=64)


def test_budget_larger_than_the_data_is_an_error(tiny_prepared: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="fewer than the budget"):
        write_token_budget(tiny_prepared, tmp_path / "b", train_tokens=10_000_000, val_tokens=10)
    assert not (tmp_path / "b").exists()
    assert not list(tmp_path.glob(".b.*"))  # the temp folder is gone too
