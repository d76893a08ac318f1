"""Sampling text from a trained model: temperature and top-k (Fan et al. 2018), greedy at temperature 0.

A model that supports it (`model.kv_cache.supports_kv_cache`: the Decoder with a cache-aware attention)
decodes with a KV cache: the prompt is prefilled once and each step runs one token. When the context would
outgrow `max_seq_len`, the cache is refilled from the last `max_seq_len` tokens, so every step conditions
on exactly the window the uncached path would use. Once the context is past the window this happens at
every step (the window slides by one token, and RoPE positions start again at 0), so each of those steps
re-prefills the whole window: no speed-up over the uncached path there, and exactly its output. Any other
module (`forward(tokens)` + `logits`) is run on the whole cropped window every step.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pretrainlab.errors import ConfigError


def sample_next(logits: torch.Tensor, *, temperature: float, top_k: int | None, generator: torch.Generator) -> int:
    """One token id from a (V,) logit vector: argmax at temperature 0, else softmax(logits / T) over the top k."""
    if temperature <= 0:
        return int(torch.argmax(logits))
    scaled = logits.float() / temperature
    if top_k is not None and 0 < top_k < scaled.numel():
        kth = torch.topk(scaled, top_k).values[-1]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    probs = torch.softmax(scaled, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


def generate(
    model: nn.Module,
    tokenizer: Any,
    prompt: str,
    *,
    max_tokens: int,
    temperature: float,
    top_k: int | None,
    seed: int,
    device: torch.device,
    max_seq_len: int | None = None,
) -> str:
    """The continuation of `prompt` (without the prompt): up to `max_tokens` tokens, stopping at end-of-text.

    The context starts with the end-of-text token, as every training document follows one, so the prompt
    reads as the start of a document. The padding token is never sampled. Sampling is deterministic per
    `seed` (a dedicated generator on `device`); the context is cropped to the last `max_seq_len` tokens.
    """
    from pretrainlab.model.kv_cache import supports_kv_cache
    from pretrainlab.train.distributed import unwrap_model

    core = unwrap_model(model)
    ids = [int(tokenizer.eot_id)] + list(tokenizer.encode(prompt))
    pad_id = getattr(tokenizer, "pad_id", None)
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    out: list[int] = []
    was_training = model.training
    model.eval()
    next_logits = _CachedStep(core, max_seq_len, device) if supports_kv_cache(core) else None
    try:
        with torch.no_grad():
            for _ in range(max_tokens):
                if next_logits is not None:
                    logits = next_logits(ids)
                else:
                    context = ids[-max_seq_len:] if max_seq_len else ids
                    x = torch.tensor([context], dtype=torch.long, device=device)
                    logits = core.logits(model(x))[0, -1].float()
                if pad_id is not None and 0 <= pad_id < logits.numel():
                    logits[pad_id] = float("-inf")
                nxt = sample_next(logits, temperature=temperature, top_k=top_k, generator=generator)
                if nxt == tokenizer.eot_id:
                    break
                ids.append(nxt)
                out.append(nxt)
    finally:
        model.train(was_training)
    return tokenizer.decode(out)


class _CachedStep:
    """Next-token logits for a growing id list, feeding the model only the ids its KV cache lacks.

    While the list fits the window, a step feeds only the new ids. Past the window, every step resets the
    cache and prefills the last `window` ids (a full-window forward, as costly as the uncached path and
    equal to it), because cached keys carry the rotary positions of a window that has since moved.
    """

    def __init__(self, model: nn.Module, max_seq_len: int | None, device: torch.device) -> None:
        from pretrainlab.model.kv_cache import KVCache

        limit = int(model.cfg.max_seq_len)  # type: ignore[union-attr]
        self.window = min(limit, max_seq_len) if max_seq_len else limit
        self.model, self.device = model, device
        self.cache = KVCache.for_model(model, self.window)
        self.seen = 0  # how many ids of the list the cache holds (at its end)

    def __call__(self, ids: list[int]) -> torch.Tensor:
        new = ids[self.seen :] if self.cache.length else ids
        if self.cache.length + len(new) > self.window:  # re-prefill from the last window
            self.cache.reset()
            new = ids[-self.window :]
        x = torch.tensor([new], dtype=torch.long, device=self.device)
        logits = self.model.logits(self.model(x, cache=self.cache))[0, -1].float()  # type: ignore[operator]
        self.seen = len(ids)
        return logits


def generate_from_cli(
    run: str | Path,
    *,
    prompt: str,
    max_tokens: int,
    temperature: float,
    top_k: int,
    seed: int,
    checkpoint: str | Path | None,
) -> int:
    """`pretrainlab generate RUN`: print the prompt followed by a sampled continuation."""
    from pretrainlab.eval.load import load_run
    from pretrainlab.train.distributed import resolve_device

    if max_tokens < 0:
        raise ConfigError(f"--max-tokens must be >= 0 (got {max_tokens})", hint="e.g. --max-tokens 200")
    if temperature < 0:
        raise ConfigError(f"--temperature must be >= 0 (got {temperature})", hint="0 is greedy; 0.8 is a good start")
    if top_k < 0:
        raise ConfigError(f"--top-k must be >= 0 (got {top_k})", hint="0 samples from the whole vocabulary")
    device = resolve_device("auto")  # this machine's, not necessarily the one the run trained on
    model, cfg, data, _ = load_run(run, checkpoint, device=device)
    text = generate(
        model,
        data.tokenizer,
        prompt,
        max_tokens=max_tokens,
        temperature=temperature,
        top_k=top_k or None,
        seed=seed,
        device=device,
        max_seq_len=cfg.model.max_seq_len or cfg.data.seq_len,
    )
    sys.stdout.write(prompt + text + "\n")
    return 0
