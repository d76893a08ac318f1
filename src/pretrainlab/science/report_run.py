"""The run part of a report: what a run folder's metrics.jsonl, config.yaml and env.json say.

A summary table (size, tokens, steps, wall time, throughput, MFU, final losses), per-domain validation
figures, the key config values and the environment, then plots: training and validation loss against
tokens, per-domain validation curves, the data mixture (weights, shares and stage switches: mixture_plot.py),
learning rate, throughput and gradient norm against step, and one small plot for every other numeric
metric a recipe logs (`live_params`, `domain_weights/<d>`, `kl`, ...).
A run with no end line, no metrics or no validation lines is reported as such, never as a finished one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pretrainlab.science.plots import Curve, finite, line_plot
from pretrainlab.science.report_doc import Block, Heading, Notice, Para, PlotTarget, Table, fmt

# Train-line keys with a plot of their own (or none): everything else numeric is a recipe metric.
_TRAIN_KEYS = {"step", "tokens", "loss", "lr", "tokens_per_s", "mfu", "grad_norm", "skipped"}
_CONFIG_SECTIONS = ("model", "optim", "schedule", "data", "train", "eval")
_TOP_CONFIG = ("objective", "objective_options", "teacher", "seed", "device", "parallel", "callbacks")
MASKED_FLOPS_NOTE = (
    "This run uses model.linear=masked: its FLOPs per token count only the live (unmasked) weights and are "
    "theoretical. The masked weights are stored and multiplied densely, so masked dense matmuls save no time "
    "on CPU (nor memory: parameters, gradients and optimiser state are dense-sized; see docs/memory.md)."
)
_ENV_KEYS = ("python", "torch", "pretrainlab", "device", "device_name", "precision", "threads", "world_size",
             "cpu_count", "cuda", "cpu_capability", "git_commit", "platform", "hostname")


@dataclass
class RunData:
    """A run folder as read: raw config and env (empty when missing), metrics lines by kind, problems."""

    path: Path
    config: dict[str, Any]
    env: dict[str, Any]
    train: list[dict[str, Any]]
    evals: list[dict[str, Any]]
    end: dict[str, Any] | None
    problems: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.config.get("name") or self.path.name)

    @property
    def planned_steps(self) -> int | None:
        steps = (self.config.get("train") or {}).get("steps")
        return steps if isinstance(steps, int) else None


def _flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict metrics (e.g. domain_weights: {code: .7}) as slash keys (domain_weights/code)."""
    out: dict[str, Any] = {}
    for k, v in record.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "/"))
        else:
            out[key] = v
    return out


def _read_mapping(path: Path, problems: list[str], loader: Any) -> dict[str, Any]:
    if not path.is_file():
        problems.append(f"{path.name} is missing")
        return {}
    try:
        data = loader(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError) as e:
        problems.append(f"{path.name} is unreadable ({type(e).__name__}: {e})")
        return {}
    if not isinstance(data, dict):
        problems.append(f"{path.name} does not hold a mapping")
        return {}
    return data


def is_eval_line(record: dict[str, Any]) -> bool:
    """An evaluation line carries validation or task figures (`val_*`, `task/*`)."""
    return any(k.startswith("val_") or k.startswith("task/") for k in record)


def load_run(path: str | Path) -> RunData:
    """Read a run folder: config.yaml, env.json and metrics.jsonl split into train, eval and end lines."""
    from pretrainlab.train.metrics import read_metrics

    path = Path(path)
    problems: list[str] = []
    config = _read_mapping(path / "config.yaml", problems, yaml.safe_load)
    env = _read_mapping(path / "env.json", problems, json.loads)
    train: list[dict[str, Any]] = []
    evals: list[dict[str, Any]] = []
    end: dict[str, Any] | None = None
    for raw in read_metrics(path / "metrics.jsonl"):
        if not isinstance(raw, dict):
            continue
        record = _flatten(raw)
        if record.get("event") == "end":
            end = record
        elif "event" in record:
            continue
        elif is_eval_line(record):
            evals.append(record)
        elif "step" in record:
            train.append(record)
    return RunData(path, config, env, train, evals, end, problems)


def run_status(run: RunData) -> str:
    """'complete', or what is known about a run that has not finished."""
    if run.end is not None:
        return "complete"
    if not run.train and not run.evals:
        return "no metrics logged yet"
    last = max(int(r.get("step", 0) or 0) for r in run.train + run.evals)
    of = f" of {run.planned_steps}" if run.planned_steps else ""
    return f"incomplete: no end line; last logged step {last}{of} (still running, stopped or crashed)"


def _last(lines: list[dict[str, Any]], key: str) -> Any:
    for r in reversed(lines):
        if key in r:
            return r[key]
    return None


def _mean(values: list[Any]) -> float | None:
    nums = [v for v in (finite(x) for x in values) if v is not None]
    return sum(nums) / len(nums) if nums else None


