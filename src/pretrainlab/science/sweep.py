"""`pretrainlab sweep`: many training runs from one sweep file, into one sweep folder.

    <out_dir>/<name>/
      sweep.yaml           the sweep file as resolved (overrides applied, base written out in full)
      points.json          [{"name", "overrides", "seed", "axes", "origin"}] in sweep order
      configs/<point>.yaml each point's full RunConfig
      runs/<point>/        ordinary run folders
      logs/<point>.log     each run's stdout and stderr (appended across attempts)
      status.json          which runs are running or failed, and the sweep's process id
      results.csv          one row per point, rewritten after every run starts or ends

Every point is checked before anything is written (see sweep_spec). Re-running the same sweep skips
finished runs (an end line in metrics.jsonl and the same config), resumes interrupted ones from their
newest checkpoint (`train --resume`) and restarts those without one; a point whose run folder holds a
different config stops the sweep before anything runs. A failed run is reported and the others go on.
SIGTERM / Ctrl-C is forwarded to the running runs as SIGTERM (they checkpoint), then the sweep stops.

The run folders are the source of truth: `load_results(sweep_dir)` rebuilds every row from them, and
results.csv is its written copy (what `pretrainlab fit` and `pretrainlab report` read).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml

from pretrainlab.config import RunConfig, dump_config, load_config
from pretrainlab.errors import ConfigError, DataError, PretrainlabError
from pretrainlab.science.executors import (
    Executor,
    LocalExecutor,
    RayExecutor,
    Task,
    available_cores,
    fair_threads,
    make_executor,
)
from pretrainlab.science.sweep_spec import Point, Sweep, SweepSpec, format_value, key_labels, resolve_sweep

SPEC_FILE = "sweep.yaml"
POINTS_FILE = "points.json"
STATUS_FILE = "status.json"
RESULTS_FILE = "results.csv"
# Settings that do not change what a run computes: a finished run with other values still counts as done.
IGNORED_KEYS = ("name", "out_dir", "overwrite", "train.threads", "train.progress")
END_FIELDS = ("params", "params_non_embedding", "avg_params", "tokens", "step", "wall_s", "loss", "val_loss", "val_bpb")
STOPPED_CODES = {130, 143, -int(signal.SIGTERM), -int(signal.SIGINT)}
State = Literal["new", "done", "resume", "restart"]


class SweepStopped(PretrainlabError):
    """The sweep was stopped by SIGTERM/SIGINT after its running runs checkpointed; re-run to continue."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(
            f"sweep stopped by {signal.Signals(signum).name}; running runs wrote a checkpoint",
            hint="run the same sweep command again to resume",
        )


@dataclass(frozen=True)
class PlannedPoint:
    """A point and what the sweep will do with it: run it new, skip it (done), resume or restart it."""

    point: Point
    state: State
    checkpoint_step: int | None = None


# --------------------------------------------------------------------------------------------
# the library API
# --------------------------------------------------------------------------------------------


