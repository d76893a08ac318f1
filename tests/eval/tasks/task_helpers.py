"""Helpers of the task tests: the independent reference their scores are checked against."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from pretrainlab.model.decoder import Decoder

SEQ = 64
EOT = 256


def logprobs(model: Decoder, ids: list[int]) -> torch.Tensor:
    """log p(next | ids[:t+1]) for every t, from one explicit full forward and log-softmax: (len(ids), vocab)."""
    with torch.no_grad():
        return torch.log_softmax(model.logits(model(torch.tensor([ids]))).float(), -1)[0]


def ll(model: Decoder, context: str, continuation: str) -> tuple[float, bool]:
    """log p(continuation | context) of byte strings (end-of-text when the context is empty), and whether
    greedy decoding produces the continuation: the hand computation, independent of the engine."""
    ctx = list(context.encode()) or [EOT]
    cont = list(continuation.encode())
    lp = logprobs(model, ctx + cont[:-1])
    rows = lp[len(ctx) - 1 :]
    tgt = torch.tensor(cont)
    return float(rows.gather(-1, tgt[:, None]).sum()), bool((rows.argmax(-1) == tgt).all())


def greedy_text(model: Decoder, context: str, n: int) -> str | None:
    """The next n bytes greedy decoding writes after `context`, or None when one is not printable ASCII."""
    ids = list(context.encode())
    for _ in range(n):
        nxt = int(logprobs(model, ids)[-1].argmax())
        if not 32 <= nxt < 127:
            return None
        ids.append(nxt)
    return bytes(ids[len(context.encode()) :]).decode()


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
