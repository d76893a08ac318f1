"""`pretrainlab report PATH`: a run, sweep or replication folder as `report.md`, a self-contained
`report.html` (every plot inlined as base64 PNG, no external assets, no scripts) and the `plots/*.png`
they use, written into PATH (or `--out`).

Which report is decided by what the folder holds: `replication.json` (a replication: its claims table,
wall time, its own plots, then every sweep, fit and ensemble inside it), `points.json` (a sweep), or
`metrics.jsonl` / `config.yaml` (a run). Everything is first written into a temporary folder inside the
destination and moved into place at the end, so a crash never leaves a half-written report behind.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pretrainlab.errors import ConfigError
from pretrainlab.science.report_doc import (
    Block,
    Heading,
    Image,
    Notice,
    Para,
    PlotTarget,
    Table,
    relative_href,
    render_html,
    render_markdown,
    slug,
)
from pretrainlab.science.report_fits import (
    ensemble_blocks,
    find_dirs,
    find_files,
    fits_blocks,
    generic_table,
    read_json,
)
from pretrainlab.science.report_run import duration, load_run, run_section
from pretrainlab.science.report_sweep import sweep_section

REPLICATION_FILE = "replication.json"
SWEEP_FILE = "points.json"
RUN_FILES = ("metrics.jsonl", "config.yaml")


def report_kind(path: Path) -> str:
    """'replication', 'sweep' or 'run'; a ConfigError saying what PATH must be for anything else."""
    if not path.exists():
        raise ConfigError(f"report: {str(path)!r} does not exist",
                          hint="pass a run folder, a sweep folder or a replication folder")
    if not path.is_dir():
        raise ConfigError(f"report: {str(path)!r} is a file, not a folder",
                          hint="pass the folder itself: a run folder, a sweep folder or a replication folder")
    if (path / REPLICATION_FILE).is_file():
        return "replication"
    if (path / SWEEP_FILE).is_file():
        return "sweep"
    if any((path / name).is_file() for name in RUN_FILES):
        return "run"
    raise ConfigError(
        f"report: {str(path)!r} is not a run, sweep or replication folder",
        hint="PATH must hold metrics.jsonl or config.yaml (a run written by `pretrainlab train`), points.json "
             "(a sweep written by `pretrainlab sweep`) or replication.json (from `pretrainlab replicate`)",
    )


def _holds(value: Any) -> str:
    if value is True:
        return "✓"
    if value is False:
        return "✗"
    return "n/a"


def _inside(path: Path, folders: list[Path]) -> bool:
    return any(f == path or f in path.parents for f in folders)


def replication_section(root: Path, target: PlotTarget, out_dir: Path) -> list[Block]:
    """The claims table and figures of a replication, then its plots, sweeps, fits and ensembles."""
    data, problem = read_json(root / REPLICATION_FILE)
    if problem is not None or not isinstance(data, dict):
        raise ConfigError(f"{root / REPLICATION_FILE} is not a replication record (a JSON object is expected)",
                          hint="rerun `pretrainlab replicate`, which writes it")
    claims = [c for c in data.get("claims") or [] if isinstance(c, dict)]
    n_hold = sum(c.get("holds") is True for c in claims)
    blocks: list[Block] = [
        Heading("Claims", 2),
        Para(f"paper: {data.get('paper', '?')}; scale {data.get('scale', '?')}; seeds {data.get('seeds', '?')}; "
             f"wall time {duration(data.get('wall_s'))}; {n_hold} of {len(claims)} claims hold at this scale."),
    ]
    rows = [[str(c.get("claim", "")), str(c.get("paper_figure", "")), str(c.get("our_figure", "")),
             str(c.get("spread", "")), _holds(c.get("holds"))] for c in claims]
    blocks.append(Table(["claim", "paper figure", "our figure", "spread", "holds"], rows) if rows
                  else Notice("replication.json lists no claims"))
    for note in data.get("notes") or []:
        blocks.append(Para(f"note: {note}"))
    if isinstance(data.get("details"), dict) and data["details"]:
        blocks += [Heading("Details", 3), generic_table(data["details"])]

    sweeps = [p.parent for p in find_files(root, SWEEP_FILE)]
    nested: list[Block] = []
    for sweep in sweeps:
        rel = sweep.relative_to(root).as_posix()
        nested += [Heading("Sweep (replication folder)" if rel == "." else f"Sweep {rel}", 2)]
        nested += sweep_section(sweep, target.nested(f"sweep-{slug(rel if rel != '.' else 'main')}-"), out_dir, level=3)
    for fits_dir in find_dirs(root, "fits"):
        if not _inside(fits_dir, sweeps):
            nested += [Heading(f"Fits {fits_dir.relative_to(root).as_posix()}", 2)]
            nested += fits_blocks(fits_dir, out_dir, level=3)
    for path in find_files(root, "ensemble.json"):
        if not _inside(path, sweeps):
            rel = path.parent.relative_to(root).as_posix()
            nested += ensemble_blocks(path, out_dir, level=2, title=f"Ensemble {rel}")

    generated = {p.name for p in target.dir.glob("*.png")}  # this report's plots, not the replication's
    own = [p for p in sorted((root / "plots").rglob("*.png"))
           if not (p.parent == root / "plots" and out_dir.resolve() == root.resolve() and p.name in generated)]
    if own:
        blocks.append(Heading("Plots", 2))
        for p in own:
            blocks.append(Image(p, relative_href(p, out_dir), p.relative_to(root / "plots").with_suffix("").as_posix()))
    return blocks + nested


def _build(kind: str, root: Path, target: PlotTarget, out_dir: Path) -> tuple[str, list[Block]]:
    if kind == "replication":
        return f"Replication report: {root.resolve().name}", replication_section(root, target, out_dir)
    if kind == "sweep":
        return f"Sweep report: {root.resolve().name}", sweep_section(root, target, out_dir)
    run = load_run(root)
    return f"Run report: {run.name}", run_section(run, target)


def write_report(path: str | Path, out: str | Path | None = None) -> dict[str, Path]:
    """Write report.md, report.html and plots/*.png for the folder at `path` into `out` (default: `path`).

    Returns {"md": report.md, "html": report.html, "plots": the plots folder}.
    """
    root = Path(path)
    kind = report_kind(root)
    out_dir = Path(out) if out is not None else root
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".report-tmp-", dir=out_dir))
    except OSError as e:
        raise ConfigError(f"report: cannot write into {str(out_dir)!r} ({e.strerror or e})",
                          hint="pass --out DIR, a folder you can write to") from None
    try:
        target = PlotTarget(tmp / "plots")
        target.dir.mkdir()
        title, blocks = _build(kind, root, target, out_dir)
        (tmp / "report.md").write_text(render_markdown(title, blocks), encoding="utf-8")
        (tmp / "report.html").write_text(render_html(title, blocks), encoding="utf-8")
        plots = out_dir / "plots"
        plots.mkdir(exist_ok=True)
        for png in sorted(target.dir.iterdir()):  # plots first: report.md never links a missing one
            os.replace(png, plots / png.name)
        os.replace(tmp / "report.md", out_dir / "report.md")
        os.replace(tmp / "report.html", out_dir / "report.html")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"md": out_dir / "report.md", "html": out_dir / "report.html", "plots": out_dir / "plots"}


def report_from_cli(args: argparse.Namespace) -> int:
    """`pretrainlab report PATH [--out DIR]`: write the report and say where it is."""
    written = write_report(args.path, args.out)
    print(f"wrote {written['md']} and {written['html']} (plots in {written['plots']})")
    return 0
