"""The next-token (causal language modelling) objective: cross-entropy of each target given its prefix."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pretrainlab.data.batch import Batch
from pretrainlab.errors import ConfigError
from pretrainlab.objectives.base import OBJECTIVES, ObjectiveOutput, unwrap
from pretrainlab.objectives.fused_ce import fused_linear_cross_entropy

_OPTIONS = {"fused", "chunk_rows", "compile_head", "per_domain", "domains"}
# Below this vocabulary the logits are cheap and the chunk loop costs more than it saves
# (benchmarks/bench_step.py, preset a, vocabulary 65: plain 1.01x the reference, fused 0.99x).
FUSED_MIN_VOCAB = 1024


class NextToken:
    """Mean cross-entropy over `batch.targets`, counting only `batch.target_mask` positions when present.

    Options: `fused` (True: chunked head + loss, see fused_ce.py; False: plain
    `F.cross_entropy(model.logits(h))`; default: fused from a vocabulary of FUSED_MIN_VOCAB up), `chunk_rows` (rows per fused chunk; default from the vocabulary),
    `compile_head` (run the fused chunks through an inductor kernel; default: when the model is
    `torch.compile`d, i.e. when compilation is paid for anyway), `per_domain` (add `loss_sum/<domain>` and `tokens/<domain>` to metrics, from per-row sums),
    `domains` (names for the batch's domain indices; default the indices).
    """

    def __init__(
        self, *, fused: bool | None = None, chunk_rows: int | None = None, compile_head: bool | None = None,
        per_domain: bool = False, domains: list[str] | None = None,
    ) -> None:
        self.fused = fused
        self.compile_head = compile_head
        self.chunk_rows = chunk_rows
        self.per_domain = per_domain
        self.domains = list(domains) if domains is not None else None

    def __call__(self, model: nn.Module, batch: Batch) -> ObjectiveOutput:
        hidden = model(batch.inputs)
        B, T, d = hidden.shape
        targets = batch.targets.reshape(-1)
        mask = batch.target_mask
        flat_mask = None if mask is None else mask.reshape(-1)
        h = hidden.reshape(B * T, d)
        weight = unwrap(model).output_weight
        if self.fused if self.fused is not None else weight.shape[0] >= FUSED_MIN_VOCAB:
            compiled = hasattr(model, "_orig_mod") if self.compile_head is None else self.compile_head
            loss_sum, token_loss = fused_linear_cross_entropy(
                h, weight, targets, flat_mask, chunk_rows=self.chunk_rows, compiled=compiled
            )
        else:
            logits = unwrap(model).logits(h).float()
            token_loss = F.cross_entropy(logits, targets, reduction="none")
            if flat_mask is not None:
                token_loss = token_loss * flat_mask.to(token_loss.dtype)
            loss_sum = token_loss.sum()
        n_tokens = B * T if mask is None else int(mask.sum())
        loss = loss_sum / max(n_tokens, 1)
        metrics = self._domain_metrics(token_loss.detach().view(B, T), mask, batch.domains) if self.per_domain else {}
        return ObjectiveOutput(loss=loss, loss_sum=loss_sum, n_tokens=n_tokens, metrics=metrics)

    def _domain_metrics(
        self, token_loss: torch.Tensor, mask: torch.Tensor | None, domains: torch.Tensor
    ) -> dict[str, float]:
        row_loss = token_loss.sum(dim=1).float().cpu()
        row_tokens = (
            torch.full((token_loss.shape[0],), token_loss.shape[1]) if mask is None else mask.sum(dim=1).cpu()
        )
        out: dict[str, float] = {}
        for idx in domains.cpu().unique().tolist():
            sel = domains.cpu() == idx
            name = self.domains[idx] if self.domains is not None and idx < len(self.domains) else str(idx)
            out[f"loss_sum/{name}"] = float(row_loss[sel].sum())
            out[f"tokens/{name}"] = float(row_tokens[sel].sum())
        return out


@OBJECTIVES.register("next_token")
def next_token(options: dict[str, Any]) -> NextToken:
    unknown = sorted(set(options) - _OPTIONS)
    if unknown:
        raise ConfigError(
            f"objective_options.{unknown[0]} is not an option of objective 'next_token'",
            hint=f"valid options: {', '.join(sorted(_OPTIONS))}",
        )
    chunk = options.get("chunk_rows")
    if chunk is not None and (not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1):
        raise ConfigError(f"objective_options.chunk_rows={chunk!r} must be a positive integer")
    return NextToken(
        fused=None if options.get("fused") is None else bool(options["fused"]),
        chunk_rows=chunk,
        compile_head=None if options.get("compile_head") is None else bool(options["compile_head"]),
        per_domain=bool(options.get("per_domain", False)),
        domains=options.get("domains"),
    )
