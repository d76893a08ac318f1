"""Unconditional sampling: equal to a full-recompute sampler, deterministic per seed, never pad, an ensemble
of identical models samples like one, temperature ~0 is the argmax chain, rows run on past end-of-text;
streams run on past the context window with a sliding window, equal to a full-recompute sliding sampler."""

import copy

import numpy as np
import pytest
import torch

from pretrainlab.config import ModelConfig
from pretrainlab.errors import ConfigError
from pretrainlab.model import build_model, resolve_model_config
from pretrainlab.model.decoder import Decoder
from pretrainlab.model.ensemble import combine_logits
from pretrainlab.science.sampling import draw, iter_sample_streams, sample_sequences

VOCAB, SEQ, EOT, PAD = 40, 16, 38, 39


pytestmark = pytest.mark.usefixtures("one_thread")

def make(seed: int = 0, **kw: object) -> Decoder:
    torch.manual_seed(seed)
    cfg = ModelConfig(n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, init_std=0.2, **kw)
    return build_model(resolve_model_config(cfg, vocab_size=VOCAB, seq_len=SEQ)).eval()


def bias_logits(m: Decoder, token: int, amount: float) -> Decoder:
    """Shift one token's logit by `amount` (a stand-in for a model that loves or hates that token)."""
    head = m.logits
    shift = torch.zeros(VOCAB)
    shift[token] = amount
    m.logits = lambda hidden: head(hidden) + shift  # type: ignore[method-assign]
    return m


def sample(models: list, **kw: object) -> np.ndarray:
    kw = {"n_rows": 5, "seq_len": SEQ, "batch_size": 2, "seed": 0, "eot_id": EOT, "pad_id": PAD, **kw}
    return sample_sequences(models, **kw)  # type: ignore[arg-type]


def reference(models: list, n_rows: int, batch_size: int, temperature: float, seed: int, combine: str) -> np.ndarray:
    """The same draws without a cache: the whole prefix through the full forward pass every step."""
    g = torch.Generator().manual_seed(seed)
    out = []
    with torch.no_grad():
        for start in range(0, n_rows, batch_size):
            ctx = torch.full((min(batch_size, n_rows - start), 1), EOT, dtype=torch.long)
            for _ in range(SEQ):
                logits = combine_logits(torch.stack([m.logits(m(ctx)[:, -1]) for m in models]), combine)
                logits[:, PAD] = float("-inf")
                ctx = torch.cat([ctx, draw(logits, temperature, g)[:, None]], dim=1)
            out.append(ctx[:, 1:].numpy())
    return np.concatenate(out)


@pytest.mark.parametrize("combine", ["logits", "probs"])
def test_cached_sampling_equals_full_recompute_sampling(combine: str) -> None:
    models = [make(0), make(1)]
    got = sample(models, combine=combine, temperature=1.0, seed=4)
    assert got.shape == (5, SEQ) and got.dtype == np.int64
    np.testing.assert_array_equal(got, reference(models, 5, 2, 1.0, 4, combine))


def test_deterministic_per_seed_and_different_across_seeds() -> None:
    m = make()
    a = sample([m], seed=1)
    np.testing.assert_array_equal(a, sample([m], seed=1))
    assert not np.array_equal(a, sample([m], seed=2))
    assert len({tuple(r) for r in a}) == len(a)  # rows are independent draws, not copies


def test_pad_and_ids_beyond_the_tokenizer_vocabulary_are_never_sampled() -> None:
    m = bias_logits(make(), PAD, 30.0)
    rows = sample([m], n_rows=8, batch_size=8, vocab_size=30)
    assert rows.max() < 30 and not (rows == PAD).any()


def test_an_ensemble_of_two_identical_models_samples_what_one_samples() -> None:
    m = make(3)
    twin = copy.deepcopy(m)
    np.testing.assert_array_equal(sample([m, twin], seed=7), sample([m], seed=7))


def test_temperature_near_zero_follows_the_argmax_chain() -> None:
    m = make(5)
    greedy = reference([m], 2, 2, 0.0, 0, "logits")
    np.testing.assert_array_equal(sample([m], n_rows=2, temperature=0.0), greedy)
    np.testing.assert_array_equal(sample([m], n_rows=2, temperature=1e-4, seed=11), greedy)


