"""Sweeps end to end on tiny runs: the sweep folder and results.csv, a crashed run that a re-run resumes
while finished runs stay untouched, a changed sweep refused before anything runs, SIGTERM forwarded to
the runs, runs that die with the sweep, stopped versus failed runs, and the `pretrainlab sweep` command
line."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers import make_prepared, random_docs, tiny_run_config  # noqa: E402

from pretrainlab.cli import main  # noqa: E402
from pretrainlab.errors import ConfigError, DataError  # noqa: E402
from pretrainlab.science import sweep as sweep_mod  # noqa: E402
from pretrainlab.science.data_tokens import unique_train_tokens  # noqa: E402
from pretrainlab.science.executors import RayExecutor, Task, fair_threads, pid_alive, process_args  # noqa: E402
from pretrainlab.science.sweep import (  # noqa: E402
    SweepStopped,
    load_results,
    run_sweep,
    write_results_csv,
    write_sweep_folder,
)
from pretrainlab.science.sweep_spec import resolve_sweep  # noqa: E402
from pretrainlab.train.checkpoint import KILL_ENV, list_checkpoints  # noqa: E402

CRASHING = "lr-0.003_steps-6_checkpoint_every-2_s0"


def write_data(root: Path) -> Path:
    rng = np.random.default_rng(0)
    return make_prepared(root / "data", train={"alpha": random_docs(rng, 60), "beta": random_docs(rng, 30)},
                         val={"alpha": random_docs(rng, 8), "beta": random_docs(rng, 4)})


def sweep_file(root: Path, data: Path, axes: list[Any], name: str = "wd", **extra: Any) -> Path:
    base = tiny_run_config(root / "unused", data, train={"steps": 3}).model_dump(mode="json")
    spec = {"name": name, "out_dir": str(root / "sweeps"), "base": base, "axes": axes, **extra}
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def crashed_then_resumed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A 3-point sweep whose third run is SIGKILLed after step 4 (newest checkpoint: step 2), then re-run."""
    root = tmp_path_factory.mktemp("sweep")
    axes = [{"list": [{"optim.lr": 1e-3}, {"optim.lr": 2e-3},
                      {"optim.lr": 3e-3, "train.steps": 6, "train.checkpoint_every": 2}]}]
    path = sweep_file(root, write_data(root), axes)
    folder = root / "sweeps" / "wd"
    os.environ[KILL_ENV] = "step_end:4"  # only the 6-step run reaches step 4
    try:
        first_code = main(["sweep", str(path), "--jobs", "2"])
    finally:
        del os.environ[KILL_ENV]
    first_rows = load_results(folder)
    with open(folder / "results.csv", newline="") as f:
        first_csv = list(csv.DictReader(f))
    checkpoints = [p.name for p in list_checkpoints(folder / "runs" / CRASHING)]
    finished = {r["name"]: (Path(r["run_dir"]) / "metrics.jsonl") for r in first_rows if r["status"] == "done"}
    before = {n: (p.read_bytes(), p.stat().st_mtime_ns) for n, p in finished.items()}
    second_rows = run_sweep(path, jobs=2, quiet=True)
    after = {n: (p.read_bytes(), p.stat().st_mtime_ns) for n, p in finished.items()}
    return {"root": root, "path": path, "folder": folder, "first_code": first_code, "first_rows": first_rows,
            "first_csv": first_csv, "checkpoints": checkpoints, "before": before, "after": after,
            "second_rows": second_rows}


