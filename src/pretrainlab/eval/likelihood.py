"""Log-likelihood scoring of continuations and of whole texts: the engine under every task scorer.

`score_continuations` answers "how likely is this continuation after this context?" for many
(context, continuation) pairs at once, the request lm-evaluation-harness calls `loglikelihood`.
Multiple-choice tasks ask it for several continuations of one context; those are grouped, the context
runs through the model once into a KV cache, and all continuations are scored in one batched forward
from copies of its cache row, so the shared context is never recomputed per choice. Many questions'
contexts are prefilled in one forward, left-padded to a common length with the padding masked out of
attention (`KVCache.key_valid`), so their last tokens align and every continuation starts at the same
cache position; for attention modules that do not honour that mask, only contexts of equal length are
prefilled together. Batching many questions is what makes small models fast: per-call overhead, not
arithmetic, bounds them. Requests whose
context is not shared are batched as whole rows (right-padded: causal attention never lets a real
position see the padding after it).

`score_rolling` gives the log-likelihood of a whole token sequence (perplexity, bits per byte) in
disjoint windows of the model's context length, each conditioned on its own tokens only (nanoGPT-style).
lm-evaluation-harness's `loglikelihood_rolling` differs in the last, partial window, which it gives a
full window of preceding context; `eval/lm_eval_model.py` follows lm-eval's rule.

Log-probabilities are taken from fp32 logits (autocast off for the head, in chunks of `HEAD_CHUNK`
positions), so a bf16 run's scores and greedy flags do not hinge on bf16 rounding of the logits and
memory stays bounded for large vocabularies.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from pretrainlab.train.precision import autocast

# Rows x padded length per batched forward: large enough to amortise the call, small enough for memory.
BATCH_TOKENS = 16_384
# Positions whose fp32 logits exist at once (2,048 x a 128k vocabulary = 1 GiB).
HEAD_CHUNK = 2_048


@dataclass(frozen=True)
class ContinuationScore:
    """The continuation's summed log-probability (nats), whether greedy decoding would produce it, its length."""

    logprob: float
    greedy: bool
    n_tokens: int


def score_continuations(
    model: nn.Module,
    requests: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    device: torch.device | str = "cpu",
    autocast_dtype: torch.dtype | None = None,
    bos_id: int | None = None,
    batch_tokens: int = BATCH_TOKENS,
    share_contexts: bool = True,
) -> list[ContinuationScore]:
    """Score each (context ids, continuation ids) pair; results in input order.

    `share_contexts=False` scores every pair as a whole row (the context recomputed per continuation, as
    lm-evaluation-harness's Hugging Face model does): the baseline `benchmarks/bench_tasks.py` compares with.

    An empty context becomes `[bos_id]` (pass the tokenizer's end-of-text id: training documents follow
    one). A pair longer than the model's window (`model.cfg.max_seq_len` + 1 tokens) loses tokens from the
    left of its context; a continuation that alone fills the window is an error.
    """
    from pretrainlab.model.kv_cache import supports_kv_cache, supports_padded_cache
    from pretrainlab.train.distributed import unwrap_model

    core = unwrap_model(model)
    window = int(core.cfg.max_seq_len)  # type: ignore[union-attr]
    device = torch.device(device)
    normalised = [_fit_window(ctx, cont, window, bos_id, i) for i, (ctx, cont) in enumerate(requests)]
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, (ctx, _) in enumerate(normalised):
        groups.setdefault(ctx, []).append(i)

    results: list[ContinuationScore | None] = [None] * len(requests)
    shared = share_contexts and supports_kv_cache(core)
    padded = shared and supports_padded_cache(core)
    rows: list[int] = []  # requests scored as whole rows
    buckets: dict[int, list[list[int]]] = {}  # shared-context groups that may be prefilled together
    for ctx, members in groups.items():
        if shared and len(members) > 1:
            for piece in _split_group(members, normalised, batch_tokens):  # e.g. thousands of empty contexts
                buckets.setdefault(0 if padded else len(ctx), []).append(piece)
        else:
            rows.extend(members)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), autocast(device, autocast_dtype):
            for bucket in buckets.values():
                # Continuations outnumber contexts (one per choice), so chunks of similar continuation
                # length pad least: on HellaSwag 1.6x fewer padded tokens than sorting by context length.
                bucket.sort(key=lambda g: (max(len(normalised[i][1]) for i in g), len(normalised[g[0]][0])))
                for chunk in _group_batches(bucket, normalised, batch_tokens, window):
                    contexts = [normalised[members[0]][0] for members in chunk]
                    conts = [[normalised[i][1] for i in members] for members in chunk]
                    scores = _score_shared_contexts(core, contexts, conts, device)
                    for i, score in zip((i for members in chunk for i in members), scores):
                        results[i] = score
            for batch in _length_batches(rows, [len(normalised[i][0]) + len(normalised[i][1]) - 1 for i in rows],
                                         batch_tokens):
                pairs = [normalised[i] for i in batch]
                for i, score in zip(batch, _score_rows(core, pairs, device)):
                    results[i] = score
    finally:
        model.train(was_training)
    missing = [i for i, r in enumerate(results) if r is None]
    assert not missing, f"requests {missing[:5]} were never scored"
    return results  # type: ignore[return-value]


