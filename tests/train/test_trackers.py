"""Experiment trackers: TensorBoard, W&B (offline) and MLflow (SQLite) get every metrics.jsonl record of a tiny
run and are read back; --resume keeps each step once; a tracker that cannot start or fails mid-run costs one
warning, never the run; an unknown name is a ConfigError before anything is built."""

from __future__ import annotations

import json
import math
import shutil
import struct
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers import make_prepared, random_docs, tiny_run_config, train_run
from pretrainlab.config import RunConfig, load_config
from pretrainlab.errors import ConfigError
from pretrainlab.train.metrics import read_metrics
from pretrainlab.train.trackers import STATE_FILE, Tracker, numeric_items, register_tracker
from pretrainlab.train.trackers.mlflow_tracker import mlflow_key
from pretrainlab.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", autouse=True)
def wandb_env(tmp_path_factory):
    """W&B offline, silent, with every folder it may write under a temporary one (never the network or ~)."""
    root = tmp_path_factory.mktemp("wandb")
    mp = pytest.MonkeyPatch()
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONSOLE": "off", "WANDB_DIR": root,
           "WANDB_CACHE_DIR": root / "cache", "WANDB_CONFIG_DIR": root / "config", "WANDB_DATA_DIR": root / "data",
           "WANDB_ARTIFACT_DIR": root / "artifacts", "WANDB_DISABLE_GIT": "true"}
    for key, value in env.items():
        mp.setenv(key, str(value))
    yield root
    mp.undo()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("trackers-data")
    return make_prepared(root / "prepared", train={"alpha": random_docs(rng, 60)}, val={"alpha": random_docs(rng, 10)})


@pytest.fixture(scope="module")
def mlflow_db(tmp_path_factory) -> Path:
    """An initialised MLflow SQLite store (creating one runs its migrations: seconds), copied into each run."""
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


def config(tmp_path: Path, prepared: Path, trackers: Any, **sections: Any) -> RunConfig:
    return tiny_run_config(tmp_path / "runs", prepared, trackers=trackers, **sections)


def lines(run: Path) -> list[dict[str, Any]]:
    return read_metrics(run / "metrics.jsonl")


def train_lines(run: Path) -> dict[int, dict[str, Any]]:
    return {r["step"]: r for r in lines(run) if "loss" in r and "event" not in r and "lr" in r}


def resume_from_step_5(cfg: RunConfig) -> Path:
    """Train 10 steps with a checkpoint at 5, lose the last checkpoint, and --resume: steps 6-10 run twice."""
    run = train_run(cfg)
    shutil.rmtree(run / "checkpoints" / "step-10")
    Trainer(cfg, resume=True).fit()
    return run


# ------------------------------------------------------------------------------------------ TensorBoard


def scalars(logdir: Path) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_tensorboard_gets_every_line(tmp_path, prepared):
    pytest.importorskip("tensorboard")
    run = train_run(config(tmp_path, prepared, "tensorboard"))
    acc = scalars(run / "tensorboard")
    want = train_lines(run)
    loss = acc.Scalars("loss")
    assert [e.step for e in loss] == list(range(1, 11))
    assert all(math.isclose(e.value, want[e.step]["loss"], rel_tol=1e-6) for e in loss)
    evals = [r for r in lines(run) if "val_loss" in r and "event" not in r]
    got = acc.Scalars("val_loss/alpha")
    assert [e.step for e in got] == [r["step"] for r in evals]
    assert [e.value for e in got] == pytest.approx([r["val_loss/alpha"] for r in evals])
    tags = acc.Tags()
    # mfu is null where the device's peak is unknown: exactly the steps with a number have a point
    mfu_steps = [s for s, r in sorted(want.items()) if r.get("mfu") is not None]
    assert ([e.step for e in acc.Scalars("mfu")] if "mfu" in tags["scalars"] else []) == mfu_steps
    assert "end/text_summary" in tags["tensors"]  # the end line, as a table