def test_a_sweep_writes_its_folder_and_results(crashed_then_resumed: dict[str, Any]) -> None:
    folder = crashed_then_resumed["folder"]
    points = json.loads((folder / "points.json").read_text())
    assert [p["name"] for p in points] == ["lr-0.001_s0", "lr-0.002_s0", CRASHING]
    assert points[2]["axes"] == {"optim.lr": 0.003, "train.steps": 6, "train.checkpoint_every": 2}
    assert points[0]["axes"] == {"optim.lr": 0.001, "train.steps": 3, "train.checkpoint_every": None}
    for p in points:
        assert (folder / "configs" / f"{p['name']}.yaml").is_file() and (folder / "logs" / f"{p['name']}.log").is_file()
    assert yaml.safe_load((folder / "sweep.yaml").read_text())["base"]["train"]["steps"] == 3
    rows = crashed_then_resumed["first_csv"]
    assert [(r["name"], r["status"]) for r in rows] == [
        ("lr-0.001_s0", "done"), ("lr-0.002_s0", "done"), (CRASHING, "failed")]
    assert list(rows[0]) == [
        "name", "status", "seed", "optim.lr", "train.steps", "train.checkpoint_every", "params",
        "params_non_embedding", "avg_params", "tokens", "data_tokens", "step", "wall_s", "loss", "val_loss",
        "val_bpb", "val_loss/alpha", "val_loss/beta", "val_bpb/alpha", "val_bpb/beta", "run_dir"]
    done = rows[0]
    assert int(done["step"]) == 3 and int(done["tokens"]) == 3 * 256 and float(done["val_loss"]) > 0
    # no live_params logged: avg_params is the non-embedding count, the one `fit --x params` uses
    assert done["avg_params"] == done["params_non_embedding"] and int(done["params"]) > int(done["params_non_embedding"])
    manifest = json.loads((crashed_then_resumed["root"] / "data" / "manifest.json").read_text())
    assert int(done["data_tokens"]) == sum(d["train"]["tokens"] for d in manifest["domains"].values())
    assert rows[2]["val_loss"] == "" and rows[2]["optim.lr"] == "0.003"
    assert all(Path(r["run_dir"]).is_absolute() for r in rows)


def test_a_failed_run_is_reported_and_the_command_exits_1(crashed_then_resumed: dict[str, Any]) -> None:
    assert crashed_then_resumed["first_code"] == 1
    assert crashed_then_resumed["checkpoints"] == ["step-2"]
    status = json.loads((crashed_then_resumed["folder"] / "status.json").read_text())
    assert status["points"] == {}  # the re-run finished everything