def _final(run: RunData, key: str) -> Any:
    """The end line's value, else the newest logged one (for a run still going)."""
    if run.end is not None and key in run.end:
        value = run.end[key]
        return float("nan") if value is None else value  # the writer stores non-finite floats as null
    return _last(run.evals if key.startswith("val_") else run.train, key)


def duration(seconds: Any) -> str:
    """Seconds as '42.0 s', '3 min 05 s' or '2 h 07 min'."""
    s = finite(seconds)
    if s is None:
        return "—"
    if s < 120:
        return f"{s:.1f} s"
    m, sec = divmod(int(round(s)), 60)
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min {sec:02d} s"


def throughput(run: RunData) -> tuple[float | None, float | None]:
    """Mean tokens/s and MFU over the logged train lines, leaving out the first (it carries start-up)."""
    lines = run.train[1:] if len(run.train) > 1 else run.train
    return _mean([r.get("tokens_per_s") for r in lines]), _mean([r.get("mfu") for r in lines])


def domains(run: RunData) -> list[str]:
    keys = set(run.end or {}) | {k for r in run.evals for k in r}
    return sorted(k.split("/", 1)[1] for k in keys if k.startswith("val_loss/"))


def summary_rows(run: RunData) -> list[list[str]]:
    """The summary table's (quantity, value) rows."""
    tps, mfu = throughput(run)
    steps = _final(run, "step")
    of = f" of {run.planned_steps}" if run.planned_steps and run.end is None else ""
    rows = [
        ["run", run.name],
        ["status", run_status(run)],
        ["objective", str(run.config.get("objective", "—"))],
        ["parameters", fmt((run.end or {}).get("params"))],
        ["non-embedding parameters", fmt((run.end or {}).get("params_non_embedding"))],
        ["tokens", fmt(_final(run, "tokens"))],
        ["steps", fmt(steps) + of],
        ["wall time", duration((run.end or {}).get("wall_s"))],
        ["mean tokens/s", fmt(round(tps)) if tps is not None else "—"],
        ["mean MFU", f"{100 * mfu:.2f}%" if mfu is not None else "—"],
        ["final train loss", fmt(_final(run, "loss"))],
        ["final val_loss", fmt(_final(run, "val_loss"))],
        ["final val_bpb", fmt(_final(run, "val_bpb"))],
    ]
    return rows


_SUMMARY_KEYS = {"event", "step", "tokens", "loss", "wall_s", "params", "params_non_embedding", "grad_norm"}


def _shown_in_summary(key: str) -> bool:
    return key in _SUMMARY_KEYS or key.split("/", 1)[0] in {"val_loss", "val_bpb", "val_tokens"}


def _config_rows(config: dict[str, Any]) -> list[list[str]]:
    def show(v: Any) -> str:
        return json.dumps(v) if isinstance(v, (list, dict)) else str(v)

    rows = [[k, show(config[k])] for k in _TOP_CONFIG if config.get(k) not in (None, {}, [])]
    for section in _CONFIG_SECTIONS:
        values = config.get(section)
        if isinstance(values, dict):
            rows += [[f"{section}.{k}", show(v)] for k, v in values.items() if v is not None and v != {}]
    return rows


def _group(key: str) -> str:
    return key.rsplit("/", 1)[0] if "/" in key else key


def _metric_groups(lines: list[dict[str, Any]], skip: Callable[[str], bool]) -> dict[str, list[str]]:
    """Numeric keys not skipped, grouped by their slash prefix (domain_weights/a, domain_weights/b).

    A null value counts as numeric: the metrics writer stores NaN and inf as null."""
    groups: dict[str, list[str]] = {}
    for r in lines:
        for k, v in r.items():
            if skip(k) or isinstance(v, (str, bool, list)):
                continue
            members = groups.setdefault(_group(k), [])
            if k not in members:
                members.append(k)
    return groups


def _skip_train(key: str) -> bool:
    return key in _TRAIN_KEYS


def _skip_eval(key: str) -> bool:
    return key in ("step", "tokens") or key.split("/", 1)[0] in ("val_loss", "val_bpb", "val_tokens")


def _curve(lines: list[dict[str, Any]], x_key: str, key: str, label: str | None = None, markers: bool = False) -> Curve:
    """`key` against `x_key` over the lines that carry `key`."""
    kept = [r for r in lines if key in r]
    return Curve(label or key, [r.get(x_key) for r in kept], [r.get(key) for r in kept], markers=markers)


