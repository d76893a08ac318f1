"""`pretrainlab sweep`: many training runs from one sweep file, into one sweep folder.

    <out_dir>/<name>/
      sweep.yaml           the sweep file as resolved (overrides applied, base written out in full)
      points.json          [{"name", "overrides", "seed", "axes", "origin"}] in sweep order
      configs/<point>.yaml each point's full RunConfig
      runs/<point>/        ordinary run folders
      logs/<point>.log     each run's stdout and stderr (appended across attempts)
      status.json          which runs are running (with their process ids) or failed, and the sweep's process id
      results.csv          one row per point, rewritten after every run starts or ends

Every point is checked before anything is written (see sweep_spec). Re-running the same sweep skips
finished runs (an end line in metrics.jsonl and the same config), resumes interrupted ones from their
newest checkpoint (`train --resume`) and restarts those without one; a point whose run folder holds a
different config stops the sweep before anything runs, and so does a point whose run, started by an
earlier sweep process, is still training (its process id is in status.json). A failed run is reported
and the others go on. SIGTERM, Ctrl-C (SIGINT) and SIGHUP (the terminal closed) are forwarded to the
running runs as SIGTERM (they checkpoint), then the sweep stops; a second one kills them. A run that
exits by a signal the sweep did not forward counts as failed.

The run folders are the source of truth: `load_results(sweep_dir)` rebuilds every row from them, and
results.csv is its written copy (what `pretrainlab fit` and `pretrainlab report` read).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
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
    check_jobs,
    fair_threads,
    make_executor,
    pid_alive,
    process_args,
)
from pretrainlab.science.sweep_spec import Point, Sweep, SweepSpec, format_value, key_labels, resolve_sweep

SPEC_FILE = "sweep.yaml"
POINTS_FILE = "points.json"
STATUS_FILE = "status.json"
RESULTS_FILE = "results.csv"
# Settings that do not change what a run computes: a finished run with other values still counts as done.
IGNORED_KEYS = ("name", "out_dir", "overwrite", "train.threads", "train.progress")
END_FIELDS = ("params", "params_non_embedding", "avg_params", "tokens", "step", "wall_s", "loss", "val_loss", "val_bpb")
# The results columns after the swept keys: the end-line fields with data_tokens (the data's size) after tokens.
RESULT_FIELDS = (*END_FIELDS[:4], "data_tokens", *END_FIELDS[4:])
# How a run the sweep asked to stop ends: 128 + SIGTERM/SIGINT from its own handler, or killed by a signal
# (SIGKILL after a second request). Only counted as "stopped" when the sweep itself received a stop signal.
STOPPED_CODES = {130, 143, 137, -int(signal.SIGTERM), -int(signal.SIGINT), -int(signal.SIGKILL)}
STOP_SIGNALS = tuple(s for s in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGHUP", None)) if s is not None)
_POINT_NAME = re.compile(r"[A-Za-z0-9._+-]+")
State = Literal["new", "done", "resume", "restart"]


class SweepStopped(PretrainlabError):
    """The sweep was stopped by SIGTERM/SIGINT/SIGHUP after its running runs checkpointed; re-run to continue."""

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
    ConfigError/DataError before anything is written for a bad sweep, SweepStopped on SIGTERM/SIGINT/SIGHUP.
    """
    sweep = resolve_sweep(spec_or_path, overrides)
    plan = plan_sweep(sweep)
    _refuse_if_running_elsewhere(sweep.folder)
    ex = _executor(sweep.spec, executor, jobs)
    todo = [pp for pp in plan if pp.state != "done"]
    done = len(plan) - len(todo)
    run_tasks = [_task(sweep, pp) for pp in todo]
    if todo:
        ex.prepare()  # e.g. connect to Ray: a missing package fails here, before anything is written
        check = getattr(ex, "check", None)
        if check is not None:
            check(run_tasks)  # e.g. a point needing more CPUs than any Ray node has
    say: Callable[[str], None] = (lambda _: None) if quiet else (lambda s: print(s, flush=True))
    write_sweep_folder(sweep, executor=ex.name, jobs=getattr(ex, "jobs", None))
    book = StatusBook(sweep.folder)
    say(f"sweep {sweep.folder}: {len(plan)} points, {done} already done, {len(todo)} to run ({ex.name} executor)")
    tasks = {pp.point.name: pp for pp in todo}
    counter = {"started": 0}
    received: list[int] = []  # stop signals this sweep got (filled by its signal handler)

    def on_start(task: Task, threads: int, pid: int | None = None) -> None:
        counter["started"] += 1
        pp = tasks[task.name]
        what = {"new": "started", "resume": f"resuming from step {pp.checkpoint_step}", "restart": "restarting"}
        say(f"[{counter['started']}/{len(todo)}] {task.name}: {what[pp.state]} ({threads} threads); log {task.log_path}")
        book.set(task.name, "running", log=str(task.log_path), **({"pid": pid} if pid is not None else {}))
        write_results_csv(sweep.folder)

    def on_end(task: Task, code: int) -> None:
        row = _summary(sweep.folder / "runs" / task.name)
        if code == 0 and row["end"]:
            book.clear(task.name)
            end = row["end"]
            say(f"done {task.name}: val_loss {_num(end.get('val_loss'))}, val_bpb {_num(end.get('val_bpb'))}, "
                f"{_seconds(end.get('wall_s'))} s")
        elif received and code in STOPPED_CODES:
            book.clear(task.name)
            say(f"stopped {task.name} (exit {code}); it resumes when the sweep runs again")
        else:
            reason = "ended without an end line" if code == 0 else _exit_text(code)
            book.set(task.name, "failed", log=str(task.log_path), exit_code=code)
            say(f"FAILED {task.name} ({reason}); log: {task.log_path}\n{_tail(task.log_path)}")
        write_results_csv(sweep.folder)

    def on_stop(requests: int) -> None:
        if requests == 1:
            name = signal.Signals(received[0]).name if received else "stop request"
            say(f"{name}: stopping the running runs (they write a checkpoint) ...")
        else:
            say("second stop request: killing the running runs")

    with _forwarding_signals(ex, received):
        ex.run(run_tasks, on_start, on_end, on_stop)
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
    """ConfigError when another live sweep process runs this folder, or a run it started is still training."""
    status = _read_status(folder)
    running = {n: e for n, e in status["points"].items() if isinstance(e, dict) and e.get("status") == "running"}
    if status["alive"] and status["pid"] != os.getpid() and running:
        raise ConfigError(
            f"sweep {folder} is being run by process {status['pid']} (running {', '.join(list(running)[:3])})",
            hint=f"wait for it or stop it (kill {status['pid']}); if that process is not a sweep, delete "
            f"{folder / STATUS_FILE}",
        )
    orphans = [(n, e["pid"]) for n, e in running.items() if _is_run_process(e.get("pid"), n)]
    if orphans:
        name, pid = orphans[0]
        more = f" (and {len(orphans) - 1} more: {', '.join(n for n, _ in orphans[1:4])})" if len(orphans) > 1 else ""
        raise ConfigError(
            f"sweep {folder}: point {name!r} is still being trained by process {pid}, started by an earlier sweep "
            f"process that is gone{more}; starting it again would put two trainers in {folder / 'runs' / name}",
            hint=f"stop it with `kill {pid}` (it writes a checkpoint and the next sweep resumes it) or wait for it "
            f"to finish, then run the sweep again; if process {pid} is not that run, delete {folder / STATUS_FILE}",
        )


