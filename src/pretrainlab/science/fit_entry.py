"""`pretrainlab fit`: fit a scaling law per group of a sweep's finished runs, print it, save JSON and a plot.

Reads each sweep's results with `pretrainlab.science.results.read_results` (a sweep folder through
`load_results`, which rebuilds the rows from the run folders; a folder holding only a results.csv, or the
csv itself, typed the same way), keeps the rows with status `done`, groups them by `--by` (group names by
`results.group_label`, so they are the same whichever way the rows were read), fits each group
(`pretrainlab.science.fit`) and writes `<out>/fit-<law>-<x>.json` and `<out>/fit-<law>-<x>.png` (default
out: `<first sweep>/fits/`).

The x axis `params` is the final *non-embedding* parameter count (the `params_non_embedding` column), the
count Kim et al. 2025 fit over (and Kaplan et al. 2020 before them); `params_total` is the full count
including embeddings; `avg_params` is the non-embedding count averaged over training (*The Journey
Matters*, Jin et al. 2025) for recipes whose parameter count changes while training (it equals `params`
for the others); `tokens` is the training tokens seen (repeats included); `data_tokens` is the unique
training tokens of the data the run drew from (for data-efficiency comparisons: how much data a recipe
needs for a loss).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pretrainlab.science.fit import (
    FitError,
    FitResult,
    data_efficiency,
    data_efficiency_interval,
    extrapolate,
    fit_chinchilla,
    fit_power_law,
    plot_fits,
)
from pretrainlab.science.results import group_label, read_results

X_COLUMNS = {
    "params": "params_non_embedding",
    "params_total": "params",
    "avg_params": "avg_params",
    "tokens": "tokens",
    "data_tokens": "data_tokens",
}
X_LABELS = {
    "params_non_embedding": "non-embedding parameters",
    "params": "parameters (with embeddings)",
    "avg_params": "average non-embedding parameters over training",
    "tokens": "training tokens",
    "data_tokens": "unique training tokens (data size)",
}
TOKEN_AXES = ("tokens", "data_tokens")  # power laws over these compare recipes by data efficiency
N_PARAMS = {"power": 3, "chinchilla": 5}


def fit_from_cli(args: argparse.Namespace) -> int:
    """Run `fit_sweeps` with the command-line arguments, print the tables and the paths written."""
    record = fit_sweeps(
        args.sweeps,
        law=args.law,
        x=args.x,
        y=args.y,
        by=args.by,
        extrapolate_at=args.extrapolate,
        extrapolate_tokens=getattr(args, "extrapolate_tokens", None),
        bootstrap=args.bootstrap,
        seed=getattr(args, "seed", 0),
        out=args.out,
    )
    print_fit_tables(record)
    for note in record["notes"]:
        print(f"note: {note}")
    print(f"wrote {record['json']}")
    print(f"wrote {record['png']}")
    return 0


def fit_sweeps(
    sweeps: Sequence[str | Path],
    *,
    law: str = "power",
    x: str = "params",
    y: str = "val_loss",
    by: str | None = None,
    extrapolate_at: Sequence[float] = (),
    extrapolate_tokens: float | None = None,
    bootstrap: int = 200,
    seed: int = 0,
    out: str | Path | None = None,
) -> dict[str, Any]:
    """Fit one law per group of the sweeps' finished rows; write the JSON and PNG; return the JSON record.

    The record also carries "json" and "png" (the paths written). Raises FitError (exit 2 from the CLI) for
    unknown columns, groups with too few finished points, or points a law cannot take.
    """
    if law not in N_PARAMS:
        raise FitError(f"--law must be one of {sorted(N_PARAMS)}, got {law!r}")
    if x not in X_COLUMNS:
        raise FitError(f"--x must be one of {sorted(X_COLUMNS)}, got {x!r}")
    if law == "chinchilla" and x in TOKEN_AXES:
        raise FitError(
            "the Chinchilla law fits parameters and tokens together: --x names its parameter axis",
            hint="use --x params, params_total or avg_params with --law chinchilla",
        )
    if not sweeps:
        raise FitError("no sweep folder given", hint="pass a sweep folder (or a results.csv)")
    rows, sources = read_rows(sweeps)
    done = [r for r in rows if str(r.get("status") or "done") == "done"]
    notes: list[str] = []
    x_col = _x_column(x, done, notes)
    for col in [x_col, y, *(["tokens"] if law == "chinchilla" else []), *([by] if by else [])]:
        _require_column(rows, col, sources)
    if x_col == "data_tokens":
        unknown = [str(r.get("name") or r.get("run_dir")) for r in done if r.get("data_tokens") is None]
        if unknown:
            raise FitError(
                f"data_tokens is unknown for {len(unknown)} finished run(s) ({', '.join(unknown[:3])}"
                f"{' ...' if len(unknown) > 3 else ''}): the prepared data they name (data.path) was not found",
                hint="run `pretrainlab fit` on the sweep folder from where its data.path resolves (the folder the "
                "sweep ran in), with the prepared data still there",
            )
    groups = _group(done, by)
    _check_counts(rows, groups, law, by)

    fits: dict[str, FitResult] = {}
    points: dict[str, dict[str, Any]] = {}
    for g, members in groups.items():
        names = [str(r.get("name") or r.get("run_dir") or f"row {i + 1}") for i, r in enumerate(members)]
        xs = [_number(r.get(x_col)) for r in members]
        ys = [_number(r.get(y)) for r in members]
        points[g] = {"x": xs, "y": ys, "names": names}
        try:
            if law == "power":
                fits[g] = fit_power_law(xs, ys, bootstrap=bootstrap, seed=seed, x_name=x, names=names)
            else:
                ds = [_number(r.get("tokens")) for r in members]
                points[g]["d"] = ds
                fits[g] = fit_chinchilla(xs, ds, ys, bootstrap=bootstrap, seed=seed, names=names, x_name=x)
        except FitError as e:
            where = f"{by}={g}: " if by else ""
            raise FitError(f"{where}{e.message}", hint=e.hint) from None
        notes += _fit_notes(fits[g], f"{by}={g}" if by else "the fit", bootstrap, len(set(xs)))

    extrapolations: dict[str, list[dict[str, Any]]] = {}
    for g, fit in fits.items():
        d_at = None
        if law == "chinchilla":
            d_at = extrapolate_tokens if extrapolate_tokens else (fit.d_range[1] if fit.d_range else None)
        extrapolations[g] = [extrapolate(fit, float(v), d_at) for v in extrapolate_at]

    efficiency: list[dict[str, Any]] = []
    if law == "power" and x in TOKEN_AXES and len(fits) >= 2:
        at = list(extrapolate_at) or [max(max(p["x"]) for p in points.values())]
        efficiency = _efficiency_table(fits, at)

    out_dir = Path(out) if out is not None else _default_out(sweeps[0])
    stem = f"fit-{law}-{x}"
    record: dict[str, Any] = {
        "law": law,
        "x": x,
        "x_column": x_col,
        "y": y,
        "by": by,
        "sources": [str(s) for s in sources],
        "bootstrap": bootstrap,
        "seed": seed,
        "fits": {g: f.to_dict() for g, f in fits.items()},
        "points": points,
        "extrapolations": extrapolations,
        "data_efficiency": efficiency,
        "notes": notes,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    png = plot_fits(
        fits,
        {g: (p["x"], p["y"], p["d"]) if "d" in p else (p["x"], p["y"]) for g, p in points.items()},
        out_dir / f"{stem}.png",
        x_label=X_LABELS[x_col],
        y_label=y,
        extend_to=max(extrapolate_at) if extrapolate_at else None,
        title=f"{'E + A/x^alpha' if law == 'power' else 'E + A/N^alpha + B/D^beta'}: {y}",
    )
    json_path = out_dir / f"{stem}.json"
    tmp = json_path.with_name(f".{json_path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, json_path)
    return {**record, "json": str(json_path), "png": str(png)}


# ---------------------------------------------------------------------------------------------- reading


def read_rows(sweeps: Sequence[str | Path]) -> tuple[list[dict[str, Any]], list[Path]]:
    """All rows of the given sweeps, typed (`results.read_results`); each row gains a `sweep` column (the
    sweep folder's name, or the csv's folder / stem) unless it has one."""
    rows: list[dict[str, Any]] = []
    sources: list[Path] = []
    for s in sweeps:
        path = Path(s)
        got, source = read_results(path)
        if path.is_dir():
            label = path.resolve().name
        else:
            label = path.resolve().parent.name if path.name == "results.csv" else path.stem
        for r in got:
            if r.get("sweep") is None:
                r["sweep"] = label
        rows += got
        sources.append(source)
    if not rows:
        raise FitError(
            f"no result rows in {', '.join(str(s) for s in sources)}",
            hint="run the sweep first (`pretrainlab sweep SWEEP.yaml`)",
        )
    return rows, sources


def _number(value: Any) -> float:
    """A cell as a float: empty or missing cells are NaN (the fit then names the run)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _x_column(x: str, done: list[dict[str, Any]], notes: list[str]) -> str:
    """The results column for --x. `params` is the non-embedding count; a sweep whose runs did not record it
    (every cell empty or zero) falls back to the total count, with a note."""
    col = X_COLUMNS[x]
    if col != "params_non_embedding":
        return col
    values = [_number(r.get(col)) for r in done]
    if values and all(not (v > 0) for v in values):
        notes.append("no run recorded params_non_embedding: fitted over the total parameter count (params)")
        return "params"
    return col


