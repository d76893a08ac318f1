"""Report sections for result files other tools write: scaling-law fits (`fits/*.json` with their PNGs,
written by `pretrainlab fit`) and ensemble evaluations (`ensemble.json` with `ensemble.png`, written by
`pretrainlab ensemble`). Formats: /tmp/h4/contracts.md ("Fits", "Ensembles"). An unreadable file becomes
a notice in the report, never a crash.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pretrainlab.science.plots import finite
from pretrainlab.science.report_doc import Block, Heading, Image, Notice, Para, Table, fmt, relative_href

_PARAM_ORDER = ("E", "A", "alpha", "B", "beta")
_LAWS = {"power": "L(x) = E + A / x^alpha", "chinchilla": "L(N, D) = E + A / N^alpha + B / D^beta"}
_PRUNE = {"checkpoints", "__pycache__"}


def _walk(root: Path) -> Iterator[tuple[Path, list[str], list[str]]]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _PRUNE and not d.startswith("."))
        yield Path(dirpath), dirnames, filenames


def find_files(root: Path, name: str) -> list[Path]:
    """Every file called `name` under `root` (root included), sorted; checkpoints and hidden folders skipped."""
    return sorted(d / name for d, _, files in _walk(root) if name in files)


def find_dirs(root: Path, name: str) -> list[Path]:
    """Every folder called `name` below `root`, sorted; checkpoints and hidden folders skipped."""
    return sorted(d / name for d, dirs, _ in _walk(root) if name in dirs)


def read_json(path: Path) -> tuple[Any, Notice | None]:
    """The parsed file, or (None, a notice naming the file and what is wrong with it)."""
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except (OSError, ValueError) as e:
        return None, Notice(f"{path} could not be read as JSON ({type(e).__name__}: {e}); it is left out")


def _cell(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(", ", ": "))[:200]
    return fmt(value)


def generic_table(obj: Any) -> Block:
    """A table for a JSON value of unknown shape (a mapping, a mapping of mappings, a list of mappings,
    or a mapping of equal-length lists); anything else as one line of JSON."""
    if isinstance(obj, dict) and obj and all(isinstance(v, dict) for v in obj.values()):
        cols = list(dict.fromkeys(k for v in obj.values() for k in v))
        return Table(["", *cols], [[str(k), *(_cell(v.get(c)) for c in cols)] for k, v in obj.items()])
    if isinstance(obj, list) and obj and all(isinstance(v, dict) for v in obj):
        cols = list(dict.fromkeys(k for v in obj for k in v))
        return Table(cols, [[_cell(v.get(c)) for c in cols] for v in obj])
    if isinstance(obj, dict) and obj and all(isinstance(v, list) for v in obj.values()):
        n = max(len(v) for v in obj.values())
        cols = list(obj)
        return Table(cols, [[_cell(obj[c][i] if i < len(obj[c]) else None) for c in cols] for i in range(n)])
    if isinstance(obj, dict) and obj:
        return Table(["key", "value"], [[str(k), _cell(v)] for k, v in obj.items()])
    return Para(json.dumps(obj)[:2000])


def _estimate(params: dict[str, Any], ci: dict[str, Any], name: str) -> str:
    value = fmt(finite(params.get(name)) if params.get(name) is not None else None)
    interval = ci.get(name) if isinstance(ci, dict) else None
    if isinstance(interval, (list, tuple)) and len(interval) == 2:
        value += f" [{fmt(finite(interval[0]))}, {fmt(finite(interval[1]))}]"
    return value


def fit_table(fits: dict[str, Any]) -> Table:
    """One row per fitted group: points, every parameter with its 95% bootstrap interval, Huber loss."""
    names: list[str] = []
    for f in fits.values():
        for p in (f.get("params") or {}) if isinstance(f, dict) else {}:
            if p not in names:
                names.append(p)
    names.sort(key=lambda p: (_PARAM_ORDER.index(p) if p in _PARAM_ORDER else len(_PARAM_ORDER), p))
    rows = []
    for group, f in fits.items():
        f = f if isinstance(f, dict) else {}
        params, ci = f.get("params") or {}, f.get("ci") or {}
        estimates = [_estimate(params, ci, p) for p in names]
        rows.append([str(group), fmt(f.get("n_points")), *estimates, fmt(f.get("loss"))])
    return Table(["group", "points", *(f"{p} [95% CI]" for p in names), "Huber loss"], rows)


def extrapolation_table(extrapolations: dict[str, Any]) -> Block:
    """`{group: [{x, d, y, lo, hi}]}` (what `pretrainlab fit --extrapolate` writes) as one row per prediction."""
    if not all(isinstance(v, list) and all(isinstance(e, dict) for e in v) for v in extrapolations.values()):
        return generic_table(extrapolations)
    items = [(str(g), e) for g, preds in extrapolations.items() for e in preds]
    with_d = any(e.get("d") is not None for _, e in items)
    rows = []
    for group, e in items:
        band = f" [{fmt(finite(e.get('lo')))}, {fmt(finite(e.get('hi')))}]" if e.get("lo") is not None else ""
        rows.append([group, fmt(e.get("x")), *([fmt(e.get("d"))] if with_d else []), fmt(e.get("y")) + band])
    return Table(["group", "x", *(["D (tokens)"] if with_d else []), "predicted y [95% band]"], rows)


def efficiency_table(rows: list[Any]) -> Block:
    """The data-efficiency rows of a fit over tokens: B reaches A's loss at D tokens with D/k tokens."""
    good = [r for r in rows if isinstance(r, dict)]
    if len(good) != len(rows):
        return generic_table(rows)
    out = []
    for r in good:
        if r.get("reachable") is False:
            k = "never (below B's asymptote)"
        else:
            k = fmt(finite(r.get("k")))
            if r.get("lo") is not None and r.get("hi") is not None:
                k += f" [{fmt(finite(r['lo']))}, {fmt(finite(r['hi']))}]"
        out.append([str(r.get("a", "?")), str(r.get("b", "?")), fmt(r.get("d")), fmt(r.get("loss_a")), k])
    return Table(["A", "B", "D (tokens)", "A's loss at D", "k [95% CI]"], out)


