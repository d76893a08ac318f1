"""What an objective is: a callable scoring a model on a batch, chosen by name from the `objective` registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from pretrainlab.data.batch import Batch
from pretrainlab.registry import Registry


@dataclass
class ObjectiveOutput:
    """One micro-batch's result.

    `loss` is the mean over the micro-batch's target tokens (backprop it when micro-batches are equal);
    `loss_sum` is the sum of per-token losses, so a trainer accumulating micro-batches with loss masks can
    normalise by the step's total `n_tokens` instead (each token weighs the same). `metrics` holds extra
    floats (e.g. per-domain loss sums).
    """

    loss: torch.Tensor
    loss_sum: torch.Tensor
    n_tokens: int
    metrics: dict[str, float] = field(default_factory=dict)


class Objective(Protocol):
    """`objective(model, batch) -> ObjectiveOutput`.

    An objective may also define `bind(trainer)`: the trainer calls it once, after the config, data and
    device are known and before the run folder or the model exist, so an objective that needs more than
    a batch (a teacher, a tokenizer) loads it there and raises ConfigError early when it cannot.
    """

    def __call__(self, model: nn.Module, batch: Batch) -> ObjectiveOutput: ...


OBJECTIVES: Registry[Callable[[dict[str, Any]], Objective]] = Registry("objective")
"""Entries are factories `options -> Objective` (options from `objective_options`)."""


def build_objective(name: str, options: dict[str, Any] | None = None) -> Objective:
    """The objective registered as `name`, built with `options` (ConfigError for unknown names/options)."""
    from pretrainlab.objectives import next_token as _next_token  # noqa: F401  (registers the built-ins)
    from pretrainlab.objectives import distill as _distill  # noqa: F401
    from pretrainlab.objectives import feature_distill as _feature_distill  # noqa: F401

    return OBJECTIVES.get(name, field="objective")(dict(options or {}))


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DDP (`.module`) and torch.compile (`._orig_mod`) wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod  # type: ignore[assignment]
        elif isinstance(getattr(model, "module", None), nn.Module):
            model = model.module  # type: ignore[assignment]
        else:
            return model
