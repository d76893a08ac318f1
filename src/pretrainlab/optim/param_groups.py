"""Split a model's parameters into weight-decay and no-decay groups.

Decoupled weight decay (Loshchilov & Hutter, AdamW, arXiv:1711.05101) is by convention applied to
weight matrices only: biases, norm gains and other vectors are left alone (as in GPT-2/nanoGPT,
OLMo, torchtitan). Embedding tables are matrices and are decayed under `matrices`, matching nanoGPT.
"""

from __future__ import annotations

from typing import Any, Literal

from torch import nn

DecayMode = Literal["matrices", "all", "none"]


def param_groups(model: nn.Module, *, weight_decay: float, decay: DecayMode = "matrices") -> list[dict[str, Any]]:
    """Parameter groups for a torch optimiser; each group also carries `param_names` (torch's own key).

    `matrices`: parameters with 2 or more dimensions decay; `all`: every parameter; `none`: nothing.
    Frozen parameters (requires_grad=False) are left out; a tied weight appears once.
    """
    decayed: list[tuple[str, nn.Parameter]] = []
    plain: list[tuple[str, nn.Parameter]] = []
    for name, p in model.named_parameters():  # named_parameters() already de-duplicates tied weights
        if not p.requires_grad:
            continue
        if decay == "all" or (decay == "matrices" and p.ndim >= 2):
            decayed.append((name, p))
        else:
            plain.append((name, p))
    return [
        {"params": [p for _, p in members], "param_names": [n for n, _ in members], "weight_decay": wd}
        for members, wd in ((decayed, weight_decay), (plain, 0.0))
        if members
    ]