def _is_run_process(pid: Any, name: str) -> bool:
    """Whether `pid` is a live process, and (where its command line can be read) the run of point `name`."""
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0 or pid == os.getpid() or not pid_alive(pid):
        return False
    args = process_args(pid)
    if args is None:  # cannot tell (not Linux): a live process with that id counts
        return True
    return "train" in args and any(a.endswith(f"{name}.yaml") for a in args)


def config_diff(existing: RunConfig, wanted: RunConfig) -> list[str]:
    """`key: old -> new` for every setting that differs, leaving out IGNORED_KEYS.

    A run started with `init_from` records the model section the source filled in; a model field the
    wanted config leaves null matches the value recorded there (the same source fills it the same way).
    """
    a, b = _flatten(existing.model_dump(mode="json")), _flatten(wanted.model_dump(mode="json"))

    def filled_by_init_from(k: str) -> bool:
        return wanted.init_from is not None and k.startswith("model.") and b.get(k) is None

    keys = [k for k in dict.fromkeys([*a, *b])
            if k not in IGNORED_KEYS and a.get(k) != b.get(k) and not filled_by_init_from(k)]
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
    jobs = check_jobs(jobs)
    if executor is None or isinstance(executor, str):
        return make_executor(executor or spec.executor, jobs=jobs if jobs is not None else spec.jobs,
                             gpus_per_run=spec.gpus_per_run)
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
def _forwarding_signals(ex: Executor, received: list[int]) -> Iterator[list[int]]:
    """While the runs go: SIGTERM, SIGINT and SIGHUP are appended to `received` and ask the executor to stop
    its runs (they checkpoint). The handler only records: the executor's loop acts and reports."""
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum: int, _frame: Any) -> None:
        received.append(signum)
        ex.request_stop(signum)

    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}, not by this sweep"
        except ValueError:
            return f"killed by signal {-code}"
    if code in STOPPED_CODES:
        return f"exit {code}: stopped by a signal this sweep did not send"
    return f"exit {code}"


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
    resumes it). Metric columns are None until the run is done. `avg_params` is the end line's
    `avg_params` when the run logs one (the exact mean over every step, e.g. `gradual_pruning`), else the
    mean of the train lines' `live_params` when a recipe logs it (recipes log their live *non-embedding*
    parameter count, e.g. while pruning; only the lines written, every `train.log_every` steps), else
    `params_non_embedding`: the count `pretrainlab fit --x params` uses, so the two x axes compare.
    `data_tokens` is the unique train tokens of the point's data (see data_tokens.py). `run_dir` is absolute.
    Accepts a results.csv path too; DataError naming the file for a malformed points.json or metrics.jsonl.
    """
    from pretrainlab.science.data_tokens import DataTokens

    folder = Path(sweep_dir)
    if folder.name == RESULTS_FILE and folder.is_file():
        folder = folder.parent
    points = read_points(folder)
    status = _read_status(folder)
    sizes = DataTokens(folder)
    swept = list(dict.fromkeys(k for p in points for k in p["axes"]))
    summaries = [_summary(folder / "runs" / p["name"]) for p in points]
    domains = sorted({k.split("/", 1)[1] for s in summaries for k in (s["end"] or {}) if k.startswith("val_loss/")})
    domains_bpb = sorted({k.split("/", 1)[1] for s in summaries for k in (s["end"] or {}) if k.startswith("val_bpb/")})
    rows = []
    for p, s in zip(points, summaries):
        end = s["end"]
        row: dict[str, Any] = {"name": p["name"], "status": _status(p["name"], end, status), "seed": p.get("seed")}
        row.update({k: p["axes"].get(k) for k in swept})
        row.update({k: (end or {}).get(k) for k in RESULT_FIELDS})
        if end is not None:
            logged, live = end.get("avg_params"), s["avg_live_params"]
            row["avg_params"] = (logged if _is_number(logged) else live if live is not None
                                 else end.get("params_non_embedding"))
        row["data_tokens"] = sizes.of(p["name"])
        row.update({f"val_loss/{d}": (end or {}).get(f"val_loss/{d}") for d in domains})
        row.update({f"val_bpb/{d}": (end or {}).get(f"val_bpb/{d}") for d in domains_bpb})
        row["run_dir"] = str((folder / "runs" / p["name"]).resolve())
        rows.append(row)
    return rows


def read_points(folder: Path) -> list[dict[str, Any]]:
    """points.json of a sweep folder, checked: a list of mappings with a file-safe `name` and an `axes` mapping."""
    path = folder / POINTS_FILE
    hint = "run the sweep again (`pretrainlab sweep SWEEP.yaml`) to rewrite it"
    if not path.is_file():
        raise DataError(
            f"{path} is missing: {str(folder)!r} is not a sweep folder",
            hint="pass the folder `pretrainlab sweep` wrote (out_dir/name of the sweep file)",
        )
    try:
        points = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e})", hint=hint) from None
    if not isinstance(points, list):
        raise DataError(f"{path}: expected a list of points, found {type(points).__name__}", hint=hint)
    out = []
    for i, p in enumerate(points):
        name = p.get("name") if isinstance(p, dict) else None
        if not isinstance(name, str) or not _POINT_NAME.fullmatch(name) or name in (".", ".."):
            raise DataError(f"{path}: entry {i} is not a point (a mapping with a file-safe 'name')", hint=hint)
        axes = p.get("axes", {})
        if axes is None:
            axes = {}
        if not isinstance(axes, dict):
            raise DataError(f"{path}: point {name!r}: 'axes' is {type(axes).__name__}, not a mapping", hint=hint)
        out.append({**p, "axes": axes})
    return out


def _read_status(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / STATUS_FILE).read_text(encoding="utf-8"))
        return {"pid": int(data["pid"]), "alive": pid_alive(int(data["pid"])), "points": dict(data["points"])}
    except (OSError, ValueError, KeyError, TypeError):
        return {"pid": None, "alive": False, "points": {}}


def _status(name: str, end: dict[str, Any] | None, status: dict[str, Any]) -> str:
    if end is not None:
        return "done"
    entry = status["points"].get(name)
    entry = entry.get("status") if isinstance(entry, dict) else None
    if entry == "failed":
        return "failed"
    if entry == "running" and status["alive"]:
        return "running"
    return "pending"


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
    """Read once per file version (results.csv is rewritten after every run of a possibly long sweep).

    Lines that are not JSON objects are skipped (as torn lines are); a file that is not UTF-8 text is a
    DataError naming it.
    """
    from pretrainlab.train.metrics import read_metrics

    try:
        records = [r for r in read_metrics(path) if isinstance(r, dict)]
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read the run's metrics ({e})",
                        hint="delete that run folder to redo the point, or restore the file") from None
    ends = [r for r in records if r.get("event") == "end"]
    live = [float(r["live_params"]) for r in records
            if "event" not in r and "lr" in r and _is_number(r.get("live_params"))]
    return {"end": ends[-1] if ends else None, "avg_live_params": sum(live) / len(live) if live else None}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def result_columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The results.csv columns: name, status, seed, swept keys, end-line metrics, per-domain metrics, run_dir."""
    return list(dict.fromkeys(k for r in rows for k in r)) if rows else ["name", "status", "seed", *RESULT_FIELDS, "run_dir"]


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

    points = {p["name"]: p for p in read_points(folder)}
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
    """`pretrainlab sweep`: 0 when every point is done, 1 when any is not (named), 128 + signal when stopped."""
    overrides = list(args.overrides)
    jobs = check_jobs(args.jobs)
    if args.dry_run:
        sweep = resolve_sweep(args.config, overrides)
        plan = plan_sweep(sweep)
        ex_name = args.executor or sweep.spec.executor
        print_plan(sweep, plan, executor=ex_name, jobs=jobs if jobs is not None else sweep.spec.jobs)
        return 0
    try:
        rows = run_sweep(args.config, executor=args.executor, jobs=jobs, overrides=overrides)
    except SweepStopped as e:
        print(f"{e.message}; {e.hint}", flush=True)
        return e.exit_code
    not_done = [r for r in rows if r["status"] != "done"]
    if not_done:
        failed = [r for r in not_done if r["status"] == "failed"]
        listed = ", ".join(f"{r['name']} ({r['status']})" for r in not_done[:10]) + (" ..." if len(not_done) > 10 else "")
        print(f"{len(not_done)} of {len(rows)} point(s) did not finish: {listed}"
              + ("; logs in the sweep's logs/" if failed else "") + "; run the same command again to retry them",
              flush=True)
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
    "read_points",
    "result_columns",
    "run_sweep",
    "sweep_from_cli",
    "write_results_csv",
]
