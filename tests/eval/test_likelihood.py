"""The likelihood engine equals an explicit full forward + log-softmax: shared-context groups through the KV
cache, batched whole rows, empty contexts, truncation to the window, the greedy flag, rolling scores."""

import math

import pytest
import torch

from pretrainlab.config import ModelConfig
from pretrainlab.eval import likelihood
from pretrainlab.eval.likelihood import score_continuations, score_rolling
from pretrainlab.model import build_model, resolve_model_config
from pretrainlab.model.decoder import Decoder
from pretrainlab.model.kv_cache import KVCache

VOCAB, SEQ, BOS = 50, 32, 49

pytestmark = pytest.mark.usefixtures("one_thread")


def make(**kw: object) -> Decoder:
    torch.manual_seed(0)
    cfg = ModelConfig(n_layers=2, d_model=32, n_heads=4, **kw)  # type: ignore[arg-type]
    return build_model(resolve_model_config(cfg, vocab_size=VOCAB, seq_len=SEQ)).eval()


def reference(m: Decoder, ctx: list[int], cont: list[int]) -> tuple[float, bool]:
    """log p(cont | ctx) and greedy-ness from one full forward of ctx + cont, nothing shared or batched."""
    full = (ctx + cont)[-(SEQ + 1):]
    n_ctx = len(full) - len(cont)
    with torch.no_grad():
        lp = torch.log_softmax(m.logits(m(torch.tensor([full[:-1]]))).float(), -1)[0]
    rows = lp[n_ctx - 1 :]
    tgt = torch.tensor(cont)
    return float(rows.gather(-1, tgt[:, None]).sum()), bool((rows.argmax(-1) == tgt).all())


def rand(g: torch.Generator, n: int) -> list[int]:
    return torch.randint(0, VOCAB - 1, (n,), generator=g).tolist()


def test_matches_full_forward_for_shared_and_single_contexts() -> None:
    m = make(n_kv_heads=2)
    g = torch.Generator().manual_seed(1)
    ctx_a, ctx_b = rand(g, 9), rand(g, 4)
    requests = [(ctx_a, rand(g, 3)), (ctx_b, rand(g, 5)), (ctx_a, rand(g, 1)), (ctx_a, rand(g, 6)),
                (rand(g, 7), rand(g, 2)), (rand(g, 12), rand(g, 1))]
    got = score_continuations(m, requests)
    assert [s.n_tokens for s in got] == [len(c) for _, c in requests]
    for (ctx, cont), s in zip(requests, got):
        want, greedy = reference(m, ctx, cont)
        assert s.logprob == pytest.approx(want, abs=1e-5)
        assert s.greedy == greedy