def run_sweep(
    spec_or_path: str | Path | dict[str, Any] | SweepSpec,
    *,
    executor: str | Executor | None = None,
    jobs: int | None = None,
    overrides: Sequence[str] = (),
    quiet: bool = False,
) -> list[dict[str, Any]]:
    """Validate, then run every point of a sweep that is not finished yet; return `load_results`.

    `spec_or_path` is a sweep file, a mapping (with `base` a path or an inline RunConfig mapping) or a
    SweepSpec; `executor` is 'local', 'ray' or an Executor (default: the sweep's); `jobs` overrides the
    sweep's runs at once. Failed runs come back with status 'failed' (the others still run). Raises
    ConfigError/DataError before anything is written for a bad sweep, SweepStopped on SIGTERM/SIGINT.
    """
    sweep = resolve_sweep(spec_or_path, overrides)
    plan = plan_sweep(sweep)
    _refuse_if_running_elsewhere(sweep.folder)
    ex = _executor(sweep.spec, executor, jobs)
    todo = [pp for pp in plan if pp.state != "done"]
    done = len(plan) - len(todo)
    if todo:
        ex.prepare()  # e.g. connect to Ray: a missing package fails here, before anything is written
    say: Callable[[str], None] = (lambda _: None) if quiet else (lambda s: print(s, flush=True))
    write_sweep_folder(sweep, executor=ex.name, jobs=getattr(ex, "jobs", None))
    book = StatusBook(sweep.folder)
    say(f"sweep {sweep.folder}: {len(plan)} points, {done} already done, {len(todo)} to run ({ex.name} executor)")
    tasks = {pp.point.name: pp for pp in todo}
    counter = {"started": 0}

    def on_start(task: Task, threads: int) -> None:
        counter["started"] += 1
        pp = tasks[task.name]
        what = {"new": "started", "resume": f"resuming from step {pp.checkpoint_step}", "restart": "restarting"}
        say(f"[{counter['started']}/{len(todo)}] {task.name}: {what[pp.state]} ({threads} threads); log {task.log_path}")
        book.set(task.name, "running", log=str(task.log_path))
        write_results_csv(sweep.folder)

    def on_end(task: Task, code: int) -> None:
        row = _summary(sweep.folder / "runs" / task.name)
        if code == 0 and row["end"]:
            book.clear(task.name)
            end = row["end"]
            say(f"done {task.name}: val_loss {_num(end.get('val_loss'))}, val_bpb {_num(end.get('val_bpb'))}, "
                f"{_seconds(end.get('wall_s'))} s")
        elif code in STOPPED_CODES:
            book.clear(task.name)
            say(f"stopped {task.name} (exit {code}); it resumes when the sweep runs again")
        else:
            reason = "ended without an end line" if code == 0 else f"exit {code}"
            book.set(task.name, "failed", log=str(task.log_path), exit_code=code)
            say(f"FAILED {task.name} ({reason}); log: {task.log_path}\n{_tail(task.log_path)}")
        write_results_csv(sweep.folder)

    run_tasks = [_task(sweep, pp) for pp in todo]
    with _forwarding_signals(ex, say) as received:
        ex.run(run_tasks, on_start, on_end)
    rows = load_results(sweep.folder)
    write_results_csv(sweep.folder, rows)
    if not quiet:
        print_summary(rows, sweep.folder)
    if received:
        raise SweepStopped(received[0])
    return rows


def plan_sweep(sweep: Sweep) -> list[PlannedPoint]:
    """What each point needs, from its run folder; ConfigError if any run folder holds a different config."""
    from pretrainlab.train.checkpoint import checkpoint_step, list_checkpoints
    from pretrainlab.train.run_folder import CONFIG_FILE, RUN_OUTPUTS

    plan: list[PlannedPoint] = []
    conflicts: list[str] = []
    for p in sweep.points:
        run_dir = sweep.folder / "runs" / p.name
        if not any((run_dir / n).exists() for n in RUN_OUTPUTS):
            plan.append(PlannedPoint(p, "new"))
            continue
        if (run_dir / CONFIG_FILE).is_file():
            try:
                diff = config_diff(load_config(RunConfig, run_dir / CONFIG_FILE), p.config)
            except ConfigError as e:
                diff = [f"its config.yaml is not a valid run config ({e.message})"]
            if diff:
                conflicts.append(f"{p.name!r} ({run_dir}): " + "; ".join(diff[:4]) + (" ..." if len(diff) > 4 else ""))
                continue
        if _summary(run_dir)["end"]:
            plan.append(PlannedPoint(p, "done"))
            continue
        checkpoints = list_checkpoints(run_dir)
        if checkpoints:
            plan.append(PlannedPoint(p, "resume", checkpoint_step(checkpoints[-1])))
        else:
            plan.append(PlannedPoint(p, "restart"))
    if conflicts:
        raise ConfigError(
            f"sweep {sweep.folder}: {len(conflicts)} point(s) already have a run with a different config "
            f"(the sweep changed): " + " | ".join(conflicts[:3]) + (" | ..." if len(conflicts) > 3 else ""),
            hint="give the sweep a new name (name=...), or delete those run folders to redo the points",
        )
    return plan


