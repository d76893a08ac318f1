"""Per-domain validation losses of the current model on a bounded, fixed set of tokens: the training signal
of online mixture re-weighting (Skill-it, the adaptive mixing agent).

A re-weighting callback measures every few hundred steps, so it scores only the first `tokens_per_domain`
targets of each domain's validation shard, cut into the same stride-`seq_len` windows as `evaluate` (every
target once, padding masked). The windows are built once and never change, so two measurements differ only
because the model changed. In a distributed run every rank must call it: each scores its slice of the
windows and the sums are all-reduced, so all ranks get the same losses (and so the same mixture).
Scoring runs under `torch.no_grad()` in eval mode (no dropout): it draws no random numbers, so measuring
leaves the training run's RNG streams, hence its batches and updates, untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from pretrainlab.data.prepared import PreparedData
from pretrainlab.errors import DataError
from pretrainlab.eval.evaluate import score_windows
from pretrainlab.eval.windows import EvalWindows, val_windows

if TYPE_CHECKING:
    from pretrainlab.train.distributed import DistContext
    from pretrainlab.train.trainer import Trainer


class DomainLosses:
    """Mean next-token loss (nats) per domain on the first `tokens_per_domain` targets of its `split` shard.

    `domains` defaults to all of the data's domains, in manifest order. A domain whose shard has fewer than
    two tokens (no target) is a DataError naming it. Call with a model (`measure`) or a trainer (`of`).
    """

    def __init__(
        self,
        data: PreparedData,
        *,
        seq_len: int,
        tokens_per_domain: int,
        domains: Sequence[str] | None = None,
        split: str = "val",
        batch_size: int = 16,
    ) -> None:
        if isinstance(tokens_per_domain, bool) or not isinstance(tokens_per_domain, int) or tokens_per_domain < 1:
            raise ValueError(f"tokens_per_domain={tokens_per_domain!r} must be a positive integer")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be a positive integer")
        names = list(data.domains if domains is None else domains)
        unknown = [d for d in names if d not in data.domains]
        if unknown:
            raise DataError(f"domain {unknown[0]!r} is not in {data.path}", hint=f"it has: {', '.join(data.domains)}")
        empty = [d for d in names if data.shard(d, split).n_tokens < 2]
        if empty:
            raise DataError(
                f"domain {empty[0]!r} of {data.path} has no {split} tokens to measure its loss on",
                hint="prepare the data with validation.fraction > 0 (every domain needs validation documents)",
            )
        self.domains: list[str] = names
        self.tokens_per_domain = tokens_per_domain
        self.batch_size = batch_size
        self.windows: list[EvalWindows] = [
            val_windows(data.shard(d, split), seq_len, data.pad_id, tokens_per_domain) for d in names
        ]

    @classmethod
    def for_trainer(
        cls, trainer: Trainer, tokens_per_domain: int, domains: Sequence[str] | None = None
    ) -> DomainLosses:
        """Windows of the trainer's data at its `data.seq_len`, scored `eval.batch_size` rows at a time."""
        return cls(trainer.data, seq_len=trainer.cfg.data.seq_len, tokens_per_domain=tokens_per_domain,
                   domains=domains, batch_size=trainer.cfg.eval.batch_size)

    def measure(
        self,
        model: nn.Module,
        *,
        device: torch.device,
        autocast_dtype: torch.dtype | None = None,
        ctx: DistContext | None = None,
    ) -> dict[str, float]:
        """{domain: mean loss over its scored targets}; every rank of `ctx` must call this and gets the same."""
        world = ctx.world_size if ctx is not None else 1
        rank = ctx.rank if ctx is not None else 0
        sums = score_windows(model, self.windows, rank=rank, world=world, batch_size=self.batch_size,
                             device=device, autocast_dtype=autocast_dtype)
        if world > 1:
            from pretrainlab.train.distributed import all_reduce_sum

            sums = all_reduce_sum(sums, ctx)
        sums = sums.cpu()
        return {d: float(sums[i, 0]) / float(sums[i, 1]) for i, d in enumerate(self.domains)}

    def of(self, trainer: Trainer) -> dict[str, float]:
        """The losses of the trainer's current model (on its device and autocast dtype, across its ranks)."""
        return self.measure(trainer.model, device=trainer.device, autocast_dtype=trainer.autocast_dtype,
                            ctx=trainer.ctx)


def domain_losses(trainer: Trainer, tokens_per_domain: int, domains: Sequence[str] | None = None) -> dict[str, float]:
    """One-off: the per-domain losses of the trainer's current model (builds the windows each call; keep a
    `DomainLosses` to measure repeatedly)."""
    return DomainLosses.for_trainer(trainer, tokens_per_domain, domains).of(trainer)


__all__ = ["DomainLosses", "domain_losses"]