def test_shared_context_runs_the_context_once(monkeypatch: pytest.MonkeyPatch) -> None:
    m = make()
    calls: list[tuple[int, int]] = []
    real = m.forward

    def spy(tokens: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        calls.append(tuple(tokens.shape))
        return real(tokens, cache)

    monkeypatch.setattr(m, "forward", spy)
    ctx = list(range(20))
    score_continuations(m, [(ctx, [1, 2, 3]), (ctx, [4, 5]), (ctx, [6, 7, 8, 9])])
    assert calls == [(1, 20), (3, 3)]  # the context once, then all choices in one batch


@pytest.mark.parametrize("masking", [True, False])
def test_many_questions_share_one_prefill(monkeypatch: pytest.MonkeyPatch, masking: bool) -> None:
    """Contexts of different lengths are left-padded into one prefill (the padding masked); attention that
    does not declare `supports_key_mask` gets only contexts of equal length together. Same scores."""
    m = make(n_kv_heads=2, bias=True)
    monkeypatch.setattr(type(m.blocks[0].attn), "supports_key_mask", masking)
    g = torch.Generator().manual_seed(6)
    questions = [(rand(g, 7), [rand(g, int(k)) for k in (2, 5, 1)]) for _ in range(3)]
    questions.append((rand(g, 4), [rand(g, 3), rand(g, 2)]))
    requests = [(ctx, c) for ctx, conts in questions for c in conts]
    calls: list[tuple[int, int]] = []
    real = m.forward

    def spy(tokens: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        calls.append(tuple(tokens.shape))
        return real(tokens, cache)

    monkeypatch.setattr(m, "forward", spy)
    got = score_continuations(m, requests)
    if masking:
        assert calls == [(4, 7), (11, 4)]  # every context in one forward, every continuation in one more
    else:
        assert sorted(calls) == sorted([(3, 7), (9, 4), (1, 4), (2, 2)])
    for (ctx, cont), s in zip(requests, got):
        want, greedy = reference(m, ctx, cont)
        assert s.logprob == pytest.approx(want, abs=1e-5)
        assert s.greedy == greedy
    monkeypatch.setattr(m, "forward", real)
    split = score_continuations(m, requests, batch_tokens=12)  # one question per forward
    assert [s.logprob for s in split] == pytest.approx([s.logprob for s in got], abs=1e-5)
    rows = score_continuations(m, requests, share_contexts=False)
    assert [s.logprob for s in rows] == pytest.approx([s.logprob for s in got], abs=1e-5)


def test_a_chunk_never_spans_more_than_the_window() -> None:
    """A long context and a long continuation from different questions fit the window apart, not padded
    together: they go to different prefills."""
    m = make()
    a, b = list(range(1, 26)), [7]
    requests = [(a, [1, 2]), (a, [3, 4]), (b, list(range(20))), (b, list(range(1, 21)))]
    got = score_continuations(m, requests)
    for (ctx, cont), s in zip(requests, got):
        assert s.logprob == pytest.approx(reference(m, ctx, cont)[0], abs=1e-5)


def test_a_group_larger_than_a_batch_is_split(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hundreds of continuations of one context (e.g. every empty context) stay within the batch budget."""
    m = make()
    g = torch.Generator().manual_seed(8)
    requests = [([], rand(g, 3)) for _ in range(40)]
    widest: list[int] = []
    real = m.forward

    def spy(tokens: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        widest.append(tokens.numel())
        return real(tokens, cache)

    monkeypatch.setattr(m, "forward", spy)
    got = score_continuations(m, requests, bos_id=BOS, batch_tokens=32)
    assert max(widest) <= 32
    for (ctx, cont), s in zip(requests, got):
        assert s.logprob == pytest.approx(reference(m, [BOS], cont)[0], abs=1e-5)


def test_bf16_autocast_scores_close_to_fp32() -> None:
    """Left-padded prefill under bf16 autocast: finite, close to fp32 (the head runs in fp32)."""
    m = make(n_kv_heads=2)
    g = torch.Generator().manual_seed(9)
    requests = [(ctx, rand(g, 4)) for ctx in (rand(g, 9), rand(g, 3)) for _ in range(3)]
    exact = score_continuations(m, requests)
    half = score_continuations(m, requests, autocast_dtype=torch.bfloat16)
    for a, b in zip(exact, half):
        assert math.isfinite(b.logprob)
        assert b.logprob == pytest.approx(a.logprob, abs=0.05 * a.n_tokens)


def test_without_kv_cache_support_scores_whole_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    m = make()
    g = torch.Generator().manual_seed(2)
    ctx = rand(g, 10)
    requests = [(ctx, rand(g, 4)), (ctx, rand(g, 2))]
    with_cache = score_continuations(m, requests)
    monkeypatch.setattr("pretrainlab.model.kv_cache.supports_kv_cache", lambda model: False)
    without = score_continuations(m, requests)
    for a, b in zip(with_cache, without):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-5)


def test_small_batches_equal_one_batch() -> None:
    m = make()
    g = torch.Generator().manual_seed(3)
    requests = [(rand(g, int(n)), rand(g, 3)) for n in torch.randint(1, 20, (9,), generator=g)]
    one = score_continuations(m, requests)
    many = score_continuations(m, requests, batch_tokens=20)
    assert [s.logprob for s in one] == pytest.approx([s.logprob for s in many], abs=1e-5)


def test_empty_context_uses_bos_and_long_pairs_are_left_truncated() -> None:
    m = make()
    g = torch.Generator().manual_seed(4)
    cont = rand(g, 5)
    (s,) = score_continuations(m, [([], cont)], bos_id=BOS)
    assert s.logprob == pytest.approx(reference(m, [BOS], cont)[0], abs=1e-5)
    long_ctx = rand(g, 3 * SEQ)
    (t,) = score_continuations(m, [(long_ctx, cont)])
    assert t.logprob == pytest.approx(reference(m, long_ctx, cont)[0], abs=1e-5)


def test_bad_requests_say_what_is_wrong() -> None:
    m = make()
    with pytest.raises(ValueError, match="continuation is empty"):
        score_continuations(m, [([1], [])])
    with pytest.raises(ValueError, match="bos_id"):
        score_continuations(m, [([], [1])])
    with pytest.raises(ValueError, match="does not fit"):
        score_continuations(m, [([1], [2] * (SEQ + 1))])


def test_greedy_flag_is_true_for_the_argmax_continuation() -> None:
    m = make()
    ctx = [3, 1, 4, 1, 5]
    seq = list(ctx)
    with torch.no_grad():
        for _ in range(4):
            seq.append(int(m.logits(m(torch.tensor([seq])))[0, -1].argmax()))
    (s,) = score_continuations(m, [(ctx, seq[len(ctx):])])
    assert s.greedy
    other = [(seq[-1] + 1) % (VOCAB - 1)]
    (t,) = score_continuations(m, [(seq[:-1], other)])
    assert not t.greedy


def test_rolling_score_is_the_sum_over_disjoint_windows() -> None:
    m = make()
    g = torch.Generator().manual_seed(5)
    tokens = rand(g, 2 * SEQ + 7)
    total, n = score_rolling(m, tokens, bos_id=BOS, batch_size=2)
    seq = [BOS] + tokens
    want = 0.0
    for s in range(0, len(seq) - 1, SEQ):
        want += reference(m, seq[s : s + 1], seq[s + 1 : s + 1 + SEQ])[0]
    assert n == len(tokens)
    assert total == pytest.approx(want, abs=1e-4)
    assert likelihood.perplexity(total, n) == pytest.approx(math.exp(-want / n), rel=1e-5)


def test_select_rows_copies_the_cached_prefix() -> None:
    m = make()
    cache = KVCache.for_model(m, 12)
    with torch.no_grad():
        m(torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]]), cache=cache)
    copy = cache.select_rows(torch.tensor([1, 1, 0]))
    assert copy.length == 4 and copy.keys[0] is not None and copy.keys[0].shape[0] == 3
    k = cache.keys[1]
    assert k is not None and copy.keys[1] is not None
    assert torch.equal(copy.keys[1][:, :, :4], k[[1, 1, 0], :, :4])


def test_a_subclass_overriding_forward_does_not_inherit_the_key_mask_promise() -> None:
    from pretrainlab.model.attention import CausalSelfAttention
    from pretrainlab.model.kv_cache import _declares_key_mask

    class Custom(CausalSelfAttention):
        def forward(self, x, rope, cache=None):  # type: ignore[no-untyped-def]
            return super().forward(x, rope, cache=cache)

    class Tweaked(CausalSelfAttention):
        pass

    assert _declares_key_mask(CausalSelfAttention) and _declares_key_mask(Tweaked)
    assert not _declares_key_mask(Custom)
