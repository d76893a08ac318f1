"""Sparse plus low-rank projections (linear `sparse_low_rank`): SLTrain (Han et al., NeurIPS 2024).

W = (alpha / r) B A + S, where S is non-zero only on a fixed random support of round(density * in * out)
entries. The support is drawn once, at construction, uniformly without replacement from torch's default
generator (the trainer seeds it, so it is a function of the run seed), and kept as the persistent buffer
`support` (sorted int64 indices into the flattened (out, in) matrix): it is saved in checkpoints and never
changes. The values on it (`values`) are trained, as are A and B.

Initialisation (the paper's, whatever the model's init std): B = 0, A Kaiming-uniform (a = sqrt(5)),
values U(-1/sqrt(in), 1/sqrt(in)), bias 0. So the layer starts as the sparse matrix alone.

Options (`model.linear_options`): `rank` or `rank_fraction` and `alpha` as for `low_rank` (the scale
alpha / r; default alpha = r; the paper uses e.g. r = 128, alpha = 32 at 60M), and `density` (delta, in
(0, 1], default 0.03). A fused projection (qkv, gate_up) is one matrix: rank and density apply to it.

The forward materialises the dense (out, in) matrix, (alpha / r) B A with the values scattered in by
`index_add` on its flattened view, and calls `F.linear`: pure PyTorch (the official code uses a CUDA
extension). It therefore costs a dense matmul; `matmul_params()` counts the theoretical r (in + out) + nnz.
On the meta device (model sizing) the support is not drawn; `init_weights` draws it if the module was built
there and then moved to a real device.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pretrainlab.model.low_rank import number_option, check_known, option_error, resolve_rank
from pretrainlab.model.registries import LINEARS

SPARSE_LOW_RANK_OPTIONS = ("rank", "rank_fraction", "alpha", "density")
DEFAULT_DENSITY = 0.03


def support_size(in_features: int, out_features: int, density: float) -> int:
    """The number of entries of S: round(density * in * out)."""
    return round(density * in_features * out_features)


class SparseLowRankLinear(nn.Module):
    """y = x ((alpha / r) B A + S)^T + bias with S on a fixed random support; see the module doc."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False, *, rank: int,
                 alpha: float | None = None, density: float = DEFAULT_DENSITY) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.rank = rank
        self.alpha = float(rank) if alpha is None else float(alpha)
        self.scale = self.alpha / rank
        self.density = density
        self.nnz = support_size(in_features, out_features, density)
        self.A = nn.Parameter(torch.empty(rank, in_features))
        self.B = nn.Parameter(torch.empty(out_features, rank))
        self.values = nn.Parameter(torch.empty(self.nnz))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.register_buffer("support", torch.empty(self.nnz, dtype=torch.int64))
        self._support_drawn = False
        self._draw_support()
        self.init_weights(0.0)

    @torch.no_grad()
    def _draw_support(self) -> None:
        """Draw the support from the default generator, once (not on the meta device: nothing to draw)."""
        if self._support_drawn or self.support.is_meta:
            return
        n = self.in_features * self.out_features
        chosen = torch.randperm(n, device=self.support.device)[: self.nnz]
        self.support.copy_(chosen.sort().values)
        self._support_drawn = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight(), self.bias)

    def effective_weight(self) -> torch.Tensor:
        """The (out, in) matrix (alpha / r) B A + S (differentiable in A, B and the values)."""
        w = self.B @ self.A
        if self.scale != 1.0:
            w = w * self.scale
        flat = w.reshape(-1).index_add(0, self.support, self.values.to(w.dtype))
        return flat.view(self.out_features, self.in_features)

    @torch.no_grad()
    def init_weights(self, std: float) -> None:
        """SLTrain's init (B = 0, A Kaiming-uniform a = sqrt(5), values U(+-1/sqrt(in)), bias 0); `std`,
        the model's init std, is not used. Draws the support if the module was built on the meta device."""
        self._draw_support()
        nn.init.zeros_(self.B)
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        bound = 1.0 / math.sqrt(self.in_features)
        nn.init.uniform_(self.values, -bound, bound)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def matmul_params(self) -> int:
        """Theoretical multiply-adds per token: r (in + out) + nnz (the forward actually does a dense matmul)."""
        return self.rank * (self.in_features + self.out_features) + self.nnz

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}, "
                f"alpha={self.alpha:g}, density={self.density:g}, nnz={self.nnz}, bias={self.bias is not None}")


def _density(options: dict[str, Any]) -> float:
    d = number_option(options, "density")
    if d is None:
        return DEFAULT_DENSITY
    if not 0.0 < d <= 1.0:
        raise option_error("density", f"{d} is outside (0, 1]", hint="SLTrain uses 0.03 (0.05 at 7B)")
    return d


def _callbacks(options: dict[str, Any]) -> tuple[str, ...]:
    """Shape-free checks before anything is built; sparse_low_rank needs no callback."""
    check_known(options, SPARSE_LOW_RANK_OPTIONS, "sparse_low_rank")
    _density(options)
    return ()


@LINEARS.register("sparse_low_rank")
def sparse_low_rank(in_features: int, out_features: int, bias: bool, options: dict[str, Any]) -> nn.Module:
    """A SparseLowRankLinear from `model.linear_options` (see the module doc)."""
    check_known(options, SPARSE_LOW_RANK_OPTIONS, "sparse_low_rank")
    density = _density(options)
    rank, alpha = resolve_rank(in_features, out_features, options)
    return SparseLowRankLinear(in_features, out_features, bias, rank=rank, alpha=alpha, density=density)


sparse_low_rank.callbacks = _callbacks  # type: ignore[attr-defined]  # read by train.callbacks.default_callbacks
