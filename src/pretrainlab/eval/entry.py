"""`pretrainlab eval RUN`: score a run's newest checkpoint on validation data, print and save the result.

The result goes to `<run>/eval-<data-name>.json` (metrics.jsonl stays the training log).
With `--tasks SPEC...` it scores downstream tasks instead (eval/tasks/cli.py: a table,
`<run>/tasks-step<N>.json` and an `{"event": "tasks"}` line in metrics.jsonl); `--val` keeps the
validation pass too, on the same loaded model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from pretrainlab.config import RunConfig
from pretrainlab.errors import ConfigError


def eval_from_cli(
    run: str | Path,
    data: str | Path | None = None,
    checkpoint: str | Path | None = None,
    *,
    tasks: list[str] | None = None,
    num_fewshot: int = 0,
    limit: int | None = None,
    seed: int = 1234,
    val: bool = False,
) -> int:
    """Load the run, evaluate on its own prepared data (or `data`), print a table, write the JSON.

    With `tasks` (NAME=PATH, NAME or PATH words), score those tasks instead, or as well with `val`.
    """
    from pretrainlab.eval.load import load_run
    from pretrainlab.train.distributed import resolve_device

    if num_fewshot < 0:
        raise ConfigError(f"--num-fewshot must be 0 or more (got {num_fewshot})")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be 1 or more (got {limit})", hint="leave it out to score every example")
    loaded = None
    if tasks:
        from pretrainlab.eval.tasks.cli import load_run_tasks
        from pretrainlab.eval.tasks.registry import parse_task_args, resolve_tasks

        # Names, files (every line), options and lengths are checked before the model loads: the tasks are
        # read and tokenised with the run's tokenizer first.
        specs = resolve_tasks(parse_task_args(tasks))
        loaded = load_run_tasks(run, specs, data=data, num_fewshot=num_fewshot, limit=limit, seed=seed)
    device = resolve_device("auto")
    model, cfg, prepared, ckpt = load_run(run, checkpoint, data=data, device=device)
    if loaded is None or val:
        _eval_validation(run, model, cfg, prepared, ckpt, device)
    if loaded is not None:
        from pretrainlab.eval.tasks.cli import score_run_tasks

        autocast = eval_autocast_dtype(cfg, device)
        score_run_tasks(run, model, prepared, ckpt, loaded, device=device, autocast_dtype=autocast,
                        num_fewshot=num_fewshot, limit=limit, seed=seed)
    return 0


def _eval_validation(
    run: str | Path, model: Any, cfg: RunConfig, prepared: Any, ckpt: Path, device: torch.device
) -> None:
    """Validation loss and bits per byte per domain: the table and `<run>/eval-<data-name>.json`."""
    from pretrainlab.eval.evaluate import evaluate
    from pretrainlab.train.checkpoint import checkpoint_step

    metrics = evaluate(
        model,
        prepared,
        seq_len=cfg.data.seq_len,
        max_tokens_per_domain=cfg.eval.max_tokens_per_domain,
        batch_size=cfg.eval.batch_size,
        device=device,
        autocast_dtype=eval_autocast_dtype(cfg, device),
    )
    data_name = prepared.path.resolve().name
    try:
        step: int | None = checkpoint_step(ckpt)
    except Exception:  # a --checkpoint folder under another name
        step = None
    record: dict[str, Any] = {
        "run": str(run),
        "checkpoint": str(ckpt),
        "step": step,
        "data": str(prepared.path),
        "data_fingerprint": prepared.fingerprint,
        "seq_len": cfg.data.seq_len,
        "max_tokens_per_domain": cfg.eval.max_tokens_per_domain,
        "metrics": metrics,
    }
    out = Path(run) / f"eval-{data_name}.json"
    out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print_eval_table(metrics, title=f"{run} @ {ckpt.name} on {prepared.path}")
    print(f"wrote {out}")


def eval_autocast_dtype(cfg: RunConfig, device: torch.device) -> torch.dtype | None:
    """The evaluation precision of a run: bf16 autocast on CUDA unless the run trained in fp32; exact fp32 on
    the CPU. `pretrainlab eval` (validation and --tasks) and `pretrainlab lm-eval` (its default dtype) use it."""
    if device.type == "cuda" and cfg.train.precision != "fp32":
        return torch.bfloat16
    return None


def print_eval_table(metrics: dict[str, float], *, title: str | None = None) -> None:
    """A rich table: one row per domain (tokens, loss in nats, bits per byte) and the overall row."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("domain")
    table.add_column("tokens", justify="right")
    table.add_column("loss (nats)", justify="right")
    table.add_column("bits/byte", justify="right")
    domains = [k.split("/", 1)[1] for k in metrics if k.startswith("val_loss/")]
    for d in domains:
        table.add_row(
            d,
            f"{int(metrics[f'val_tokens/{d}']):,}",
            f"{metrics[f'val_loss/{d}']:.4f}",
            f"{metrics[f'val_bpb/{d}']:.4f}",
        )
    table.add_row("all", f"{int(metrics['val_tokens']):,}", f"{metrics['val_loss']:.4f}", f"{metrics['val_bpb']:.4f}",
                  style="bold")
    Console().print(table)
