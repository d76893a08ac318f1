"""Validation windows and evaluation numerics: every target once, loss in nats, exact bits-per-byte."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from helpers import BYTE_VOCAB, make_prepared, random_docs
from pretrainlab.data.prepared import PreparedData
from pretrainlab.errors import DataError
from pretrainlab.eval.evaluate import evaluate, score_windows
from pretrainlab.eval.windows import make_windows, val_windows

CPU = torch.device("cpu")


class Bigram(nn.Module):
    """Logits depend only on the current token: easy to score by hand."""

    def __init__(self, vocab: int, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.table = nn.Parameter(torch.randn(vocab, vocab, generator=g))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.table[tokens]

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden


class Uniform(Bigram):
    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.zeros(*tokens.shape, self.table.shape[0])


def bigram_loss_sum(table: np.ndarray, tokens: np.ndarray) -> float:
    logp = table - np.log(np.exp(table).sum(axis=1, keepdims=True))
    return float(-sum(logp[a, b] for a, b in zip(tokens[:-1], tokens[1:])))


@pytest.mark.parametrize("n,seq_len,cap", [(1, 4, None), (2, 4, None), (17, 4, None), (16, 5, None), (33, 8, 10),
                                           (9, 8, None), (10, 3, 100)])
def test_every_target_exactly_once(n, seq_len, cap):
    tokens = np.arange(n) + 1000
    win, mask, n_targets = make_windows(tokens, seq_len, pad_id=-1, max_targets=cap)
    expected_targets = min(n - 1, cap if cap is not None else n)
    assert n_targets == expected_targets
    assert win.shape[1] == seq_len + 1
    scored = win[:, 1:][mask[:, 1:]]
    np.testing.assert_array_equal(scored, tokens[1 : expected_targets + 1])
    assert (win[~mask] == -1).all()  # padding is masked and only padding is masked
    if n_targets:  # windows are consecutive: each input is the previous target
        np.testing.assert_array_equal(win[mask][0], tokens[0])


def test_uniform_logits_give_ln_v(tiny_prepared):
    data = PreparedData(tiny_prepared)
    out = evaluate(Uniform(BYTE_VOCAB), data, seq_len=16, max_tokens_per_domain=None, batch_size=4, device=CPU,
                   autocast_dtype=None)
    ln_v = math.log(BYTE_VOCAB)
    for d in data.domains:
        shard = data.shard(d, "val")
        targets = shard.n_tokens - 1
        assert out[f"val_tokens/{d}"] == targets
        assert out[f"val_loss/{d}"] == pytest.approx(ln_v, rel=1e-6)
        assert out[f"val_bpb/{d}"] == pytest.approx(ln_v / math.log(2) * targets / shard.n_bytes, rel=1e-6)
    assert out["val_loss"] == pytest.approx(ln_v, rel=1e-6)
    assert out["val_tokens"] == sum(data.shard(d, "val").n_tokens - 1 for d in data.domains)


def test_bpb_matches_hand_computation(tmp_path):
    rng = np.random.default_rng(1)
    folder = make_prepared(tmp_path / "p", train={"a": random_docs(rng, 3), "b": random_docs(rng, 3)},
                           val={"a": random_docs(rng, 3, 5, 30), "b": random_docs(rng, 2, 5, 30)})
    data = PreparedData(folder)
    model = Bigram(BYTE_VOCAB, seed=3)
    out = evaluate(model, data, seq_len=7, max_tokens_per_domain=None, batch_size=3, device=CPU, autocast_dtype=None)
    table = model.table.detach().double().numpy()
    total_loss = total_bytes = 0.0
    for d in ("a", "b"):
        shard = data.shard(d, "val")
        loss = bigram_loss_sum(table, np.asarray(shard.tokens, dtype=np.int64))
        assert out[f"val_loss/{d}"] == pytest.approx(loss / (shard.n_tokens - 1), rel=1e-5)
        assert out[f"val_bpb/{d}"] == pytest.approx(loss / math.log(2) / shard.n_bytes, rel=1e-5)
        total_loss += loss
        total_bytes += shard.n_bytes
    assert out["val_bpb"] == pytest.approx(total_loss / math.log(2) / total_bytes, rel=1e-5)


def test_cap_scores_first_tokens_and_scales_bytes(tiny_prepared):
    data = PreparedData(tiny_prepared)
    model = Bigram(BYTE_VOCAB, seed=4)
    cap = 50
    out = evaluate(model, data, seq_len=16, max_tokens_per_domain=cap, batch_size=8, device=CPU, autocast_dtype=None)
    table = model.table.detach().double().numpy()
    shard = data.shard("alpha", "val")
    loss = bigram_loss_sum(table, np.asarray(shard.tokens[: cap + 1], dtype=np.int64))
    assert out["val_tokens/alpha"] == cap
    assert out["val_loss/alpha"] == pytest.approx(loss / cap, rel=1e-5)
    covered = shard.n_bytes * cap / (shard.n_tokens - 1)
    assert out["val_bpb/alpha"] == pytest.approx(loss / math.log(2) / covered, rel=1e-5)
    assert val_windows(shard, 16, data.pad_id, cap).bytes_covered == pytest.approx(covered)


def test_rank_slices_add_up_to_the_whole(tiny_prepared):
    data = PreparedData(tiny_prepared)
    model = Bigram(BYTE_VOCAB, seed=5)
    windows = [val_windows(data.shard(d, "val"), 16, data.pad_id) for d in data.domains]
    kw = dict(batch_size=4, device=CPU, autocast_dtype=None)
    whole = score_windows(model, windows, rank=0, world=1, **kw)
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    parts = []
    for rank in range(3):
        calls.clear()
        parts.append(score_windows(model, windows, rank=rank, world=3, **kw))
        if rank == 0:
            n_calls = len(calls)
        assert len(calls) == n_calls  # equal forward passes on every rank (FSDP needs them)
    torch.testing.assert_close(sum(parts), whole, rtol=1e-9, atol=1e-6)


def test_mode_restored_and_no_grad(tiny_prepared):
    data = PreparedData(tiny_prepared)
    model = Bigram(BYTE_VOCAB)
    seen = []
    model.register_forward_hook(lambda m, i, o: seen.append((m.training, torch.is_grad_enabled())))
    model.train()
    evaluate(model, data, seq_len=32, max_tokens_per_domain=40, batch_size=4, device=CPU, autocast_dtype=None)
    assert model.training
    assert seen and all(s == (False, False) for s in seen)
    model.eval()
    evaluate(model, data, seq_len=32, max_tokens_per_domain=40, batch_size=4, device=CPU, autocast_dtype=None)
    assert not model.training


def test_autocast_bf16_close_to_fp32(tiny_prepared):
    data = PreparedData(tiny_prepared)
    model = Bigram(BYTE_VOCAB)
    kw = dict(seq_len=16, max_tokens_per_domain=100, batch_size=4, device=CPU)
    a = evaluate(model, data, autocast_dtype=None, **kw)
    b = evaluate(model, data, autocast_dtype=torch.bfloat16, **kw)
    assert b["val_loss"] == pytest.approx(a["val_loss"], rel=2e-2)


def test_no_validation_data_is_a_clear_error(tmp_path):
    folder = make_prepared(tmp_path / "p", train={"a": [[1, 2, 3]]})
    with pytest.raises(DataError, match="no validation tokens"):
        evaluate(Uniform(BYTE_VOCAB), PreparedData(folder), seq_len=8, max_tokens_per_domain=None, batch_size=2,
                 device=CPU, autocast_dtype=None)


def _dist_worker(rank: int, world: int, port: int, folder: str, out_dir: str) -> None:
    import json

    import torch.distributed as dist

    from pretrainlab.train.distributed import DistContext

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        ctx = DistContext(rank=rank, world_size=world)
        out = evaluate(Bigram(BYTE_VOCAB, seed=6), PreparedData(folder), seq_len=16, max_tokens_per_domain=300,
                       batch_size=3, device=CPU, autocast_dtype=None, ctx=ctx)
        (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(out))
    finally:
        dist.destroy_process_group()


def test_two_processes_match_one(tiny_prepared, tmp_path):
    import json
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_dist_worker, args=(2, port, str(tiny_prepared), str(tmp_path)), nprocs=2, join=True)
    single = evaluate(Bigram(BYTE_VOCAB, seed=6), PreparedData(tiny_prepared), seq_len=16, max_tokens_per_domain=300,
                      batch_size=3, device=CPU, autocast_dtype=None)
    for rank in range(2):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got.keys() == single.keys()
        for k, v in single.items():
            assert got[k] == pytest.approx(v, rel=1e-9), k