def _refuse_if_running_elsewhere(folder: Path) -> None:
    status = _read_status(folder)
    running = [n for n, e in status["points"].items() if e.get("status") == "running"]
    if status["alive"] and status["pid"] != os.getpid() and running:
        raise ConfigError(
            f"sweep {folder} is being run by process {status['pid']} (running {', '.join(running[:3])})",
            hint=f"wait for it or stop it (kill {status['pid']}); if that process is not a sweep, delete "
            f"{folder / STATUS_FILE}",
        )


def config_diff(existing: RunConfig, wanted: RunConfig) -> list[str]:
    """`key: old -> new` for every setting that differs, leaving out IGNORED_KEYS."""
    a, b = _flatten(existing.model_dump(mode="json")), _flatten(wanted.model_dump(mode="json"))
    keys = [k for k in dict.fromkeys([*a, *b]) if k not in IGNORED_KEYS and a.get(k) != b.get(k)]
    return [f"{k}: {format_value(a.get(k))} -> {format_value(b.get(k))}" for k in keys]


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _executor(spec: SweepSpec, executor: str | Executor | None, jobs: int | None) -> Executor:
    if executor is None or isinstance(executor, str):
        return make_executor(executor or spec.executor, jobs=jobs or spec.jobs, gpus_per_run=spec.gpus_per_run)
    return executor


def _task(sweep: Sweep, pp: PlannedPoint) -> Task:
    name = pp.point.name
    return Task(
        name=name,
        config_path=sweep.folder / "configs" / f"{name}.yaml",
        log_path=sweep.folder / "logs" / f"{name}.log",
        resume=pp.state != "new",
        config_threads=pp.point.config.train.threads,
        cwd=Path.cwd(),
    )


@contextmanager
def _forwarding_signals(ex: Executor, say: Callable[[str], None]) -> Iterator[list[int]]:
    """While the runs go: SIGTERM/SIGINT ask the executor to stop its runs (they checkpoint)."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum: int, frame: Any) -> None:
        received.append(signum)
        if len(received) == 1:
            say(f"{signal.Signals(signum).name}: stopping the running runs (they write a checkpoint) ...")
        else:
            say("second signal: killing the running runs")
        ex.request_stop(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


# --------------------------------------------------------------------------------------------
# the sweep folder
# --------------------------------------------------------------------------------------------


def write_sweep_folder(sweep: Sweep, *, executor: str, jobs: int | None) -> Path:
    """sweep.yaml, points.json and configs/<point>.yaml (each written under a temporary name, then renamed)."""
    folder = sweep.folder
    for sub in ("configs", "runs", "logs"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for p in sweep.points:
        _write_atomic(folder / "configs" / f"{p.name}.yaml", dump_config(p.config))
    resolved = sweep.spec.model_dump(mode="json")
    resolved.update(base=sweep.base, executor=executor, jobs=jobs)
    _write_atomic(folder / SPEC_FILE, yaml.safe_dump(resolved, sort_keys=False))
    _write_atomic(folder / POINTS_FILE, json.dumps([p.to_json() for p in sweep.points], indent=2) + "\n")
    return folder


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class StatusBook:
    """status.json: the runs this sweep process has running or saw fail (done/pending need no entry)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / STATUS_FILE
        self.points: dict[str, dict[str, Any]] = {}
        self._write()

    def set(self, name: str, status: str, **info: Any) -> None:
        self.points[name] = {"status": status, **info}
        self._write()

    def clear(self, name: str) -> None:
        self.points.pop(name, None)
        self._write()

    def _write(self) -> None:
        _write_atomic(self.path, json.dumps({"pid": os.getpid(), "points": self.points}, indent=2) + "\n")


# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------