def fit_file_blocks(path: Path, out_dir: Path, *, level: int) -> list[Block]:
    """One `fit-<law>-<x>.json`: what was fitted (x and its results column), the parameter table, the
    extrapolations, the data efficiency between groups, the fit's notes, and its PNG."""
    data, problem = read_json(path)
    blocks: list[Block] = [Heading(f"Fit {path.stem}", level)]
    if problem is not None or not isinstance(data, dict):
        return blocks + [problem or Notice(f"{path} does not hold a fit (a JSON object is expected)")]
    law = str(data.get("law", "?"))
    by = f", one fit per value of {data['by']}" if data.get("by") else ""
    formula = _LAWS.get(law, "unknown law")
    x = str(data.get("x", "?"))
    column = f" (column {data['x_column']})" if data.get("x_column") and data.get("x_column") != x else ""
    blocks.append(Para(f"law {law}: {formula}; y = {data.get('y', '?')}, x = {x}{column}{by}."))
    fits = data.get("fits")
    if isinstance(fits, dict) and fits:
        blocks.append(fit_table(fits))
    else:
        blocks.append(Notice(f"{path.name} holds no fitted groups"))
    extrapolations = data.get("extrapolations")
    if isinstance(extrapolations, dict) and any(extrapolations.values()):
        blocks += [Para("Extrapolations (the fitted law's prediction with its 95% bootstrap band):"),
                   extrapolation_table(extrapolations)]
    elif extrapolations and not isinstance(extrapolations, dict):
        blocks += [Para("Extrapolations:"), generic_table(extrapolations)]
    efficiency = data.get("data_efficiency")
    if isinstance(efficiency, list) and efficiency:
        blocks += [Para("Data efficiency: recipe B reaches A's loss at D tokens with D/k tokens (k > 1: B needs "
                        "k times less data)."), efficiency_table(efficiency)]
    for note in data.get("notes") or []:
        blocks.append(Notice(str(note)))
    png = path.with_suffix(".png")
    if png.is_file():
        blocks.append(Image(png, relative_href(png, out_dir), f"{path.stem}: points, fit and 95% band"))
    return blocks


