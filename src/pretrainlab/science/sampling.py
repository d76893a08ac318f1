"""Batched unconditional sampling from one model or an ensemble, with a KV cache per model.

Kim et al. (2025, *Pre-training under infinite compute*, arXiv 2509.14786, section on distillation)
distil a teacher into a student by sampling sequences from the teacher unconditionally at temperature 1;
an ensemble teacher is sampled from its averaged logits. Here every row starts from the end-of-text token
(the state every training document starts from), each model keeps its own `KVCache`, and the next token
of every row is drawn from `combine_logits` of the models' last logits. A sampled end-of-text does not
end the row: sampling continues, and the token becomes a document boundary.

`iter_sample_streams` goes further: each row is an endless stream of documents, yielded a piece at a
time, so a document can run on past the teachers' context. Past the window the teachers see the last
tokens of the stream (a sliding window, refilled half a window at a time), as they saw windows that
start mid-document in training.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence

import numpy as np
import torch
from torch import nn

from pretrainlab.errors import ConfigError
from pretrainlab.model.ensemble import Combine, combine_logits
from pretrainlab.model.kv_cache import KVCache, require_kv_cache
from pretrainlab.train.precision import autocast


def sample_sequences(
    models: Sequence[nn.Module],
    *,
    n_rows: int,
    seq_len: int,
    temperature: float = 1.0,
    combine: Combine = "logits",
    batch_size: int = 64,
    seed: int = 0,
    device: torch.device | str = "cpu",
    eot_id: int,
    pad_id: int,
    vocab_size: int | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> np.ndarray:
    """(n_rows, seq_len) int64 token ids sampled after an end-of-text token.

    `models` are Decoders on `device` that share a vocabulary; several are sampled as one ensemble
    (`combine`: "logits" = mean of logits, "probs" = mean of probabilities). Temperature 0 is greedy.
    The padding token, and ids >= `vocab_size` (the tokenizer's, when the model's output is wider), are
    never drawn. Rows are sampled `batch_size` at a time; the result is a pure function of the models,
    `seed` and `batch_size` on a given device.
    """
    out = np.empty((n_rows, seq_len), dtype=np.int64)
    done = 0
    for batch in iter_sample_batches(
        models, n_rows=n_rows, seq_len=seq_len, temperature=temperature, combine=combine, batch_size=batch_size,
        seed=seed, device=device, eot_id=eot_id, pad_id=pad_id, vocab_size=vocab_size, autocast_dtype=autocast_dtype,
    ):
        out[done : done + len(batch)] = batch
        done += len(batch)
    return out


def iter_sample_batches(
    models: Sequence[nn.Module],
    *,
    n_rows: int,
    seq_len: int,
    temperature: float = 1.0,
    combine: Combine = "logits",
    batch_size: int = 64,
    seed: int = 0,
    device: torch.device | str = "cpu",
    eot_id: int,
    pad_id: int,
    vocab_size: int | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> Generator[np.ndarray, None, None]:
    """`sample_sequences` one batch at a time ((rows, seq_len) int64 arrays, the same rows in the same
    order), so a caller can write them out as they come. The settings are checked now, not at the first
    batch; stopping early stops sampling."""
    _check(models, n_rows=n_rows, seq_len=seq_len, temperature=temperature, batch_size=batch_size)
    device = torch.device(device)
    banned = _banned(models, pad_id, vocab_size, device)

    def batches() -> Generator[np.ndarray, None, None]:
        generator = torch.Generator(device=device)
        generator.manual_seed(seed)
        modes = [m.training for m in models]
        for m in models:
            m.eval()
        try:
            for start in range(0, n_rows, batch_size):
                rows = min(batch_size, n_rows - start)
                # Entered per batch: a generator suspended inside inference_mode would leak it to the caller.
                with torch.inference_mode(), autocast(device, autocast_dtype):
                    batch = _sample_batch(models, rows, seq_len, eot_id, banned, temperature, combine, generator,
                                          device)
                yield batch.cpu().numpy()
        finally:
            for m, mode in zip(models, modes):
                m.train(mode)

    return batches()


def iter_sample_streams(
    models: Sequence[nn.Module],
    *,
    streams: int,
    piece_len: int,
    window: int,
    temperature: float = 1.0,
    combine: Combine = "logits",
    seed: int = 0,
    device: torch.device | str = "cpu",
    eot_id: int,
    pad_id: int,
    vocab_size: int | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> Generator[np.ndarray, None, None]:
    """`streams` endless rows, yielded as (streams, piece_len) int64 pieces; piece i + 1 continues piece i
    row by row. Every stream starts after an end-of-text token, and sampled end-of-text tokens separate
    its documents, so a document may span pieces and may be longer than the teachers' context.

    The teachers condition on a window of at most `window` tokens (<= their max_seq_len): their KV caches
    fill up to `window` positions, then are refilled with the last `max(1, window // 2)` tokens (one
    prefill) and decoding goes on; every prediction therefore sees between half a window and a full
    window of the stream's latest tokens (all of them while the stream is shorter). The first piece of
    `piece_len <= window` tokens is what `sample_sequences` samples for `streams` rows in one batch.
    Settings are checked now; the generator never ends (close it, or stop iterating, to stop sampling).
    """
    _check(models, n_rows=streams, seq_len=window, temperature=temperature, batch_size=max(streams, 1))
    if streams < 1 or piece_len < 1:
        raise ConfigError(
            f"streams and piece_len must be >= 1 (got {streams}, {piece_len})", hint="e.g. --batch-size 64"
        )
    device = torch.device(device)
    banned = _banned(models, pad_id, vocab_size, device)
    keep = max(1, window // 2)

    def pieces() -> Generator[np.ndarray, None, None]:
        generator = torch.Generator(device=device)
        generator.manual_seed(seed)
        modes = [m.training for m in models]
        for m in models:
            m.eval()
        caches = [KVCache.for_model(m, window) for m in models]
        fed = torch.empty(streams, 0, dtype=torch.long, device=device)  # the tokens the caches hold
        step = torch.full((streams, 1), eot_id, dtype=torch.long, device=device)  # the next token to feed
        try:
            while True:
                with torch.inference_mode(), autocast(device, autocast_dtype):
                    piece = torch.empty(streams, piece_len, dtype=torch.long, device=device)
                    for t in range(piece_len):
                        if caches[0].length < window:
                            feed, fed = step, torch.cat([fed, step], dim=1)
                        else:  # the window is full: refill it with the stream's latest tokens
                            for c in caches:
                                c.reset()
                            feed = fed = torch.cat([fed, step], dim=1)[:, -keep:]
                        last = torch.stack([m.logits(m(feed, cache=c)[:, -1]) for m, c in zip(models, caches)])
                        logits = combine_logits(last, combine).masked_fill(banned, float("-inf"))
                        piece[:, t] = draw(logits, temperature, generator)
                        step = piece[:, t : t + 1]
                yield piece.cpu().numpy()
        finally:
            for m, mode in zip(models, modes):
                m.train(mode)

    return pieces()


def _banned(models: Sequence[nn.Module], pad_id: int, vocab_size: int | None, device: torch.device) -> torch.Tensor:
    """(V,) mask of the ids never drawn: padding, and ids past the tokenizer's vocabulary."""
    n_vocab = int(models[0].output_weight.shape[0])  # type: ignore[union-attr]
    banned = torch.zeros(n_vocab, dtype=torch.bool, device=device)
    if 0 <= pad_id < n_vocab:
        banned[pad_id] = True
    if vocab_size is not None:
        banned[vocab_size:] = True
    return banned


