"""Where a sweep's runs execute: here as subprocesses (`local`), or as tasks on a Ray cluster (`ray`).

Every run is the same subprocess, `python -m pretrainlab train configs/<point>.yaml train.threads=T
[--resume]`, with stdout and stderr appended to `logs/<point>.log`; an executor only decides where and
how many at once. The local executor splits the machine's cores fairly (`train.threads = max(1, cores //
runs at once)` unless the point's config sets `train.threads`); the Ray executor reserves `num_cpus =
threads` (and `num_gpus = gpus_per_run`) per run and lets the cluster place them, after checking that
some node can hold each run (Ray would otherwise queue it forever).

Stopping: `request_stop(signum)` (called from the sweep's signal handler, so it only counts) makes the
run loop start no new run and send SIGTERM to the running ones, which write a checkpoint and exit 143;
a second request kills them. The loop reports each action through `on_stop`. Runs live in their own
session (a terminal's Ctrl-C or hang-up reaches only the sweep, which forwards it) and, on Linux, get
SIGTERM from the kernel when the process that started them dies, even by SIGKILL (PR_SET_PDEATHSIG), so
no run keeps training in a sweep folder nobody watches.
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
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass(frozen=True)
class Task:
    """One point to run: its saved config, its log, whether to pass --resume, its own thread setting."""

    name: str
    config_path: Path
    log_path: Path
    resume: bool
    config_threads: int | None  # the point config's train.threads; None lets the executor choose
    cwd: Path  # relative paths in the config (data.path, out_dir) resolve here, as for `pretrainlab train`


OnStart = Callable[[Task, int, int | None], None]  # (task, threads, process id of the run or None)
OnEnd = Callable[[Task, int], None]  # (task, return code: 0 done, 128+signal stopped, < 0 killed by a signal)
OnStop = Callable[[int], None]  # (stop requests acted on so far: 1 = SIGTERM sent, 2+ = killed)


class Executor(Protocol):
    """Runs tasks and reports each start and end (callbacks run in the calling thread)."""

    name: str

    def prepare(self) -> None:
        """Connect to whatever runs the tasks (before the sweep installs its signal handlers)."""

    def check(self, tasks: Sequence[Task]) -> None:
        """ConfigError for a task this executor could never start (before anything is written)."""

    def run(self, tasks: Sequence[Task], on_start: OnStart, on_end: OnEnd, on_stop: OnStop | None = None) -> None:
        """Run every task (or, after `request_stop`, the ones already started) and return."""

    def request_stop(self, signum: int) -> None:
        """Only record the request (it is called from a signal handler); the run loop acts on it."""


def check_jobs(jobs: int | None) -> int | None:
    """`jobs` itself; a ConfigError naming --jobs / jobs for a value below 1."""
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise ConfigError(
            f"jobs={jobs!r} (--jobs): runs at once must be a whole number >= 1",
            hint="pass --jobs 1 or more (or jobs: N >= 1 in the sweep file; leave it out for the default)",
        )
    return jobs


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


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists and has not exited (a zombie, exited but not yet reaped, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    except (OverflowError, ValueError):
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (not Linux) or it vanished just now: trust the signal check
    state = stat.rsplit(")", 1)[-1].split()
    return not (state and state[0] in ("Z", "X"))


def process_args(pid: int) -> list[str] | None:
    """The command line of process `pid`, or None where it cannot be read (not Linux, gone, not ours)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def child_setup() -> Callable[[], None] | None:
    """A `preexec_fn` that makes a child get SIGTERM when this thread's process dies (Linux), else None.

    The kernel delivers it however the parent ends, SIGKILL included; the run then checkpoints and exits
    like on any SIGTERM. libc is loaded here, in the parent, so the child only makes one system call.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def die_with_parent() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the call: nobody would send the signal
            os.kill(os.getpid(), signal.SIGTERM)

    return die_with_parent


def start_run(cmd: Sequence[str], *, cwd: str | Path, log: Any) -> subprocess.Popen[bytes]:
    """Start one run: its own session (terminal signals reach only the sweep), output into `log`, and on
    Linux a SIGTERM when this process dies."""
    return subprocess.Popen(
        list(cmd), cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=_child_env(),
        start_new_session=True, preexec_fn=child_setup(),
    )


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
        self.jobs = check_jobs(jobs) or 1
        self.cores = cores if cores is not None else available_cores()
        self._stops = 0

    def prepare(self) -> None:
        return None

    def check(self, tasks: Sequence[Task]) -> None:
        return None

    def request_stop(self, signum: int) -> None:
        self._stops += 1

    def run(self, tasks: Sequence[Task], on_start: OnStart, on_end: OnEnd, on_stop: OnStop | None = None) -> None:
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
                    proc = start_run(cmd, cwd=task.cwd, log=log)
                    running[proc] = (task, log)
                    on_start(task, t, proc.pid)
                if self._stops > forwarded:
                    forwarded = self._stops
                    sig = signal.SIGTERM if forwarded == 1 else signal.SIGKILL
                    for proc in running:
                        _send(proc, sig)
                    if on_stop is not None:
                        on_stop(forwarded)
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
        self.jobs = check_jobs(jobs)
        self.gpus_per_run = gpus_per_run
        self._stops = 0

    def prepare(self) -> None:
        ray = _import_ray()
        if not ray.is_initialized():
            ray.init(address=os.environ.get("RAY_ADDRESS"))

    def request_stop(self, signum: int) -> None:
        self._stops += 1

    def _largest_node(self) -> tuple[float, float]:
        """(CPUs, GPUs) of the largest live node."""
        nodes = [n for n in _import_ray().nodes() if n.get("Alive")]
        cpus = max((float(n.get("Resources", {}).get("CPU", 0)) for n in nodes), default=0.0)
        gpus = max((float(n.get("Resources", {}).get("GPU", 0)) for n in nodes), default=0.0)
        return cpus, gpus

    def check(self, tasks: Sequence[Task]) -> None:
        """ConfigError when a run needs more CPUs (its train.threads) or GPUs than any live node has."""
        if not tasks:
            return
        cpus, gpus = self._largest_node()
        too_big = [t for t in tasks if t.config_threads is not None and t.config_threads > cpus]
        if too_big:
            named = ", ".join(f"{t.name!r} (train.threads={t.config_threads})" for t in too_big[:3])
            raise ConfigError(
                f"executor=ray: {len(too_big)} point(s) need more CPUs than the largest live Ray node has "
                f"({cpus:g}): {named}{' ...' if len(too_big) > 3 else ''}; Ray would queue them forever",
                hint=f"set train.threads <= {int(cpus)} for them (or leave it unset: the sweep picks a fair share), "
                "or add a bigger node to the cluster",
            )
        if self.gpus_per_run > gpus:
            raise ConfigError(
                f"executor=ray: gpus_per_run={self.gpus_per_run:g} but the largest live Ray node has {gpus:g} GPUs; "
                "Ray would queue every run forever",
                hint=f"set gpus_per_run <= {gpus:g} in the sweep file, or add a node with enough GPUs",
            )

    def cluster_threads(self, runs_at_once: int) -> int:
        """A fair share of the cluster's CPUs per run, never more than its largest node has."""
        ray = _import_ray()
        total = int(ray.cluster_resources().get("CPU", 1))
        per_node = [int(n.get("Resources", {}).get("CPU", 0)) for n in ray.nodes() if n.get("Alive")]
        return max(1, min(fair_threads(total, runs_at_once), max(per_node or [total])))

    def run(self, tasks: Sequence[Task], on_start: OnStart, on_end: OnEnd, on_stop: OnStop | None = None) -> None:
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
                on_start(task, t, None)
            if self._stops > cancelled:
                cancelled = self._stops
                for ref in in_flight:  # raises KeyboardInterrupt in the task, which SIGTERMs its run
                    ray.cancel(ref, force=cancelled > 1)
                if on_stop is not None:
                    on_stop(cancelled)
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

    A cancel (KeyboardInterrupt) sends the run SIGTERM, so it checkpoints before it exits; a worker that
    dies outright takes the run with it (SIGTERM from the kernel on Linux).
    """
    cmd = [sys.executable, *args]
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        _log_header(log, cmd)
        proc = start_run(cmd, cwd=cwd, log=log)
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
    """The executor called `name` ('local' or 'ray'); ConfigError for jobs < 1."""
    check_jobs(jobs)
    if name == "local":
        return LocalExecutor(jobs or 1)
    if name == "ray":
        return RayExecutor(jobs, gpus_per_run=gpus_per_run)
    raise ConfigError(f"executor={name!r} is not known (local or ray)", hint="use --executor local or --executor ray")