def fits_blocks(fits_dir: Path, out_dir: Path, *, level: int) -> list[Block]:
    """Every fit JSON in a fits folder, then any PNG there that has no JSON beside it."""
    blocks: list[Block] = []
    jsons = sorted(fits_dir.glob("*.json"))
    for path in jsons:
        blocks += fit_file_blocks(path, out_dir, level=level)
    stems = {p.stem for p in jsons}
    for png in sorted(fits_dir.glob("*.png")):
        if png.stem not in stems:
            blocks.append(Image(png, relative_href(png, out_dir), png.stem))
    if not blocks:
        blocks.append(Para(f"{fits_dir} holds no fits yet (run `pretrainlab fit`)."))
    return blocks


def _series(data: dict[str, Any], key: str, n: int) -> list[Any]:
    values = data.get(key)
    values = values if isinstance(values, list) else []
    return [values[i] if i < len(values) else None for i in range(n)]


def ensemble_blocks(path: Path, out_dir: Path, *, level: int, title: str) -> list[Block]:
    """One `ensemble.json`: loss of the K-prefix ensembles, each member alone, the asymptote fit, the PNG."""
    data, problem = read_json(path)
    blocks: list[Block] = [Heading(title, level)]
    if problem is not None or not isinstance(data, dict):
        return blocks + [problem or Notice(f"{path} does not hold an ensemble evaluation")]
    members = data.get("members") if isinstance(data.get("members"), list) else []
    ks = data.get("k") if isinstance(data.get("k"), list) else []
    blocks.append(Para(f"{len(members)} members combined by mean of {data.get('combine', '?')}"
                       f"{', scored on ' + str(data['data']) if data.get('data') else ''}."))
    if ks:
        domain_keys = sorted(k for k in data if k.startswith("val_loss/"))
        cols = ["val_loss", "val_bpb", *domain_keys]
        rows = [[fmt(k), *(fmt(v) for v in vals)] for k, *vals in zip(ks, *(_series(data, c, len(ks)) for c in cols))]
        blocks.append(Table(["K", *cols], rows))
        member = [v for v in (finite(x) for x in data.get("member_val_loss") or []) if v is not None]
        last = finite(_series(data, "val_loss", len(ks))[-1])
        if member and last is not None:
            mean = sum(member) / len(member)
            blocks.append(Para(f"K = {ks[-1]}: val_loss {fmt(last)} against {fmt(mean)} for the mean member and "
                               f"{fmt(min(member))} for the best one "
                               f"(gain {mean - last:+.4f} nats over the mean member)."))
    else:
        blocks.append(Notice(f"{path.name} has no K-prefix losses"))
    member_losses = data.get("member_val_loss")
    if isinstance(member_losses, list) and member_losses:
        bpb = _series(data, "member_val_bpb", len(member_losses))
        rows = [[str(members[i]) if i < len(members) else f"member {i + 1}", fmt(v), fmt(bpb[i])]
                for i, v in enumerate(member_losses)]
        blocks.append(Table(["member", "val_loss alone", "val_bpb alone"], rows))
    if isinstance(data.get("fit"), dict):
        blocks += [Para("Asymptote fit of val_loss against K:"), fit_table({"ensemble": data["fit"]})]
    if data.get("fit_note"):
        blocks.append(Para(f"fit: {data['fit_note']}"))
    png = path.with_name("ensemble.png")
    if png.is_file():  # an unreadable PNG is named in the HTML instead of shown
        blocks.append(Image(png, relative_href(png, out_dir), "ensemble loss against K"))
    return blocks
