"""Low-rank training tricks (Glentis et al. 2025, *Scalable parameter- and memory-efficient pretraining for
LLMs: recent algorithmic advances and benchmarking*) as two callbacks for `model.linear=low_rank` (and
`sparse_low_rank`, whose low-rank part they treat alike):

- `refactorize` (options `every`, default 200): every `every` optimiser steps, each layer's factors are
  re-balanced by an SVD of their product, B A = U S V^T, B <- U S^(1/2), A <- S^(1/2) V^T. The product, hence
  the layer's function (alpha/r) B A, is unchanged (up to float rounding), the scale alpha/r is untouched, and
  afterwards ||B||_F = ||A||_F = sqrt(sum S) with orthogonal columns of B and rows of A. The SVD is that of
  the small r x r core of two QR factorisations (B = Q_B R_B, A^T = Q_A R_A; B A = Q_B (R_B R_A^T) Q_A^T), in
  float64: O((in + out) r^2) per layer, never the dense (out, in) matrix. A layer whose product is exactly 0
  (e.g. B = 0 before its first update, init zero_b) is left alone: its factors would both become 0 and never
  train again. Components with tiny singular values get tiny factors on both sides (that is the trick).
  Adam's moments of A and B are NOT touched: after a refactorisation they describe the old factors, which is
  what `momentum_reset` (at the same `every`) is for; the paper uses the two together.
- `momentum_reset` (options `every`, default 200; `second`, default true; `scope`: `low_rank` (default: the
  factors A and B of every low-rank layer) or `all` (every parameter); `all: true` is a synonym of
  `scope: all`; `reset_step`, default false): every `every` optimiser steps, zero the optimiser's first
  moment `exp_avg` and, with `second`, the second moment `exp_avg_sq` (and `max_exp_avg_sq` under amsgrad)
  of those parameters. Works with every optimiser that keeps AdamW's state names (adamw, galore, fira; for
  GaLore the moments live in the projected space). The step count (Adam's bias correction) is kept unless
  `reset_step`: with it kept, the first update after a reset is a damped one (m/sqrt(v) about
  (1 - beta1)/sqrt(1 - beta2) of a unit step) that grows back over ~1/(1 - beta1) steps; with `reset_step`
  the optimiser restarts exactly as a fresh one would (the public code's LORO optimiser re-creates AdamW).
  Checked when training starts: an optimiser that keeps no `exp_avg` (or, with `second`, no `exp_avg_sq`)
  for any of the chosen parameters is a ConfigError naming `callbacks.<i>.options.scope` (or `.second`); one
  that keeps them for only some gets one warning naming the others.

Both run in `on_step_end` of the steps that are multiples of `every` (after the update, before that step's
checkpoint), so the events derive from `trainer.step` alone: they keep no state and a resumed run repeats
them exactly. Logged on those steps: `refactorized` (layers) and `momentum_reset` (parameters). FSDP (sharded
factors) is refused; DDP replicas do the same deterministic computation. The paper's period T and which
moments it resets are not stated (papers-model.md section 2): both are options here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from pretrainlab.errors import ConfigError
from pretrainlab.train.callbacks import Callback, register_callback

if TYPE_CHECKING:
    from pretrainlab.train.trainer import Trainer

SCOPES = ("low_rank", "all")
MOMENTS_FIRST = ("exp_avg",)
MOMENTS_SECOND = ("exp_avg_sq", "max_exp_avg_sq")


def low_rank_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every LowRankLinear and SparseLowRankLinear of `model`, in module order."""
    from pretrainlab.model.low_rank import LowRankLinear
    from pretrainlab.model.sparse_low_rank import SparseLowRankLinear

    return [(n, m) for n, m in model.named_modules() if isinstance(m, (LowRankLinear, SparseLowRankLinear))]


