"""Masked projections (linear `masked`): a fixed unstructured random mask, SPDF's sparse pretraining
(Thangarasa et al. 2023) and the layer gradual magnitude pruning works on.

`MaskedLinear` holds `weight` (out, in), the same state-dict key as nn.Linear (a dense model loads it and
it loads into a dense model), and a persistent bool buffer `mask` (True = live). Masked weights are kept
exactly 0 for ever:
- zeroed at init (and by `set_mask`);
- no gradient reaches them: the forward computes with `torch.where(mask, weight, 0)`, whose backward
  writes exact zeros at masked entries, even when the upstream gradient is not finite (so no separate
  gradient hook is needed);
- re-zeroed after every optimiser step (`post_step()`): an optimiser that only sees zero gradients leaves
  them at 0 (AdamW: zero moments, decay of 0 is 0), but one that projects gradients (GaLore) would not.
  In the trainer the `masked_linear` callback, added by itself with `model.linear=masked`, registers a
  step post-hook on the optimiser that calls `post_step()` on every MaskedLinear; a loop of your own
  calls `post_step()` (or `rezero_masked(model)`) after `optimizer.step()`.

Options (`model.linear_options`): `sparsity` (the fraction of zero entries, in [0, 1), default 0.5). The
mask has exactly round(sparsity * in * out) zeros, drawn uniformly without replacement from torch's default
generator at construction (the trainer seeds it), the same sparsity in every projection (SPDF). A fused
projection (qkv, gate_up) is one matrix. `set_mask` installs another mask (pruning: masks only shrinking is
the pruner's rule, not checked here).

Initialisation: N(0, std) from the decoder (init_std, residual-scaled for output projections), then masked;
the live weights are not rescaled. Masked matmuls are dense matmuls: no time is saved on CPU (or GPU);
`matmul_params()` counts the live weights (theoretical FLOPs).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from pretrainlab.model.low_rank import number_option, check_known, option_error
from pretrainlab.model.registries import LINEARS
from pretrainlab.train.callbacks import Callback, register_callback

if TYPE_CHECKING:
    from pretrainlab.train.trainer import Trainer

MASKED_OPTIONS = ("sparsity",)
DEFAULT_SPARSITY = 0.5


def masked_count(in_features: int, out_features: int, sparsity: float) -> int:
    """The number of masked (zero) entries: round(sparsity * in * out)."""
    return round(sparsity * in_features * out_features)


class MaskedLinear(nn.Module):
    """y = x (weight * mask)^T + bias, masked weights exactly 0; see the module doc."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False, *,
                 sparsity: float = DEFAULT_SPARSITY) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.sparsity = sparsity
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.register_buffer("mask", torch.ones(out_features, in_features, dtype=torch.bool))
        self._mask_drawn = False
        self._draw_mask()
        self.init_weights((3 * in_features) ** -0.5)  # nn.Linear's std; the decoder re-initialises

    @torch.no_grad()
    def _draw_mask(self) -> None:
        """round(sparsity * in * out) zeros at uniformly drawn places, once (not on the meta device)."""
        if self._mask_drawn or self.mask.is_meta:
            return
        n = self.in_features * self.out_features
        k = masked_count(self.in_features, self.out_features, self.sparsity)
        flat = torch.ones(n, dtype=torch.bool, device=self.mask.device)
        if k:
            flat[torch.randperm(n, device=self.mask.device)[:k]] = False
        self.mask.copy_(flat.view_as(self.mask))
        self._mask_drawn = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight(), self.bias)

    def effective_weight(self) -> torch.Tensor:
        """weight with masked entries 0 (their gradient is exactly 0)."""
        return torch.where(self.mask, self.weight, self.weight.new_zeros(()))

    @torch.no_grad()
    def init_weights(self, std: float) -> None:
        """N(0, std), masked; bias 0. Draws the mask if the module was built on the meta device."""
        self._draw_mask()
        nn.init.normal_(self.weight, 0.0, std)
        self.post_step()
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    @torch.no_grad()
    def post_step(self) -> None:
        """Re-zero the masked weights (after an optimiser step)."""
        self.weight.masked_fill_(~self.mask, 0.0)

    @torch.no_grad()
    def set_mask(self, mask: torch.Tensor) -> None:
        """Install `mask` (bool, (out, in), True = live) and zero the weights it masks."""
        if mask.shape != self.mask.shape or mask.dtype != torch.bool:
            raise ValueError(f"mask must be a bool tensor of shape {tuple(self.mask.shape)} "
                             f"(got {mask.dtype} {tuple(mask.shape)})")
        self.mask.copy_(mask)
        self._mask_drawn = True
        self.post_step()

    def live_count(self) -> int:
        """Live (unmasked) weights; on the meta device the count the configured sparsity gives."""
        if self.mask.is_meta:
            return self.in_features * self.out_features - masked_count(self.in_features, self.out_features,
                                                                       self.sparsity)
        return int(self.mask.sum())

    def matmul_params(self) -> int:
        """Theoretical multiply-adds per token: the live weights (the forward is a dense matmul)."""
        return self.live_count()

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"sparsity={self.sparsity:g}, bias={self.bias is not None}")


def rezero_masked(model: nn.Module) -> None:
    """`post_step()` on every MaskedLinear of `model`."""
    for m in model.modules():
        if isinstance(m, MaskedLinear):
            m.post_step()


def _sparsity(options: dict[str, Any]) -> float:
    s = number_option(options, "sparsity")
    if s is None:
        return DEFAULT_SPARSITY
    if not (0.0 <= s < 1.0 and math.isfinite(s)):
        raise option_error("sparsity", f"{s} is outside [0, 1)", hint="SPDF uses 0.5 or 0.75")
    return s


def _callbacks(options: dict[str, Any]) -> tuple[str, ...]:
    """Shape-free checks before anything is built, and the callback that re-zeroes after each step."""
    check_known(options, MASKED_OPTIONS, "masked")
    _sparsity(options)
    return ("masked_linear",)


@LINEARS.register("masked")
def masked(in_features: int, out_features: int, bias: bool, options: dict[str, Any]) -> nn.Module:
    """A MaskedLinear from `model.linear_options` (see the module doc)."""
    check_known(options, MASKED_OPTIONS, "masked")
    return MaskedLinear(in_features, out_features, bias, sparsity=_sparsity(options))


masked.callbacks = _callbacks  # type: ignore[attr-defined]  # read by train.callbacks.default_callbacks


@register_callback("masked_linear")
class MaskedLinearCallback(Callback):
    """Keeps masked weights exactly 0 in the trainer (added by itself with `model.linear=masked`): re-zeroes
    at train start (after a checkpoint or init_from load) and after every optimiser step, through a step
    post-hook on the optimiser, before any callback's on_step_end sees the weights."""

    def on_train_start(self, trainer: Trainer) -> None:
        model = trainer.module
        rezero_masked(model)
        self._handle = trainer.optimizer.register_step_post_hook(lambda *_: rezero_masked(model))

    def on_train_end(self, trainer: Trainer) -> None:
        handle = getattr(self, "_handle", None)
        if handle is not None:
            handle.remove()
            self._handle = None
