"""Where a sweep's runs execute: here as subprocesses (`local`), or as tasks on a Ray cluster (`ray`).

Every run is the same subprocess, `python -m pretrainlab train configs/<point>.yaml train.threads=T
[--resume]`, with stdout and stderr appended to `logs/<point>.log`; an executor only decides where and
how many at once. The local executor splits the machine's cores fairly (`train.threads = max(1, cores //
runs at once)` unless the point's config sets `train.threads`); the Ray executor reserves `num_cpus =
threads` (and `num_gpus = gpus_per_run`) per run and lets the cluster place them.

Stopping: `request_stop(signum)` (called from the sweep's SIGTERM/SIGINT handler) starts no new run
and sends SIGTERM to the running ones, which write a checkpoint and exit 143; a second request kills them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pretrainlab.errors import ConfigError

POLL_S = 0.1


@dataclass(frozen=True)
class Task:
    """One point to run: its saved config, its log, whether to pass --resume, its own thread setting."""

    name: str
    config_path: Path
    log_path: Path
    resume: bool
    config_threads: int | None  # the point config's train.threads; None lets the executor choose
    cwd: Path  # relative paths in the config (data.path, out_dir) resolve here, as for `pretrainlab train`


OnStart = Callable[[Task, int], None]  # (task, threads)
OnEnd = Callable[[Task, int], None]  # (task, return code: 0 done, 128+signal stopped, < 0 killed by a signal)


class Executor(Protocol):
    """Runs tasks and reports each start and end (callbacks run in the calling thread)."""

    name: str

    def prepare(self) -> None:
        """Connect to whatever runs the tasks (before the sweep installs its signal handlers)."""

    def run(self, tasks: Sequence[Task], on_start: OnStart, on_end: OnEnd) -> None:
        """Run every task (or, after `request_stop`, the ones already started) and return."""

    def request_stop(self, signum: int) -> None:
        """Start nothing more; stop the running tasks (SIGTERM first, a kill on a second request)."""


def train_args(task: Task, threads: int) -> list[str]:
    """The arguments after `python`: `-m pretrainlab train CONFIG train.threads=T [--resume]`."""
    args = ["-m", "pretrainlab", "train", str(task.config_path), f"train.threads={threads}"]
    return args + (["--resume"] if task.resume else [])


def fair_threads(cores: int, runs_at_once: int) -> int:
    """Threads per run when `runs_at_once` runs share `cores` cores."""
    return max(1, cores // max(1, runs_at_once))


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, which respects cgroup/taskset limits)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def _log_header(log: Any, cmd: Sequence[str]) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    log.write(f"=== pretrainlab sweep {stamp}: {' '.join(cmd)}\n".encode())
    log.flush()


class LocalExecutor:
    """Up to `jobs` runs at once as subprocesses of this process."""

    name = "local"

    def __init__(self, jobs: int = 1, *, cores: int | None = None) -> None:
        if jobs < 1:
            raise ConfigError(f"jobs={jobs}: run at least one job at once", hint="pass --jobs 1 or more")
        self.jobs = jobs
        self.cores = cores if cores is not None else available_cores()
        self._stops = 0
        self._signum = signal.SIGTERM

    def prepare(self) -> None:
        return None

    def request_stop(self, signum: int) -> None:
        self._stops += 1
        self._signum = signum

    def run(self, tasks: Sequence[Task], on_start: OnStart, on_end: OnEnd) -> None:
        pending = deque(tasks)
        threads = fair_threads(self.cores, min(self.jobs, len(tasks)))
        running: dict[subprocess.Popen[bytes], tuple[Task, Any]] = {}
        forwarded = 0
        try:
            while pending or running:
                while pending and len(running) < self.jobs and not self._stops:
                    task = pending.popleft()
                    t = task.config_threads or threads
                    cmd = [sys.executable, *train_args(task, t)]
                    task.log_path.parent.mkdir(parents=True, exist_ok=True)
                    log = open(task.log_path, "ab")  # noqa: SIM115  (closed when the run ends)
                    _log_header(log, cmd)
                    proc = subprocess.Popen(
                        cmd, cwd=task.cwd, stdout=log, stderr=subprocess.STDOUT, env=_child_env(),
                        start_new_session=True,  # a terminal's Ctrl-C reaches only the sweep, which forwards it
                    )
                    running[proc] = (task, log)
                    on_start(task, t)
                if self._stops > forwarded:
                    forwarded = self._stops
                    sig = signal.SIGTERM if forwarded == 1 else signal.SIGKILL
                    for proc in running:
                        _send(proc, sig)
                if not running and self._stops:
                    break
                for proc in [p for p in running if p.poll() is not None]:
                    task, log = running.pop(proc)
                    log.close()
                    on_end(task, int(proc.returncode))
                time.sleep(POLL_S)
        finally:
            for proc, (_, log) in running.items():  # only on an exception in a callback: leave nothing behind
                _send(proc, signal.SIGTERM)
                proc.wait()
                log.close()


def _send(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        proc.send_signal(sig)
    except ProcessLookupError:
        pass


class RayExecutor:
    """One Ray task per run (`num_cpus = threads`, `num_gpus = gpus_per_run`), each running the same subprocess.

    Connects with `ray.init(address=RAY_ADDRESS)` (a running cluster, or a local instance when unset) unless
    Ray is already initialised. `jobs` caps the runs in flight (default: every run; the cluster queues
    them). The sweep folder must be on a filesystem every node sees, at the same path.
    """

    name = "ray"

    def __init__(self, jobs: int | None = None, *, gpus_per_run: float = 0.0) -> None:
        self.jobs = jobs
        self.gpus_per_run = gpus_per_run
        self._stops = 0

    def prepare(self) -> None:
        ray = _import_ray()
        if not ray.is_initialized():
            ray.init(address=os.environ.get("RAY_ADDRESS"))

    def request_stop(self, signum: int) -> None:
        self._stops += 1

    def cluster_threads(self, runs_at_once: int) -> int:
        """A fair share of the cluster's CPUs per run, never more than its largest node has."""
        ray = _import_ray()
        total = int(ray.cluster_resources().get("CPU", 1))
        per_node = [int(n.get("Resources", {}).get("CPU", 0)) for n in ray.nodes() if n.get("Alive")]
        return max(1, min(fair_threads(total, runs_at_once), max(per_node or [total])))

    def run(self, tasks: Sequence[Task], on_start: OnStart, on_end: OnEnd) -> None:
        ray = _import_ray()
        self.prepare()
        pending = deque(tasks)
        limit = self.jobs or len(tasks)
        threads = self.cluster_threads(min(limit, len(tasks))) if tasks else 1
        remote = ray.remote(run_train_subprocess)
        in_flight: dict[Any, Task] = {}
        cancelled = 0
        while pending or in_flight:
            while pending and len(in_flight) < limit and not self._stops:
                task = pending.popleft()
                t = task.config_threads or threads
                ref = remote.options(num_cpus=t, num_gpus=self.gpus_per_run, max_retries=0).remote(
                    train_args(task, t), str(task.cwd), str(task.log_path)
                )
                in_flight[ref] = task
                on_start(task, t)
            if self._stops > cancelled:
                cancelled = self._stops
                for ref in in_flight:  # raises KeyboardInterrupt in the task, which SIGTERMs its run
                    ray.cancel(ref, force=cancelled > 1)
            if not in_flight:
                break
            done, _ = ray.wait(list(in_flight), num_returns=1, timeout=0.5)
            for ref in done:
                task = in_flight.pop(ref)
                try:
                    code = int(ray.get(ref))
                except ray.exceptions.TaskCancelledError:
                    code = 128 + signal.SIGTERM
                except ray.exceptions.RayError as e:
                    with open(task.log_path, "a", encoding="utf-8") as log:
                        log.write(f"=== ray task failed: {e}\n")
                    code = 1
                on_end(task, code)


def run_train_subprocess(args: list[str], cwd: str, log_path: str) -> int:
    """Inside a Ray worker: run `python ARGS` with its output appended to `log_path`; return its exit code.

    A cancel (KeyboardInterrupt) sends the run SIGTERM, so it checkpoints before it exits.
    """
    cmd = [sys.executable, *args]
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        _log_header(log, cmd)
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=_child_env())
        try:
            return proc.wait()
        except KeyboardInterrupt:
            _send(proc, signal.SIGTERM)
            return proc.wait()


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "executor=ray needs the ray package, which is not installed",
            hint="pip install 'pretrainlab[ray]' (or run with --executor local)",
        ) from None
    return ray


def make_executor(name: str, *, jobs: int | None, gpus_per_run: float = 0.0) -> Executor:
    """The executor called `name` ('local' or 'ray')."""
    if name == "local":
        return LocalExecutor(jobs or 1)
    if name == "ray":
        return RayExecutor(jobs, gpus_per_run=gpus_per_run)
    raise ConfigError(f"executor={name!r} is not known (local or ray)", hint="use --executor local or --executor ray")
