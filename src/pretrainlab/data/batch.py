"""The unit the loader hands to an objective."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Batch:
    """Rows of `seq_len + 1` tokens: inputs are `tokens[:, :-1]`, targets `tokens[:, 1:]`.

    `loss_mask` (same shape as `tokens`, or None when every target counts) is True where the token
    is a real target; padding positions are False and carry no loss. `domains` holds each row's
    domain index (into the loader's domain list), for per-domain metrics.
    """

    tokens: torch.Tensor
    loss_mask: torch.Tensor | None
    domains: torch.Tensor

    @property
    def inputs(self) -> torch.Tensor:
        return self.tokens[:, :-1]

    @property
    def targets(self) -> torch.Tensor:
        return self.tokens[:, 1:]

    @property
    def target_mask(self) -> torch.Tensor | None:
        return None if self.loss_mask is None else self.loss_mask[:, 1:]

    def rows(self, start: int, stop: int) -> "Batch":
        """A micro-batch: rows [start, stop)."""
        return Batch(
            tokens=self.tokens[start:stop],
            loss_mask=None if self.loss_mask is None else self.loss_mask[start:stop],
            domains=self.domains[start:stop],
        )

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(
            tokens=self.tokens.to(device, non_blocking=True),
            loss_mask=None if self.loss_mask is None else self.loss_mask.to(device, non_blocking=True),
            domains=self.domains.to(device, non_blocking=True),
        )