def test_tensorboard_resume_shows_each_step_once(tmp_path, prepared):
    pytest.importorskip("tensorboard")
    cfg = config(tmp_path, prepared, "tensorboard", train={"checkpoint_every": 5})
    run = resume_from_step_5(cfg)
    assert len(list((run / "tensorboard").glob("events.*"))) == 2
    loss = scalars(run / "tensorboard").Scalars("loss")
    assert [e.step for e in loss] == list(range(1, 11))  # purge_step hid the first session's steps 6-10
    want = train_lines(run)
    assert all(math.isclose(e.value, want[e.step]["loss"], rel_tol=1e-6) for e in loss)


def test_tensorboard_relative_log_dir_is_inside_the_run_folder(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    from pretrainlab.train.trackers import TrackerContext
    from pretrainlab.train.trackers.tensorboard_tracker import TensorBoardTracker

    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    tracker = TensorBoardTracker(TrackerContext(run_dir=tmp_path / "run", run_name="x", config={}), log_dir="tb")
    tracker.log_metrics({"loss": 1.0}, 1)
    tracker.close("finished")
    assert tracker.log_dir == tmp_path / "run" / "tb" and list((tmp_path / "run" / "tb").glob("events.*"))
    assert list((tmp_path / "elsewhere").iterdir()) == []


# ------------------------------------------------------------------------------------------ W&B


def wandb_records(path: Path) -> list[Any]:
    """The records of a W&B `.wandb` file (its LevelDB-log framing: 32 KiB blocks of crc32c, length, type)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    out, pos, pending = [], 7, b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if (length == 0 and kind == 0) or pos + 7 + length > len(data):  # the end, or a record being written
            break
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST
            record = pb.Record()
            record.ParseFromString(pending)
            out.append(record)
            pending = b""
    return out


def wandb_run(path: Path, timeout: float = 20.0) -> dict[str, Any]:
    """Run id, name, project, config, history by step and summary of a finished offline run. W&B's service
    process may still be writing the file when `finish()` returns: wait for its exit record."""

    deadline = time.monotonic() + timeout
    while not (records := wandb_records(path)) or records[-1].WhichOneof("record_type") != "exit":
        assert time.monotonic() < deadline, f"{path}: no exit record after {timeout} s"
        time.sleep(0.1)
    info: dict[str, Any] = {"history": {}, "summary": {}}
    for r in records:
        kind = r.WhichOneof("record_type")
        if kind == "run":
            info["id"], info["name"], info["project"] = r.run.run_id, r.run.display_name, r.run.project
            info["config"] = {u.key: json.loads(u.value_json) for u in r.run.config.update}
        elif kind == "history":
            row = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
            info["history"][int(row["_step"])] = row
        elif kind == "summary":
            info["summary"].update({u.key: json.loads(u.value_json) for u in r.summary.update if u.key})
    return info


def test_wandb_offline_run_and_resume(tmp_path, prepared):
    pytest.importorskip("wandb")
    cfg = config(tmp_path, prepared, [{"name": "wandb", "options": {"mode": "offline"}}], train={"checkpoint_every": 5})
    run = train_run(cfg)
    (first,) = (run / "wandb").glob("offline-run-*/run-*.wandb")
    info = wandb_run(first)
    assert (info["name"], info["project"]) == ("tiny", "pretrainlab")
    assert info["config"]["model"]["d_model"] == 32
    want = train_lines(run)
    assert sorted(info["history"]) == list(range(1, 11))
    assert all(math.isclose(info["history"][s]["loss"], want[s]["loss"], rel_tol=1e-9) for s in want)
    assert "val_loss/alpha" in info["history"][10]
    assert info["summary"]["wall_s"] == lines(run)[-1]["wall_s"]
    assert json.loads((run / STATE_FILE).read_text()) == {"wandb": {"id": info["id"]}}

    shutil.rmtree(run / "checkpoints" / "step-10")
    time.sleep(1.0)  # W&B names an offline run's folder by the second it started
    Trainer(cfg, resume=True).fit()
    (second,) = set((run / "wandb").glob("offline-run-*/run-*.wandb")) - {first}
    assert second.name == first.name  # the same W&B run id, continued
    resumed = wandb_run(second)
    assert resumed["id"] == info["id"] and sorted(resumed["history"]) == list(range(6, 11))
    assert resumed["summary"]["wall_s"] == lines(run)[-1]["wall_s"]


def test_wandb_offline_from_the_option_alone(tmp_path, monkeypatch):
    """`options: {mode: offline}` with WANDB_MODE unset (the module's fixture sets it): still no network,
    no login, the run written under <run>/wandb."""
    pytest.importorskip("wandb")
    from pretrainlab.train.trackers import TrackerContext
    from pretrainlab.train.trackers.wandb_tracker import WandbTracker

    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    tracker = WandbTracker(TrackerContext(run_dir=run_dir, run_name="alone", config={"a": 1}), mode="offline")
    tracker.log_metrics({"loss": 2.5}, 1)
    tracker.close("finished")
    (path,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    info = wandb_run(path)
    assert info["name"] == "alone" and info["history"][1]["loss"] == 2.5


def test_wandb_online_without_credentials_is_dropped_at_once(tmp_path, prepared, monkeypatch, capsys):
    """Online mode with no API key would prompt for a login and wait on a terminal: the tracker does not
    start, the warning names `options: {mode: offline}`, and the run trains."""
    pytest.importorskip("wandb")
    import wandb

    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))

    def never(*args, **kwargs):
        raise AssertionError("wandb.init must not be called without credentials")

    monkeypatch.setattr(wandb, "init", never)
    start = time.monotonic()
    run = train_run(config(tmp_path, prepared, "wandb", train={"steps": 2}))
    assert time.monotonic() - start < 60
    (line,) = [x for x in capsys.readouterr().out.splitlines() if "could not start" in x]
    assert "'wandb'" in line and "options: {mode: offline}" in line and "wandb login" in line
    assert lines(run)[-1]["event"] == "end" and not (run / "wandb").exists()


def test_wandb_console_capture_is_off_unless_chosen(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    import wandb

    from pretrainlab.train.trackers import TrackerContext
    from pretrainlab.train.trackers.wandb_tracker import WandbTracker

    seen = []

    class FakeRun:
        id, step = "abc", 0

    def fake_init(**kwargs):
        seen.append(kwargs)
        return FakeRun()

    monkeypatch.setattr(wandb, "init", fake_init)
    monkeypatch.delenv("WANDB_CONSOLE")
    ctx = TrackerContext(run_dir=tmp_path, run_name="x", config={})
    WandbTracker(ctx, mode="offline")
    WandbTracker(ctx, mode="offline", settings={"console": "wrap"})
    assert [k["settings"].console for k in seen] == ["off", "wrap"]
    monkeypatch.setenv("WANDB_CONSOLE", "redirect")  # the user's variable is left to W&B
    WandbTracker(ctx, mode="offline")
    assert "console" not in seen[-1]["settings"].model_fields_set


# ------------------------------------------------------------------------------------------ MLflow


def test_mlflow_sqlite_run_and_resume(tmp_path, prepared, mlflow_db, monkeypatch):
    """A relative `sqlite:///mlflow.db` is the run folder's store, whatever the current folder (the resume
    runs from another one); trackers.json keeps the absolute URI."""
    from mlflow.tracking import MlflowClient

    options = {"experiment": "tiny-exp", "tracking_uri": "sqlite:///mlflow.db"}
    cfg = config(tmp_path, prepared, [{"name": "mlflow", "options": options}], train={"checkpoint_every": 5})
    cfg = cfg.model_copy(update={"out_dir": str(tmp_path / "runs")})
    (tmp_path / "runs" / "tiny").mkdir(parents=True)
    shutil.copy(mlflow_db, tmp_path / "runs" / "tiny" / "mlflow.db")  # an initialised store, to save seconds
    for sub in ("cwd1", "cwd2"):
        (tmp_path / sub).mkdir()
    monkeypatch.chdir(tmp_path / "cwd1")
    run = train_run(cfg)
    shutil.rmtree(run / "checkpoints" / "step-10")
    monkeypatch.chdir(tmp_path / "cwd2")
    Trainer(cfg, resume=True).fit()
    assert list((tmp_path / "cwd1").iterdir()) == list((tmp_path / "cwd2").iterdir()) == []
    state = json.loads((run / STATE_FILE).read_text())["mlflow"]
    assert state["tracking_uri"] == f"sqlite:///{(run / 'mlflow.db').resolve()}"
    client = MlflowClient(tracking_uri=f"sqlite:///{run / 'mlflow.db'}")
    (found,) = client.search_runs([client.get_experiment_by_name("tiny-exp").experiment_id])
    assert found.info.run_name == "tiny" and found.info.status == "FINISHED"
    assert found.data.params["model.d_model"] == "32" and found.data.params["train.steps"] == "10"
    history = client.get_metric_history(found.info.run_id, "loss")
    assert sorted(m.step for m in history) == list(range(1, 11))  # resumed: each step once
    want = train_lines(run)
    assert all(math.isclose(m.value, want[m.step]["loss"], rel_tol=1e-9) for m in history)
    assert [m.step for m in client.get_metric_history(found.info.run_id, "val_loss/alpha")] == [10]
    assert found.data.metrics["final/wall_s"] == pytest.approx(lines(run)[-1]["wall_s"])
    assert not (Path.cwd() / "mlruns").exists()


def test_mlflow_keys_are_made_legal():
    assert mlflow_key("val_loss/code") == "val_loss/code"
    assert mlflow_key("task/hellaswag@10/acc") == "task/hellaswag_10/acc"
    assert mlflow_key("/a//b/./c/") == "a/b/_/c"
    assert mlflow_key("x:y (z)") == "x_y _z_"
    assert len(mlflow_key("k" * 400)) == 250


# ------------------------------------------------------------------------------------------ failures


@register_tracker("test_recorder")
class Recorder(Tracker):
    runs: list["Recorder"] = []

    def __init__(self, ctx, fail_at: int | None = None):
        super().__init__(ctx)
        self.fail_at, self.metrics, self.summary, self.status = fail_at, [], None, None
        Recorder.runs.append(self)

    def log_metrics(self, metrics, step):
        if step == self.fail_at:
            raise RuntimeError("backend went away")
        self.metrics.append((step, metrics))

    def log_summary(self, summary, step):
        self.summary = (step, summary)

    def close(self, status):
        self.status = status


def test_missing_packages_warn_once_and_the_run_completes(tmp_path, prepared, monkeypatch, capsys):
    for module in ("wandb", "mlflow", "torch.utils.tensorboard"):
        monkeypatch.setitem(sys.modules, module, None)  # as if not installed: the import fails
    Recorder.runs.clear()
    run = train_run(config(tmp_path, prepared, ["tensorboard", "wandb", "mlflow", "test_recorder"]))
    out = capsys.readouterr().out
    warnings = [line for line in out.splitlines() if "could not start" in line]
    assert len(warnings) == 3, out
    for name in ("tensorboard", "wandb", "mlflow"):
        (line,) = [w for w in warnings if f"tracker {name!r}" in w]
        assert f"pip install 'pretrainlab[{name}]'" in line and "training goes on" in line
    records = lines(run)
    assert len(records) == 12 and records[-1]["event"] == "end"  # 10 train lines, 1 evaluation, the end
    (rec,) = Recorder.runs
    assert len(rec.metrics) == 11 and rec.summary[0] == 10 and rec.status == "finished"
    assert not (run / STATE_FILE).exists()  # no tracker with state to keep


def test_a_tracker_failing_mid_run_is_dropped_with_one_warning(tmp_path, prepared, capsys):
    Recorder.runs.clear()
    cfg = config(tmp_path, prepared, [{"name": "test_recorder", "options": {"fail_at": 3}}])
    run = train_run(cfg)
    out = capsys.readouterr().out
    assert len([line for line in out.splitlines() if "warning: tracker" in line]) == 1
    assert "tracker 'test_recorder' failed at step 3 (RuntimeError: backend went away); dropped" in out
    (rec,) = Recorder.runs
    assert [s for s, _ in rec.metrics] == [1, 2] and rec.status == "failed" and rec.summary is None
    assert len(lines(run)) == 12


def test_a_bad_option_warns_and_training_goes_on(tmp_path, prepared, capsys):
    pytest.importorskip("tensorboard")
    run = train_run(config(tmp_path, prepared, [{"name": "tensorboard", "options": {"bogus": 1}}]))
    out = capsys.readouterr().out
    (line,) = [x for x in out.splitlines() if "could not start" in x]
    assert "'tensorboard'" in line and "bogus" in line and "check trackers.0.options" in line
    assert lines(run)[-1]["event"] == "end"


@pytest.mark.parametrize("how", ["error", "stop"])
def test_trackers_are_closed_when_a_run_fails_or_stops(tmp_path, prepared, monkeypatch, how):
    Recorder.runs.clear()
    original = Trainer._after_step

    def after_step(self):
        original(self)
        if self.step == 4:
            if how == "error":
                raise RuntimeError("boom")
            self.request_stop("test", checkpoint=False)

    monkeypatch.setattr(Trainer, "_after_step", after_step)
    cfg = config(tmp_path, prepared, "test_recorder")
    if how == "error":
        with pytest.raises(RuntimeError, match="boom"):
            train_run(cfg)
    else:
        train_run(cfg)
    (rec,) = Recorder.runs
    assert rec.status == {"error": "failed", "stop": "stopped"}[how]
    assert [s for s, _ in rec.metrics] == [1, 2, 3, 4]


def test_trackers_are_closed_when_a_callback_on_train_end_raises(tmp_path, prepared):
    from pretrainlab.train.callbacks import Callback

    class Broken(Callback):
        name = "broken"

        def on_train_end(self, trainer):
            raise RuntimeError("callback broke")

    Recorder.runs.clear()
    trainer = Trainer(config(tmp_path, prepared, "test_recorder", train={"steps": 2}))
    trainer.callbacks.insert(0, Broken())
    with pytest.raises(RuntimeError, match="callback broke"):
        trainer.fit()
    (rec,) = Recorder.runs
    assert rec.status == "finished" and rec.summary is not None  # closed; the run had ended (its end line)
    assert trainer.writer is not None and trainer.writer._file is None and trainer.writer.sinks[0].trackers == []


def test_a_bad_record_never_raises_into_training(tmp_path):
    from pretrainlab.train.trackers import TrackerContext, TrackerSet

    warnings: list[str] = []
    rec = Recorder(TrackerContext(run_dir=tmp_path, run_name="x", config={}))
    trackers = TrackerSet([rec], warn=warnings.append)
    trackers.log({"step": None, "loss": 1.0})
    trackers.log({"step": "3", "loss": 1.0})
    trackers.log({"loss": 1.0, "step": 2})
    trackers.log({"step": 2.5, "loss": 1.0})
    trackers.log({"event": "end", "step": None, "wall_s": 3.0})
    assert rec.metrics == [(2, {"loss": 1.0})] and rec.summary == (2, {"wall_s": 3.0})
    assert len(warnings) == 1 and "without an integer step (step=None)" in warnings[0]
    trackers.close()
    assert rec.status == "finished"


def test_unknown_tracker_is_a_config_error_before_anything_is_built(tmp_path, prepared):
    cfg = config(tmp_path, prepared, ["tensorbord"])
    with pytest.raises(ConfigError, match=r"trackers\.0\.name='tensorbord'.*did you mean 'tensorboard'.*mlflow"):
        Trainer(cfg)
    assert not (tmp_path / "runs").exists()
    with pytest.raises(ConfigError, match="listed twice"):
        Trainer(config(tmp_path, prepared, ["test_recorder", "test_recorder"]))


def test_shorthand_and_numeric_values(tmp_path):
    cfg = load_config(RunConfig, None, ["trackers=tensorboard"])
    assert [(t.name, t.options) for t in cfg.trackers] == [("tensorboard", {})]
    cfg = load_config(RunConfig, None, ["trackers=[tensorboard, {name: wandb, options: {mode: offline}}]"])
    assert [(t.name, t.options) for t in cfg.trackers] == [("tensorboard", {}), ("wandb", {"mode": "offline"})]
    record = {"step": 3, "loss": 1.5, "mfu": None, "skipped": True, "event": "x", "note": "s", "tokens": 96,
              "domain_weights": {"a": 0.25, "b": np.float32(0.75)}, "bad": float("nan"), "lst": [1]}
    values = numeric_items(record)
    assert values.pop("bad") != values.get("bad")  # NaN kept: a diverging loss is worth seeing
    assert values == {"loss": 1.5, "tokens": 96.0, "domain_weights/a": 0.25, "domain_weights/b": 0.75}

