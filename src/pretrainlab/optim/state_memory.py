"""Closed-form optimiser-state size of a model under an `OptimConfig`, without building the optimiser.

Works on a model built on the meta device (only shapes are read), so `pretrainlab memory` can size a
1B-parameter config without allocating it. Counted over the parameters the optimiser would see
(`param_groups`: trainable, tied weights once), in bytes:

- adamw: 2 moments per parameter tensor, same shape as it: 2 * numel * dtype_bytes;
- galore: projected matrices (optim/galore_options.py decides which) hold two (r, n) or (m, r)
  moments and one (m, r) or (n, r) projection, i.e. with proj_type std r * (2 * max(m, n) + min(m, n))
  elements instead of 2 m n; every other parameter as adamw;
- fira: galore plus one fp32 scalar per projected matrix (the limiter's previous residual norm).

Every parameter tensor also holds a 4-byte fp32 `step` scalar (torch.optim.AdamW keeps one too), so
the figure equals the sum of the real state tensors' bytes exactly (tests/optim/test_galore.py).
`dtype_bytes` is the moments' (and projections') element size: the parameters' dtype, 4 for fp32.

An optimiser registered by a recipe adds its own formula with `register_state_bytes(name)`; one
without a formula is estimated as adamw's 2 x trainable parameters, with a note saying so.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from pretrainlab.config import OptimConfig
from pretrainlab.optim.galore_options import is_projected, layout_of, parse_options
from pretrainlab.optim.param_groups import param_groups
from pretrainlab.optim.registry import check_optimizer
from pretrainlab.registry import Registry

STEP_BYTES = 4  # one fp32 step counter per parameter tensor


@dataclass(frozen=True)
class StateBytes:
    """Optimiser-state bytes by kind; `note` says when the figure is an estimate."""

    moments: int
    projections: int = 0
    scalars: int = 0
    note: str | None = None

    @property
    def total(self) -> int:
        return self.moments + self.projections + self.scalars

    def as_dict(self) -> dict[str, int | str | None]:
        return {"moments": self.moments, "projections": self.projections, "scalars": self.scalars,
                "total": self.total, "note": self.note}


StateBytesFn = Callable[[list[tuple[str, tuple[int, ...]]], OptimConfig, int], StateBytes]
STATE_BYTES: Registry[StateBytesFn] = Registry("optimiser state size")


def register_state_bytes(name: str) -> Callable[[StateBytesFn], StateBytesFn]:
    """Decorator: the closed-form state size of optimiser `name`, fn(named_shapes, cfg, dtype_bytes)."""
    return STATE_BYTES.register(name)


def _trainable_shapes(model: nn.Module, cfg: OptimConfig) -> list[tuple[str, tuple[int, ...]]]:
    groups = param_groups(model, weight_decay=cfg.weight_decay, decay=cfg.decay)
    return [(n, tuple(p.shape)) for g in groups for n, p in zip(g["param_names"], g["params"], strict=True)]


def _numel(shape: tuple[int, ...]) -> int:
    out = 1
    for s in shape:
        out *= int(s)
    return out


@register_state_bytes("adamw")
def _adamw(shapes: list[tuple[str, tuple[int, ...]]], cfg: OptimConfig, dtype_bytes: int) -> StateBytes:
    return StateBytes(
        moments=sum(2 * _numel(s) for _, s in shapes) * dtype_bytes, scalars=STEP_BYTES * len(shapes)
    )


def _lowrank(shapes: list[tuple[str, tuple[int, ...]]], cfg: OptimConfig, dtype_bytes: int) -> StateBytes:
    opts = parse_options(cfg)
    moments = projections = 0
    scalars = STEP_BYTES * len(shapes)
    for name, shape in shapes:
        if not is_projected(name, shape, opts):
            moments += 2 * _numel(shape)
            continue
        layout = layout_of(shape, opts.rank, opts.proj_type)
        moments += 2 * _numel(layout.moment_shape)
        projections += _numel(layout.proj_shape)
        if cfg.name == "fira":
            scalars += 4  # residual_norm, fp32
    return StateBytes(moments=moments * dtype_bytes, projections=projections * dtype_bytes, scalars=scalars)


register_state_bytes("galore")(_lowrank)
register_state_bytes("fira")(_lowrank)


def optimizer_state_breakdown(model: nn.Module, cfg: OptimConfig, dtype_bytes: int = 4) -> StateBytes:
    """Optimiser-state bytes of `model` under `cfg`, by kind (moments, projections, scalars).

    ConfigError for an unknown `optim.name` or bad `optim.options`; an optimiser without a registered
    formula is estimated as adamw (2 x trainable parameters) with a `note` and a warning.
    """
    check_optimizer(cfg)
    shapes = _trainable_shapes(model, cfg)
    if cfg.name in STATE_BYTES:
        return STATE_BYTES.get(cfg.name)(shapes, cfg, dtype_bytes)
    note = (
        f"optim.name={cfg.name} has no state-size formula (optim/state_memory.py register_state_bytes); "
        "estimated as AdamW's two moments per parameter"
    )
    warnings.warn(note, stacklevel=2)
    base = _adamw(shapes, cfg, dtype_bytes)
    return StateBytes(moments=base.moments, scalars=base.scalars, note=note)


def optimizer_state_bytes(model: nn.Module, cfg: OptimConfig, dtype_bytes: int = 4) -> int:
    """Total optimiser-state bytes of `model` under `cfg` (closed form; meta-device models welcome)."""
    return optimizer_state_breakdown(model, cfg, dtype_bytes).total
