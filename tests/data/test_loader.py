"""TokenLoader: exact resume, mixture proportions, window coverage, packing, ranks, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import make_prepared, random_docs
from pretrainlab.data.loader import TokenLoader
from pretrainlab.data.prepared import PreparedData
from pretrainlab.errors import ConfigError, DataError

# "Position" vocabulary: every non-eot token value is unique, so a token names its place in the shard.
POS_VOCAB, POS_EOT, POS_PAD = 65536, 65534, 65535


def position_docs(lengths: list[int], first: int = 0) -> list[list[int]]:
    """Documents whose tokens are consecutive integers (unique across the whole domain)."""
    docs, nxt = [], first
    for n in lengths:
        docs.append(list(range(nxt, nxt + n)))
        nxt += n
    return docs


@pytest.fixture
def mixed(tmp_path: Path) -> PreparedData:
    """Three domains; 'small' holds only a handful of windows so epochs turn over quickly."""
    rng = np.random.default_rng(1)
    return PreparedData(
        make_prepared(
            tmp_path / "mixed",
            train={
                "big": random_docs(rng, 300),
                "mid": random_docs(rng, 120, 20, 300),
                "small": random_docs(rng, 6, 10, 40),
            },
        )
    )


@pytest.fixture
def positional(tmp_path: Path) -> PreparedData:
    """One domain of position-valued documents, including documents longer than a 33-token row."""
    rng = np.random.default_rng(2)
    lengths = [int(x) for x in rng.integers(1, 30, size=150)] + [70, 5, 33, 32, 100, 1]
    rng.shuffle(lengths)
    return PreparedData(
        make_prepared(
            tmp_path / "pos",
            train={"text": position_docs(lengths)},
            vocab_size=POS_VOCAB,
            eot_id=POS_EOT,
            pad_id=POS_PAD,
        )
    )


def batches(loader: TokenLoader, n: int) -> list:
    return [loader.next_batch() for _ in range(n)]


def assert_same(a: list, b: list) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert torch.equal(x.tokens, y.tokens)
        assert torch.equal(x.domains, y.domains)
        assert (x.loss_mask is None) == (y.loss_mask is None)
        if x.loss_mask is not None:
            assert torch.equal(x.loss_mask, y.loss_mask)


# ------------------------------------------------------------------------------------ resume


@pytest.mark.parametrize("mode", ["random", "packed"])
def test_restore_yields_the_same_next_batches(mixed: PreparedData, mode: str) -> None:
    kw = dict(seq_len=16, global_rows=6, seed=3, mode=mode, weights={"big": 1, "mid": 1, "small": 2})
    original = TokenLoader(mixed, **kw)
    batches(original, 7)
    original.set_weights({"big": 1, "mid": 3, "small": 1})  # a weight change before the save
    batches(original, 2)
    state = json.loads(json.dumps(original.state_dict()))
    expected = batches(original, 50)

    restored = TokenLoader(mixed, **{**kw, "weights": None, "seed": 99})  # the saved seed wins
    restored.load_state_dict(state)
    assert restored.weights == original.weights
    assert_same(batches(restored, 50), expected)
    # The small domain turned over several epochs during those batches: the restore crossed boundaries.
    assert original.epochs_seen()["small"] > 3


def test_restore_mid_epoch_of_small_domain(mixed: PreparedData) -> None:
    kw = dict(seq_len=16, global_rows=4, seed=0, weights={"small": 1})
    loader = TokenLoader(mixed, **kw)
    per_epoch = loader.windows_per_epoch()["small"]
    for _ in range(100):  # stop strictly inside an epoch
        if loader.state_dict()["counters"]["small"] % per_epoch:
            break
        loader.next_batch()
    state = loader.state_dict()
    expected = batches(loader, 20)
    fresh = TokenLoader(mixed, **kw)
    fresh.load_state_dict(state)
    assert_same(batches(fresh, 20), expected)


def test_state_is_json_round_trippable_and_small(mixed: PreparedData) -> None:
    loader = TokenLoader(mixed, seq_len=16, global_rows=8, seed=5, mode="packed")
    batches(loader, 3)
    state = loader.state_dict()
    text = json.dumps(state)
    assert json.loads(text) == state
    assert len(text) < 1000
    assert state["batch"] == 3 and sum(state["counters"].values()) == 24
    assert state["fingerprint"] == mixed.fingerprint


def test_same_seed_same_batches_other_seed_differs(mixed: PreparedData) -> None:
    a = batches(TokenLoader(mixed, seq_len=16, global_rows=4, seed=1), 5)
    b = batches(TokenLoader(mixed, seq_len=16, global_rows=4, seed=1), 5)
    c = batches(TokenLoader(mixed, seq_len=16, global_rows=4, seed=2), 5)
    assert_same(a, b)
    assert not all(torch.equal(x.tokens, y.tokens) for x, y in zip(a, c))


# ------------------------------------------------------------------------------------ mixture


def test_realised_proportions_match_weights(mixed: PreparedData) -> None:
    weights = {"big": 0.5, "mid": 0.3, "small": 0.2}
    loader = TokenLoader(mixed, seq_len=8, global_rows=100, seed=11, weights=weights)
    counts = np.zeros(3)
    for _ in range(100):  # 10k rows
        counts += np.bincount(loader.next_batch().domains.numpy(), minlength=3)
    n = counts.sum()
    for i, name in enumerate(loader.domains):
        p = weights[name]
        assert abs(counts[i] / n - p) < 4 * np.sqrt(p * (1 - p) / n), (name, counts[i] / n)
    # Counters advanced by exactly the rows drawn.
    assert list(loader.state_dict()["counters"].values()) == counts.astype(int).tolist()


def test_zero_weight_domain_never_appears(mixed: PreparedData) -> None:
    loader = TokenLoader(mixed, seq_len=8, global_rows=64, seed=0, weights={"big": 0, "mid": 1, "small": 1})
    seen = torch.cat([loader.next_batch().domains for _ in range(50)])
    assert loader.domains.index("big") not in seen.tolist()
    assert loader.state_dict()["counters"]["big"] == 0


def test_default_weights_follow_train_tokens(mixed: PreparedData) -> None:
    loader = TokenLoader(mixed, seq_len=8, global_rows=4, seed=0)
    tokens = mixed.domain_tokens("train")
    total = sum(tokens.values())
    assert loader.weights == pytest.approx({d: n / total for d, n in tokens.items()})
    assert loader.domains == mixed.domains


def test_set_weights_takes_effect_next_batch_and_normalises(mixed: PreparedData) -> None:
    loader = TokenLoader(mixed, seq_len=8, global_rows=32, seed=0)
    loader.next_batch()
    loader.set_weights({"mid": 2.0})
    assert loader.weights == {"big": 0.0, "mid": 1.0, "small": 0.0}
    assert set(loader.next_batch().domains.tolist()) == {loader.domains.index("mid")}


def test_epochs_seen_counts_windows(mixed: PreparedData) -> None:
    loader = TokenLoader(mixed, seq_len=16, global_rows=10, seed=0, weights={"small": 1})
    per_epoch = loader.windows_per_epoch()["small"]
    batches(loader, 3)
    seen = loader.epochs_seen()
    assert seen["small"] == pytest.approx(30 / per_epoch)
    assert seen["big"] == 0.0


# ------------------------------------------------------------------------------------ layouts


def test_random_windows_cover_each_window_once_per_epoch(positional: PreparedData) -> None:
    seq_len = 16
    per_epoch = TokenLoader(positional, seq_len=seq_len, global_rows=1, seed=4).windows_per_epoch()["text"]
    loader = TokenLoader(positional, seq_len=seq_len, global_rows=per_epoch, seed=4)  # one batch = one epoch
    tokens = np.asarray(positional.shard("text", "train").tokens).astype(np.int64)
    position_of = {int(v): i for i, v in enumerate(tokens) if v != POS_EOT}
    phases, orders = [], []
    for _epoch in range(4):
        b = loader.next_batch()
        assert b.loss_mask is None and b.tokens.shape == (per_epoch, seq_len + 1)
        starts = []
        for row in b.tokens.numpy():
            # Locate the row by its first non-eot token, then check it is that exact slice.
            k = int(np.flatnonzero(row != POS_EOT)[0])
            start = position_of[int(row[k])] - k
            assert np.array_equal(tokens[start : start + seq_len + 1], row)
            starts.append(start)
        phase = min(starts)
        assert phase < seq_len
        assert sorted(starts) == [phase + i * seq_len for i in range(per_epoch)]
        phases.append(phase)
        orders.append(starts)
    assert len(set(phases)) > 1, "the phase changes between epochs"
    assert orders[0] != sorted(orders[0]), "windows are visited in a shuffled order"
    assert loader.epochs_seen()["text"] == 4.0


@pytest.mark.parametrize("seq_len", [32, 8])
def test_packed_rows_are_document_aligned_and_lossless(positional: PreparedData, seq_len: int) -> None:
    shard = positional.shard("text", "train")
    tokens = np.asarray(shard.tokens).astype(np.int64)
    offsets = np.asarray(shard.offsets)
    doc_of = np.searchsorted(offsets, np.arange(tokens.size), side="right") - 1
    row_len = seq_len + 1
    loader = TokenLoader(positional, seq_len=seq_len, global_rows=1, seed=0, mode="packed")
    per_epoch = loader.windows_per_epoch()["text"]
    covered = np.zeros(tokens.size, dtype=np.int64)
    lone_eot_rows = 0
    row_starts = []
    for _ in range(per_epoch):
        b = loader.next_batch()
        row, real = b.tokens[0].numpy(), b.loss_mask[0].numpy()
        n = int(real.sum())
        assert n >= 1 and real[:n].all() and not real[n:].any(), "padding only at the end, masked"
        assert (row[n:] == POS_PAD).all()
        if (row[:n] == POS_EOT).all():  # the last piece of a long document can be its eot alone
            lone_eot_rows += 1
            continue
        # Find where the row starts in the shard from its first non-eot token.
        k = int(np.flatnonzero(row[:n] != POS_EOT)[0])
        start = int(np.flatnonzero(tokens == row[k])[0]) - k
        assert np.array_equal(tokens[start : start + n], row[:n])
        doc_start = offsets[doc_of[start]]
        assert start == 0 or tokens[start - 1] == POS_EOT or (start - doc_start) % row_len == 0
        assert (start - doc_start) % row_len == 0, "a row starts a document or a row-sized piece of it"
        # The row ends at a document end, or is a full piece of a long document.
        assert tokens[start + n - 1] == POS_EOT or n == row_len
        covered[start : start + n] += 1
        row_starts.append(start)
    assert row_starts != sorted(row_starts), "rows are visited in a shuffled order"
    missed = np.flatnonzero(covered == 0)
    assert (covered <= 1).all() and missed.size == lone_eot_rows, "every real token exactly once per epoch"
    assert (tokens[missed] == POS_EOT).all() and ((missed - offsets[doc_of[missed]]) % row_len == 0).all()
    fill = loader.fill_rate()["text"]
    assert fill == pytest.approx(tokens.size / (per_epoch * row_len))
    assert 0 < fill <= 1


def test_packed_long_documents_are_split_into_row_pieces(tmp_path: Path) -> None:
    folder = make_prepared(tmp_path / "long", train={"x": [list(range(50))]}, vocab_size=300, eot_id=256, pad_id=257)
    loader = TokenLoader(PreparedData(folder), seq_len=15, global_rows=4, seed=0, mode="packed")
    assert loader.windows_per_epoch()["x"] == 4  # 51 tokens -> 16 + 16 + 16 + 3
    b = loader.next_batch()
    lengths = sorted(b.loss_mask.sum(dim=1).tolist())
    assert lengths == [3, 16, 16, 16]
    assert sorted(int(r[0]) for r in b.tokens) == [0, 16, 32, 48]


# ------------------------------------------------------------------------------------ ranks


@pytest.mark.parametrize("mode", ["random", "packed"])
def test_rank_slices_concatenate_to_the_single_process_batch(mixed: PreparedData, mode: str) -> None:
    kw = dict(seq_len=16, global_rows=8, seed=9, mode=mode)
    single = TokenLoader(mixed, **kw)
    ranks = [TokenLoader(mixed, **kw, rank=r, world_size=2) for r in range(2)]
    for _ in range(15):
        whole = single.next_batch()
        parts = [r.next_batch() for r in ranks]
        assert parts[0].tokens.shape == (4, 17)
        assert torch.equal(torch.cat([p.tokens for p in parts]), whole.tokens)
        assert torch.equal(torch.cat([p.domains for p in parts]), whole.domains)
        if mode == "packed":
            assert torch.equal(torch.cat([p.loss_mask for p in parts]), whole.loss_mask)
    assert ranks[0].state_dict() == ranks[1].state_dict() == single.state_dict()


def test_resume_on_a_different_world_size(mixed: PreparedData) -> None:
    kw = dict(seq_len=16, global_rows=8, seed=9)
    single = TokenLoader(mixed, **kw)
    batches(single, 4)
    state = single.state_dict()
    whole = single.next_batch()
    parts = []
    for r in range(4):
        loader = TokenLoader(mixed, **kw, rank=r, world_size=4)
        loader.load_state_dict(state)
        parts.append(loader.next_batch().tokens)
    assert torch.equal(torch.cat(parts), whole.tokens)


# ------------------------------------------------------------------------------------ errors


def test_unknown_domain_in_weights_lists_valid_ones(mixed: PreparedData) -> None:
    with pytest.raises(DataError, match=r"'nope'.*big, mid, small"):
        TokenLoader(mixed, seq_len=8, global_rows=2, seed=0, weights={"nope": 1.0})
    loader = TokenLoader(mixed, seq_len=8, global_rows=2, seed=0)
    with pytest.raises(DataError, match="'nope'"):
        loader.set_weights({"nope": 1.0, "big": 1.0})


@pytest.mark.parametrize(
    "weights, match",
    [
        ({"big": -1.0, "mid": 1.0}, "'big'"),
        ({"big": float("nan")}, "'big'"),
        ({"big": 0.0, "mid": 0.0}, "weight 0"),
        ({"mid": "lots"}, "'mid'"),
    ],
)
def test_bad_weights_are_refused(mixed: PreparedData, weights: dict, match: str) -> None:
    loader = TokenLoader(mixed, seq_len=8, global_rows=2, seed=0)
    before = loader.weights
    with pytest.raises(DataError, match=match):
        loader.set_weights(weights)
    assert loader.weights == before


def test_domain_too_small_for_a_window_is_named(mixed: PreparedData) -> None:
    with pytest.raises(DataError, match="'small' is too small"):
        TokenLoader(mixed, seq_len=512, global_rows=2, seed=0, weights={"big": 1, "small": 1})
    # Default weights (by tokens) leave it out, as does an explicit weight 0.
    default = TokenLoader(mixed, seq_len=512, global_rows=2, seed=0)
    assert default.weights["small"] == 0.0 and default.weights["big"] > 0
    loader = TokenLoader(mixed, seq_len=512, global_rows=2, seed=0, weights={"big": 1, "mid": 1, "small": 0})
    assert loader.next_batch().tokens.shape == (2, 513)
    with pytest.raises(DataError, match="'small'"):
        loader.set_weights({"small": 1})


def test_mismatched_state_is_refused_naming_the_difference(mixed: PreparedData) -> None:
    state = TokenLoader(mixed, seq_len=16, global_rows=4, seed=0).state_dict()
    with pytest.raises(DataError, match="seq_len: saved 16, now 32"):
        TokenLoader(mixed, seq_len=32, global_rows=4, seed=0).load_state_dict(state)
    with pytest.raises(DataError, match="mode: saved 'random', now 'packed'"):
        TokenLoader(mixed, seq_len=16, global_rows=4, seed=0, mode="packed").load_state_dict(state)
    with pytest.raises(DataError, match="global_rows: saved 4, now 8"):
        TokenLoader(mixed, seq_len=16, global_rows=8, seed=0).load_state_dict(state)
    with pytest.raises(DataError, match="lacks counters"):
        TokenLoader(mixed, seq_len=16, global_rows=4, seed=0).load_state_dict(
            {k: v for k, v in state.items() if k != "counters"}
        )


def test_fingerprint_change_needs_permission(mixed: PreparedData, tmp_path: Path) -> None:
    original = TokenLoader(mixed, seq_len=16, global_rows=4, seed=0)
    batches(original, 3)
    state = original.state_dict()
    rng = np.random.default_rng(7)
    other = PreparedData(
        make_prepared(tmp_path / "other", train={"big": random_docs(rng, 100), "new": random_docs(rng, 50)})
    )
    loader = TokenLoader(other, seq_len=16, global_rows=4, seed=0)
    with pytest.raises(DataError, match="(?s)prepared data changed.*allow_fingerprint_change"):
        loader.load_state_dict(state)
    loader.load_state_dict(state, allow_fingerprint_change=True)
    assert loader.state_dict()["counters"] == {"big": state["counters"]["big"], "new": 0}
    assert loader.weights == {"big": 1.0, "new": 0.0}
    assert loader.next_batch().tokens.shape == (4, 17)


def test_bad_arguments_are_config_errors(mixed: PreparedData) -> None:
    with pytest.raises(ConfigError, match="evenly over 3"):
        TokenLoader(mixed, seq_len=8, global_rows=4, seed=0, world_size=3)
    with pytest.raises(ConfigError, match="data.mode"):
        TokenLoader(mixed, seq_len=8, global_rows=4, seed=0, mode="shuffled")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="seed"):
        TokenLoader(mixed, seq_len=8, global_rows=4, seed=-1)


def test_state_of_another_version_is_refused(mixed: PreparedData) -> None:
    loader = TokenLoader(mixed, seq_len=16, global_rows=4, seed=0)
    state = {**loader.state_dict(), "version": 99}
    with pytest.raises(DataError, match="version 99"):
        loader.load_state_dict(state)
