"""Output head + cross-entropy fused over chunks of rows, so the (rows, vocab) logits never materialise.

For each chunk of rows the forward pass computes logits, log-softmax, the per-token losses and, right
away, the gradient of the summed loss with respect to the hidden states and the head weight
(softmax - one_hot, masked), keeping the chunk's logits in cache; backward only scales the stored
gradients by the incoming one. This is the "fused linear cross entropy" of Liger-Kernel (Hsu et al.
2024) and Cut Cross-Entropy (Wijmans et al. 2024), written with torch ops. At a vocabulary of 8192 it
turns the memory-bound logits/softmax round trips of the plain path into cache-resident work.

Under autocast the matmuls run in the autocast dtype; log-softmax and gradient accumulation in fp32.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

CHUNK_BYTES = 8 << 20
"""Default fp32 logits per chunk (8 MiB, 256 rows at vocab 8192): cache-sized, yet big enough for fast GEMMs."""


def default_chunk_rows(vocab_size: int, compute_dtype: torch.dtype = torch.float32) -> int:
    """Rows per chunk so that one chunk's fp32 logits take about CHUNK_BYTES (at least 16 rows); twice
    that in bf16/fp16, whose faster matmuls leave the per-chunk weight-gradient accumulation to amortise."""
    rows = max(16, CHUNK_BYTES // (4 * vocab_size))
    return rows if compute_dtype == torch.float32 else 2 * rows


def _compute_dtype(t: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    dev = t.device.type
    if torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return weight.dtype


def _chunk_step(
    hc: torch.Tensor, w: torch.Tensor, tc: torch.Tensor, mc: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One chunk, written for inductor: (token losses, grad of hidden rows, this chunk's grad of weight)."""
    logp = torch.log_softmax((hc @ w.t()).float(), dim=-1)
    loss = -logp.gather(1, tc).squeeze(1)
    p = logp.exp()
    g = torch.where(torch.arange(p.shape[1], device=p.device) == tc, p - 1.0, p)
    if mc is not None:
        loss = loss * mc
        g = g * mc[:, None]
    g = g.to(hc.dtype)
    return loss, g @ w, g.t() @ hc


_compiled_chunk_step: Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None


def _get_compiled_chunk_step() -> Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    global _compiled_chunk_step
    if _compiled_chunk_step is None:
        _compiled_chunk_step = torch.compile(_chunk_step, dynamic=False)
    return _compiled_chunk_step


class _FusedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        mask: torch.Tensor | None,
        chunk_rows: int,
        compute_dtype: torch.dtype,
        compiled: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(hidden.device.type, enabled=False):
            N = hidden.shape[0]
            w = weight.to(compute_dtype)
            h = hidden.to(compute_dtype)
            token_loss = torch.empty(N, dtype=torch.float32, device=hidden.device)
            grad_h = torch.empty_like(h)
            grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
            low_precision = compute_dtype != torch.float32
            step = _get_compiled_chunk_step() if compiled else None
            for s in range(0, N, chunk_rows):
                e = min(s + chunk_rows, N)
                hc, tc = h[s:e], targets[s:e, None]
                if step is not None:
                    token_loss[s:e], grad_h[s:e], gw = step(hc, w, tc, None if mask is None else mask[s:e])
                    grad_w.add_(gw)
                    continue
                logp = torch.log_softmax(hc @ w.t(), dim=-1, dtype=torch.float32)
                loss_c = logp.gather(1, tc).neg_().squeeze(1)
                g = logp.exp_()  # softmax, in place
                g.scatter_add_(1, tc, torch.full_like(loss_c, -1.0)[:, None])
                if mask is not None:
                    mc = mask[s:e]
                    loss_c.mul_(mc)
                    g.mul_(mc[:, None])
                token_loss[s:e] = loss_c
                gc = g.to(compute_dtype) if low_precision else g
                torch.mm(gc, w, out=grad_h[s:e])
                if low_precision:
                    grad_w.add_(gc.t() @ hc)
                else:
                    grad_w.addmm_(gc.t(), hc)
        ctx.save_for_backward(grad_h, grad_w)
        ctx.hidden_dtype, ctx.weight_dtype = hidden.dtype, weight.dtype
        ctx.mark_non_differentiable(token_loss)
        return token_loss.sum(), token_loss

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad_sum: torch.Tensor, _grad_tokens: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, ...]:
        grad_h, grad_w = ctx.saved_tensors  # type: ignore[attr-defined]
        gh = (grad_h * grad_sum.to(grad_h.dtype)).to(ctx.hidden_dtype)  # type: ignore[attr-defined]
        gw = (grad_w * grad_sum).to(ctx.weight_dtype)  # type: ignore[attr-defined]
        return gh, gw, None, None, None, None, None


@torch.no_grad()
def _chunked_loss_no_grad(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None, chunk_rows: int
) -> torch.Tensor:
    out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
    for s in range(0, hidden.shape[0], chunk_rows):
        e = min(s + chunk_rows, hidden.shape[0])
        logp = torch.log_softmax(hidden[s:e] @ weight.t(), dim=-1, dtype=torch.float32)
        out[s:e] = logp.gather(1, targets[s:e, None]).neg_().squeeze(1)
    return out if mask is None else out * mask


@torch.compiler.disable
def fused_linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    chunk_rows: int | None = None,
    compiled: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy of `targets` under logits `hidden @ weight.T`, without materialising the logits.

    hidden (N, d), weight (V, d), targets (N,) int64, mask (N,) of 0/1 (or bool; None = every row counts).
    Returns (loss_sum: differentiable scalar, token_losses: (N,) float32, detached, 0 where masked).
    Equal to `F.cross_entropy(hidden @ weight.T, targets, reduction="none") * mask` (tested).
    `compiled=True` runs each chunk through a `torch.compile`d kernel (inductor fuses the softmax,
    one-hot, mask and casts around the matmuls); worth it when the model is compiled anyway.
    """
    if mask is not None:
        mask = mask.to(torch.float32)
    dtype = _compute_dtype(hidden, weight)
    rows = chunk_rows or default_chunk_rows(weight.shape[0], dtype)
    if not (torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)):
        with torch.autocast(hidden.device.type, enabled=False):
            tok = _chunked_loss_no_grad(hidden.to(dtype), weight.to(dtype), targets, mask, rows)
        return tok.sum(), tok
    loss_sum, token_loss = _FusedLinearCrossEntropy.apply(
        hidden, weight, targets, mask, rows, dtype, compiled
    )
    return loss_sum, token_loss