def _require_column(rows: list[dict[str, Any]], col: str, sources: list[Path]) -> None:
    if not any(col in r for r in rows):
        have = sorted({k for r in rows for k in r})
        raise FitError(
            f"no column {col!r} in {', '.join(str(s) for s in sources)}",
            hint=f"pick one of the columns there: {', '.join(have)}",
        )


def _group(rows: list[dict[str, Any]], by: str | None) -> dict[str, list[dict[str, Any]]]:
    """Rows per value of `by` named by `group_label` (all rows under "all" without it), groups in numeric
    order when they are numbers."""
    if by is None:
        return {"all": rows}
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(group_label(r.get(by)), []).append(r)
    keys = list(groups)
    if all(math.isfinite(_number(k)) for k in keys):
        keys.sort(key=_number)
    else:
        keys.sort()
    return {k: groups[k] for k in keys}


def _check_counts(
    rows: list[dict[str, Any]], groups: dict[str, list[dict[str, Any]]], law: str, by: str | None
) -> None:
    """Every group needs as many finished points as the law has parameters; say what the other rows are."""
    need = N_PARAMS[law]
    not_done: dict[str, int] = {}
    for r in rows:
        status = str(r.get("status") or "done")
        if status != "done":
            not_done[status] = not_done.get(status, 0) + 1
    others = ", ".join(f"{n} {s}" for s, n in sorted(not_done.items()))
    if not groups:
        raise FitError(
            f"no finished runs (status done) among {len(rows)} rows ({others})",
            hint="wait for the sweep to finish or rerun it (`pretrainlab sweep` resumes unfinished points)",
        )
    for g, members in groups.items():
        if len(members) < need:
            where = f" with {by}={g}" if by else ""
            also = f"; the other rows are not done ({others})" if others else ""
            raise FitError(
                f"{len(members)} finished point{'s' if len(members) != 1 else ''}{where} but the {law} law has "
                f"{need} parameters: too few points to fit{also}",
                hint=f"give at least {need} finished runs per group (rerun failed points: `pretrainlab sweep` "
                "resumes them), or fit fewer groups (--by)",
            )


