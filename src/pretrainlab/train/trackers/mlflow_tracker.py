"""MLflow: an embedded SQLite store in the run folder by default, no server.

Options: `tracking_uri` (default `sqlite:///<run>/mlflow.db`; any MLflow URI works, e.g. a server's
`http://...`; a relative SQLite path or local folder is resolved against the run folder, not the current
one, e.g. `sqlite:///../mlflow.db` is one store shared by the runs of an out_dir), `experiment` (default
`pretrainlab`; created when missing, its artifacts in `<run>/mlflow-artifacts`), `run_name` (default the
run's name), `tags` (a mapping). The resolved config is logged as params with dotted keys
(`model.d_model`), metrics with their step, the end line as `final/<key>` metrics (the latest value is the
run's, also after a resume), and the run ends FINISHED, FAILED or KILLED (stopped).

MLflow allows only letters, digits, `_ - . / space` in names (and no empty or `.`/`..` path segments):
other characters become `_`, e.g. `task/hellaswag@10/acc` -> `task/hellaswag_10/acc` (see `mlflow_key`).
The run id and the (absolute) tracking URI are kept in `<run>/trackers.json`; `--resume` continues that
run, skipping the (key, step) points it already holds (MLflow cannot delete points), so each step appears
once.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from pretrainlab.train.trackers.base import Status, Tracker, TrackerContext, flatten_config, register_tracker

MAX_KEY = 250  # MLflow's limit on metric and param names
MAX_PARAM_VALUE = 6000  # and on param values
BATCH = 100  # params per log_batch call (MLflow's limit; 1000 for metrics)
_STATUS = {"finished": "FINISHED", "failed": "FAILED", "stopped": "KILLED"}


def mlflow_key(key: str) -> str:
    """A legal MLflow metric/param name for `key`: characters other than letters, digits, `_ - . / space`
    become `_`; empty, `.` and `..` path segments are dropped or replaced (MLflow refuses names that
    normalise to another path); at most 250 characters."""
    text = re.sub(r"[^\w.\- /]", "_", key)
    parts = ["_" if p in (".", "..") else p for p in text.split("/") if p]
    return ("/".join(parts) or "_")[:MAX_KEY]


@register_tracker("mlflow")
class MlflowTracker(Tracker):
    extra = "mlflow"

    def __init__(
        self,
        ctx: TrackerContext,
        tracking_uri: str | None = None,
        experiment: str = "pretrainlab",
        run_name: str | None = None,
        tags: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(ctx)
        import mlflow  # noqa: F401  (first: ImportError without the mlflow package)
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri = resolve_tracking_uri(tracking_uri, ctx.run_dir)
        self.client = MlflowClient(tracking_uri=uri)
        self._done: dict[str, int] = {}  # key -> last step MLflow already holds (a resumed run)
        run_id = ctx.state.get("run_id") if ctx.resume and ctx.state.get("tracking_uri") == uri else None
        if run_id is not None:
            self.run_id = str(run_id)
            self.client.update_run(self.run_id, status="RUNNING")
            self._done = self._held_steps()
        else:
            found = self.client.get_experiment_by_name(experiment)
            if found is not None:
                experiment_id = found.experiment_id
            else:
                artifacts = (ctx.run_dir / "mlflow-artifacts").resolve().as_uri()
                experiment_id = self.client.create_experiment(experiment, artifact_location=artifacts)
            run = self.client.create_run(
                experiment_id, run_name=run_name or ctx.run_name, tags={str(k): str(v) for k, v in (tags or {}).items()}
            )
            self.run_id = run.info.run_id
            params = [
                Param(mlflow_key(k), _param_value(v)) for k, v in sorted(flatten_config(ctx.config).items())
            ]
            for i in range(0, len(params), BATCH):
                self.client.log_batch(self.run_id, params=params[i : i + BATCH])
        self.state = {"run_id": self.run_id, "tracking_uri": uri}

    def _held_steps(self) -> dict[str, int]:
        run = self.client.get_run(self.run_id)
        return {
            key: max((m.step for m in self.client.get_metric_history(self.run_id, key)), default=-1)
            for key in run.data.metrics
        }

    def log_metrics(self, metrics: dict[str, float], step: int, *, again: bool = False) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = []
        for key, value in metrics.items():
            name = mlflow_key(key)
            if not again and step <= self._done.get(name, -1):
                continue  # a resumed run: MLflow holds this point from the interrupted session
            batch.append(Metric(name, value, now, step))
        for i in range(0, len(batch), 1000):
            self.client.log_batch(self.run_id, metrics=batch[i : i + 1000])

    def log_summary(self, summary: dict[str, float], step: int) -> None:
        """`final/<key>` metrics; after a resume they are logged again, the latest value being the run's."""
        self.log_metrics({f"final/{k}": v for k, v in summary.items()}, step, again=True)

    def close(self, status: Status) -> None:
        self.client.set_terminated(self.run_id, status=_STATUS[status])


def resolve_tracking_uri(uri: str | None, run_dir: Path) -> str:
    """`uri` with a relative local path made absolute against `run_dir` (the default: `<run>/mlflow.db`).

    `sqlite:///mlflow.db` names a path relative to the current folder in SQLAlchemy's URL syntax (four
    slashes make it absolute); a run can be resumed from another folder, so relative paths are taken from
    the run folder. Plain folder paths and `file:` URIs (MLflow's file store) are treated alike; server
    URIs (`http://...`, `databricks`, other databases) are left as they are.
    """
    if not uri:
        return f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):]
        if path in ("", ":memory:") or path.startswith("/") or _is_windows_absolute(path):
            return uri
        query = ""
        if "?" in path:
            path, query = path.split("?", 1)
            query = "?" + query
        return f"sqlite:///{(run_dir / Path(path).expanduser()).resolve()}{query}"
    if uri.startswith("file:"):
        path = uri[len("file:"):]
        if path.startswith("/") or _is_windows_absolute(path):
            return uri
        return (run_dir / Path(path).expanduser()).resolve().as_uri()
    if _is_windows_absolute(uri) or uri.startswith("/") or uri in ("databricks", "databricks-uc", "uc"):
        return uri
    if re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*:", uri):
        return uri  # a scheme: a server or a database MLflow knows how to reach
    return str((run_dir / Path(uri).expanduser()).resolve())  # a plain local folder: MLflow's file store


def _is_windows_absolute(path: str) -> bool:
    return bool(re.match(r"^[A-Za-z]:[\\/]", path))


def _param_value(value: Any) -> str:
    return str(value)[:MAX_PARAM_VALUE]