def test_a_rerun_skips_finished_runs_and_resumes_the_crashed_one(crashed_then_resumed: dict[str, Any]) -> None:
    assert crashed_then_resumed["before"] == crashed_then_resumed["after"]  # not redone, not even touched
    rows = crashed_then_resumed["second_rows"]
    assert [r["status"] for r in rows] == ["done", "done", "done"]
    assert rows[2]["step"] == 6
    log = (crashed_then_resumed["folder"] / "logs" / f"{CRASHING}.log").read_text()
    headers = [line for line in log.splitlines() if line.startswith("=== pretrainlab sweep")]
    assert len(headers) == 2 and "--resume" not in headers[0] and headers[1].endswith("--resume")
    assert "resumed from" in log and "step-2 (step 2" in log
    lines = [json.loads(x) for x in (Path(rows[2]["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "lr" in r] == [1, 2, 3, 4, 5, 6]  # no step twice, none missing


def test_a_changed_sweep_is_refused_before_anything_runs(crashed_then_resumed: dict[str, Any], capsys: Any) -> None:
    folder, path = crashed_then_resumed["folder"], crashed_then_resumed["path"]
    logs = {p: p.stat().st_mtime_ns for p in (folder / "logs").iterdir()}
    with pytest.raises(ConfigError) as info:
        run_sweep(path, overrides=["overrides.optim.weight_decay=0.5"], quiet=True)
    text = str(info.value)
    assert "'lr-0.001_s0'" in text and "optim.weight_decay: 0.1 -> 0.5" in text and "new name" in text
    assert logs == {p: p.stat().st_mtime_ns for p in (folder / "logs").iterdir()}
    # Settings that do not change what a run computes (threads) do not count as a change.
    assert main(["sweep", str(path), "overrides.train.threads=2", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("skip (done)") == 3 and "0 of 3 points to run" in out


def test_cli_dry_run_lists_points_and_writes_nothing(tmp_path: Path, tiny_prepared: Path, capsys: Any) -> None:
    path = sweep_file(tmp_path, tiny_prepared, [{"grid": {"optim.weight_decay": [0.1, 0.4]}}], seeds=2)
    assert main(["sweep", str(path), "--dry-run", "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    for name in ("weight_decay-0.1_s0", "weight_decay-0.1_s1", "weight_decay-0.4_s0", "weight_decay-0.4_s1"):
        assert name in out
    assert "4 of 4 points to run" in out and not (tmp_path / "sweeps").exists()


def test_cli_bad_sweep_exits_2_naming_the_axis(tmp_path: Path, tiny_prepared: Path, capsys: Any) -> None:
    path = sweep_file(tmp_path, tiny_prepared, [{"grid": {"optim.lr": [1e-3]}}, {"grid": {"optim.wieght_decay": [0.1]}}])
    assert main(["sweep", str(path)]) == 2
    err = capsys.readouterr().err
    assert "axes[1].grid: unknown key 'optim.wieght_decay'; did you mean 'optim.weight_decay'?" in err
    assert "Traceback" not in err and not (tmp_path / "sweeps").exists()
    assert main(["sweep", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_load_results_reads_run_folders(tmp_path: Path, tiny_prepared: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # relative data.path and out_dir, as a sweep file usually has them
    base = tiny_run_config("unused", "prepared", train={"steps": 3}).model_dump(mode="json")
    spec = {"name": "s", "out_dir": "sweeps", "base": base, "axes": [{"grid": {"optim.lr": [1e-3, 2e-3, 3e-3]}}],
            "overrides": {"data.weights": {"alpha": 1.0, "beta": 0.0}}}
    sweep = resolve_sweep(spec)
    folder = write_sweep_folder(sweep, executor="local", jobs=1).resolve()
    a, b, c = (folder / "runs" / p.name for p in sweep.points)
    a.mkdir()
    lines = [{"step": 1, "lr": 1e-3, "loss": 5.0, "live_params": 100}, {"step": 2, "lr": 1e-3, "loss": 4.0, "live_params": 300},
             {"step": 2, "val_loss": 4.5}, {"event": "end", "step": 2, "tokens": 64, "params": 400,
                                            "params_non_embedding": 250, "val_loss": 4.5, "val_loss/x": 4.4, "val_bpb/x": 6.0}]
    (a / "metrics.jsonl").write_text("[1, 2]\n7\n" + "".join(json.dumps(r) + "\n" for r in lines))  # non-objects skipped
    b.mkdir()
    (b / "metrics.jsonl").write_text(json.dumps({"event": "end", "step": 2, "params": 400, "params_non_embedding": 250}))
    (folder / "status.json").write_text(json.dumps({"pid": os.getpid(), "points": {c.name: {"status": "failed"}}}))
    rows = load_results(write_results_csv(Path("sweeps") / "s"))  # a (relative) results.csv path is accepted too
    assert [r["status"] for r in rows] == ["done", "done", "failed"]
    assert rows[0]["avg_params"] == 200.0 and rows[0]["params"] == 400 and rows[0]["val_loss/x"] == 4.4
    assert rows[1]["avg_params"] == 250  # no live_params: the non-embedding count, never the total
    assert rows[2]["val_loss"] is None and rows[2]["avg_params"] is None
    assert rows[2]["run_dir"] == str(c.resolve()) and Path(rows[2]["run_dir"]).is_absolute()
    alpha = json.loads((tiny_prepared / "manifest.json").read_text())["domains"]["alpha"]["train"]["tokens"]
    assert [r["data_tokens"] for r in rows] == [alpha] * 3  # beta has weight 0: not drawn from
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # the data is found from the folder the sweep ran in
    assert [r["data_tokens"] for r in load_results(tmp_path / "sweeps" / "s")] == [alpha] * 3
    with pytest.raises(DataError, match="not a sweep folder"):
        load_results(tmp_path)
    for bad, says in (({"a": 1}, "expected a list of points"), ([{"nom": "x"}], "entry 0 is not a point"),
                      ([{"name": "../x"}], "entry 0 is not a point"), ([{"name": "x", "axes": [1]}], "'axes' is list")):
        (folder / "points.json").write_text(json.dumps(bad))
        with pytest.raises(DataError, match=says) as info:
            load_results(folder)
        assert "points.json" in str(info.value)


def test_data_tokens_count_the_domains_a_run_samples() -> None:
    tokens = {"web": 1000, "code": 500, "tiny": 20}
    assert unique_train_tokens(tokens, weights=None, seq_len=32, mode="random") == 1500  # 'tiny' has no row of 33
    assert unique_train_tokens(tokens, weights=None, seq_len=32, mode="packed") == 1520
    assert unique_train_tokens(tokens, weights={"web": 3, "code": 0}, seq_len=32, mode="random") == 1000


def test_threads_are_split_fairly() -> None:
    assert fair_threads(16, 4) == 4 and fair_threads(16, 3) == 5 and fair_threads(2, 4) == 1 and fair_threads(8, 0) == 8


def test_sigterm_is_forwarded_to_the_runs_which_checkpoint(tmp_path: Path, tiny_prepared: Path) -> None:
    path = sweep_file(tmp_path, tiny_prepared, [{"grid": {"optim.lr": [1e-3, 2e-3]}}],
                      overrides={"train.steps": 100000, "train.log_every": 50})
    metrics = tmp_path / "sweeps" / "wd" / "runs" / "lr-0.001_s0" / "metrics.jsonl"

    seen: dict[str, Any] = {}

    def terminate_when_training() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (metrics.is_file() and metrics.stat().st_size > 0):
            time.sleep(0.05)
        entry = json.loads((tmp_path / "sweeps" / "wd" / "status.json").read_text())["points"]["lr-0.001_s0"]
        seen.update(entry, args=process_args(entry["pid"]))  # the running run's process id is recorded
        os.kill(os.getpid(), signal.SIGTERM)  # handled by the sweep in the main thread

    threading.Thread(target=terminate_when_training, daemon=True).start()
    with pytest.raises(SweepStopped) as info:
        run_sweep(path, jobs=1, quiet=True)
    assert info.value.exit_code == 143
    assert seen["status"] == "running" and isinstance(seen["pid"], int)
    assert seen["args"] is None or ("train" in seen["args"] and seen["args"][-1] == "train.threads=1")
    run = metrics.parent
    assert list_checkpoints(run), "the run got SIGTERM from the sweep and checkpointed"
    assert "stopped at step" in (tmp_path / "sweeps" / "wd" / "logs" / "lr-0.001_s0.log").read_text()
    rows = load_results(tmp_path / "sweeps" / "wd")
    assert [r["status"] for r in rows] == ["pending", "pending"]  # the second never started
    assert not (tmp_path / "sweeps" / "wd" / "runs" / "lr-0.002_s0").exists()


def test_a_sweep_folder_another_live_sweep_is_running_is_refused(tmp_path: Path, tiny_prepared: Path) -> None:
    path = sweep_file(tmp_path, tiny_prepared, [{"grid": {"optim.lr": [1e-3]}}])
    folder = write_sweep_folder(resolve_sweep(path), executor="local", jobs=1)
    other = os.getppid()  # a live process that is not this one
    (folder / "status.json").write_text(json.dumps({"pid": other, "points": {"lr-0.001_s0": {"status": "running"}}}))
    with pytest.raises(ConfigError, match=f"is being run by process {other}"):
        run_sweep(path, quiet=True)
    assert [r["status"] for r in load_results(folder)] == ["running"]


class FakeExecutor:
    """Reports each task as started, sends this process `signals` (as a terminal or `kill` would), then
    reports it ended with `code`: the sweep's bookkeeping without running anything."""

    name = "fake"

    def __init__(self, code: int, signals: Sequence[int] = ()) -> None:
        self.code, self.signals, self.stops = code, list(signals), 0

    def prepare(self) -> None:
        return None

    def check(self, tasks: Sequence[Task]) -> None:
        return None

    def request_stop(self, signum: int) -> None:
        self.stops += 1

    def run(self, tasks: Sequence[Task], on_start: Any, on_end: Any, on_stop: Any = None) -> None:
        for task in tasks:
            on_start(task, 1, None)
            for sig in self.signals:
                os.kill(os.getpid(), sig)
                time.sleep(0.01)
            if self.stops and on_stop is not None:
                on_stop(self.stops)
            on_end(task, self.code)
            if self.stops:
                break


def test_a_run_ending_143_that_the_sweep_did_not_stop_is_failed(tmp_path: Path, tiny_prepared: Path) -> None:
    path = sweep_file(tmp_path, tiny_prepared, [{"grid": {"optim.lr": [1e-3, 2e-3]}}])
    rows = run_sweep(path, executor=FakeExecutor(143), quiet=True)  # e.g. an OOM killer's or a user's SIGTERM
    assert [r["status"] for r in rows] == ["failed", "failed"]
    status = json.loads((tmp_path / "sweeps" / "wd" / "status.json").read_text())
    assert status["points"]["lr-0.001_s0"]["exit_code"] == 143


def test_sighup_stops_the_sweep_like_sigterm_and_killed_runs_count_as_stopped(
    tmp_path: Path, tiny_prepared: Path, capsys: Any
) -> None:
    path = sweep_file(tmp_path, tiny_prepared, [{"grid": {"optim.lr": [1e-3, 2e-3]}}])
    escaped: list[int] = []
    previous = signal.signal(signal.SIGHUP, lambda signum, frame: escaped.append(signum))  # were it not handled
    try:
        fake = FakeExecutor(-int(signal.SIGKILL), signals=[signal.SIGHUP, signal.SIGHUP])  # 2nd request: killed
        with pytest.raises(SweepStopped) as info:
            run_sweep(path, executor=fake, quiet=False)
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert escaped == [] and fake.stops == 2 and info.value.exit_code == 128 + signal.SIGHUP
    assert [r["status"] for r in load_results(tmp_path / "sweeps" / "wd")] == ["pending", "pending"]
    out = capsys.readouterr().out
    assert "second stop request: killing the running runs" in out and "stopped lr-0.001_s0 (exit -9)" in out


def test_the_command_exits_1_naming_every_point_that_is_not_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    rows = [{"name": "a", "status": "done"}, {"name": "b", "status": "pending"}, {"name": "c", "status": "failed"}]
    monkeypatch.setattr(sweep_mod, "run_sweep", lambda *a, **k: rows)
    assert main(["sweep", str(tmp_path / "any.yaml")]) == 1
    assert "2 of 3 point(s) did not finish: b (pending), c (failed)" in capsys.readouterr().out


def test_jobs_below_one_are_refused_before_anything_is_written(tmp_path: Path, tiny_prepared: Path, capsys: Any) -> None:
    path = sweep_file(tmp_path, tiny_prepared, [{"grid": {"optim.lr": [1e-3]}}])
    with pytest.raises(ConfigError, match=r"jobs=0 \(--jobs\)"):
        run_sweep(path, jobs=0, quiet=True)
    assert main(["sweep", str(path), "--jobs", "-1"]) == 2
    assert main(["sweep", str(path), "--jobs", "0", "--dry-run"]) == 2
    assert capsys.readouterr().err.count("--jobs") >= 2
    with pytest.raises(ConfigError, match="--jobs"):
        RayExecutor(jobs=-1)
    assert not (tmp_path / "sweeps").exists()


def test_ray_refuses_a_point_no_node_can_hold(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake_ray = types.SimpleNamespace(nodes=lambda: [{"Alive": True, "Resources": {"CPU": 4.0}},
                                                    {"Alive": False, "Resources": {"CPU": 64.0}}])
    monkeypatch.setitem(sys.modules, "ray", fake_ray)
    task = Task("big", tmp_path / "big.yaml", tmp_path / "big.log", False, 8, tmp_path)
    with pytest.raises(ConfigError, match=r"largest live Ray node has \(4\): 'big' \(train.threads=8\);") as info:
        RayExecutor().check([task, Task("ok", task.config_path, task.log_path, False, 4, tmp_path)])
    assert "queue them forever" in str(info.value)
    RayExecutor().check([Task("ok", task.config_path, task.log_path, False, None, tmp_path)])
    with pytest.raises(ConfigError, match="gpus_per_run=1"):
        RayExecutor(gpus_per_run=1.0).check([Task("gpu", task.config_path, task.log_path, False, None, tmp_path)])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_runs_die_with_the_sweep_process_even_when_it_is_killed(tmp_path: Path) -> None:
    parent_code = (
        "import sys, time\n"
        "from pretrainlab.science.executors import start_run\n"
        "proc = start_run([sys.executable, '-c', 'import time; time.sleep(60)'], cwd='.', log=open(sys.argv[1], 'ab'))\n"
        "print(proc.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code, str(tmp_path / "log")], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())  # type: ignore[union-attr]
    try:
        assert pid_alive(child)
        parent.kill()  # SIGKILL: the sweep gets no chance to forward anything
        parent.wait()
        deadline = time.monotonic() + 10
        while pid_alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not pid_alive(child), "the run outlived the sweep that started it"
    finally:
        if pid_alive(child):
            os.kill(child, signal.SIGKILL)


def test_a_point_a_lost_run_still_trains_is_refused(tmp_path: Path, tiny_prepared: Path) -> None:
    path = sweep_file(tmp_path, tiny_prepared, [{"grid": {"optim.lr": [1e-3]}}])
    folder = write_sweep_folder(resolve_sweep(path), executor="local", jobs=1)
    gone = subprocess.Popen(["true"])
    gone.wait()
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "-m", "pretrainlab", "train",
                               str(folder / "configs" / "lr-0.001_s0.yaml"), "train.threads=1"])
    try:
        (folder / "status.json").write_text(json.dumps(
            {"pid": gone.pid, "points": {"lr-0.001_s0": {"status": "running", "pid": orphan.pid}}}))
        with pytest.raises(ConfigError, match=f"point 'lr-0.001_s0' is still being trained by process {orphan.pid}") as info:
            run_sweep(path, quiet=True)
        assert f"kill {orphan.pid}" in str(info.value) and not (folder / "runs" / "lr-0.001_s0").exists()
    finally:
        orphan.kill()
        orphan.wait()
    assert not sweep_mod._is_run_process(orphan.pid, "lr-0.001_s0")  # gone: the sweep may run the point again
    assert not sweep_mod._is_run_process(os.getppid(), "lr-0.001_s0") or process_args(os.getppid()) is None


def test_config_diff_lets_init_from_fill_null_model_fields():
    from pretrainlab.config import RunConfig
    from pretrainlab.science.sweep import config_diff

    wanted = RunConfig(init_from="runs/source", model={"linear": "dense"})
    recorded = RunConfig(init_from="runs/source", model={"n_layers": 2, "d_model": 64, "n_heads": 2})
    assert config_diff(recorded, wanted) == []
    # a field the sweep sets still counts, and without init_from a filled field is a difference
    assert config_diff(recorded, wanted.model_copy(update={"model": wanted.model.model_copy(update={"n_layers": 3})}))
    assert config_diff(recorded.model_copy(update={"init_from": None}), wanted.model_copy(update={"init_from": None}))