def _fit_notes(fit: FitResult, label: str, requested: int, distinct_x: int) -> list[str]:
    """Warnings a reader of the table needs: as many sizes as parameters, resamples left out, intervals that
    reach the optimiser's bounds (then the points do not pin the law down, whatever the point estimate says)."""
    notes = []
    if fit.law == "power" and distinct_x <= len(fit.params):
        notes.append(f"{label}: only {distinct_x} distinct values of {fit.x_name} for {len(fit.params)} parameters: "
                     "the law is pinned by the seeds' spread alone (the robust fit may pass anywhere between the "
                     "middle seeds); more sizes make it trustworthy")
    if requested and fit.n_bootstrap < 0.95 * requested:
        notes.append(f"{label}: {requested - fit.n_bootstrap} of {requested} bootstrap resamples did not converge "
                     "and were left out")
    loose = [k for k, (lo, hi) in fit.ci.items() if (k in ("alpha", "beta") and (hi >= 9.9 or lo <= 1e-3))
             or (k == "E" and lo < 1e-6 * fit.params["E"])]
    if loose:
        notes.append(f"{label}: the 95% intervals of {', '.join(loose)} reach the edge of what the law allows "
                     "(E near 0, an exponent near 0 or 10): the points do not pin this law down (add points over "
                     "a wider range, or seeds to average the noise)")
    return notes


