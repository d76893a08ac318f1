"""Feed-forward blocks (registry `mlp`): SwiGLU (Shazeer 2020, the Llama MLP) and GELU (GPT-2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pretrainlab.config import ModelConfig
from pretrainlab.model.registries import MLPS, MakeLinear, init_module


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)); gate and up are one fused projection (one matmul instead of two)."""

    def __init__(self, d_model: int, hidden: int, make_linear: MakeLinear, dropout: float) -> None:
        super().__init__()
        self.hidden = hidden
        self.gate_up = make_linear(d_model, 2 * hidden)
        self.down = make_linear(hidden, d_model)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        y = self.down(F.silu(gate) * up)
        return F.dropout(y, self.dropout, self.training) if self.dropout else y

    def init_weights(self, std: float, out_std: float) -> None:
        init_module(self.gate_up, std)
        init_module(self.down, out_std)


class GeluMLP(nn.Module):
    """down(gelu(up(x))) with the tanh approximation, as in GPT-2."""

    def __init__(self, d_model: int, hidden: int, make_linear: MakeLinear, dropout: float) -> None:
        super().__init__()
        self.up = make_linear(d_model, hidden)
        self.down = make_linear(hidden, d_model)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.down(F.gelu(self.up(x), approximate="tanh"))
        return F.dropout(y, self.dropout, self.training) if self.dropout else y

    def init_weights(self, std: float, out_std: float) -> None:
        init_module(self.up, std)
        init_module(self.down, out_std)


@MLPS.register("swiglu")
def swiglu(cfg: ModelConfig, make_linear: MakeLinear) -> nn.Module:
    assert cfg.d_model is not None and cfg.mlp_hidden is not None
    return SwiGLU(cfg.d_model, cfg.mlp_hidden, make_linear, cfg.dropout)


@MLPS.register("gelu")
def gelu(cfg: ModelConfig, make_linear: MakeLinear) -> nn.Module:
    assert cfg.d_model is not None and cfg.mlp_hidden is not None
    return GeluMLP(cfg.d_model, cfg.mlp_hidden, make_linear, cfg.dropout)