@torch.no_grad()
def refactorize_factors(B: torch.Tensor, A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Balanced factors (U S^(1/2), S^(1/2) V^T) of the product B A (B (out, r), A (r, in)), in their dtype;
    None when the product is 0. Exact up to rounding: computed in float64 through QR of both factors."""
    b, a = B.detach().to(torch.float64), A.detach().to(torch.float64)
    q_b, r_b = torch.linalg.qr(b)  # (out, k), (k, r)
    q_a, r_a = torch.linalg.qr(a.T)  # (in, k'), (k', r)
    u, s, vh = torch.linalg.svd(r_b @ r_a.T)  # the core (k, k')
    if s.numel() == 0 or float(s[0]) == 0.0:
        return None
    m = s.numel()  # min(out, in, r) = r for a valid layer; any further components stay 0
    root = s.sqrt()
    new_b = torch.zeros_like(b)
    new_a = torch.zeros_like(a)
    new_b[:, :m] = (q_b @ u[:, :m]) * root
    new_a[:m] = root[:, None] * (vh[:m] @ q_a.T)
    return new_b.to(B.dtype), new_a.to(A.dtype)


@torch.no_grad()
def refactorize(model: nn.Module) -> int:
    """Re-balance every low-rank layer of `model` in place (see the module doc); returns how many changed."""
    done = 0
    for _, m in low_rank_layers(model):
        new = refactorize_factors(m.B, m.A)
        if new is None:
            continue
        m.B.copy_(new[0])
        m.A.copy_(new[1])
        done += 1
    return done


def _every(every: Any) -> int:
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"every={every!r} must be a positive number of optimiser steps")
    return every


def _check_model(trainer: Trainer, callback: str, *, need_low_rank: bool) -> None:
    if trainer.cfg.parallel == "fsdp":
        raise ConfigError(f"callback {callback!r} does not work with parallel=fsdp (sharded factors)",
                          hint="use parallel=ddp or none")
    if need_low_rank and not low_rank_layers(trainer.module):
        raise ConfigError(
            f"callback {callback!r}: the model has no low-rank layers (model.linear={trainer.cfg.model.linear!r})",
            hint="use model.linear=low_rank (or sparse_low_rank)"
            + (", or momentum_reset with options {scope: all}" if callback == "momentum_reset" else ""),
        )


@register_callback("refactorize")
class Refactorize(Callback):
    """Every `every` optimiser steps, re-balance each low-rank layer's factors by the SVD of their product
    (Glentis et al. 2025); the function is unchanged. Stateless (see the module doc)."""

    def __init__(self, every: int = 200) -> None:
        self.every = _every(every)

    def on_train_start(self, trainer: Trainer) -> None:
        _check_model(trainer, self.name, need_low_rank=True)

    def on_step_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        if trainer.step % self.every == 0:
            metrics["refactorized"] = refactorize(trainer.module)


@register_callback("momentum_reset")
class MomentumReset(Callback):
    """Every `every` optimiser steps, zero the optimiser's `exp_avg` (and with `second` its `exp_avg_sq`) of the
    low-rank factors (`scope: low_rank`) or of every parameter (`scope: all`); see the module doc."""

    def __init__(self, every: int = 200, second: bool = True, scope: str = "low_rank", all: bool | None = None,
                 reset_step: bool = False) -> None:
        self.every = _every(every)
        for key, value in (("second", second), ("reset_step", reset_step)):
            if not isinstance(value, bool):
                raise ValueError(f"{key}={value!r} must be true or false")
        if scope not in SCOPES:
            raise ValueError(f"scope={scope!r} must be one of {', '.join(SCOPES)}")
        if all is not None:  # the contract's spelling: all: true is scope: all
            if not isinstance(all, bool):
                raise ValueError(f"all={all!r} must be true or false")
            if not all and scope == "all":
                raise ValueError("scope=all and all=false disagree: give one of them")
            scope = "all" if all else scope
        self.second, self.scope, self.reset_step = second, scope, reset_step

    def parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """The parameters whose moments are reset."""
        if self.scope == "all":
            return [p for p in model.parameters() if p.requires_grad]
        return [p for _, m in low_rank_layers(model) for p in (m.A, m.B)]

    def on_train_start(self, trainer: Trainer) -> None:
        _check_model(trainer, self.name, need_low_rank=self.scope == "low_rank")
        self.check_optimizer(trainer)

    def check_optimizer(self, trainer: Trainer) -> None:
        """Before the first step: the optimiser must keep `exp_avg` (and `exp_avg_sq` with `second`) for the
        chosen parameters. ConfigError naming the option when none of them has it; one warning listing
        those without it when only some have it (their moments are not reset). An optimiser whose state
        layout is unknown before its first step (no `state_shapes`, not torch Adam/AdamW) is checked at the
        first reset instead (`reset_moments`)."""
        from pretrainlab.optim.state_check import expected_state_shapes

        optimizer = trainer.optimizer
        group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
        names = {id(p): n for n, p in trainer.module.named_parameters()}
        chosen = self.parameters(trainer.module)
        lacking: dict[str, list[str]] = {}  # name -> the moments it lacks
        for p in chosen:
            group = group_of.get(id(p))
            keys = None if group is None else expected_state_shapes(optimizer, p, group)
            if group is not None and keys is None:
                if not optimizer.state.get(p):
                    return  # layout unknown until a step: reset_moments checks at the first reset
                keys = dict(optimizer.state[p])
            missing = [k for k in ("exp_avg", "exp_avg_sq")[: 2 if self.second else 1] if keys is None or k not in keys]
            if missing:
                lacking[names.get(id(p), "?")] = missing if group is not None else ["(not optimised)"]
        if not lacking:
            return
        field = self._field(trainer)
        what = f"optim.name={trainer.cfg.optim.name} ({type(optimizer).__name__})"
        if len(lacking) == len(chosen):
            first = next(iter(lacking.values()))
            option, hint = ((f"{field}.options.second", "set second: false (reset the first moment only), or use "
                             "optim.name=adamw, galore or fira") if first == ["exp_avg_sq"] else
                            (f"{field}.options.scope", "use momentum_reset with optim.name=adamw, galore or fira"))
            raise ConfigError(
                f"{option}: momentum_reset resets {' and '.join(first)} of the chosen parameters (scope="
                f"{self.scope}, second={str(self.second).lower()}), which {what} does not keep for any of them",
                hint=hint)
        listed = ", ".join(f"{n} ({'/'.join(m)})" for n, m in list(lacking.items())[:3])
        more = f" and {len(lacking) - 3} more" if len(lacking) > 3 else ""
        trainer._say(f"warning: {field} (momentum_reset, scope={self.scope}): {len(lacking)} of {len(chosen)} chosen "
                     f"parameters have no such moment under {what}, so theirs are not reset: {listed}{more}")

    def _field(self, trainer: Trainer) -> str:
        index = [i for i, c in enumerate(trainer.cfg.callbacks) if c.name == self.name]
        return f"callbacks.{index[0]}" if index else f"callback {self.name!r}"

    def on_step_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        if trainer.step % self.every == 0:
            metrics["momentum_reset"] = reset_moments(trainer.optimizer, self.parameters(trainer.module),
                                                      second=self.second, step=self.reset_step)


@torch.no_grad()
def reset_moments(optimizer: torch.optim.Optimizer, params: list[nn.Parameter], *, second: bool = True,
                  step: bool = False) -> int:
    """Zero `exp_avg` (and `exp_avg_sq`, `max_exp_avg_sq` with `second`; the step count with `step`) in the
    optimiser state of `params`; returns how many parameters had a first moment to reset. ConfigError when the
    optimiser keeps state for them but no `exp_avg` (it is not Adam-like)."""
    names = MOMENTS_FIRST + (MOMENTS_SECOND if second else ())
    done = 0
    unknown = None
    for p in params:
        state = optimizer.state.get(p)
        if not state:
            continue  # no step taken for it yet (or a stateless optimiser): nothing to reset
        if "exp_avg" not in state:
            unknown = sorted(state)
            continue
        for key in names:
            t = state.get(key)
            if isinstance(t, torch.Tensor):
                t.zero_()
        if step and "step" in state:
            if isinstance(state["step"], torch.Tensor):
                state["step"].zero_()
            else:
                state["step"] = 0
        done += 1
    if unknown is not None and done == 0:
        raise ConfigError(
            f"callback 'momentum_reset': the optimiser {type(optimizer).__name__} keeps no exp_avg (its state "
            f"has {', '.join(unknown)})",
            hint="use it with optim.name=adamw, galore or fira",
        )
    return done
