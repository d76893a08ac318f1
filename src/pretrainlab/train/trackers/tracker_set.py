"""Starting the configured trackers and keeping a failing one from touching the run.

`start_trackers` starts each tracker of `cfg.trackers`; one that cannot start (package missing, bad
option, backend error) costs one warning line and the run goes on without it. The `TrackerSet` it
returns is a metrics sink (`MetricsWriter.sinks`): it sends each record to every live tracker and
drops, with one warning, a tracker that raises. Backend run ids are kept in `<run>/trackers.json` so
`--resume` continues the same W&B / MLflow run.
"""

from __future__ import annotations

import json
import math
import numbers
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pretrainlab.config import RunConfig, TrackerConfig
from pretrainlab.errors import ConfigError
from pretrainlab.io_atomic import write_text_atomic
from pretrainlab.train.trackers.base import TRACKERS, Status, Tracker, TrackerContext, numeric_items

STATE_FILE = "trackers.json"


def _load_builtins() -> None:
    from pretrainlab.train.trackers import mlflow_tracker, tensorboard_tracker, wandb_tracker  # noqa: F401


def check_trackers(configs: list[TrackerConfig]) -> None:
    """ConfigError for an unknown tracker name (listing the known ones) or one listed twice; called
    before anything is built, so a typo costs nothing."""
    _load_builtins()
    seen: set[str] = set()
    for i, c in enumerate(configs):
        TRACKERS.get(c.name, field=f"trackers.{i}.name")
        if c.name in seen:
            raise ConfigError(f"trackers.{i}.name: tracker {c.name!r} is listed twice", hint="list each tracker once")
        seen.add(c.name)


def _warn_stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class TrackerSet:
    """The live trackers, as one metrics sink: `log(record)` for every metrics.jsonl record, `close()` once."""

    def __init__(self, trackers: list[Tracker], warn: Callable[[str], None] = _warn_stderr) -> None:
        self.trackers = list(trackers)
        self.warn = warn
        self._ended = False
        self._closed = False
        self._last_step = 0
        self._warned: set[str] = set()

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.trackers]

    def log(self, record: dict[str, Any]) -> None:
        """Send one record: the end line as a summary, any other line as metrics at its step.

        Never raises: a tracker that fails is dropped with one warning; a record with no integer `step`
        (the end line excepted: it goes at the last step seen) is not sent, with one warning, as it could
        not be placed (metrics.jsonl has it).
        """
        try:
            end = record.get("event") == "end"
            step = _step_of(record)
            if step is None and end:
                step = self._last_step
            if step is None:
                self._warn_once("step", f"warning: trackers: a metrics record without an integer step "
                                f"(step={record.get('step')!r}) was not sent to them (metrics.jsonl has it)")
                return
            self._last_step = step
            values = numeric_items(record)
        except Exception as e:  # a record of an unexpected shape: never a reason to stop training
            self._warn_once("record", f"warning: trackers: a metrics record could not be read ({_reason(e)}); "
                            "not sent to them (metrics.jsonl has it)")
            return
        self._ended = self._ended or end
        for tracker in list(self.trackers):
            try:
                if end:
                    tracker.log_summary(values, step)
                elif values:
                    tracker.log_metrics(values, step)
            except Exception as e:  # any backend error: this tracker goes, the run does not
                self._drop(tracker, f"failed at step {step}", e)

    def _warn_once(self, key: str, text: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.warn(text)

    def close(self) -> None:
        """Close every tracker: "finished" after the end line, "failed" while an exception is propagating
        (this runs in the trainer's `finally`), "stopped" otherwise (a stop request, Ctrl-C)."""
        if self._closed:
            return
        self._closed = True
        exc = sys.exc_info()[1]
        status: Status
        if self._ended:
            status = "finished"
        elif exc is not None and not isinstance(exc, (KeyboardInterrupt, SystemExit)):
            status = "failed"
        else:
            status = "stopped"
        for tracker in self.trackers:
            try:
                tracker.close(status)
            except Exception as e:
                self.warn(f"warning: tracker {tracker.name!r} failed to close ({_reason(e)}); metrics.jsonl is complete")
        self.trackers = []

    def _drop(self, tracker: Tracker, when: str, error: BaseException) -> None:
        self.trackers.remove(tracker)
        try:
            self.warn(
                f"warning: tracker {tracker.name!r} {when} ({_reason(error)}); dropped, training goes on "
                "(metrics.jsonl has every line)"
            )
            tracker.close("failed")
        except Exception:
            pass


def start_trackers(
    cfg: RunConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    step: int = 0,
    warn: Callable[[str], None] = _warn_stderr,
) -> TrackerSet:
    """Start `cfg.trackers` for the run folder `run_dir` (main process only). `resume` and `step`: this
    session continues from the checkpoint of that step. Never raises for a tracker that cannot start."""
    _load_builtins()
    run_dir = Path(run_dir)
    saved = _read_state(run_dir) if resume else {}
    config = cfg.model_dump(mode="json")
    started: list[Tracker] = []
    for i, c in enumerate(cfg.trackers):
        cls = TRACKERS.get(c.name, field=f"trackers.{i}.name")
        ctx = TrackerContext(
            run_dir=run_dir, run_name=cfg.name, config=config, resume=resume, start_step=step,
            state=dict(saved.get(c.name, {})),
        )
        try:
            started.append(cls(ctx, **c.options))
        except Exception as e:
            warn(_start_warning(i, c.name, cls, e))
    states = {t.name: t.state for t in started if t.state}
    if states:
        try:
            _write_state(run_dir, {**saved, **states})
        except OSError as e:
            warn(f"warning: trackers: could not write {run_dir / STATE_FILE} ({_reason(e)}); --resume will start "
                 "new W&B / MLflow runs instead of continuing these")
    return TrackerSet(started, warn)


def _start_warning(index: int, name: str, cls: type[Tracker], error: Exception) -> str:
    missing = isinstance(error, ImportError)
    if missing and cls.extra:
        what = f"install it with: pip install 'pretrainlab[{cls.extra}]'"
    elif isinstance(error, TypeError):
        what = f"check trackers.{index}.options"
    else:
        what = "check its options and the backend's message"
    return f"warning: tracker {name!r} could not start ({_reason(error)}); training goes on without it; {what}"


def _reason(error: BaseException) -> str:
    text = " ".join(str(error).split())
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _read_state(run_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((run_dir / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_state(run_dir: Path, state: dict[str, Any]) -> None:
    write_text_atomic(run_dir / STATE_FILE, json.dumps(state, indent=2, sort_keys=True) + "\n")


def _step_of(record: dict[str, Any]) -> int | None:
    """The record's step as an int; None when it is missing or not a whole number."""
    step = record.get("step")
    if isinstance(step, bool) or not isinstance(step, numbers.Real):
        return None
    if not math.isfinite(float(step)) or float(step) != int(step):
        return None
    return int(step)