def _default_out(first: str | Path) -> Path:
    path = Path(first)
    return (path if path.is_dir() else path.parent) / "fits"


# --------------------------------------------------------------------------------------------- comparing


def _efficiency_table(fits: dict[str, FitResult], at: Sequence[float]) -> list[dict[str, Any]]:
    """k for every ordered pair of groups at each token count: B reaches A's loss at D with D/k tokens."""
    rows = []
    for d in at:
        for a, fa in fits.items():
            for b, fb in fits.items():
                if a == b:
                    continue
                k = data_efficiency(fa, fb, float(d))
                interval = data_efficiency_interval(fa, fb, float(d))
                rows.append({
                    "a": a,
                    "b": b,
                    "d": float(d),
                    "loss_a": float(fa.predict(float(d))),
                    "k": k,
                    "lo": None if interval is None else interval[0],
                    "hi": None if interval is None else interval[1],
                    "reachable": k > 0,
                })
    return rows


# ---------------------------------------------------------------------------------------------- printing


def print_fit_tables(record: dict[str, Any]) -> None:
    """The fits (one row per group: parameters with 95% intervals, n, extrapolations) and data efficiency."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    names = ["E", "A", "alpha"] + (["B", "beta"] if record["law"] == "chinchilla" else [])
    table = Table(title=f"{record['law']} fit of {record['y']} over {record['x_column']}")
    table.add_column(record["by"] or "group")
    table.add_column("n", justify="right")
    for k in names:
        table.add_column(f"{k} [95% CI]", justify="right")
    extra = next(iter(record["extrapolations"].values()), [])
    for e in extra:
        at = f"{e['x']:.3g}" + (f", D={e['d']:.3g}" if e["d"] is not None else "")
        table.add_column(f"L({at})", justify="right")
    for g, fit in record["fits"].items():
        cells = [g, str(fit["n_points"])]
        for k in names:
            lo_hi = fit["ci"].get(k)
            cells.append(_with_interval(fit["params"][k], lo_hi))
        for e in record["extrapolations"][g]:
            cells.append(_with_interval(e["y"], None if e["lo"] is None else (e["lo"], e["hi"])))
        table.add_row(*cells)
    console.print(table)
    if record["data_efficiency"]:
        eff = Table(title="data efficiency: B reaches A's loss at D tokens with D/k tokens")
        for col in ("A", "B", "D", "A's loss at D", "k [95% CI]"):
            eff.add_column(col, justify="right" if col not in ("A", "B") else "left")
        for r in record["data_efficiency"]:
            k = _with_interval(r["k"], None if r["lo"] is None else (r["lo"], r["hi"])) if r["reachable"] else (
                "never (below B's asymptote)"
            )
            eff.add_row(r["a"], r["b"], f"{r['d']:.3g}", f"{r['loss_a']:.4g}", k)
        console.print(eff)


def _with_interval(value: float, lo_hi: Sequence[float] | None) -> str:
    if lo_hi is None:
        return f"{value:.4g}"
    return f"{value:.4g} [{lo_hi[0]:.4g}, {lo_hi[1]:.4g}]"
