"""Check an optimiser state taken from a checkpoint against the state this run's optimiser would create.

A checkpointed optimiser state is only meaningful for the optimiser and options that wrote it: GaLore's
`rank` and `proj_type` set the shapes of its moments and projection, `min_dim` and `targets` which matrices
are projected at all, AdamW's `amsgrad` whether `max_exp_avg_sq` exists. torch's `load_state_dict` checks
none of that, and a mismatch surfaces steps later as a shape error deep in the optimiser (or not at all).
`check_state_shapes` compares, before anything is loaded, every per-parameter state tensor's key and shape
with what the optimiser would create for that parameter in its current group, and refuses clearly.

Expected shapes come from the optimiser's own `state_shapes(param, group)` method when it has one (GaLore
and Fira, optim/galore.py), else from torch's Adam/AdamW (or SGD) layout; other optimisers are not checked.
Used by `init_from` with `init_optimizer: true` (train/init_from.py) and by `--resume` (train/trainer.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from pretrainlab.errors import ConfigError

# group keys that are not hyperparameters a config sets (the trainer sets lr from base_lr every step)
_NOT_HYPERPARAMETERS = ("params", "param_names", "lr", "base_lr", "initial_lr")


def expected_state_shapes(optimizer: torch.optim.Optimizer, param: Tensor,
                          group: Mapping[str, Any]) -> dict[str, tuple[int, ...]] | None:
    """{state key: shape} of the tensors `optimizer` keeps for `param` in `group`; None when unknown."""
    own = getattr(optimizer, "state_shapes", None)
    if callable(own):
        return own(param, group)
    if isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
        shape = tuple(param.shape)
        out: dict[str, tuple[int, ...]] = {"step": (), "exp_avg": shape, "exp_avg_sq": shape}
        if group.get("amsgrad"):
            out["max_exp_avg_sq"] = shape
        return out
    if isinstance(optimizer, torch.optim.SGD):
        return {"momentum_buffer": tuple(param.shape)} if group.get("momentum") else {}
    return None


def check_state_shapes(optimizer: torch.optim.Optimizer, params: Mapping[str, Tensor],
                       state: Mapping[str, Mapping[str, Any]], *, source: str, hint: str) -> None:
    """ConfigError when a loaded per-parameter state (`state`: parameter name -> {key: value}) has a tensor
    of another shape than `optimizer` makes for that parameter, a tensor key it does not keep, or lacks one
    it keeps. `params` maps names to the optimiser's parameters; names it lacks are skipped. `source` names
    where the state comes from in the message."""
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    what = type(optimizer).__name__
    for name, entry in state.items():
        p = params.get(name)
        group = group_of.get(id(p)) if p is not None else None
        if group is None or not entry:
            continue
        want = expected_state_shapes(optimizer, p, group)
        if want is None:
            continue
        tensors = {k: v for k, v in entry.items() if isinstance(v, Tensor)}
        for key, value in tensors.items():
            if key not in want:
                raise ConfigError(
                    f"{source}: the optimiser state of {name!r} has {key!r} {tuple(value.shape)}, which this run's "
                    f"{what} does not keep for that parameter (it keeps {', '.join(sorted(want))})",
                    hint=hint)
            if tuple(value.shape) != want[key]:
                raise ConfigError(
                    f"{source}: the optimiser state {name!r} {key!r} has shape {tuple(value.shape)}, but this run's "
                    f"{what} makes it {want[key]}", hint=hint)
        lacking = [k for k in want if k not in tensors]
        if lacking:
            raise ConfigError(
                f"{source}: the optimiser state of {name!r} has no {lacking[0]!r}, which this run's {what} keeps "
                "for that parameter", hint=hint)


def hyperparameters(optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """Each group's hyperparameters (not its parameters, nor the scheduled lr), to compare before/after a load."""
    return [{k: _plain(v) for k, v in g.items() if k not in _NOT_HYPERPARAMETERS} for g in optimizer.param_groups]


def _plain(value: Any) -> Any:
    """Lists as tuples (a checkpoint gives betas back as a list), tensors as numbers."""
    if isinstance(value, (list, tuple)):
        return tuple(_plain(v) for v in value)
    if isinstance(value, Tensor) and value.numel() == 1:
        return value.item()
    return value


def changed_hyperparameters(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[str]:
    """'key: checkpoint X, config Y' for each group hyperparameter a load replaced by another value
    (`before`: the config's groups, `after`: the loaded ones; `hyperparameters` of each), once per key."""
    out: dict[str, str] = {}
    for ours, theirs in zip(before, after):
        for key in sorted(set(ours) | set(theirs)):
            if key not in out and ours.get(key) != theirs.get(key):
                out[key] = f"{key}: checkpoint {theirs.get(key)!r}, config {ours.get(key)!r}"
    return list(out.values())
