"""`pretrainlab eval RUN --tasks SPEC...`: score a run's checkpoint on tasks, print a table, record the result.

The result goes to `<run>/tasks-step<N>.json` (written atomically: a temporary file renamed over it) and
one line `{"event": "tasks", "step": N, "tokens": ..., "task/<name>/<metric>": ...}` is appended to the
run's metrics.jsonl, next to the evaluation lines the training callback writes.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pretrainlab.data.prepared import PreparedData
from pretrainlab.eval.tasks.evaluate import LoadedTask, load_tasks, print_task_table, score_tasks
from pretrainlab.eval.tasks.registry import TaskSpec
from pretrainlab.eval.tasks.scorers import Engine


def score_run_tasks(
    run_dir: str | Path,
    model: nn.Module,
    prepared: PreparedData,
    checkpoint: Path,
    specs: Sequence[TaskSpec],
    *,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    num_fewshot: int = 0,
    limit: int | None = None,
    seed: int = 1234,
) -> Path:
    """Score `specs` with the run's loaded model; print the table, write tasks-step<N>.json and the
    metrics.jsonl line; return the JSON's path."""
    from pretrainlab.train.checkpoint import checkpoint_step

    run_dir = Path(run_dir)
    loaded = load_tasks(specs, prepared.tokenizer, num_fewshot=num_fewshot, limit=limit, seed=seed)
    engine = Engine(model, prepared.eot_id, device, autocast_dtype)
    start = time.perf_counter()
    results = _score_with_progress(loaded, engine)
    wall = time.perf_counter() - start
    try:
        step: int | None = checkpoint_step(checkpoint)
    except Exception:  # a --checkpoint folder under another name
        step = None
    tokens = _tokens_at(run_dir, step)
    record: dict[str, Any] = {
        "run": str(run_dir),
        "checkpoint": str(checkpoint),
        "step": step,
        "tokens": tokens,
        "num_fewshot": num_fewshot,
        "limit": limit,
        "seed": seed,
        "wall_s": round(wall, 3),
        "tasks": {
            t.spec.name: {"path": t.spec.path, "format": t.spec.format, "scorer": t.spec.scorer,
                          "options": t.spec.options, "examples": t.n_examples, "scored": t.n_scored}
            for t in loaded
        },
        "metrics": results,
    }
    out = run_dir / (f"tasks-step{step}.json" if step is not None else f"tasks-{checkpoint.name}.json")
    _write_atomic(out, json.dumps(record, indent=2) + "\n")
    if step is not None:
        from pretrainlab.train.metrics import MetricsWriter
        from pretrainlab.train.run_folder import METRICS_FILE

        writer = MetricsWriter(run_dir / METRICS_FILE)
        writer.write({"event": "tasks", "step": step, "tokens": tokens, **results})
        writer.close()
    print_task_table(results, title=f"{run_dir} @ {checkpoint.name}" + (f", {num_fewshot}-shot" if num_fewshot else ""))
    print(f"scored in {wall:.1f} s; wrote {out}")
    return out


def _score_with_progress(loaded: Sequence[LoadedTask], engine: Engine) -> dict[str, float]:
    """score_tasks with a progress bar per task on a terminal (none when the output is a file or pipe)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True, disable=not sys.stdout.isatty()) as bar:

        def progress_of(task: LoadedTask):  # type: ignore[no-untyped-def]
            bar_id = bar.add_task(task.spec.name, total=task.n_scored)
            return lambda n: bar.advance(bar_id, n)

        return score_tasks(loaded, engine, progress=progress_of)


def _tokens_at(run_dir: Path, step: int | None) -> int | None:
    """Training tokens at `step`, from the run's metrics.jsonl lines of that step (None if none says)."""
    if step is None:
        return None
    from pretrainlab.train.metrics import read_metrics
    from pretrainlab.train.run_folder import METRICS_FILE

    tokens = None
    for line in read_metrics(run_dir / METRICS_FILE):
        if line.get("step") == step and isinstance(line.get("tokens"), int):
            tokens = line["tokens"]
    return tokens


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
