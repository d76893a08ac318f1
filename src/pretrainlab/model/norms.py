"""Normalisation layers (registry `norm`): RMSNorm (Zhang & Sennrich 2019, the Llama default) and LayerNorm."""

from __future__ import annotations

from torch import nn

from pretrainlab.model.registries import NORMS


@NORMS.register("rmsnorm")
def rmsnorm(dim: int, eps: float) -> nn.Module:
    """Root-mean-square norm with a learned gain (torch's fused `F.rms_norm`)."""
    return nn.RMSNorm(dim, eps=eps)


@NORMS.register("layernorm")
def layernorm(dim: int, eps: float) -> nn.Module:
    """Classic LayerNorm with gain and bias (GPT-2)."""
    return nn.LayerNorm(dim, eps=eps)