def load_results(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One row per point (in sweep order), rebuilt from the run folders; columns as in `result_columns`.

    `status` is done (the run's metrics.jsonl has its end line), running (this sweep's process is
    running it now), failed (its last attempt failed) or pending (not run yet, or stopped: a re-run
    resumes it). Metric columns are None until the run is done. Accepts a results.csv path too.
    """
    folder = Path(sweep_dir)
    if folder.name == RESULTS_FILE and folder.is_file():
        folder = folder.parent
    points_path = folder / POINTS_FILE
    if not points_path.is_file():
        raise DataError(
            f"{points_path} is missing: {str(folder)!r} is not a sweep folder",
            hint="pass the folder `pretrainlab sweep` wrote (out_dir/name of the sweep file)",
        )
    try:
        points = json.loads(points_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{points_path}: not valid JSON ({e})", hint="run the sweep again to rewrite it") from None
    status = _read_status(folder)
    swept = list(dict.fromkeys(k for p in points for k in p.get("axes", {})))
    summaries = [_summary(folder / "runs" / p["name"]) for p in points]
    domains = sorted({k.split("/", 1)[1] for s in summaries for k in (s["end"] or {}) if k.startswith("val_loss/")})
    domains_bpb = sorted({k.split("/", 1)[1] for s in summaries for k in (s["end"] or {}) if k.startswith("val_bpb/")})
    rows = []
    for p, s in zip(points, summaries):
        end = s["end"]
        row: dict[str, Any] = {"name": p["name"], "status": _status(p["name"], end, status), "seed": p.get("seed")}
        row.update({k: p.get("axes", {}).get(k) for k in swept})
        row.update({k: (end or {}).get(k) for k in END_FIELDS})
        if end is not None:
            row["avg_params"] = s["avg_live_params"] if s["avg_live_params"] is not None else end.get("params")
        row.update({f"val_loss/{d}": (end or {}).get(f"val_loss/{d}") for d in domains})
        row.update({f"val_bpb/{d}": (end or {}).get(f"val_bpb/{d}") for d in domains_bpb})
        row["run_dir"] = str(folder / "runs" / p["name"])
        rows.append(row)
    return rows


def _read_status(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / STATUS_FILE).read_text(encoding="utf-8"))
        return {"pid": int(data["pid"]), "alive": _pid_alive(int(data["pid"])), "points": dict(data["points"])}
    except (OSError, ValueError, KeyError, TypeError):
        return {"pid": None, "alive": False, "points": {}}


def _status(name: str, end: dict[str, Any] | None, status: dict[str, Any]) -> str:
    if end is not None:
        return "done"
    entry = status["points"].get(name, {}).get("status")
    if entry == "failed":
        return "failed"
    if entry == "running" and status["alive"]:
        return "running"
    return "pending"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _summary(run_dir: Path) -> dict[str, Any]:
    """The end line (or None) and the mean `live_params` of the train lines (or None) of a run folder."""
    path = run_dir / "metrics.jsonl"
    try:
        st = path.stat()
    except OSError:
        return {"end": None, "avg_live_params": None}
    return _summary_cached(str(path), st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=4096)
def _summary_cached(path: str, mtime_ns: int, size: int) -> dict[str, Any]:
    """Read once per file version (results.csv is rewritten after every run of a possibly long sweep)."""
    from pretrainlab.train.metrics import read_metrics

    records = read_metrics(path)
    ends = [r for r in records if r.get("event") == "end"]
    live = [float(r["live_params"]) for r in records
            if "event" not in r and "lr" in r and isinstance(r.get("live_params"), (int, float))]
    return {"end": ends[-1] if ends else None, "avg_live_params": sum(live) / len(live) if live else None}


def result_columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The results.csv columns: name, status, seed, swept keys, end-line metrics, per-domain metrics, run_dir."""
    return list(dict.fromkeys(k for r in rows for k in r)) if rows else ["name", "status", "seed", *END_FIELDS, "run_dir"]


def write_results_csv(sweep_dir: str | Path, rows: Sequence[dict[str, Any]] | None = None) -> Path:
    """Write results.csv atomically (from `load_results` unless `rows` are given)."""
    folder = Path(sweep_dir)
    rows = load_results(folder) if rows is None else rows
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=result_columns(rows), lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: _csv_value(v) for k, v in r.items()})
    path = folder / RESULTS_FILE
    _write_atomic(path, out.getvalue())
    return path


