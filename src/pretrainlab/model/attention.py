"""Causal self-attention (registry `attention`): fused QKV projection, RoPE, optional QK-norm,
grouped-query attention (Ainslie et al. 2023), and `F.scaled_dot_product_attention(is_causal=True)`,
which dispatches to the fused flash kernels on CPU and GPU.

With a `LayerCache` (incremental decoding, see `model/kv_cache.py`) the new keys and values are appended
to the cache and the new queries attend to every cached position: causally within the new tokens, fully
to the ones before them, except left padding the cache marks in `key_valid` (rows of different lengths
prefilled together, as the likelihood engine does; RoPE scores depend only on position offsets, so a
row shifted right by its padding scores as it would alone).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pretrainlab.config import ModelConfig
from pretrainlab.model.kv_cache import LayerCache
from pretrainlab.model.registries import ATTENTIONS, NORMS, MakeLinear, init_module
from pretrainlab.model.rope import apply_rope


class CausalSelfAttention(nn.Module):
    """q from n_heads heads, k and v from n_kv_heads heads (GQA when fewer), one fused input projection.

    With `qk_norm`, q and k are normalised per head before RoPE (OLMo 2 / Qwen 3 style), which keeps
    attention logits bounded at high learning rates.
    """

    supports_key_mask = True  # honours KVCache.key_valid (left-padded rows; RoPE depends on offsets only)

    def __init__(self, cfg: ModelConfig, make_linear: MakeLinear) -> None:
        super().__init__()
        assert cfg.d_model and cfg.n_heads and cfg.n_kv_heads
        self.n_heads, self.n_kv_heads = cfg.n_heads, cfg.n_kv_heads
        self.head_dim = cfg.d_model // cfg.n_heads
        self.qkv = make_linear(cfg.d_model, (self.n_heads + 2 * self.n_kv_heads) * self.head_dim)
        self.out = make_linear(self.n_heads * self.head_dim, cfg.d_model)
        norm = NORMS.get(cfg.norm, field="model.norm")
        self.q_norm = norm(self.head_dim, cfg.norm_eps) if cfg.qk_norm else None
        self.k_norm = norm(self.head_dim, cfg.norm_eps) if cfg.qk_norm else None
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor, rope: torch.Tensor, cache: LayerCache | None = None) -> torch.Tensor:
        """x (B, T, d) -> (B, T, d). `rope` holds the rows of these T positions; with `cache`, the keys and
        values of earlier positions come from it and these T are appended."""
        B, T, _ = x.shape
        H, KV, D = self.n_heads, self.n_kv_heads, self.head_dim
        qkv = self.qkv(x)
        qk = qkv[..., : (H + KV) * D].view(B, T, H + KV, D)
        if self.q_norm is not None and self.k_norm is not None:
            qk = torch.cat((self.q_norm(qk[:, :, :H]), self.k_norm(qk[:, :, H:])), dim=2)
        q, k = apply_rope(qk, rope).transpose(1, 2).split((H, KV), dim=1)  # (B, heads, T, D)
        v = qkv[..., (H + KV) * D :].view(B, T, KV, D).transpose(1, 2)
        if cache is None:
            y = F.scaled_dot_product_attention(
                q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0, enable_gqa=KV != H
            )
        else:
            k, v = cache.update(k, v)
            valid = cache.cache.key_valid
            y = cached_attention(q, k, v, cache.start, enable_gqa=KV != H,
                                 key_valid=None if valid is None else valid[:, : k.shape[2]])
        y = self.out(y.transpose(1, 2).reshape(B, T, H * D))
        return F.dropout(y, self.dropout, self.training) if self.dropout else y

    def init_weights(self, std: float, out_std: float) -> None:
        init_module(self.qkv, std)
        init_module(self.out, out_std)
        for norm in (self.q_norm, self.k_norm):
            if norm is not None:
                norm.reset_parameters()


def cached_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, start: int, *, enable_gqa: bool = False,
    key_valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention of T new queries at positions start ... start+T-1 over all start+T cached keys.

    An empty cache (start 0) is the ordinary causal case; a single new token sees every key; a chunk of
    several tokens after earlier ones needs the causal mask shifted by `start` (query i sees keys <= start+i).
    """
    T = q.shape[2]
    if key_valid is not None:  # left-padded rows: no query sees padding; a padding query sees itself (no NaN)
        causal = torch.ones(T, start + T, dtype=torch.bool, device=q.device).tril(diagonal=start)
        own = torch.zeros_like(causal)
        own[:, start:] = torch.eye(T, dtype=torch.bool, device=q.device)
        mask = (causal & key_valid[:, None, None, :]) | own
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=enable_gqa)
    if start == 0:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=enable_gqa)
    if T == 1:
        return F.scaled_dot_product_attention(q, k, v, enable_gqa=enable_gqa)
    mask = torch.ones(T, start + T, dtype=torch.bool, device=q.device).tril(diagonal=start)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=enable_gqa)


@ATTENTIONS.register("sdpa")
def sdpa(cfg: ModelConfig, make_linear: MakeLinear) -> nn.Module:
    return CausalSelfAttention(cfg, make_linear)