def score_rolling(
    model: nn.Module,
    tokens: Sequence[int],
    *,
    device: torch.device | str = "cpu",
    autocast_dtype: torch.dtype | None = None,
    bos_id: int,
    batch_size: int = 16,
) -> tuple[float, int]:
    """(summed log-probability of every token of `tokens`, number of tokens), the first predicted from `bos_id`.

    Disjoint windows of `max_seq_len` predictions: window w predicts tokens[w*L : (w+1)*L] from the token
    before it (`bos_id` for the first window) and the window's own tokens, as nanoGPT-style validation does.
    """
    from pretrainlab.train.distributed import unwrap_model

    core = unwrap_model(model)
    L = int(core.cfg.max_seq_len)  # type: ignore[union-attr]
    device = torch.device(device)
    seq = [int(bos_id)] + [int(t) for t in tokens]
    pairs = [(tuple(seq[s : s + 1]), tuple(seq[s + 1 : s + 1 + L])) for s in range(0, len(seq) - 1, L)]
    total = 0.0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), autocast(device, autocast_dtype):
            for start in range(0, len(pairs), batch_size):
                total += sum(s.logprob for s in _score_rows(core, pairs[start : start + batch_size], device))
    finally:
        model.train(was_training)
    return total, len(seq) - 1


# ----------------------------------------------------------------------------------------------- internals


def _fit_window(
    context: Sequence[int], continuation: Sequence[int], window: int, bos_id: int | None, index: int
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    cont = tuple(int(t) for t in continuation)
    if not cont:
        raise ValueError(f"request {index}: the continuation is empty; there is nothing to score")
    if len(cont) > window:
        raise ValueError(
            f"request {index}: a continuation of {len(cont)} tokens does not fit the model's window of {window}"
        )
    ctx = tuple(int(t) for t in context)
    if not ctx:
        if bos_id is None:
            raise ValueError(f"request {index}: the context is empty; pass bos_id (the end-of-text id) to score it")
        ctx = (int(bos_id),)
    keep = window + 1 - len(cont)  # context tokens that fit before the continuation
    return ctx[-keep:], cont


def _length_batches(items: list[int], lengths: list[int], batch_tokens: int) -> Iterator[list[int]]:
    """Items grouped into batches of similar length (longest first) holding <= batch_tokens padded tokens."""
    order = sorted(range(len(items)), key=lambda j: -lengths[j])
    batch: list[int] = []
    width = 0
    for j in order:
        width = max(width, lengths[j]) if batch else lengths[j]
        if batch and width * (len(batch) + 1) > batch_tokens:
            yield batch
            batch, width = [], lengths[j]
        batch.append(items[j])
    if batch:
        yield batch


def _continuation_scores(
    model: nn.Module, hidden: torch.Tensor, targets: list[torch.Tensor]
) -> list[ContinuationScore]:
    """hidden (B, m_max, d) holds, per row, the states predicting that row's targets (first m_b positions).
    Logits are computed for those positions only (not the padding), in fp32, HEAD_CHUNK positions at a time."""
    lengths = torch.tensor([t.numel() for t in targets], device=hidden.device)
    real = torch.arange(hidden.shape[1], device=hidden.device)[None, :] < lengths[:, None]
    states, tgt = hidden[real], torch.cat(targets)
    picked, hits = [], []
    with torch.autocast(hidden.device.type, enabled=False):
        for start in range(0, tgt.numel(), HEAD_CHUNK):
            logits = model.logits(states[start : start + HEAD_CHUNK].float()).float()  # type: ignore[operator]
            t = tgt[start : start + HEAD_CHUNK, None]
            picked.append((logits.gather(-1, t) - logits.logsumexp(-1, keepdim=True)).squeeze(-1))
            hits.append(logits.argmax(-1) == t.squeeze(-1))
    row = torch.repeat_interleave(torch.arange(len(targets), device=hidden.device), lengths)
    sums = torch.zeros(len(targets), dtype=torch.float64, device=hidden.device)
    sums.index_add_(0, row, torch.cat(picked).double())
    misses = torch.zeros(len(targets), device=hidden.device).index_add_(0, row, (~torch.cat(hits)).float())
    return [ContinuationScore(lp, miss == 0, int(n))
            for lp, miss, n in zip(sums.tolist(), misses.tolist(), lengths.tolist())]


def _score_rows(
    model: nn.Module, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], device: torch.device
) -> list[ContinuationScore]:
    """One forward over rows context + continuation[:-1] (right-padded)."""
    rows = [list(ctx) + list(cont[:-1]) for ctx, cont in pairs]
    T = max(len(r) for r in rows)
    x = torch.zeros(len(rows), T, dtype=torch.long)
    for b, r in enumerate(rows):
        x[b, : len(r)] = torch.tensor(r)
    hidden = model(x.to(device))
    m_max = max(len(cont) for _, cont in pairs)
    picked = torch.zeros(len(rows), m_max, hidden.shape[-1], dtype=hidden.dtype, device=device)
    targets = []
    for b, (ctx, cont) in enumerate(pairs):
        start = len(ctx) - 1  # the last context position predicts the first continuation token
        picked[b, : len(cont)] = hidden[b, start : start + len(cont)]
        targets.append(torch.tensor(cont, dtype=torch.long, device=device))
    return _continuation_scores(model, picked, targets)


