"""A key/value cache for incremental decoding: each new token attends to the keys and values already
computed for the tokens before it instead of recomputing the whole prefix (Pope et al. 2022,
*Efficiently scaling Transformer inference*, section 2).

`KVCache` holds one (k, v) pair of buffers per layer, each (B, n_kv_heads, max_len, head_dim), allocated
at full length on the first write (with the dtype and device of the keys written, so autocast works) and
filled in place. `Decoder.forward(tokens, cache)` places the new tokens at positions
`cache.length ... cache.length + T - 1` (the RoPE offset) and advances `cache.length` once all layers
have written; each layer's attention receives a `LayerCache` view and calls `update(k, v)` to get back
every key and value so far.

An attention module supports the cache when its `forward` takes a `cache` keyword (see
`model/attention.py`): `forward(x, rope, cache=None)` where `rope` already holds the rows of the new
positions. Modules registered by recipes without one still train; asking them for cached decoding raises
a `ConfigError` that names `model.attention`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch import nn

from pretrainlab.errors import ConfigError


class KVCache:
    """Keys and values of every layer for a batch of rows that all sit at the same position."""

    def __init__(self, n_layers: int, max_len: int) -> None:
        if n_layers < 1 or max_len < 1:
            raise ValueError(f"a KV cache needs n_layers >= 1 and max_len >= 1 (got {n_layers}, {max_len})")
        self.n_layers = n_layers
        self.max_len = max_len
        self.length = 0
        self.keys: list[torch.Tensor | None] = [None] * n_layers
        self.values: list[torch.Tensor | None] = [None] * n_layers
        # (B, max_len) bool, False where a row holds left padding (rows of different lengths prefilled
        # together); None when every position is real. Only attention that declares `supports_key_mask`
        # may be given a cache with padding (see `supports_padded_cache`).
        self.key_valid: torch.Tensor | None = None

    @classmethod
    def for_model(cls, model: nn.Module, max_len: int | None = None) -> "KVCache":
        """An empty cache sized for `model` (a `Decoder`): up to `max_len` positions (default its max_seq_len)."""
        limit = int(model.cfg.max_seq_len)  # type: ignore[union-attr]
        max_len = limit if max_len is None else max_len
        if max_len > limit:
            raise ValueError(f"a cache of {max_len} positions is longer than model.max_seq_len={limit}")
        return cls(len(model.blocks), max_len)  # type: ignore[arg-type]

    @property
    def remaining(self) -> int:
        """Positions still free."""
        return self.max_len - self.length

    def reset(self) -> None:
        """Forget every position (the buffers are kept and overwritten)."""
        self.length = 0

    def select_rows(self, rows: torch.Tensor) -> "KVCache":
        """A new cache whose row j holds every cached position of this cache's row `rows[j]` (rows may repeat).

        Scoring several continuations of one context runs the context once, then continues all of them
        from copies of its row (see `eval/likelihood.py`).
        """
        out = KVCache(self.n_layers, self.max_len)
        out.length = self.length
        if self.key_valid is not None:
            out.key_valid = self.key_valid[rows]
        for i, (k, v) in enumerate(zip(self.keys, self.values)):
            if k is not None and v is not None:
                nk, nv = k.new_empty((rows.numel(), *k.shape[1:])), v.new_empty((rows.numel(), *v.shape[1:]))
                nk[:, :, : self.length] = k[rows, :, : self.length]
                nv[:, :, : self.length] = v[rows, :, : self.length]
                out.keys[i], out.values[i] = nk, nv
        return out

    def layer(self, index: int, n_new: int) -> "LayerCache":
        """The view layer `index` writes `n_new` new positions through (checked against the free space)."""
        if n_new > self.remaining:
            raise ValueError(
                f"the KV cache holds {self.length} of {self.max_len} positions: no room for {n_new} more"
            )
        return LayerCache(self, index, self.length)

    def advance(self, n_new: int) -> None:
        """Mark `n_new` more positions as filled (called once per forward, after every layer wrote)."""
        self.length += n_new


@dataclass
class LayerCache:
    """One layer's window onto a `KVCache` for one forward: new positions start at `start`."""

    cache: KVCache
    index: int
    start: int

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, n_kv_heads, T, head_dim) at positions start ... start+T-1 and return the cached
        keys and values of positions 0 ... start+T-1 (views into the buffers)."""
        c, i = self.cache, self.index
        keys, values = c.keys[i], c.values[i]
        if keys is None or values is None:
            if self.start:
                raise ValueError(f"KV cache layer {i} was never written, yet the cache is at position {self.start}")
            B, H, _, D = k.shape
            keys = k.new_empty(B, H, c.max_len, D)
            values = v.new_empty(B, v.shape[1], c.max_len, v.shape[-1])
            c.keys[i], c.values[i] = keys, values
        elif keys.shape[0] != k.shape[0]:
            raise ValueError(f"the KV cache holds {keys.shape[0]} rows, this forward has {k.shape[0]}")
        end = self.start + k.shape[2]
        keys[:, :, self.start : end] = k
        values[:, :, self.start : end] = v
        return keys[:, :, :end], values[:, :, :end]


def attention_takes_cache(module: nn.Module) -> bool:
    """True when `module.forward` accepts a `cache` keyword."""
    try:
        params = inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False
    return "cache" in params


def supports_kv_cache(model: nn.Module) -> bool:
    """True when `model` can decode with a `KVCache`: a Decoder whose attention modules take a cache, or
    any module whose own `forward` takes a `cache` keyword."""
    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, nn.ModuleList) and all(hasattr(b, "attn") for b in blocks):
        return attention_takes_cache(model) and all(attention_takes_cache(b.attn) for b in blocks)
    return attention_takes_cache(model)


def supports_padded_cache(model: nn.Module) -> bool:
    """True when every attention module of `model` (a Decoder) honours `KVCache.key_valid`, so rows of
    different lengths can be left-padded into one cache (attention declares it: `supports_key_mask = True`)."""
    blocks = getattr(model, "blocks", None)
    if not supports_kv_cache(model) or not isinstance(blocks, nn.ModuleList):
        return False
    return all(_declares_key_mask(type(b.attn)) for b in blocks)


def _declares_key_mask(cls: type) -> bool:
    """The class that defines `forward` says `supports_key_mask = True` itself: a subclass that overrides
    `forward` does not inherit the promise."""
    for klass in cls.__mro__:
        if "forward" in vars(klass):
            return bool(vars(klass).get("supports_key_mask", False))
    return False


def require_kv_cache(model: nn.Module) -> None:
    """Raise a ConfigError naming the attention when `model` cannot decode with a KV cache."""
    if supports_kv_cache(model):
        return
    cfg = getattr(model, "cfg", None)
    name = getattr(cfg, "attention", None)
    what = f"model.attention={name!r}" if name else type(model).__name__
    raise ConfigError(
        f"{what} does not support a KV cache: its forward takes no `cache` argument, and sampling needs one",
        hint="give the attention module's forward a `cache=None` keyword that calls `cache.update(k, v)` "
        "(see pretrainlab/model/attention.py), or sample from a run trained with model.attention=sdpa",
    )
