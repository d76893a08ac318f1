"""The sweep part of a report: the results table (sorted by validation loss, best row marked), every
run's validation curve overlaid, the final loss against each swept axis, the sweep's fits and any
ensemble evaluations inside the sweep folder (layout: /tmp/h4/contracts.md, "Sweep folder").

Results come from `pretrainlab.science.results.read_results` (through `load_results`: the run folders
are the source of truth), falling back to `results.csv`, its written copy, when the run folders cannot
be read. Both give the same typed cells, and axis values are named by `results.group_label`, as
`pretrainlab fit` names its groups.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pretrainlab.errors import PretrainlabError
from pretrainlab.science.plots import Curve, finite, line_plot, wants_log
from pretrainlab.science.report_doc import Block, Heading, Notice, Para, PlotTarget, Table, fmt
from pretrainlab.science.report_fits import ensemble_blocks, find_files, fits_blocks, read_json
from pretrainlab.science.report_run import load_run
from pretrainlab.science.results import group_label, read_results, read_results_csv

# Result columns that are not swept keys (csv fallback without points.json: every other column is an axis).
_METRIC_COLUMNS = {"name", "status", "seed", "sweep", "params", "params_non_embedding", "avg_params", "tokens",
                   "data_tokens", "step", "wall_s", "loss", "val_loss", "val_bpb", "run_dir"}


def load_rows(sweep_dir: Path) -> tuple[list[dict[str, Any]], list[Block]]:
    """The sweep's result rows (one per point, in point order) and notices about where they came from."""
    notes: list[Block] = []
    try:
        rows, _ = read_results(sweep_dir)
        return rows, notes
    except PretrainlabError as e:
        notes.append(Notice(f"reading the run folders failed ({e.message}); results.csv is shown instead"))
    path = sweep_dir / "results.csv"
    if not path.is_file():
        notes.append(Notice(f"{path} is missing and the run folders could not be read: no results yet"))
        return [], notes
    try:
        return read_results_csv(path), notes
    except PretrainlabError as e:
        notes.append(Notice(e.message))
        return [], notes


def _key(value: Any) -> str:
    """A hashable, readable form of an axis value (the label `pretrainlab fit --by` gives it)."""
    return group_label(value)


def axis_columns(points: list[dict[str, Any]], rows: list[dict[str, Any]]) -> list[str]:
    """The swept keys (every key of points.json `axes` but the seed, dotted or not, e.g. `objective`) that
    take more than one value. Rows lacking a key get it from points.json. Without points.json: every
    result column that is not a metric."""
    by_name = {str(p.get("name")): p for p in points if isinstance(p, dict)}
    keys: list[str] = []
    for p in by_name.values():
        axes = p.get("axes") if isinstance(p.get("axes"), dict) else {}
        for k in axes:
            if k not in keys and k != "seed":
                keys.append(k)
    if not keys:  # no points.json: the columns of the results that are not metrics
        keys = [k for r in rows for k in r if "/" not in k and k not in _METRIC_COLUMNS]
        keys = list(dict.fromkeys(keys))
    for r in rows:
        point = by_name.get(str(r.get("name")), {})
        axes = point.get("axes") if isinstance(point.get("axes"), dict) else {}
        for k in keys:
            if r.get(k) is None and k in axes:
                r[k] = axes[k]
    return [k for k in keys if len({_key(r.get(k)) for r in rows}) > 1]


def _y_metric(rows: list[dict[str, Any]]) -> str:
    return "val_loss" if any(finite(r.get("val_loss")) is not None for r in rows) else "loss"


def _is_done(row: dict[str, Any]) -> bool:
    return str(row.get("status", "done")) == "done"


