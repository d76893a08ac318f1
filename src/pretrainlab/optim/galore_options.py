"""GaLore / Fira options (`optim.options`) and which matrices get a low-rank projection, with what shape.

Shared by the optimiser (optim/galore.py) and the closed-form state-size accounting
(optim/state_memory.py), so both always agree on what is projected.

A matrix W (m, n) in the targeted modules (default: the transformer blocks, so embedding and head stay
plain AdamW) with min(m, n) >= `min_dim` is projected on rank r = min(`rank`, m, n) (GaLore, Zhao et al.
2024, arXiv:2403.03507, Algorithm 1). The side follows GaLore's `proj_type`:

- "left":  P (m, r), projected gradient P^T G of shape (r, n);
- "right": Q (n, r), projected gradient G Q of shape (m, r);
- "std" (default, the official code's choice): project the smaller side, i.e. right when m >= n, else
  left, so the projection matrix is (min(m, n), r) and the moments are (r, max(m, n)) or (max(m, n), r);
- "reverse_std": the opposite of "std".
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal

from pretrainlab.config import OptimConfig
from pretrainlab.errors import ConfigError

Side = Literal["left", "right"]
PROJ_TYPES = ("std", "reverse_std", "left", "right")
SCALINGS = ("column", "matrix")


@dataclass(frozen=True)
class LowRankOptions:
    """`optim.options` of `galore` and `fira` (defaults: GaLore's and Fira's published pre-training settings)."""

    rank: int = 128
    update_proj_gap: int = 200  # T: the subspace is recomputed from the gradient every T steps of a matrix
    scale: float = 0.25  # alpha: the projected-back update is multiplied by it
    proj_type: str = "std"
    min_dim: int | None = None  # None: rank + 1, i.e. matrices with min(m, n) <= rank stay plain AdamW
    targets: tuple[str, ...] = ("blocks.",)  # a parameter is targeted when its name contains one of these
    # Fira only
    residual_scale: float = 1.0  # weight of the scaled residual; 0 gives GaLore exactly
    limiter_gamma: float | None = 1.01  # norm-growth limiter; null turns it off
    scaling: str = "column"  # "column": one factor per kept row/column (official code); "matrix": one per matrix

    @property
    def smallest_dim(self) -> int:
        """Matrices whose smaller side is below this stay plain AdamW."""
        return self.rank + 1 if self.min_dim is None else self.min_dim


GALORE_KEYS = ("rank", "update_proj_gap", "scale", "proj_type", "min_dim", "targets")
FIRA_KEYS = GALORE_KEYS + ("residual_scale", "limiter_gamma", "scaling")


def _bad(key: str, value: Any, want: str) -> ConfigError:
    return ConfigError(f"optim.options.{key}={value!r}: {want}", hint=f"fix or remove optim.options.{key}")


def _positive_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _bad(key, value, "must be a positive integer")
    return value


def _number(key: str, value: Any, *, minimum: float, strict: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(key, value, "must be a number")
    if value < minimum or (strict and value == minimum):
        raise _bad(key, value, f"must be {'>' if strict else '>='} {minimum:g}")
    return float(value)


def parse_options(cfg: OptimConfig) -> LowRankOptions:
    """Validated options of `cfg` (name `galore` or `fira`); ConfigError naming `optim.options.<key>`."""
    method = cfg.name
    allowed = FIRA_KEYS if method == "fira" else GALORE_KEYS
    known = {f.name for f in fields(LowRankOptions)}
    values: dict[str, Any] = {}
    for key, value in cfg.options.items():
        if key not in allowed:
            extra = " (a fira option)" if key in known else ""
            raise ConfigError(
                f"optim.options.{key} is not an option of optim.name={method}{extra}",
                hint=f"{method} takes: {', '.join(allowed)}",
            )
        if key in ("rank", "update_proj_gap"):
            values[key] = _positive_int(key, value)
        elif key == "min_dim":
            values[key] = None if value is None else _positive_int(key, value)
        elif key == "scale":
            values[key] = _number(key, value, minimum=0.0, strict=True)
        elif key == "residual_scale":
            values[key] = _number(key, value, minimum=0.0, strict=False)
        elif key == "limiter_gamma":
            values[key] = None if value is None else _number(key, value, minimum=1.0, strict=False)
        elif key in ("proj_type", "scaling"):
            choices = PROJ_TYPES if key == "proj_type" else SCALINGS
            if value not in choices:
                raise _bad(key, value, f"must be one of {', '.join(choices)}")
            values[key] = value
        elif key == "targets":
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list | tuple) or not value or not all(isinstance(t, str) and t for t in value):
                raise _bad(key, value, "must be a non-empty list of parameter-name substrings, e.g. ['blocks.']")
            values[key] = tuple(value)
    return LowRankOptions(**values)


@dataclass(frozen=True)
class Layout:
    """How one matrix (m, n) is projected: side, rank, projection-matrix and moment shapes."""

    side: Side
    rank: int
    shape: tuple[int, int]

    @property
    def proj_shape(self) -> tuple[int, int]:
        m, n = self.shape
        return (m, self.rank) if self.side == "left" else (n, self.rank)

    @property
    def moment_shape(self) -> tuple[int, int]:
        m, n = self.shape
        return (self.rank, n) if self.side == "left" else (m, self.rank)


def side_of(shape: tuple[int, int], proj_type: str) -> Side:
    """The projected side of an (m, n) matrix under `proj_type` (see the module docstring)."""
    m, n = shape
    if proj_type in ("left", "right"):
        return proj_type  # type: ignore[return-value]
    smaller_side: Side = "right" if m >= n else "left"
    if proj_type == "std":
        return smaller_side
    return "left" if smaller_side == "right" else "right"


def layout_of(shape: tuple[int, ...], rank: int, proj_type: str) -> Layout:
    """The layout of a 2-D shape at requested `rank` (capped at min(m, n))."""
    m, n = int(shape[0]), int(shape[1])
    return Layout(side=side_of((m, n), proj_type), rank=min(rank, m, n), shape=(m, n))


def is_projected(name: str | None, shape: tuple[int, ...], opts: LowRankOptions) -> bool:
    """True when the parameter `name` of `shape` gets GaLore's projection under `opts`
    (`name` None: a parameter without a name, targeted whatever `targets` says)."""
    if len(shape) != 2 or min(shape) < opts.smallest_dim:
        return False
    return name is None or any(t in name for t in opts.targets)
