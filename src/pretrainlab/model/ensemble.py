"""Ensembles of decoders: K members' next-token predictions combined into one distribution.

Kim et al. (2025, *Pre-training under infinite compute*, arXiv 2509.14786) ensemble independently trained
members by the **mean of their logits**; the mean of the probabilities is the other common rule (a
mixture). `combine_logits` returns values whose `log_softmax` is the ensemble's log-probabilities, so
every consumer (evaluation, sampling, distillation) treats an ensemble exactly like one model.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

Combine = Literal["logits", "probs"]


def combine_logits(stacked: torch.Tensor, how: Combine = "logits") -> torch.Tensor:
    """(K, ..., V) member logits -> (..., V) ensemble logits (float32).

    "logits": the mean of the logits. "probs": log of the mean of the probabilities, i.e.
    logsumexp_k(log_softmax(logits_k)) - log K, already normalised. One member returns its own logits.
    """
    stacked = stacked.float()
    if how == "logits":
        return stacked.mean(dim=0)
    if how == "probs":
        return torch.logsumexp(torch.log_softmax(stacked, dim=-1), dim=0) - math.log(stacked.shape[0])
    raise ValueError(f"unknown ensemble combine rule {how!r}: use 'logits' or 'probs'")


class EnsembleDecoder(nn.Module):
    """K decoders that predict as one: `forward(tokens)` returns the combined logits (B, T, V), and
    `logits(x)` is the identity, so code written for a Decoder (`model.logits(model(tokens))`, e.g.
    `eval.evaluate`) scores the ensemble unchanged. Members must share the vocabulary."""

    def __init__(self, members: list[nn.Module], combine: Combine = "logits") -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        vocab = {int(m.output_weight.shape[0]) for m in members}  # type: ignore[union-attr]
        if len(vocab) != 1:
            raise ValueError(f"ensemble members have different vocabulary sizes: {sorted(vocab)}")
        self.members = nn.ModuleList(members)
        self.combine = combine

    @property
    def max_seq_len(self) -> int:
        return min(int(m.cfg.max_seq_len) for m in self.members)  # type: ignore[union-attr]

    def member_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """(K, B, T, V) float32 logits of every member."""
        return torch.stack([m.logits(m(tokens)).float() for m in self.members])  # type: ignore[operator]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return combine_logits(self.member_logits(tokens), self.combine)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return x