def results_table(rows: list[dict[str, Any]], axes: list[str], y: str) -> Table:
    """Rows sorted by `y` (finished, finite first); the best row marked with a star."""
    ranked = sorted(range(len(rows)), key=lambda i: (
        not (_is_done(rows[i]) and finite(rows[i].get(y)) is not None), finite(rows[i].get(y)) or 0.0, i))
    domains = sorted({k for r in rows for k in r if k.startswith("val_loss/")})
    # avg_params is the non-embedding count averaged over training: shown where it differs from the final count
    show_avg = any(r.get("avg_params") not in (None, r.get("params_non_embedding")) for r in rows)
    show_data = any(r.get("data_tokens") is not None for r in rows)
    cols = ["name", "status"] + (["seed"] if any(r.get("seed") is not None for r in rows) else []) + axes
    cols += ["params"] + (["avg_params"] if show_avg else [])
    cols += ["tokens"] + (["data_tokens"] if show_data else []) + ["step", "wall_s", "loss", "val_loss", "val_bpb", *domains]
    table_rows, marked = [], set()
    for pos, i in enumerate(ranked):
        r = rows[i]
        best = pos == 0 and _is_done(r) and finite(r.get(y)) is not None
        if best:
            marked.add(pos)
        cells = [_key(r.get(c)) if c in axes and r.get(c) is not None else fmt(r.get(c)) for c in cols]
        table_rows.append(["★" if best else "", *cells])
    return Table(["best", *cols], table_rows, marked)


