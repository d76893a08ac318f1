"""Validation loss (nats per token) and bits-per-byte, per domain and overall.

Bits-per-byte is the tokenizer-independent figure (as in the Pile / GPT-NeoX and Chinchilla reports):
the summed next-token losses of the scored targets, converted to bits, divided by the UTF-8 bytes those
targets stand for. Two models with different vocabularies are compared by bpb, never by loss.
"""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pretrainlab.data.prepared import PreparedData
from pretrainlab.errors import DataError
from pretrainlab.eval.windows import EvalWindows, val_windows

if TYPE_CHECKING:
    from pretrainlab.train.distributed import DistContext


def evaluate(
    model: nn.Module,
    data: PreparedData,
    *,
    seq_len: int,
    max_tokens_per_domain: int | None,
    batch_size: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    ctx: DistContext | None = None,
) -> dict[str, float]:
    """Score every validation target once; return `val_loss`, `val_bpb`, `val_tokens` and per-domain
    `val_loss/<domain>`, `val_bpb/<domain>`, `val_tokens/<domain>`.

    The overall loss is token-weighted (summed losses / summed targets); the overall bpb is summed
    losses / ln 2 / summed bytes. Runs under `torch.no_grad()` with the model in eval mode (its previous
    mode is restored). In a distributed run every rank must call this: each scores an equal-sized slice
    of the windows (short slices are padded with fully masked rows, so every rank runs the same number of
    forward passes, which FSDP needs) and the sums are all-reduced.
    """
    world = ctx.world_size if ctx is not None else 1
    rank = ctx.rank if ctx is not None else 0
    domains = [d for d in data.domains if data.shard(d, "val").n_tokens > 1]
    if not domains:
        raise DataError(
            f"{data.path} has no validation tokens to evaluate on",
            hint="prepare the data with validation.fraction > 0 (or name validation.files)",
        )
    windows = [val_windows(data.shard(d, "val"), seq_len, data.pad_id, max_tokens_per_domain) for d in domains]

    sums = score_windows(
        model, windows, rank=rank, world=world, batch_size=batch_size, device=device, autocast_dtype=autocast_dtype
    )
    if world > 1:
        from pretrainlab.train.distributed import all_reduce_sum

        sums = all_reduce_sum(sums, ctx)
    return _summarise(domains, windows, sums.cpu())


def score_windows(
    model: nn.Module,
    windows: list[EvalWindows],
    *,
    rank: int,
    world: int,
    batch_size: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
) -> torch.Tensor:
    """This rank's (summed loss, scored targets) per domain, float64 of shape (domains, 2), not reduced."""
    sums = torch.zeros(len(windows), 2, dtype=torch.float64, device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for i, win in enumerate(windows):
                tokens, mask = _rank_slice(win, rank, world)
                for start in range(0, tokens.shape[0], batch_size):
                    rows_t = torch.from_numpy(tokens[start : start + batch_size]).to(device)
                    rows_m = torch.from_numpy(mask[start : start + batch_size]).to(device)
                    with _autocast(device, autocast_dtype):
                        losses = token_losses(model, rows_t)
                    target_mask = rows_m[:, 1:]
                    sums[i, 0] += (losses.double() * target_mask).sum()
                    sums[i, 1] += target_mask.sum()
    finally:
        model.train(was_training)
    return sums


def token_losses(model: nn.Module, rows: torch.Tensor) -> torch.Tensor:
    """Per-target next-token cross-entropy (nats, float32) of (B, T + 1) token rows: shape (B, T)."""
    from pretrainlab.train.distributed import unwrap_model

    core = unwrap_model(model)  # DDP / torch.compile keep the Decoder (and its `logits`) inside
    hidden = model(rows[:, :-1])
    logits = core.logits(hidden).float()
    targets = rows[:, 1:]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none").view(
        targets.shape
    )


def _rank_slice(win: EvalWindows, rank: int, world: int) -> tuple[np.ndarray, np.ndarray]:
    """This rank's contiguous share of the windows, padded with masked rows to an equal share per rank."""
    per_rank = -(-win.rows // world)
    tokens = win.tokens[rank * per_rank : (rank + 1) * per_rank]
    mask = win.loss_mask[rank * per_rank : (rank + 1) * per_rank]
    missing = per_rank - tokens.shape[0]
    if missing > 0:
        pad_row = tokens[:1] if tokens.shape[0] else win.tokens[:1]
        tokens = np.concatenate([tokens, np.repeat(pad_row, missing, axis=0)])
        mask = np.concatenate([mask, np.zeros((missing, mask.shape[1]), dtype=bool)])
    return tokens, mask


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _summarise(domains: list[str], windows: list[EvalWindows], sums: torch.Tensor) -> dict[str, float]:
    out: dict[str, float] = {}
    total_loss = total_targets = total_bytes = 0.0
    for i, (domain, win) in enumerate(zip(domains, windows)):
        loss_sum, counted = float(sums[i, 0]), int(round(float(sums[i, 1])))
        if counted != win.n_targets:  # every target exactly once, across all ranks
            raise RuntimeError(f"evaluation scored {counted} targets of domain {domain!r}, expected {win.n_targets}")
        out[f"val_loss/{domain}"] = loss_sum / counted
        out[f"val_bpb/{domain}"] = loss_sum / math.log(2) / win.bytes_covered if win.bytes_covered else math.nan
        out[f"val_tokens/{domain}"] = float(counted)
        total_loss += loss_sum
        total_targets += counted
        total_bytes += win.bytes_covered
    out["val_loss"] = total_loss / total_targets
    out["val_bpb"] = total_loss / math.log(2) / total_bytes if total_bytes else math.nan
    out["val_tokens"] = total_targets
    return out
