"""`pretrainlab eval RUN --tasks SPEC...`: score a run's checkpoint on tasks, print a table, record the result.

`load_run_tasks` reads and tokenises the tasks with the run's tokenizer before the model loads (a bad file
or option fails fast); `score_run_tasks` scores them with the loaded model and records the result:

- `<run>/tasks-step<N>.json`: one entry per task and settings (`"<task> num_fewshot=K limit=L seed=S"`),
  merged into what the file already holds, so scoring other tasks or other settings of the same checkpoint
  later keeps the earlier results (the same task with the same settings is replaced). The file is written
  atomically (a uniquely named temporary file in the run folder, fsynced, renamed over it) under a lock
  file, so two evaluations of one checkpoint at once do not lose each other's entries.
- one line `{"event": "tasks", "step": N, "tokens": T, "num_fewshot": K, "limit": L, "seed": S,
  "task/<name>/<metric>": ...}` appended to the run's metrics.jsonl, on a line of its own even when a killed
  run left a torn last line.

N and T come from the checkpoint: N from its `step-<N>` folder name, else the step its state.pt records;
T from its state.pt (the trainer's token counter), else from the run's metrics.jsonl lines of step N.
A checkpoint with neither a step-N name nor a readable state writes `tasks-<folder name>.json` and no
metrics.jsonl line. Values that are not finite are written as null (strict JSON).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pretrainlab.data.prepared import PreparedData
from pretrainlab.eval.tasks.evaluate import LoadedTask, load_tasks, print_task_table, score_tasks
from pretrainlab.eval.tasks.registry import TaskSpec
from pretrainlab.eval.tasks.scorers import Engine
from pretrainlab.io_atomic import strict_json, write_json_atomic

LOCK_FILE = ".tasks.lock"


def load_run_tasks(
    run_dir: str | Path,
    specs: Sequence[TaskSpec],
    *,
    data: str | Path | None = None,
    num_fewshot: int = 0,
    limit: int | None = None,
    seed: int = 1234,
) -> list[LoadedTask]:
    """Read and tokenise `specs` with the run's tokenizer (its prepared folder, or `data`), each request
    checked against the run's model window, without loading the model."""
    from pretrainlab.errors import DataError
    from pretrainlab.model import resolve_model_config
    from pretrainlab.train.run_folder import load_run_config

    cfg = load_run_config(Path(run_dir))
    try:
        prepared = PreparedData(data if data is not None else cfg.data.path)
    except DataError as e:
        raise DataError(
            f"the run's prepared data (its tokenizer) is unavailable: {e.message}",
            hint="pass the prepared folder with --data (it must use the run's tokenizer)",
        ) from None
    window = resolve_model_config(cfg.model, vocab_size=prepared.vocab_size, seq_len=cfg.data.seq_len).max_seq_len
    return load_tasks(specs, prepared.tokenizer, num_fewshot=num_fewshot, limit=limit, seed=seed,
                      window=int(window))  # type: ignore[arg-type]


def score_run_tasks(
    run_dir: str | Path,
    model: nn.Module,
    prepared: PreparedData,
    checkpoint: Path,
    tasks: Sequence[TaskSpec] | Sequence[LoadedTask],
    *,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    num_fewshot: int = 0,
    limit: int | None = None,
    seed: int = 1234,
) -> Path:
    """Score `tasks` (specs, or tasks `load_run_tasks` loaded) with the run's loaded model; print the table,
    merge the results into tasks-step<N>.json, append the metrics.jsonl line; return the JSON's path."""
    run_dir = Path(run_dir)
    engine = Engine(model, prepared.eot_id, device, autocast_dtype)
    if tasks and isinstance(tasks[0], TaskSpec):
        loaded = load_tasks(tasks, prepared.tokenizer, num_fewshot=num_fewshot, limit=limit,  # type: ignore[arg-type]
                            seed=seed, window=engine.window)
    else:
        loaded = list(tasks)  # type: ignore[arg-type]
    results: dict[str, float] = {}
    entries: dict[str, dict[str, Any]] = {}
    start = time.perf_counter()
    for task in loaded:
        t0 = time.perf_counter()
        scores = _score_with_progress([task], engine)
        results.update(scores)
        entries[entry_key(task)] = _entry(task, scores, time.perf_counter() - t0)
    wall = time.perf_counter() - start
    step, tokens = checkpoint_position(run_dir, checkpoint)
    out = run_dir / (f"tasks-step{step}.json" if step is not None else f"tasks-{checkpoint.name}.json")
    header = {"run": str(run_dir), "checkpoint": str(checkpoint), "step": step, "tokens": tokens}
    with _locked(run_dir / LOCK_FILE):
        merged = merge_results(out, header, entries)
        write_json_atomic(out, merged)
        if step is not None:
            from pretrainlab.train.run_folder import METRICS_FILE

            line = {"event": "tasks", "step": step, "tokens": tokens, "num_fewshot": num_fewshot, "limit": limit,
                    "seed": seed, **results}
            append_jsonl(run_dir / METRICS_FILE, line)
    print_task_table(results, title=f"{run_dir} @ {checkpoint.name}" + (f", {num_fewshot}-shot" if num_fewshot else ""))
    kept = len(merged["results"]) - len(entries)
    print(f"scored in {wall:.1f} s; wrote {out}" + (f" (with {kept} earlier result(s) kept)" if kept else ""))
    return out


