"""Score finished runs on one shared held-out prepared folder, so arms trained on different data are compared
on the same text (data-filtering replications: every arm has its own training folder, and its own
validation split would differ with the filter).

The held-out folder must use the runs' tokenizer (the replications use bytes). Results are cached next to
each run (`heldout-<fingerprint>.json`), so a resumed replication does not score a run twice.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from pretrainlab.io_atomic import write_json_atomic


def heldout_metrics(run_dir: Path, heldout: Path, *, max_tokens_per_domain: int, batch_size: int = 32) -> dict[str, float]:
    """`evaluate`'s metrics (val_loss, val_bpb, per domain val_loss/<d>, val_tokens/<d>) of the run's newest
    checkpoint on `heldout`, on the CPU in fp32 with one thread (the replications' models are small, and
    on a machine shared with running arms more threads wait on each other: 15x slower here)."""
    import torch

    from pretrainlab.data.prepared import PreparedData
    from pretrainlab.eval.evaluate import evaluate
    from pretrainlab.eval.load import load_run

    data = PreparedData(heldout)
    cache = Path(run_dir) / f"heldout-{data.fingerprint[:16]}-{max_tokens_per_domain}.json"
    if cache.is_file():
        return {k: float(v) for k, v in json.loads(cache.read_text(encoding="utf-8")).items()}
    device = torch.device("cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, cfg, prepared, _ = load_run(run_dir, data=heldout, device=device)
        metrics = evaluate(model, prepared, seq_len=cfg.data.seq_len, max_tokens_per_domain=max_tokens_per_domain,
                           batch_size=batch_size, device=device, autocast_dtype=None)
    finally:
        torch.set_num_threads(threads)
    write_json_atomic(cache, metrics)
    return metrics


def mean_loss(metrics: dict[str, float], domains: list[str]) -> float:
    """The token-weighted held-out loss over `domains` (NaN when none of them was scored)."""
    tokens = [metrics.get(f"val_tokens/{d}", 0.0) for d in domains]
    if sum(tokens) <= 0:
        return math.nan
    return sum(metrics[f"val_loss/{d}"] * t for d, t in zip(domains, tokens) if t) / sum(tokens)
