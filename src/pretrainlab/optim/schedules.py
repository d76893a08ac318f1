"""Learning-rate schedules as pure functions `lr_multiplier(step) -> float` (step counts from 0).

A schedule is a linear warm-up followed by a decay shape; shapes live in a registry so a recipe
adds one with `@register_schedule("name")` instead of editing the trainer. The multiplier scales
each parameter group's base learning rate, so schedules know nothing about optimisers.

Shapes: `cosine` (decay to `min_lr_ratio` along a half cosine, as in GPT-3 / Chinchilla),
`linear`, `constant`, and `wsd` (warmup-stable-decay: constant, then a linear decay over the last
`decay_fraction` of the run; Hu et al. 2024, MiniCPM, arXiv:2404.06395).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from pretrainlab.config import ScheduleConfig
from pretrainlab.errors import ConfigError
from pretrainlab.registry import Registry

LrMultiplier = Callable[[int], float]
# A shape maps progress through the post-warm-up phase (0 at its start, 1 at the last step) to a multiplier.
Shape = Callable[[float, ScheduleConfig], float]

SCHEDULES: Registry[Shape] = Registry("schedule")


def register_schedule(name: str) -> Callable[[Shape], Shape]:
    """Decorator: make a decay shape available as `schedule.name=<name>`."""
    return SCHEDULES.register(name)


@register_schedule("cosine")
def _cosine(progress: float, cfg: ScheduleConfig) -> float:
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


@register_schedule("linear")
def _linear(progress: float, cfg: ScheduleConfig) -> float:
    return 1.0 - (1.0 - cfg.min_lr_ratio) * progress


@register_schedule("constant")
def _constant(progress: float, cfg: ScheduleConfig) -> float:
    return 1.0


@register_schedule("wsd")
def _wsd(progress: float, cfg: ScheduleConfig) -> float:
    decay_start = 1.0 - cfg.decay_fraction
    if progress <= decay_start:
        return 1.0
    return 1.0 - (1.0 - cfg.min_lr_ratio) * (progress - decay_start) / cfg.decay_fraction


def warmup_steps(cfg: ScheduleConfig, total_steps: int) -> int:
    """`schedule.warmup_steps` when given, else `warmup_fraction` of the run (rounded)."""
    if cfg.warmup_steps is not None:
        return cfg.warmup_steps
    return int(round(cfg.warmup_fraction * total_steps))


def check_schedule(cfg: ScheduleConfig, total_steps: int) -> None:
    """ConfigError for an unknown shape or a warm-up longer than the run."""
    SCHEDULES.get(cfg.name, field="schedule.name")
    if warmup_steps(cfg, total_steps) > total_steps:
        raise ConfigError(
            f"schedule.warmup_steps={cfg.warmup_steps} is longer than the run (train.steps={total_steps})",
            hint="shorten the warm-up or train for more steps",
        )


def build_schedule(cfg: ScheduleConfig, total_steps: int) -> LrMultiplier:
    """The multiplier of optimiser step `step` (0-based) in a run of `total_steps` steps.

    Warm-up is linear from 1/warmup to 1 (the first step already moves the weights); the shape then
    runs from progress 0 to 1 over the remaining steps, so the last step gets the shape's end value.
    """
    check_schedule(cfg, total_steps)
    shape = SCHEDULES.get(cfg.name, field="schedule.name")
    warm = warmup_steps(cfg, total_steps)
    decay_steps = max(total_steps - warm - 1, 1)

    def lr_multiplier(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = min(max((step - warm) / decay_steps, 0.0), 1.0)
        return float(shape(progress, cfg))

    return lr_multiplier