def entry_key(task: LoadedTask) -> str:
    """The key of a task's result in tasks-step<N>.json: its name and the settings that change its scores."""
    p = task.prompting
    limit = p.limit if p.limit is not None else "all"
    return f"{task.spec.name} num_fewshot={p.num_fewshot} limit={limit} seed={p.seed}"


def _entry(task: LoadedTask, scores: dict[str, float], wall: float) -> dict[str, Any]:
    prefix = f"task/{task.spec.name}/"
    return {
        "task": task.spec.name,
        "num_fewshot": task.prompting.num_fewshot,
        "limit": task.prompting.limit,
        "seed": task.prompting.seed,
        "path": task.spec.path,
        "format": task.spec.format,
        "scorer": task.spec.scorer,
        "options": task.spec.options,
        "examples": task.n_examples,
        "scored": task.n_scored,
        "wall_s": round(wall, 3),
        "scored_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "metrics": {k[len(prefix) :]: v for k, v in scores.items() if k.startswith(prefix)},
    }


def merge_results(path: Path, header: dict[str, Any], entries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The file's record with `entries` merged in (a new entry replaces the one with the same key).

    A file that cannot be read as such a record is moved aside (`<name>.unreadable-<time>`), not lost.
    """
    earlier: dict[str, Any] = {}
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
            earlier = dict(old["results"])
        except (OSError, ValueError, KeyError, TypeError):
            aside = path.with_name(f"{path.name}.unreadable-{int(time.time())}")
            os.replace(path, aside)
            print(f"warning: {path} could not be read as a task results file; moved it to {aside}", file=sys.stderr)
    return {**header, "results": {**earlier, **entries}}


def checkpoint_position(run_dir: Path, checkpoint: Path) -> tuple[int | None, int | None]:
    """(step, training tokens) of a checkpoint: see the module docstring for where each comes from."""
    from pretrainlab.train.checkpoint import STATE_FILE, checkpoint_step

    counters: dict[str, Any] = {}
    try:
        # mmap: the pickled counters are read, the optimiser's tensors are not
        state = torch.load(checkpoint / STATE_FILE, map_location="cpu", weights_only=True, mmap=True)
        counters = dict(state.get("trainer") or {})
    except Exception:  # noqa: BLE001 -- an old or foreign checkpoint: fall back to the folder name and the log
        pass
    try:
        step: int | None = checkpoint_step(checkpoint)
    except Exception:  # noqa: BLE001 -- a --checkpoint folder under another name
        step = int(counters["step"]) if isinstance(counters.get("step"), int) else None
    tokens = counters.get("tokens") if counters.get("step") == step else None
    if not isinstance(tokens, int):
        tokens = _logged_tokens(run_dir, step)
    return step, tokens


def _logged_tokens(run_dir: Path, step: int | None) -> int | None:
    """Training tokens at `step` from the run's metrics.jsonl lines of that step (None if none says)."""
    if step is None:
        return None
    from pretrainlab.train.metrics import read_metrics
    from pretrainlab.train.run_folder import METRICS_FILE

    tokens = None
    for line in read_metrics(run_dir / METRICS_FILE):
        if line.get("step") == step and isinstance(line.get("tokens"), int):
            tokens = line["tokens"]
    return tokens


def _score_with_progress(loaded: Sequence[LoadedTask], engine: Engine) -> dict[str, float]:
    """score_tasks with a progress bar per task on a terminal (none when the output is a file or pipe)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True, disable=not sys.stdout.isatty()) as bar:

        def progress_of(task: LoadedTask):  # type: ignore[no-untyped-def]
            bar_id = bar.add_task(task.spec.name, total=task.n_scored)
            return lambda n: bar.advance(bar_id, n)

        return score_tasks(loaded, engine, progress=progress_of)


# ----------------------------------------------------------------------------------------------- files


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append `record` as one strict-JSON line, starting a new line first when the file's last byte is not a
    newline (a run killed mid-write leaves a torn last line, which readers skip; ours must not join it)."""
    torn = False
    if path.is_file() and path.stat().st_size > 0:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(("\n" if torn else "") + json.dumps(strict_json(record), allow_nan=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (created if needed) for a read-merge-write; no lock where fcntl is missing."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; a concurrent evaluation may then lose an entry
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
