"""Optimiser registry: name -> builder(param_groups, cfg) -> torch.optim.Optimizer.

A new optimiser (GaLore, Muon, Lion, ...) arrives as a module that calls `register_optimizer`;
the trainer only ever calls `build_optimizer`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from pretrainlab.config import OptimConfig
from pretrainlab.errors import ConfigError
from pretrainlab.optim.param_groups import param_groups

OptimizerBuilder = Callable[[list[dict[str, Any]], OptimConfig], torch.optim.Optimizer]

OPTIMIZERS: dict[str, OptimizerBuilder] = {}


def register_optimizer(name: str) -> Callable[[OptimizerBuilder], OptimizerBuilder]:
    """Decorator: make a builder available as `optim.name=<name>`."""

    def deco(fn: OptimizerBuilder) -> OptimizerBuilder:
        OPTIMIZERS[name] = fn
        return fn

    return deco


def _load_builtins() -> None:
    from pretrainlab.optim import adamw  # noqa: F401  (registers "adamw")


def check_optimizer(cfg: OptimConfig) -> None:
    """ConfigError naming `optim.name` when no builder is registered under it."""
    _load_builtins()
    if cfg.name not in OPTIMIZERS:
        close = difflib.get_close_matches(cfg.name, list(OPTIMIZERS), n=1)
        raise ConfigError(
            f"optim.name: unknown optimiser {cfg.name!r}" + (f"; did you mean {close[0]!r}?" if close else ""),
            hint=f"choose one of: {', '.join(sorted(OPTIMIZERS))}",
        )


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """Group the model's parameters by `cfg.decay` and build the optimiser named `cfg.name`.

    Each group gets `base_lr` = `cfg.lr`; the trainer sets `lr = base_lr * schedule(step)` every step.
    """
    check_optimizer(cfg)
    groups = param_groups(model, weight_decay=cfg.weight_decay, decay=cfg.decay)
    for g in groups:
        g["base_lr"] = cfg.lr
    return OPTIMIZERS[cfg.name](groups, cfg)
