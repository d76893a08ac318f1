"""Optimiser registry: name -> builder(param_groups, cfg) -> torch.optim.Optimizer.

A new optimiser (GaLore, Muon, Lion, ...) arrives as a module that calls `register_optimizer`;
the trainer only ever calls `build_optimizer`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from pretrainlab.config import OptimConfig
from pretrainlab.optim.param_groups import param_groups
from pretrainlab.registry import Registry

OptimizerBuilder = Callable[[list[dict[str, Any]], OptimConfig], torch.optim.Optimizer]

OPTIMIZERS: Registry[OptimizerBuilder] = Registry("optimiser")


def register_optimizer(name: str) -> Callable[[OptimizerBuilder], OptimizerBuilder]:
    """Decorator: make a builder available as `optim.name=<name>`."""
    return OPTIMIZERS.register(name)


def _load_builtins() -> None:
    from pretrainlab.optim import adamw  # noqa: F401  (registers "adamw")
    from pretrainlab.optim import galore  # noqa: F401  (registers "galore", "fira")


def check_optimizer(cfg: OptimConfig) -> OptimizerBuilder:
    """The builder registered as `cfg.name`; ConfigError naming `optim.name` when there is none."""
    _load_builtins()
    return OPTIMIZERS.get(cfg.name, field="optim.name")


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """Group the model's parameters by `cfg.decay` and build the optimiser named `cfg.name`.

    Each group gets `base_lr` = `cfg.lr`; the trainer sets `lr = base_lr * schedule(step)` every step.
    """
    builder = check_optimizer(cfg)
    groups = param_groups(model, weight_decay=cfg.weight_decay, decay=cfg.decay)
    for g in groups:
        g["base_lr"] = cfg.lr
    return builder(groups, cfg)
