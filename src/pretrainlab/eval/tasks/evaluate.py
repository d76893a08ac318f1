"""Score a model on tasks: read and tokenise once (`load_tasks`), score any number of times (`score_tasks`).

`evaluate_tasks` does both; the training callback loads at train start and scores at every evaluation.
Results are flat: `{"task/<name>/<metric>": value}`, the keys of metrics.jsonl evaluation lines.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pretrainlab.eval.tasks.formats import FORMATS
from pretrainlab.eval.tasks.prompts import Prompting, Tokenizer, prompting_from
from pretrainlab.eval.tasks.registry import TaskSpec
from pretrainlab.eval.tasks.scorers import SCORERS, Engine, LikelihoodEngine, Progress


@dataclass
class LoadedTask:
    """A task read and tokenised: what `score_tasks` needs, and how many examples it scores."""

    spec: TaskSpec
    prompting: Prompting
    encoded: Any
    n_examples: int  # examples read from the file
    n_scored: int  # examples scored (after `limit`)


def load_tasks(
    specs: Sequence[TaskSpec], tokenizer: Tokenizer, *, num_fewshot: int = 0, limit: int | None = None,
    seed: int = 1234, window: int | None = None,
) -> list[LoadedTask]:
    """Read every task's file and tokenise its requests (errors name the task's file and line).

    `num_fewshot`, `limit` and `seed` apply to every task that does not set its own (a bad value is a
    ConfigError naming the field); with `window` (the model's max_seq_len) every continuation is checked to
    fit, so a task that cannot be scored fails here rather than at its first evaluation.
    """
    out = []
    for spec in specs:
        layout = FORMATS.get(spec.format)
        prompting = prompting_from(spec.options, num_fewshot=num_fewshot, limit=limit, seed=seed, task=spec.name)
        examples = layout.read(Path(spec.path) if spec.path is not None else None, spec.options)
        shots = None
        if spec.options.get("fewshot_path") and prompting.num_fewshot:
            # the shots file is read in the task's layout; a PIQA answers file named by `labels` is the task's
            shots = layout.read(Path(str(spec.options["fewshot_path"])),
                                {k: v for k, v in spec.options.items() if k != "labels"})
        scorer = SCORERS.get(spec.scorer)
        bad = next((e for e in [*examples, *(shots or ())] if e.kind != scorer.kind), None)
        if bad is not None:
            raise TypeError(f"task {spec.name!r}: the {spec.format} reader gave a {bad.kind} example to the "
                            f"{scorer.kind} scorer")
        encoded = scorer.encode(examples, tokenizer, prompting, spec.name, shots)
        if window is not None:
            scorer.check_window(encoded, window)
        out.append(LoadedTask(spec, prompting, encoded, len(examples), prompting.n_scored(len(examples))))
    return out


def score_tasks(
    tasks: Sequence[LoadedTask],
    engine: LikelihoodEngine,
    *,
    progress: Callable[[LoadedTask], Progress | None] | None = None,
) -> dict[str, float]:
    """`{"task/<name>/<metric>": value}` of every loaded task, scored with `engine`."""
    out: dict[str, float] = {}
    for task in tasks:
        metrics = SCORERS.get(task.spec.scorer).score(task.encoded, engine, progress(task) if progress else None)
        out.update({f"task/{task.spec.name}/{k}": float(v) for k, v in metrics.items()})
    return out


def evaluate_tasks(
    model: nn.Module,
    tokenizer: Tokenizer,
    specs: list[TaskSpec],
    *,
    eot_id: int,
    device: torch.device | str,
    autocast_dtype: torch.dtype | None = None,
    num_fewshot: int = 0,
    limit: int | None = None,
    seed: int = 1234,
) -> dict[str, float]:
    """Read, tokenise and score `specs` with `model`: `{"task/<name>/<metric>": value}`.

    `eot_id` (the tokenizer's end-of-text id) stands before texts scored from nothing (minimal pairs,
    perplexity); `num_fewshot`, `limit` and `seed` apply to every task that does not set its own.
    """
    engine = Engine(model, eot_id, device, autocast_dtype)
    loaded = load_tasks(specs, tokenizer, num_fewshot=num_fewshot, limit=limit, seed=seed, window=engine.window)
    return score_tasks(loaded, engine)


def metrics_by_task(results: dict[str, float]) -> dict[str, dict[str, float]]:
    """{"task/arc/acc": v} -> {"arc": {"acc": v}}, in first-seen order."""
    out: dict[str, dict[str, float]] = {}
    for key, value in results.items():
        if key.startswith("task/"):
            name, metric = key[len("task/") :].rsplit("/", 1)
            out.setdefault(name, {})[metric] = value
    return out


def _cell(metric: str, value: float | None) -> str:
    if value is None:
        return ""
    if metric.startswith("acc"):
        return f"{100 * value:.2f}%"
    return f"{value:.4f}" if abs(value) < 1e5 else f"{value:.3e}"


def print_task_table(results: dict[str, float], *, title: str | None = None) -> None:
    """A rich table: one row per task, one column per metric (accuracies as percentages)."""
    from rich.console import Console
    from rich.table import Table

    by_task = metrics_by_task(results)
    order = ["acc", "acc_norm", "ppl", "loss", "bpb"]
    metrics = [m for m in order if any(m in v for v in by_task.values())]
    metrics += sorted({m for v in by_task.values() for m in v} - set(order) - {"n"})
    table = Table(title=title)
    table.add_column("task")
    table.add_column("n", justify="right")
    for m in metrics:
        table.add_column(m, justify="right")
    for name, values in by_task.items():
        cells = []
        for m in metrics:
            v = values.get(m)
            cells.append(_cell(m, v))
        table.add_row(name, f"{int(values.get('n', 0)):,}", *cells)
    Console().print(table)