def _log_tail(sweep_dir: Path, name: str) -> str:
    log = sweep_dir / "logs" / f"{name}.log"
    try:
        lines = [ln.strip() for ln in log.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    except OSError:
        return f"no log at {log}"
    return f"last log line: {lines[-1][:300]} ({log})" if lines else f"{log} is empty"


def run_dir_of(sweep_dir: Path, row: dict[str, Any]) -> Path | None:
    """The run folder of a result row: its `run_dir` (absolute or relative to the sweep), else runs/<name>."""
    candidates = []
    if row.get("run_dir"):
        candidates += [Path(str(row["run_dir"])), sweep_dir / str(row["run_dir"])]
    candidates.append(sweep_dir / "runs" / str(row.get("name")))
    return next((c for c in candidates if c.is_dir()), None)


def val_curves_block(sweep_dir: Path, rows: list[dict[str, Any]], target: PlotTarget) -> list[Block]:
    """Every run's validation loss against tokens on one plot."""
    curves, missing = [], []
    for r in rows:
        run_dir = run_dir_of(sweep_dir, r)
        evals = load_run(run_dir).evals if run_dir is not None else []
        if not evals:
            missing.append(str(r.get("name")))
            continue
        curves.append(Curve(str(r.get("name")), [e.get("tokens") for e in evals], [e.get("val_loss") for e in evals],
                            markers=len(evals) < 12))
    blocks: list[Block] = [target.block(
        line_plot(target.file("val-curves"), curves, title="Validation loss of every run", x_label="tokens",
                  y_label="val_loss (nats/token)"), "validation loss vs tokens, all runs")]
    if missing:
        blocks.append(Para(f"No validation lines yet for: {', '.join(missing)}."))
    return blocks


def _short_names(axes: list[str]) -> dict[str, str]:
    last = [a.rsplit(".", 1)[-1] for a in axes]
    return {a: (s if last.count(s) == 1 else a) for a, s in zip(axes, last)}


def axis_plot(rows: list[dict[str, Any]], axis: str, axes: list[str], y: str, target: PlotTarget) -> Block:
    """Final `y` against one axis: one line per combination of the other axes, mean over seeds with
    min-max bars; log x when the axis is numeric, positive and spans more than 10x."""
    others = [a for a in axes if a != axis]
    short = _short_names(axes)
    done = [r for r in rows if _is_done(r) and finite(r.get(y)) is not None and r.get(axis) is not None]
    values = [r[axis] for r in done]
    if values and all(_is_weights(v) for v in values):
        return mixture_axis_plot(done, axis, y, target)
    numeric = bool(values) and all(finite(v) is not None for v in values)
    order = sorted({float(v) for v in values}) if numeric else list(dict.fromkeys(_key(v) for v in values))
    if len(order) < 2:
        return Para(f"{y} against {axis}: fewer than two finished values, nothing to plot.")
    groups: dict[str, dict[Any, list[float]]] = {}
    for r in done:
        label = ", ".join(f"{short[o]}={_key(r.get(o))}" for o in others) or y
        x = float(r[axis]) if numeric else order.index(_key(r[axis]))
        groups.setdefault(label, {}).setdefault(x, []).append(float(r[y]))
    curves = []
    for label, by_x in groups.items():
        xs = sorted(by_x)
        ys = [sum(by_x[x]) / len(by_x[x]) for x in xs]
        curves.append(Curve(label, xs, ys, [min(by_x[x]) for x in xs], [max(by_x[x]) for x in xs], markers=True))
    written = line_plot(target.file(f"axis-{axis}"), curves, title=f"final {y} vs {axis}", x_label=axis, y_label=y,
                        log_x=numeric and wants_log(order), x_ticks=None if numeric else order)
    return target.block(written, f"final {y} against {axis} (mean over seeds, bars min-max)")


def _is_weights(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(finite(w) is not None for w in value.values())


def mixture_axis_plot(done: list[dict[str, Any]], axis: str, y: str, target: PlotTarget) -> Block:
    """A mixture axis (each value a {domain: weight} mapping, e.g. `data.weights`): final `y` of every run
    against each domain's normalised weight, one colour per domain (RegMix-style); categorical ticks
    holding whole mappings would be unreadable."""
    domains = list(dict.fromkeys(d for r in done for d in r[axis]))
    curves = []
    for d in domains:
        xs, ys = [], []
        for r in done:
            total = sum(float(w) for w in r[axis].values())
            xs.append(float(r[axis].get(d, 0.0)) / total if total > 0 else 0.0)
            ys.append(float(r[y]))
        curves.append(Curve(d, xs, ys, points_only=True))
    written = line_plot(target.file(f"axis-{axis}"), curves, title=f"final {y} vs each domain's weight",
                        x_label=f"{axis} (normalised weight of the domain)", y_label=y)
    return target.block(written, f"final {y} of every run against each domain's weight in {axis}")


def sweep_section(sweep_dir: Path, target: PlotTarget, out_dir: Path, *, level: int = 2) -> list[Block]:
    """Every block of a sweep's report, headings starting at `level`."""
    points, problem = read_json(sweep_dir / "points.json") if (sweep_dir / "points.json").is_file() else ([], None)
    blocks: list[Block] = [problem] if problem is not None else []
    points = points if isinstance(points, list) else []
    rows, notes = load_rows(sweep_dir)
    blocks += notes
    blocks.append(Heading("Results", level))
    if not rows:
        blocks.append(Para(f"{len(points)} points planned; no results yet."))
    else:
        axes = axis_columns(points, rows)
        y = _y_metric(rows)
        counts: dict[str, int] = {}
        for r in rows:
            counts[str(r.get("status", "done"))] = counts.get(str(r.get("status", "done")), 0) + 1
        blocks.append(Para(f"{len(rows)} points: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
                           + (f"; swept: {', '.join(axes)}" if axes else "; no swept axis besides the seed")
                           + f"; sorted by {y}."))
        for r in rows:
            if str(r.get("status")) == "failed":
                blocks.append(Notice(f"point {r.get('name')} failed; {_log_tail(sweep_dir, str(r.get('name')))}"))
        if y != "val_loss":
            blocks.append(Notice("no run has a finite val_loss; the table and plots use the training loss"))
        blocks.append(results_table(rows, axes, y))
        blocks.append(Heading("Validation curves", level))
        blocks += val_curves_block(sweep_dir, rows, target)
        if axes:
            blocks.append(Heading(f"Final {y} against each swept axis", level))
            blocks += [axis_plot(rows, a, axes, y, target) for a in axes]
    if (sweep_dir / "fits").is_dir():
        blocks.append(Heading("Fits", level))
        blocks += fits_blocks(sweep_dir / "fits", out_dir, level=level + 1)
    ensembles = list(find_files(sweep_dir, "ensemble.json"))
    if ensembles:
        blocks.append(Heading("Ensembles", level))
        for path in ensembles:
            where = path.parent.relative_to(sweep_dir).as_posix()
            title = "Ensemble (sweep folder)" if where == "." else f"Ensemble {where}"
            blocks += ensemble_blocks(path, out_dir, level=level + 1, title=title)
    return blocks