def _split_group(
    members: list[int], normalised: Sequence[tuple[tuple[int, ...], tuple[int, ...]]], batch_tokens: int
) -> Iterator[list[int]]:
    """A shared-context group in pieces whose continuation batch fits batch_tokens (each piece prefills
    the context again, which only groups larger than a batch pay)."""
    n_ctx = len(normalised[members[0]][0])
    piece: list[int] = []
    longest = 0
    for i in members:
        m = len(normalised[i][1])
        if piece and (len(piece) + 1) * (n_ctx + max(longest, m)) > batch_tokens:
            yield piece
            piece, longest = [], 0
        piece.append(i)
        longest = max(longest, m)
    if piece:
        yield piece


def _group_batches(
    groups: list[list[int]], normalised: Sequence[tuple[tuple[int, ...], tuple[int, ...]]], batch_tokens: int,
    window: int,
) -> Iterator[list[list[int]]]:
    """Shared-context groups in chunks whose continuation batch (rows x (longest context + longest
    continuation), the attended span) stays within batch_tokens and whose padded span (longest context +
    longest continuation - 1 positions) fits the model's window; at least one group per chunk."""
    chunk: list[list[int]] = []
    rows = n_ctx = longest = 0
    for members in groups:
        c = len(normalised[members[0]][0])
        m = max(len(normalised[i][1]) for i in members)
        span = max(n_ctx, c) + max(longest, m)
        if chunk and ((rows + len(members)) * span > batch_tokens or span - 1 > window):
            yield chunk
            chunk, rows, n_ctx, longest = [], 0, 0, 0
        chunk.append(members)
        rows, n_ctx, longest = rows + len(members), max(n_ctx, c), max(longest, m)
    if chunk:
        yield chunk


def _score_shared_contexts(
    model: nn.Module, contexts: list[Sequence[int]], continuations: list[list[Sequence[int]]], device: torch.device
) -> list[ContinuationScore]:
    """The contexts in one forward into a KV cache (left-padded to the longest, the padding masked), then
    every continuation[:-1] of every context in one batch from copies of its context's cache row.
    Scores in order, context by context."""
    from pretrainlab.model.kv_cache import KVCache

    flat = [c for conts in continuations for c in conts]
    m_max = max(len(c) for c in flat)
    n_ctx = max(len(c) for c in contexts)
    cache = KVCache.for_model(model, n_ctx + m_max - 1)
    x = torch.zeros(len(contexts), n_ctx, dtype=torch.long)
    valid = torch.ones(len(contexts), cache.max_len, dtype=torch.bool)
    for q, c in enumerate(contexts):
        x[q, n_ctx - len(c) :] = torch.tensor(list(c))
        valid[q, : n_ctx - len(c)] = False
    if not bool(valid.all()):
        cache.key_valid = valid.to(device)
    last = model(x.to(device), cache=cache)[:, -1:]  # (Q, 1, d): predicts each continuation's first token
    owner = torch.tensor([q for q, conts in enumerate(continuations) for _ in conts], device=device)
    first = last.index_select(0, owner)
    if m_max > 1:
        x = torch.zeros(len(flat), m_max - 1, dtype=torch.long)
        for b, c in enumerate(flat):
            x[b, : len(c) - 1] = torch.tensor(list(c[:-1]))
        rest = model(x.to(device), cache=cache.select_rows(owner))
        hidden = torch.cat((first, rest), dim=1)
    else:
        hidden = first
    targets = [torch.tensor(list(c), dtype=torch.long, device=device) for c in flat]
    return _continuation_scores(model, hidden, targets)


def perplexity(logprob: float, n_tokens: int) -> float:
    """exp(-mean log-probability); inf for an empty sequence would hide a bug, so that is an error."""
    if n_tokens <= 0:
        raise ValueError("perplexity of zero tokens is undefined")
    return math.exp(-logprob / n_tokens)
