"""Low-rank projections (linear `low_rank`): W = (alpha / r) B A, and Maestro's ordered dropout.

`LowRankLinear` replaces an attention or MLP projection (in -> out) by two factors, A (r, in) and
B (out, r), so it stores and multiplies r (in + out) numbers per token instead of in * out. This is the
pure low-rank baseline of Glentis et al. 2025 ("Scalable parameter- and memory-efficient pretraining",
both factors Kaiming-uniform) and the low-rank part of SLTrain (Han et al. 2024, B = 0 at init).
A fused projection (qkv, gate_up) is ONE matrix: `rank` applies to the fused matrix, and `rank_fraction`
is a fraction of its min(in, out).

Options (`model.linear_options`):
- `rank` (int, 1 <= rank <= min(in, out)) or `rank_fraction` (float in (0, 1], of min(in, out); the rank
  is round(fraction * min(in, out)), at least 1). Exactly one of the two.
- `alpha` (default: the rank, i.e. scale alpha / r = 1). The scale stays fixed when the rank is truncated.
- `init`: `kaiming` (default: A and B Kaiming-uniform a=sqrt(5), as nn.Linear, Glentis et al.; the model's
  init std is not used), `zero_b` (B = 0, A Kaiming-uniform: SLTrain / LoRA; the product starts at 0),
  or `normal` (A, B ~ N(0, s) with s chosen so that each entry of (alpha/r) B A has the model's init std:
  s = sqrt(std) r^(1/4) / sqrt(alpha); follows the decoder's residual scaling).
- `ordered_dropout` (bool, default false): Maestro (Horváth et al., ICML 2024), low-rank ordered
  decomposition. During training, each step one (layer, width j) pair is drawn from the list of all pairs
  (every layer with ordered dropout, every j in 1..r), walked in a shuffled order as the paper's
  single-layer sampler does, and that layer runs with only its first j components while all others run
  at full rank. The draw is a function of (run seed, step) only (`ordered_dropout_choice`), so it is the
  same for every process and a resumed run continues exactly. The trainer does it through the
  `ordered_dropout` callback, added by itself when a config turns the option on. In eval mode every layer
  uses its full rank. `od_prob` (default 1.0): the probability that a step truncates its drawn layer.
  `group_lasso()` (per layer) and `group_lasso(model)` return Maestro's hierarchical group-lasso penalty,
  which a custom objective may add to its loss (lambda 5e-3 in the paper's default); it is not added by
  itself. The paper's progressive shrinking by importance is not implemented.

`truncate_rank(model, rank_or_fraction)` keeps the first components of every LowRankLinear (Maestro
deployment; with ordered dropout the loss degrades gracefully as the rank is cut).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pretrainlab.errors import ConfigError
from pretrainlab.model.registries import LINEARS
from pretrainlab.train.callbacks import Callback, register_callback

if TYPE_CHECKING:
    from pretrainlab.train.trainer import Trainer

INITS = ("kaiming", "zero_b", "normal")
LOW_RANK_OPTIONS = ("rank", "rank_fraction", "alpha", "init", "ordered_dropout", "od_prob")


def option_error(key: str, message: str, hint: str | None = None) -> ConfigError:
    """A ConfigError naming `model.linear_options.<key>`."""
    return ConfigError(f"model.linear_options.{key}: {message}", hint=hint)


def check_known(options: dict[str, Any], known: tuple[str, ...], linear: str) -> None:
    """Refuse option names the linear `linear` does not take."""
    for key in options:
        if key not in known:
            raise option_error(key, f"unknown option for model.linear={linear!r}",
                               hint=f"options of {linear!r}: {', '.join(known)}")


def number_option(options: dict[str, Any], key: str) -> float | None:
    value = options.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise option_error(key, f"must be a number (got {value!r})")
    return float(value)


def resolve_rank(in_features: int, out_features: int, options: dict[str, Any]) -> tuple[int, float]:
    """(rank, alpha) from `rank` or `rank_fraction` and `alpha`, checked against this matrix's shape."""
    limit = min(in_features, out_features)
    rank, fraction = options.get("rank"), options.get("rank_fraction")
    if (rank is None) == (fraction is None):
        key = "rank" if rank is None else "rank_fraction"
        raise option_error(key, "give exactly one of rank (an int) and rank_fraction (of min(in, out))",
                           hint="e.g. model.linear_options={rank: 16} or {rank_fraction: 0.25}")
    if rank is not None:
        if isinstance(rank, bool) or not isinstance(rank, int):
            raise option_error("rank", f"must be an integer (got {rank!r})")
        if not 1 <= rank <= limit:
            raise option_error("rank", f"{rank} is outside 1..{limit} = min(in, out) of a {in_features} -> "
                               f"{out_features} projection", hint="use a smaller rank or rank_fraction")
        r = rank
    else:
        f = number_option(options, "rank_fraction")
        assert f is not None
        if not 0.0 < f <= 1.0:
            raise option_error("rank_fraction", f"{f} is outside (0, 1]")
        r = max(1, round(f * limit))
    alpha = number_option(options, "alpha")
    if alpha is not None and not (alpha > 0 and math.isfinite(alpha)):
        raise option_error("alpha", f"must be a positive number (got {options['alpha']!r})")
    return r, float(r) if alpha is None else alpha