def _csv_value(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, (dict, list, bool)):
        return format_value(v)
    return v


# --------------------------------------------------------------------------------------------
# printing and the command line
# --------------------------------------------------------------------------------------------


def _num(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else ("-" if v is None else str(v))


def _seconds(v: Any) -> str:
    return f"{v:.1f}" if isinstance(v, (int, float)) else "-"


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join("    " + line for line in text[-lines:])


def _axes_text(axes: dict[str, Any]) -> str:
    labels = key_labels(list(axes))
    return ", ".join(f"{labels[k]}={format_value(v)}" for k, v in axes.items()) or "-"


def print_summary(rows: Sequence[dict[str, Any]], folder: Path) -> None:
    """A table of every point: axes, val_loss, val_bpb, wall_s, status."""
    from rich.console import Console
    from rich.table import Table

    points = {p["name"]: p for p in json.loads((folder / POINTS_FILE).read_text(encoding="utf-8"))}
    table = Table(title=f"sweep {folder}")
    for col in ("point", "axes", "seed", "val_loss", "val_bpb", "wall_s", "status"):
        table.add_column(col, justify="right" if col in ("seed", "val_loss", "val_bpb", "wall_s") else "left")
    for r in rows:
        style = {"failed": "red", "done": None}.get(r["status"], "yellow")
        table.add_row(r["name"], _axes_text(points.get(r["name"], {}).get("axes", {})), str(r["seed"]),
                      _num(r["val_loss"]), _num(r["val_bpb"]), _seconds(r["wall_s"]), r["status"], style=style)
    Console(width=max(120, Console().width)).print(table)
    print(f"results: {folder / RESULTS_FILE}", flush=True)


def print_plan(sweep: Sweep, plan: Sequence[PlannedPoint], *, executor: str, jobs: int | None) -> None:
    """The dry-run table: every point, its axes, and what running the sweep would do with it."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"sweep {sweep.folder} ({len(plan)} points; dry run: nothing is written)")
    for col in ("point", "axes", "seed", "plan"):
        table.add_column(col)
    what = {"new": "run", "done": "skip (done)", "restart": "restart (no checkpoint)"}
    for pp in plan:
        action = what.get(pp.state, f"resume from step {pp.checkpoint_step}")
        table.add_row(pp.point.name, _axes_text(pp.point.axes), str(pp.point.seed), action)
    Console(width=max(120, Console().width)).print(table)
    todo = sum(pp.state != "done" for pp in plan)
    if executor == "local":
        threads = fair_threads(available_cores(), min(jobs or 1, max(todo, 1)))
        where = f"local executor, {jobs or 1} at once, {threads} threads each (unless a point sets train.threads)"
    else:
        where = "ray executor (RAY_ADDRESS or a local Ray instance)"
    print(f"{todo} of {len(plan)} points to run; {where}", flush=True)


def sweep_from_cli(args: argparse.Namespace) -> int:
    """`pretrainlab sweep`: 0 when every run finished, 1 when some failed, 128 + signal when stopped."""
    overrides = list(args.overrides)
    if args.dry_run:
        sweep = resolve_sweep(args.config, overrides)
        plan = plan_sweep(sweep)
        ex_name = args.executor or sweep.spec.executor
        print_plan(sweep, plan, executor=ex_name, jobs=args.jobs or sweep.spec.jobs)
        return 0
    try:
        rows = run_sweep(args.config, executor=args.executor, jobs=args.jobs, overrides=overrides)
    except SweepStopped as e:
        print(f"{e.message}; {e.hint}", flush=True)
        return e.exit_code
    failed = [r["name"] for r in rows if r["status"] == "failed"]
    if failed:
        print(f"{len(failed)} run(s) failed: {', '.join(failed)} (logs in the sweep's logs/)", flush=True)
        return 1
    return 0


__all__ = [
    "LocalExecutor",
    "PlannedPoint",
    "RayExecutor",
    "SweepStopped",
    "config_diff",
    "load_results",
    "plan_sweep",
    "print_summary",
    "result_columns",
    "run_sweep",
    "sweep_from_cli",
    "write_results_csv",
]
