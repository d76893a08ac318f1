"""The GPT-style decoder: embedding -> pre-norm blocks (attention, MLP) -> final norm; head tied or not.

Every part comes from a registry (norm, attention, mlp, linear), so recipes change components by name.
The decoder returns the final hidden states; the output head is applied by the objective (`logits`, or a
fused chunked head + loss that never materialises all logits, see `objectives/fused_ce.py`).
For sampling, `forward(tokens, cache)` decodes incrementally with a `KVCache` (see `model/kv_cache.py`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pretrainlab.config import ModelConfig
from pretrainlab.model.kv_cache import KVCache, LayerCache, require_kv_cache
from pretrainlab.model.registries import ATTENTIONS, LINEARS, MLPS, NORMS, MakeLinear, residual_std
from pretrainlab.model.rope import rope_table

# Importing the modules registers the built-in entries.
from pretrainlab.model import attention as _attention, linear as _linear, mlp as _mlp, norms as _norms  # noqa: F401,E402
from pretrainlab.model import low_rank as _low_rank, masked_linear as _masked_linear  # noqa: F401,E402
from pretrainlab.model import sparse_low_rank as _sparse_low_rank  # noqa: F401,E402


def _linear_builder(cfg: ModelConfig) -> MakeLinear:
    factory = LINEARS.get(cfg.linear, field="model.linear")
    options: dict[str, Any] = dict(cfg.linear_options)

    def make(in_features: int, out_features: int) -> nn.Module:
        return factory(in_features, out_features, cfg.bias, options)

    return make


def _reset(module: nn.Module) -> None:
    reset = getattr(module, "reset_parameters", None)
    if callable(reset):
        reset()


class Block(nn.Module):
    """x + attn(norm(x)), then x + mlp(norm(x)) (pre-norm, GPT-2 / Llama)."""

    def __init__(self, cfg: ModelConfig, make_linear: MakeLinear) -> None:
        super().__init__()
        assert cfg.d_model is not None
        norm = NORMS.get(cfg.norm, field="model.norm")
        self.attn_norm = norm(cfg.d_model, cfg.norm_eps)
        self.attn = ATTENTIONS.get(cfg.attention, field="model.attention")(cfg, make_linear)
        self.mlp_norm = norm(cfg.d_model, cfg.norm_eps)
        self.mlp = MLPS.get(cfg.mlp, field="model.mlp")(cfg, make_linear)

    def forward(self, x: torch.Tensor, rope: torch.Tensor, cache: LayerCache | None = None) -> torch.Tensor:
        if cache is None:
            x = x + self.attn(self.attn_norm(x), rope)
        else:
            x = x + self.attn(self.attn_norm(x), rope, cache=cache)
        return x + self.mlp(self.mlp_norm(x))


class Decoder(nn.Module):
    """Decoder-only transformer over a resolved `ModelConfig` (see `resolve_model_config`)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if None in (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.mlp_hidden, cfg.vocab_size,
                    cfg.max_seq_len):
            raise ValueError("build_model needs a resolved ModelConfig: call resolve_model_config first")
        assert cfg.d_model and cfg.vocab_size and cfg.n_layers and cfg.n_heads and cfg.max_seq_len
        self.cfg = cfg
        make_linear = _linear_builder(cfg)
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg, make_linear) for _ in range(cfg.n_layers))
        self.norm = NORMS.get(cfg.norm, field="model.norm")(cfg.d_model, cfg.norm_eps)
        self.head = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.register_buffer(
            "rope", torch.empty(cfg.max_seq_len, cfg.d_model // cfg.n_heads // 2, 2), persistent=False
        )
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """(Re)initialise parameters and the RoPE table, e.g. after building on the meta device + `to_empty`.

        N(0, init_std) for matrices and the embedding, init_std / sqrt(2 n_layers) for the projections
        that write into the residual stream (GPT-2), ones for norm gains, zeros for biases.
        """
        cfg = self.cfg
        assert cfg.n_layers and cfg.d_model and cfg.n_heads and cfg.max_seq_len
        self.rope.copy_(rope_table(cfg.d_model // cfg.n_heads, cfg.max_seq_len, cfg.rope_theta, self.rope.device))
        nn.init.normal_(self.embed.weight, mean=0.0, std=cfg.init_std)
        if self.head is not None:
            nn.init.normal_(self.head.weight, mean=0.0, std=cfg.init_std)
        out_std = residual_std(cfg.init_std, cfg.n_layers)
        for block in self.blocks:
            assert isinstance(block, Block)
            for norm in (block.attn_norm, block.mlp_norm):
                _reset(norm)
            for part in (block.attn, block.mlp):
                part.init_weights(cfg.init_std, out_std)
        _reset(self.norm)

    def forward(self, tokens: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """tokens (B, T) int64 -> final normed hidden states (B, T, d_model).

        With `cache` the tokens continue the cached ones: they take positions cache.length ... +T-1,
        attend to everything cached, and are appended to it (inference only; see `model/kv_cache.py`).
        """
        if cache is not None:
            return self._forward_cached(tokens, cache)
        T = tokens.shape[1]
        if T > self.rope.shape[0]:
            raise ValueError(f"sequence of {T} tokens is longer than model.max_seq_len={self.rope.shape[0]}")
        x = self.embed(tokens)
        if self.cfg.dropout:
            x = F.dropout(x, self.cfg.dropout, self.training)
        rope = self.rope[:T]
        for block in self.blocks:
            x = block(x, rope)
        return self.norm(x)

    def _forward_cached(self, tokens: torch.Tensor, cache: KVCache) -> torch.Tensor:
        if cache.length == 0:  # checked once per cache, not per decoding step
            require_kv_cache(self)
        if cache.n_layers != len(self.blocks):
            raise ValueError(f"the KV cache has {cache.n_layers} layers, the model {len(self.blocks)}")
        start, T = cache.length, tokens.shape[1]
        if start + T > self.rope.shape[0]:
            raise ValueError(
                f"positions {start}..{start + T - 1} reach past model.max_seq_len={self.rope.shape[0]}"
            )
        x = self.embed(tokens)
        rope = self.rope[start : start + T]
        for i, block in enumerate(self.blocks):
            x = block(x, rope, cache.layer(i, T))
        cache.advance(T)
        return self.norm(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden (..., d) -> logits (..., vocab_size)."""
        return F.linear(hidden, self.output_weight)

    @property
    def output_weight(self) -> torch.Tensor:
        """(vocab_size, d_model): the tied embedding or the separate head's weight."""
        return self.embed.weight if self.head is None else self.head.weight


def build_model(cfg: ModelConfig) -> Decoder:
    """A freshly initialised decoder on the current default device (use `torch.device("meta")` to size it)."""
    return Decoder(cfg)