def check_low_rank_options(options: dict[str, Any]) -> None:
    """The shape-free checks of `low_rank` options (names and types), done before anything is built."""
    check_known(options, LOW_RANK_OPTIONS, "low_rank")
    init = options.get("init", "kaiming")
    if init not in INITS:
        raise option_error("init", f"{init!r} is not one of {', '.join(INITS)}")
    od = options.get("ordered_dropout", False)
    if not isinstance(od, bool):
        raise option_error("ordered_dropout", f"must be true or false (got {od!r})")
    p = number_option(options, "od_prob")
    if p is not None and not 0.0 <= p <= 1.0:
        raise option_error("od_prob", f"{p} is outside [0, 1]")
    if "od_prob" in options and not od:
        raise option_error("od_prob", "only applies with ordered_dropout: true")


class LowRankLinear(nn.Module):
    """y = x A^T (alpha / r) B^T + bias, with A (r, in) and B (out, r); see the module doc."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False, *, rank: int,
                 alpha: float | None = None, init: str = "kaiming", ordered_dropout: bool = False,
                 od_prob: float = 1.0) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.rank = rank
        self.alpha = float(rank) if alpha is None else float(alpha)
        self.scale = self.alpha / rank  # fixed: truncation drops components, it does not rescale them
        self.init = init
        self.ordered_dropout = ordered_dropout
        self.od_prob = od_prob
        self.active_rank: int | None = None  # set per step by the ordered-dropout sampler (training only)
        self.A = nn.Parameter(torch.empty(rank, in_features))
        self.B = nn.Parameter(torch.empty(out_features, rank))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.init_weights((3 * in_features) ** -0.5)  # nn.Linear's std; the decoder re-initialises

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        A, B = self.A, self.B
        j = self.active_rank
        if j is not None and self.training and j < A.shape[0]:
            A, B = A[:j], B[:, :j]
        h = F.linear(x, A)
        if self.scale != 1.0:
            h = h * self.scale
        return F.linear(h, B, self.bias)

    @torch.no_grad()
    def init_weights(self, std: float) -> None:
        """`kaiming` and `zero_b` follow the papers and ignore `std`; `normal` gives each entry of the
        product the standard deviation `std` (the decoder passes init_std, or the residual-scaled std)."""
        if self.init == "normal":
            s = math.sqrt(std) * self.rank**0.25 / math.sqrt(self.alpha)
            nn.init.normal_(self.A, 0.0, s)
            nn.init.normal_(self.B, 0.0, s)
        else:
            nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
            if self.init == "zero_b":
                nn.init.zeros_(self.B)
            else:
                nn.init.kaiming_uniform_(self.B, a=math.sqrt(5))
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def effective_weight(self) -> torch.Tensor:
        """The (out, in) matrix at full rank: (alpha / r) B A."""
        return self.scale * (self.B @ self.A)

    def matmul_params(self) -> int:
        """Multiply-adds per token: r (in + out)."""
        return self.rank * (self.in_features + self.out_features)

    def group_lasso(self) -> torch.Tensor:
        """Maestro's hierarchical group lasso: sum_k sqrt(sum_{k' >= k} |a_k'|^2) + sqrt(sum_{k' >= k} |b_k'|^2)
        over the rows a_k of A and columns b_k of B; the tail components are penalised most. Multiply by
        lambda and add it to the loss. (The square root is taken of at least 1e-30: B = 0 has no NaN gradient.)"""
        a = self.A.pow(2).sum(dim=1).flip(0).cumsum(0).flip(0)
        b = self.B.pow(2).sum(dim=0).flip(0).cumsum(0).flip(0)
        return a.clamp_min(1e-30).sqrt().sum() + b.clamp_min(1e-30).sqrt().sum()

    @torch.no_grad()
    def truncate(self, rank: int) -> None:
        """Keep the first `rank` components (new, smaller parameters; an optimiser holding the old ones must
        be rebuilt). alpha becomes scale * rank so that alpha / rank, the scale, is unchanged."""
        if not 1 <= rank <= self.rank:
            raise ValueError(f"rank {rank} is outside 1..{self.rank}")
        self.A = nn.Parameter(self.A[:rank].clone())
        self.B = nn.Parameter(self.B[:, :rank].clone())
        self.rank, self.alpha = rank, self.scale * rank
        self.active_rank = None

    def extra_repr(self) -> str:
        od = ", ordered_dropout=True" if self.ordered_dropout else ""
        return (f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}, "
                f"alpha={self.alpha:g}, bias={self.bias is not None}{od}")


def _callbacks(options: dict[str, Any]) -> tuple[str, ...]:
    """The callbacks a `low_rank` model needs (the trainer adds them by itself)."""
    check_low_rank_options(options)
    return ("ordered_dropout",) if options.get("ordered_dropout", False) else ()


@LINEARS.register("low_rank")
def low_rank(in_features: int, out_features: int, bias: bool, options: dict[str, Any]) -> nn.Module:
    """A LowRankLinear from `model.linear_options` (see the module doc)."""
    check_low_rank_options(options)
    rank, alpha = resolve_rank(in_features, out_features, options)
    od_prob = number_option(options, "od_prob")
    return LowRankLinear(in_features, out_features, bias, rank=rank, alpha=alpha,
                         init=options.get("init", "kaiming"),
                         ordered_dropout=options.get("ordered_dropout", False),
                         od_prob=1.0 if od_prob is None else od_prob)


low_rank.callbacks = _callbacks  # type: ignore[attr-defined]  # read by train.callbacks.default_callbacks


# ---------------------------------------------------------------- Maestro: sampling, penalty, truncation


def ordered_dropout_layers(model: nn.Module) -> list[tuple[str, LowRankLinear]]:
    """(name, module) of every LowRankLinear with ordered dropout, in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LowRankLinear) and m.ordered_dropout]


