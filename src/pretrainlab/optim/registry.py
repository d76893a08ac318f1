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
OptionsCheck = Callable[[OptimConfig], Any]
OPTION_CHECKS: dict[str, OptionsCheck] = {}
"""Optional per-optimiser `optim.options` validators, run by `check_optimizer` before any model is built."""


def register_optimizer(name: str) -> Callable[[OptimizerBuilder], OptimizerBuilder]:
    """Decorator: make a builder available as `optim.name=<name>`."""
    return OPTIMIZERS.register(name)


def register_options_check(name: str) -> Callable[[OptionsCheck], OptionsCheck]:
    """Decorator: `fn(cfg)` raises ConfigError for bad `optim.options` of optimiser `name` (checked early)."""

    def add(fn: OptionsCheck) -> OptionsCheck:
        OPTION_CHECKS[name] = fn
        return fn

    return add


def _load_builtins() -> None:
    from pretrainlab.optim import adamw  # noqa: F401  (registers "adamw")
    from pretrainlab.optim import galore  # noqa: F401  (registers "galore", "fira")


def check_optimizer(cfg: OptimConfig) -> OptimizerBuilder:
    """The builder registered as `cfg.name`; ConfigError naming `optim.name` when there is none, or
    `optim.options.<key>` when the optimiser registered an options check that rejects them."""
    _load_builtins()
    builder = OPTIMIZERS.get(cfg.name, field="optim.name")
    if cfg.name in OPTION_CHECKS:
        OPTION_CHECKS[cfg.name](cfg)
    return builder


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """Group the model's parameters by `cfg.decay` and build the optimiser named `cfg.name`.

    Each group gets `base_lr` = `cfg.lr`; the trainer sets `lr = base_lr * schedule(step)` every step.
    """
    builder = check_optimizer(cfg)
    groups = param_groups(model, weight_decay=cfg.weight_decay, decay=cfg.decay)
    for g in groups:
        g["base_lr"] = cfg.lr
    return builder(groups, cfg)
