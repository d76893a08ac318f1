"""AdamW with decoupled weight decay (Loshchilov & Hutter, arXiv:1711.05101), torch's implementation.

The fused kernel (one kernel over all parameters instead of a Python loop or foreach batches) is
used when every parameter is a floating-point tensor on CPU or CUDA; `optim.options.fused=false`
turns it off, and any other `optim.options` go straight to `torch.optim.AdamW`.
"""

from __future__ import annotations

from typing import Any

import torch

from pretrainlab.config import OptimConfig
from pretrainlab.errors import ConfigError
from pretrainlab.optim.registry import register_optimizer


def _fused_supported(groups: list[dict[str, Any]]) -> bool:
    params = [p for g in groups for p in g["params"]]
    return bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)


@register_optimizer("adamw")
def build_adamw(groups: list[dict[str, Any]], cfg: OptimConfig) -> torch.optim.Optimizer:
    """torch.optim.AdamW over `groups` with `cfg`'s lr, betas, eps (decay is set per group)."""
    options = dict(cfg.options)
    if "fused" not in options:
        options["fused"] = _fused_supported(groups)
    try:
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, **options)
    except TypeError as e:
        raise ConfigError(f"optim.options: {e}", hint="see torch.optim.AdamW for its keyword arguments") from None