def _sample_batch(
    models: Sequence[nn.Module],
    rows: int,
    seq_len: int,
    eot_id: int,
    banned: torch.Tensor,
    temperature: float,
    combine: Combine,
    generator: torch.Generator,
    device: torch.device,
) -> torch.Tensor:
    """One batch of rows: prefill the end-of-text token, then one cached step per sampled token."""
    caches = [KVCache.for_model(m, seq_len) for m in models]
    tokens = torch.empty(rows, seq_len, dtype=torch.long, device=device)
    step = torch.full((rows, 1), eot_id, dtype=torch.long, device=device)
    for t in range(seq_len):
        last = torch.stack([m.logits(m(step, cache=c)[:, -1]) for m, c in zip(models, caches)])  # (K, rows, V)
        logits = combine_logits(last, combine).masked_fill(banned, float("-inf"))
        tokens[:, t] = draw(logits, temperature, generator)
        step = tokens[:, t : t + 1]
    return tokens


def draw(logits: torch.Tensor, temperature: float, generator: torch.Generator) -> torch.Tensor:
    """(rows, V) logits -> (rows,) ids: argmax at temperature 0, else a draw from softmax(logits / T)."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def _check(
    models: Sequence[nn.Module], *, n_rows: int, seq_len: int, temperature: float, batch_size: int
) -> None:
    if not models:
        raise ConfigError("sampling needs at least one model", hint="name one or more teacher run folders")
    if n_rows < 0 or seq_len < 1 or batch_size < 1:
        raise ConfigError(
            f"sampling needs n_rows >= 0, seq_len >= 1 and batch_size >= 1 (got {n_rows}, {seq_len}, {batch_size})",
            hint="e.g. --seq-len 128 --batch-size 64",
        )
    if not 0 <= temperature < float("inf"):
        raise ConfigError(
            f"temperature must be a finite number >= 0 (got {temperature})", hint="1.0 samples the teacher as is"
        )
    vocab = {int(m.output_weight.shape[0]) for m in models}  # type: ignore[union-attr]
    if len(vocab) != 1:
        raise ConfigError(
            f"the models have different vocabulary sizes {sorted(vocab)}", hint="ensemble runs of one tokenizer"
        )
    for m in models:
        require_kv_cache(m)
        limit = int(m.cfg.max_seq_len)  # type: ignore[union-attr]
        if seq_len > limit:
            raise ConfigError(
                f"seq_len={seq_len} is longer than a teacher's model.max_seq_len={limit}",
                hint=f"sample sequences of at most {limit} tokens (--seq-len {limit})",
            )