def test_rows_continue_after_a_sampled_end_of_text() -> None:
    m = bias_logits(make(), EOT, 1.0)
    rows = sample([m], n_rows=6, batch_size=3)
    # (row, index of its first end-of-text) for the rows with one before their last position
    ended = [(r, int(np.argmax(r == EOT))) for r in rows if (r[:-1] == EOT).any()]
    assert 0 < len(ended) < len(rows), "some rows should end a document, some not (so the pairing matters)"
    assert all(r[i] == EOT for r, i in ended)
    assert any((r[i + 1 :] != EOT).any() for r, i in ended)


def test_bad_inputs_fail_clearly() -> None:
    m = make()
    with pytest.raises(ConfigError, match="max_seq_len=16"):
        sample([m], seq_len=SEQ + 1)
    with pytest.raises(ConfigError, match="temperature"):
        sample([m], temperature=-1.0)
    with pytest.raises(ConfigError, match="at least one model"):
        sample([])
    torch.manual_seed(0)
    wider_cfg = resolve_model_config(ModelConfig(n_layers=1, d_model=32, n_heads=4), vocab_size=VOCAB + 8, seq_len=SEQ)
    wider = build_model(wider_cfg)
    with pytest.raises(ConfigError, match="vocabulary sizes"):
        sample([m, wider])
    assert sample([m], n_rows=0).shape == (0, SEQ)


def streams(models: list, n_pieces: int, **kw: object) -> np.ndarray:
    """`n_pieces` pieces of streams, joined along the row: (streams, n_pieces * piece_len)."""
    kw = {"streams": 3, "piece_len": 5, "window": 6, "seed": 0, "eot_id": EOT, "pad_id": PAD, **kw}
    gen = iter_sample_streams(models, **kw)  # type: ignore[arg-type]
    pieces = [next(gen) for _ in range(n_pieces)]
    gen.close()
    return np.concatenate(pieces, axis=1)


def sliding_reference(models: list, n_streams: int, n_tokens: int, window: int, seed: int, combine: str) -> np.ndarray:
    """Streams without a cache: the context is the stream so far while it fits the window; once the window
    is full the next context is the latest window // 2 tokens, and it grows again from there."""
    g = torch.Generator().manual_seed(seed)
    keep = max(1, window // 2)
    ctx = torch.empty(n_streams, 0, dtype=torch.long)
    step = torch.full((n_streams, 1), EOT, dtype=torch.long)
    out = []
    with torch.no_grad():
        for _ in range(n_tokens):
            ctx = torch.cat([ctx, step], dim=1) if ctx.shape[1] < window else torch.cat([ctx, step], dim=1)[:, -keep:]
            logits = combine_logits(torch.stack([m.logits(m(ctx)[:, -1]) for m in models]), combine)
            logits[:, PAD] = float("-inf")
            step = draw(logits, 1.0, g)[:, None]
            out.append(step)
    return torch.cat(out, dim=1).numpy()


@pytest.mark.parametrize(("window", "combine"), [(6, "logits"), (7, "probs"), (1, "logits")])
def test_streams_run_past_the_window_like_a_full_recompute_sliding_sampler(window: int, combine: str) -> None:
    models = [make(0), make(1)]
    got = streams(models, 4, window=window, combine=combine, seed=3)  # 20 tokens a stream, windows of 6 or 7
    assert got.shape == (3, 20) and got.dtype == np.int64
    np.testing.assert_array_equal(got, sliding_reference(models, 3, 20, window, 3, combine))


def test_a_streams_first_piece_is_a_batch_of_rows_and_streams_never_draw_pad() -> None:
    m = make(2)
    first = streams([m], 1, piece_len=SEQ, window=SEQ, seed=5)
    np.testing.assert_array_equal(first, sample([m], n_rows=3, batch_size=3, seed=5))
    biased = bias_logits(make(), PAD, 30.0)
    assert not (streams([biased], 3, window=SEQ) == PAD).any()
    np.testing.assert_array_equal(streams([m], 3, seed=9), streams([m], 3, seed=9))


def test_streams_check_their_settings_before_sampling() -> None:
    m = make()
    with pytest.raises(ConfigError, match="max_seq_len=16"):
        iter_sample_streams([m], streams=2, piece_len=4, window=SEQ + 1, eot_id=EOT, pad_id=PAD)
    with pytest.raises(ConfigError, match="streams and piece_len"):
        iter_sample_streams([m], streams=0, piece_len=4, window=8, eot_id=EOT, pad_id=PAD)
    with pytest.raises(ConfigError, match="at least one model"):
        iter_sample_streams([], streams=2, piece_len=4, window=8, eot_id=EOT, pad_id=PAD)