def run_plots(run: RunData, target: PlotTarget) -> tuple[list[Block], list[list[str]]]:
    """The run's plots as blocks, and the rows of metrics that stayed constant (a table, not a plot)."""
    blocks: list[Block] = []
    train, evals = run.train, run.evals
    loss_curves = [_curve(train, "tokens", "loss", "train loss"), _curve(evals, "tokens", "val_loss", markers=True)]
    written = line_plot(target.file("loss"), loss_curves, title="Loss", x_label="tokens", y_label="loss (nats/token)")
    blocks.append(target.block(written, "training and validation loss vs tokens"))
    doms = domains(run)
    if doms:
        curves = [_curve(evals, "tokens", f"val_loss/{d}", d, markers=True) for d in doms]
        written = line_plot(target.file("val-loss-domains"), curves, title="Validation loss per domain",
                            x_label="tokens", y_label="val_loss (nats/token)")
        blocks.append(target.block(written, "validation loss per domain vs tokens"))
    from pretrainlab.science.mixture_plot import mixture_plot

    mixture = mixture_plot(target.file("mixture"), train, run.config)
    if mixture is not None:
        blocks.append(target.block(mixture, "data mixture vs tokens: weights in force, realised shares, stage "
                                            "switches"))
    for key, title, label in (("lr", "Learning rate", "learning rate"), ("tokens_per_s", "Throughput", "tokens/s"),
                              ("grad_norm", "Gradient norm", "global grad norm (before clipping)")):
        log_y = key == "grad_norm" and _positive(train, key)
        written = line_plot(target.file(key.replace("_", "-")), [_curve(train, "step", key)], title=title,
                            x_label="step", y_label=label, small=True, log_y=log_y)
        blocks.append(target.block(written, f"{label} vs step"))
    constant: list[list[str]] = []
    for source, lines, x_key, skip in (("train", train, "step", _skip_train), ("eval", evals, "tokens", _skip_eval)):
        for group, keys in _metric_groups(lines, skip).items():
            values = {k: [finite(r.get(k)) for r in lines if k in r] for k in keys}
            if all(len({v for v in vs if v is not None}) <= 1 and len(vs) > 0 for vs in values.values()):
                for k, vs in values.items():
                    kept = [v for v in vs if v is not None]
                    constant.append([k, source, fmt(kept[0]) if kept else "NaN (every value)"])
                continue
            curves = [_curve(lines, x_key, k, k[len(group) + 1:] if len(keys) > 1 else k) for k in keys]
            title = "training loss per domain" if group == "loss" else group
            written = line_plot(target.file(f"metric-{group}"), curves, title=title, x_label=x_key, y_label=group,
                                small=True)
            blocks.append(target.block(written, f"{title} vs {x_key} ({source} lines)"))
    return blocks, constant


def _positive(lines: list[dict[str, Any]], key: str) -> bool:
    vals = [finite(r.get(key)) for r in lines]
    vals = [v for v in vals if v is not None]
    return bool(vals) and min(vals) > 0 and max(vals) / min(vals) > 10


def run_section(run: RunData, target: PlotTarget, *, level: int = 2) -> list[Block]:
    """Every block of a run's report, headings starting at `level`."""
    blocks: list[Block] = [Heading("Summary", level)]
    if run.end is None:
        blocks.append(Notice(f"the run has not finished: {run_status(run)}. Figures below are the newest logged ones."))
    for problem in run.problems:
        blocks.append(Notice(problem))
    blocks.append(Table(["quantity", "value"], summary_rows(run)))
    if (run.config.get("model") or {}).get("linear") == "masked":
        blocks.append(Para(MASKED_FLOPS_NOTE))
    doms = domains(run)
    if doms:
        rows = [[d, *(fmt(_final(run, f"{m}/{d}")) for m in ("val_loss", "val_bpb", "val_tokens"))] for d in doms]
        blocks += [Heading("Validation per domain", level + 1),
                   Table(["domain", "val_loss", "val_bpb", "tokens"], rows)]
    if not run.evals and (run.end is None or "val_loss" not in run.end):
        blocks.append(Notice("no validation lines were logged (no validation split, "
                             "or the run stopped before its first evaluation)"))
    extra = {k: v for k, v in (run.end or {}).items() if not _shown_in_summary(k)}
    if extra:
        blocks += [Heading("Other final values (end line)", level + 1),
                   Table(["key", "value"], [[k, fmt(v if v is not None else float("nan"))] for k, v in extra.items()])]
    if run.config:
        blocks += [Heading("Configuration", level), Table(["key", "value"], _config_rows(run.config))]
    if run.env:
        rows = [[k, fmt(run.env[k])] for k in _ENV_KEYS if run.env.get(k) is not None]
        blocks += [Heading("Environment", level), Table(["key", "value"], rows)]
    blocks.append(Heading("Plots", level))
    if not run.train and not run.evals:
        blocks.append(Para("metrics.jsonl has no train or evaluation lines yet: nothing to plot."))
        return blocks
    plots, constant = run_plots(run, target)
    blocks += plots
    if constant:
        blocks += [Heading("Constant metrics", level + 1), Table(["metric", "lines", "value"], constant)]
    return blocks
