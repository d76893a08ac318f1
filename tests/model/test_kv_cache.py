"""KV-cache decoding reproduces the full forward pass: prefill + single steps, chunks on a non-empty cache,
GQA, QK-norm, batches; attention without cache support fails clearly; the training path is untouched."""

import pytest
import torch
from torch import nn

from pretrainlab.config import ModelConfig
from pretrainlab.errors import ConfigError
from pretrainlab.model import build_model, resolve_model_config
from pretrainlab.model.attention import CausalSelfAttention
from pretrainlab.model.decoder import Decoder
from pretrainlab.model.kv_cache import KVCache, supports_kv_cache
from pretrainlab.model.registries import ATTENTIONS

VOCAB, SEQ = 61, 24


pytestmark = pytest.mark.usefixtures("one_thread")

def make(**kw: object) -> Decoder:
    torch.manual_seed(0)
    kw.setdefault("n_layers", 2)
    kw.setdefault("d_model", 32)
    kw.setdefault("n_heads", 4)
    return build_model(resolve_model_config(ModelConfig(**kw), vocab_size=VOCAB, seq_len=SEQ)).eval()


def full_logits(m: Decoder, tokens: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return m.logits(m(tokens))


def cached_logits(m: Decoder, tokens: torch.Tensor, chunks: list[int]) -> torch.Tensor:
    """Logits of every position, fed to the cache in chunks of the given sizes."""
    cache = KVCache.for_model(m)
    out, pos = [], 0
    with torch.no_grad():
        for n in chunks:
            out.append(m.logits(m(tokens[:, pos : pos + n], cache=cache)))
            pos += n
    assert pos == tokens.shape[1] == cache.length
    return torch.cat(out, dim=1)


@pytest.mark.parametrize("kw", [{}, {"n_kv_heads": 2}, {"n_kv_heads": 1, "qk_norm": True}, {"tie_embeddings": False}])
def test_prefill_then_single_steps_match_full_forward(kw: dict) -> None:
    m = make(**kw)
    tokens = torch.randint(0, VOCAB, (2, SEQ))
    chunks = [5] + [1] * (SEQ - 5)
    torch.testing.assert_close(cached_logits(m, tokens, chunks), full_logits(m, tokens), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kw", [{}, {"n_kv_heads": 2, "qk_norm": True}])
def test_multi_token_chunks_on_a_non_empty_cache(kw: dict) -> None:
    m = make(**kw)
    tokens = torch.randint(0, VOCAB, (3, SEQ))
    expected = full_logits(m, tokens)
    for chunks in ([1, 7, 1, 6, 9], [8, 8, 8], [1] * SEQ):
        torch.testing.assert_close(cached_logits(m, tokens, chunks), expected, atol=1e-5, rtol=1e-5)


def test_a_batch_decodes_like_each_row_alone() -> None:
    m = make(n_kv_heads=2)
    tokens = torch.randint(0, VOCAB, (4, SEQ))
    chunks = [3] + [1] * (SEQ - 3)
    batch = cached_logits(m, tokens, chunks)
    for r in range(4):
        torch.testing.assert_close(batch[r : r + 1], cached_logits(m, tokens[r : r + 1], chunks), atol=1e-5, rtol=1e-5)


def test_cache_bounds_and_reset() -> None:
    m = make()
    cache = KVCache.for_model(m, max_len=6)
    with torch.no_grad():
        m(torch.zeros(2, 6, dtype=torch.long), cache=cache)
        with pytest.raises(ValueError, match="no room"):
            m(torch.zeros(2, 1, dtype=torch.long), cache=cache)
        cache.reset()
        with pytest.raises(ValueError, match="rows"):
            m(torch.zeros(3, 2, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="max_seq_len"):
        KVCache.for_model(m, max_len=SEQ + 1)


class _NoCacheAttention(CausalSelfAttention):
    """A recipe's attention written against the old interface: forward(x, rope) only."""

    def forward(self, x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x, rope)


if "test-no-cache" not in ATTENTIONS:
    ATTENTIONS.register("test-no-cache")(lambda cfg, make_linear: _NoCacheAttention(cfg, make_linear))


def test_attention_without_cache_support_trains_but_refuses_cached_decoding() -> None:
    m = make(attention="test-no-cache")
    tokens = torch.randint(0, VOCAB, (2, 8))
    assert m(tokens).shape == (2, 8, 32)  # the training path is unaffected
    assert not supports_kv_cache(m) and supports_kv_cache(make())
    with pytest.raises(ConfigError, match="model.attention='test-no-cache' does not support a KV cache"):
        m(tokens, cache=KVCache.for_model(m))


def test_training_path_keeps_gradients_and_ignores_the_cache_code() -> None:
    m = make().train()
    tokens = torch.randint(0, VOCAB, (2, 8))
    loss = nn.functional.cross_entropy(m.logits(m(tokens)).flatten(0, 1), tokens.flatten())
    loss.backward()
    assert all(p.grad is not None for p in m.parameters())


class _Uncached(nn.Module):
    """The same decoder seen through `forward(tokens)` only, so `generate` recomputes the window each step."""

    def __init__(self, inner: Decoder) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.inner(tokens)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.inner.logits(hidden)


class _Tok:
    eot_id, pad_id = VOCAB - 2, VOCAB - 1

    def encode(self, text: str) -> list[int]:
        return [ord(c) % (VOCAB - 2) for c in text]

    def decode(self, ids: list[int]) -> str:
        return ",".join(map(str, ids))


@pytest.mark.parametrize("window,max_tokens", [(None, SEQ - 7), (10, SEQ + 6)])
def test_generate_with_the_cache_samples_what_the_full_recompute_samples(window: int | None, max_tokens: int) -> None:
    from pretrainlab.eval.generate import generate

    m = make(n_kv_heads=2)
    head = m.logits
    never_eot = torch.zeros(VOCAB)
    never_eot[_Tok.eot_id] = -1e9
    m.logits = lambda hidden: head(hidden) + never_eot  # type: ignore[method-assign]  # run to max_tokens
    kw = dict(max_tokens=max_tokens, temperature=1.0, top_k=None, seed=3, device=torch.device("cpu"),
              max_seq_len=window)
    cached = generate(m, _Tok(), "abcdef", **kw)
    assert supports_kv_cache(m) and not supports_kv_cache(_Uncached(m))
    assert cached == generate(_Uncached(m), _Tok(), "abcdef", **kw)
    assert len(cached.split(",")) == max_tokens  # window 10: slides past the window many times
