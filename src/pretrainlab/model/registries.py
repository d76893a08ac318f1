"""The model's component registries: recipes register new entries here instead of editing the model.

Factory signatures (what an entry must be):
- `NORMS`:      `(dim: int, eps: float) -> nn.Module` (normalises the last dimension).
- `LINEARS`:    `(in_features: int, out_features: int, bias: bool, options: dict) -> nn.Module`; used for
                every attention and MLP projection (never the embedding or output head), so a recipe
                (low-rank, sparse, ...) swaps them all through `model.linear` / `model.linear_options`.
                An entry may carry `callbacks(options) -> tuple[str, ...]`: callbacks the trainer then adds
                by itself (`train.callbacks.linear_callbacks`; e.g. `masked` re-zeroes after each step).
- `MLPS`:       `(cfg: ModelConfig, make_linear: MakeLinear) -> nn.Module` mapping (B, T, d) -> (B, T, d).
- `ATTENTIONS`: `(cfg: ModelConfig, make_linear: MakeLinear) -> nn.Module` with `forward(x, rope)`.

Modules may define `init_weights(std: float, out_std: float)`; otherwise `init_module` fills them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from torch import nn

from pretrainlab.registry import Registry

NORMS: Registry[Callable[[int, float], nn.Module]] = Registry("norm")
LINEARS: Registry[Callable[[int, int, bool, dict[str, Any]], nn.Module]] = Registry("linear")
MLPS: Registry[Callable[..., nn.Module]] = Registry("mlp")
ATTENTIONS: Registry[Callable[..., nn.Module]] = Registry("attention")

MakeLinear = Callable[[int, int], nn.Module]
"""A linear-layer builder with the config's registry entry, bias and options already bound."""


def init_module(module: nn.Module, std: float) -> None:
    """Initialise a projection: its own `init_weights(std)` if it has one, else N(0, std) matrices, zero vectors."""
    hook = getattr(module, "init_weights", None)
    if callable(hook):
        hook(std)
        return
    for p in module.parameters():
        if p.dim() >= 2:
            nn.init.normal_(p, mean=0.0, std=std)
        else:
            nn.init.zeros_(p)


def residual_std(std: float, n_layers: int) -> float:
    """GPT-2 / Megatron scaled init for projections writing into the residual stream: std / sqrt(2 L)."""
    return std / math.sqrt(2 * n_layers)
