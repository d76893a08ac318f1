"""Report plots: line charts of curves (with optional error bars and categorical x) written as PNG.

matplotlib runs on the Agg backend with no pyplot state (figures are built and saved directly), so
plotting works on headless machines and from several threads. Non-finite points are dropped rather
than drawn; a chart with nothing finite left is not written at all (the caller says so instead).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MAX_LEGEND = 24  # beyond this many curves a legend hides the plot; the table names the runs instead


@dataclass
class Curve:
    """One line: `y` against `x`; `lo`/`hi` (same length) draw an error bar at each point."""

    label: str
    x: Sequence[Any]
    y: Sequence[Any]
    lo: Sequence[Any] | None = None
    hi: Sequence[Any] | None = None
    markers: bool = False
    points_only: bool = False  # a scatter: the points are not ordered along x (e.g. runs by one domain's weight)


def finite(value: Any) -> float | None:
    """`value` as a float when it is a finite number (bools and strings are not), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def wants_log(values: Sequence[Any], ratio: float = 10.0) -> bool:
    """True when every value is a positive number and they span more than `ratio` (log axis reads better)."""
    nums = [finite(v) for v in values]
    if not nums or any(v is None or v <= 0 for v in nums):
        return False
    return max(nums) / min(nums) > ratio  # type: ignore[type-var, operator]


def _points(c: Curve, log_x: bool, log_y: bool) -> tuple[list[float], list[float], list[float], list[float]]:
    xs, ys, los, his = [], [], [], []
    for i, (x, y) in enumerate(zip(c.x, c.y)):
        fx, fy = finite(x), finite(y)
        if fx is None or fy is None or (log_x and fx <= 0) or (log_y and fy <= 0):
            continue
        lo = finite(c.lo[i]) if c.lo is not None else None
        hi = finite(c.hi[i]) if c.hi is not None else None
        xs.append(fx)
        ys.append(fy)
        los.append(fy - lo if lo is not None else 0.0)
        his.append(hi - fy if hi is not None else 0.0)
    return xs, ys, los, his


def line_plot(
    path: str | Path,
    curves: Sequence[Curve],
    *,
    title: str,
    x_label: str,
    y_label: str,
    log_x: bool = False,
    log_y: bool = False,
    x_ticks: Sequence[str] | None = None,
    small: bool = False,
) -> Path | None:
    """Draw `curves` on one set of axes and save a PNG at `path`; None (nothing written) if no curve
    has a finite point. `x_ticks` labels the integer positions 0..n-1 (a categorical axis)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    drawn = [(c, _points(c, log_x, log_y)) for c in curves]
    drawn = [(c, p) for c, p in drawn if p[0]]
    if not drawn:
        return None
    with matplotlib.rc_context({"axes.formatter.useoffset": False}):  # 5.5524, not "+5.55" and 0.0004
        fig = Figure(figsize=(4.8, 3.0) if small else (7.0, 4.2), dpi=100, layout="constrained")
        ax = fig.add_subplot()
    for c, (xs, ys, los, his) in drawn:
        style = "o" if c.points_only else "o-" if c.markers or len(xs) == 1 else "-"
        if any(los) or any(his):
            ax.errorbar(xs, ys, yerr=[los, his], fmt=style, capsize=3, label=c.label, markersize=4)
        else:
            ax.plot(xs, ys, style, label=c.label, markersize=4, linewidth=1.4)
    if log_x:
        ax.set_xscale("log")
    if log_y:
        ax.set_yscale("log")
    if x_ticks is not None:
        labels = [_short_tick(str(t)) for t in x_ticks]
        ax.set_xticks(range(len(labels)), labels, rotation=20 if len(labels) > 4 else 0)
    ax.set_title(title, fontsize=10 if small else 12)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.grid(True, alpha=0.3, which="both" if (log_x or log_y) else "major")
    labelled = [c for c, _ in drawn if c.label]
    if 1 < len(labelled) <= _MAX_LEGEND or (len(labelled) == 1 and len(drawn) == 1 and not small):
        ax.legend(fontsize=7 if len(labelled) > 8 else 9, ncol=2 if len(labelled) > 12 else 1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def _short_tick(label: str, limit: int = 28) -> str:
    """A tick label cut to `limit` characters: a long one (a whole mapping or list) would squeeze the axes to
    nothing; the report's table shows the full values."""
    return label if len(label) <= limit else label[: limit - 1] + "…"


def is_png(path: str | Path) -> bool:
    """True when `path` is a readable file that starts with the PNG signature."""
    try:
        with open(path, "rb") as f:
            return f.read(8) == PNG_SIGNATURE
    except OSError:
        return False
