"""Rotary position embeddings (Su et al. 2021, RoFormer), in the interleaved-pair layout of the original Llama.

The table holds (cos, sin) as a real float32 tensor (max_len, head_dim/2, 2) so that it survives
`.to(dtype)`, DDP buffer broadcast and meta-device construction. Eagerly the rotation is one complex
multiply (fastest on CPU); under `torch.compile` the same rotation is written in real arithmetic,
which inductor fuses into a single kernel (it does not fuse complex ops).
"""

from __future__ import annotations

import torch


def rope_table(head_dim: int, max_len: int, theta: float, device: torch.device | None = None) -> torch.Tensor:
    """(max_len, head_dim // 2, 2) float32: cos and sin of t * theta^(-2j / head_dim)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim))
    angles = torch.outer(torch.arange(max_len, dtype=torch.float32, device=device), inv_freq)
    return torch.stack((angles.cos(), angles.sin()), dim=-1)


def apply_rope(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, T, H, D) by table[:T] (T, D/2, 2); pairs (2j, 2j+1) rotate together. Returns x's dtype."""
    T, D = x.shape[1], x.shape[-1]
    tab = table[:T].view(T, 1, D // 2, 2)
    pairs = x.float().unflatten(-1, (D // 2, 2))
    if torch.compiler.is_compiling():
        cos, sin = tab[..., 0], tab[..., 1]
        a, b = pairs[..., 0], pairs[..., 1]
        out = torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1)
    else:
        out = torch.view_as_real(torch.view_as_complex(pairs) * torch.view_as_complex(tab))
    return out.flatten(-2).to(x.dtype)