def ordered_dropout_choice(ranks: list[int], seed: int, step: int, od_prob: float = 1.0) -> tuple[int, int] | None:
    """The (layer index, width j) that step `step` truncates, or None (no layer this step).

    Maestro's single-layer sampler: the list of all pairs (layer i, j in 1..r_i) is shuffled and walked,
    one pair per step, and reshuffled when exhausted. Here the shuffle of pass c = step // len(list) is
    drawn from (seed, c) and the od_prob coin from (seed, step): a pure function of (seed, step), so
    every process agrees and a resumed run draws what the uninterrupted one would.
    """
    total = sum(ranks)
    if total == 0:
        return None
    key = seed % 2**63
    if od_prob < 1.0 and np.random.default_rng([key, step, 1]).random() >= od_prob:
        return None
    order = np.random.default_rng([key, step // total, 0]).permutation(total)
    pick = int(order[step % total])
    layer = int(np.searchsorted(np.cumsum(ranks), pick, side="right"))
    return layer, pick - sum(ranks[:layer]) + 1


def apply_ordered_dropout(model: nn.Module, seed: int, step: int) -> tuple[str, int] | None:
    """Set this step's truncation on `model` (one layer runs with its first j components, every other at
    full rank) and return (layer name, j), or None. Call `clear_ordered_dropout` after the step."""
    layers = ordered_dropout_layers(model)
    clear_ordered_dropout(model)
    if not layers:
        return None
    choice = ordered_dropout_choice([m.rank for _, m in layers], seed, step, layers[0][1].od_prob)
    if choice is None:
        return None
    name, module = layers[choice[0]]
    module.active_rank = choice[1]
    return name, choice[1]


def clear_ordered_dropout(model: nn.Module) -> None:
    """Every LowRankLinear back to its full rank."""
    for m in model.modules():
        if isinstance(m, LowRankLinear):
            m.active_rank = None


def group_lasso(model: nn.Module) -> torch.Tensor:
    """The sum of `LowRankLinear.group_lasso()` over the model's ordered-dropout layers (Maestro's penalty;
    multiply by lambda and add it to the loss)."""
    terms = [m.group_lasso() for _, m in ordered_dropout_layers(model)]
    if not terms:
        return torch.zeros(())
    return torch.stack(terms).sum()


def truncate_rank(model: nn.Module, rank_or_fraction: int | float) -> dict[str, int]:
    """Keep the first components of every LowRankLinear in `model` (Maestro deployment, no retraining).

    An int keeps min(rank, layer rank) components per layer; a float in (0, 1] keeps ceil(f * layer rank)
    (at least 1). The product's scale alpha / r is kept, so at the full rank the forward is unchanged.
    The parameters are replaced: rebuild any optimiser afterwards. Returns {layer name: kept rank}.
    """
    if isinstance(rank_or_fraction, bool) or not isinstance(rank_or_fraction, (int, float)):
        raise ValueError(f"rank_or_fraction must be an int rank or a float fraction (got {rank_or_fraction!r})")
    if isinstance(rank_or_fraction, int) and rank_or_fraction < 1:
        raise ValueError(f"rank {rank_or_fraction} must be at least 1")
    if isinstance(rank_or_fraction, float) and not 0.0 < rank_or_fraction <= 1.0:
        raise ValueError(f"fraction {rank_or_fraction} is outside (0, 1]")
    kept: dict[str, int] = {}
    for name, m in model.named_modules():
        if isinstance(m, LowRankLinear):
            if isinstance(rank_or_fraction, int):
                r = min(rank_or_fraction, m.rank)
            else:
                r = max(1, math.ceil(rank_or_fraction * m.rank - 1e-9))
            if r < m.rank:
                m.truncate(r)
            kept[name] = r
    if not kept:
        raise ValueError("the model has no LowRankLinear layers (model.linear=low_rank)")
    return kept


@register_callback("ordered_dropout")
class OrderedDropout(Callback):
    """Maestro's per-step sampling for `low_rank` with `ordered_dropout: true` (added by itself): before
    each step one layer is truncated (`apply_ordered_dropout(model, cfg.seed, step)`), after it every layer
    is full again. Stateless: the draw depends on (seed, step) only, so resume is exact.
    Logs `od_rank`: the width j the truncated layer kept this step (-1: no layer truncated)."""

    def on_step_start(self, trainer: Trainer) -> None:
        choice = apply_ordered_dropout(trainer.module, trainer.cfg.seed, trainer.step)
        self._width = -1 if choice is None else choice[1]

    def on_step_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        clear_ordered_dropout(trainer.module)
        metrics["od_rank"] = getattr(self, "_width", -1)

    def on_train_end(self, trainer: Trainer) -> None:
        clear_ordered_dropout(trainer.module)
