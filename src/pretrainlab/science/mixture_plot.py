"""The mixture plot of a run report: weights in force and realised shares per domain against tokens.

Each domain has one colour: a solid step line for `domain_weights/<d>` (the probabilities that drew the
batch ending at that token count) and a dashed line for `domain_share/<d>` (its share of all rows drawn so
far); dotted vertical lines mark where `data.stages` switch (the first batch at or after each bound).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pretrainlab.science.plots import finite

MIXTURE_GROUPS = ("domain_weights", "domain_share")


def stage_switch_tokens(config: dict[str, Any]) -> list[int]:
    """The token counts at which a run's `data.stages` switch (the first token of the first batch drawn
    with the next stage); [] when the config has no stages or they cannot be resolved."""
    from pretrainlab.data.mixture_schedule import resolve_bounds, switch_batch
    from pretrainlab.errors import PretrainlabError

    stages = (config.get("data") or {}).get("stages") or []
    train = config.get("train") or {}
    steps, tpb = train.get("steps"), train.get("global_batch_tokens")
    if not stages or not isinstance(steps, int) or not isinstance(tpb, int):
        return []
    try:
        bounds = resolve_bounds(stages, steps=steps, tokens_per_batch=tpb)
    except PretrainlabError:
        return []
    return [switch_batch(b, tpb) * tpb for b in bounds]


def mixture_domains(lines: list[dict[str, Any]]) -> list[str]:
    """The domains named by `domain_weights/<d>` or `domain_share/<d>` keys, in first-seen order."""
    seen: dict[str, None] = {}
    for r in lines:
        for k in r:
            group, _, domain = k.partition("/")
            if group in MIXTURE_GROUPS and domain:
                seen.setdefault(domain, None)
    return list(seen)


def mixture_plot(path: str | Path, lines: list[dict[str, Any]], config: dict[str, Any]) -> Path | None:
    """Draw the mixture of the train `lines` (flattened) to a PNG at `path`; None when they carry no mixture."""
    names = mixture_domains(lines)
    if not names:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.4, 4.2), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    colours = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"]
    drawn = False
    for i, d in enumerate(names):
        colour = colours(i % colours.N)
        for group, style, label in (("domain_weights", "-", f"{d} weight"), ("domain_share", "--", f"{d} share")):
            pts = [(finite(r.get("tokens")), finite(r.get(f"{group}/{d}"))) for r in lines]
            pts = [(x, y) for x, y in pts if x is not None and y is not None]
            if not pts:
                continue
            xs, ys = zip(*pts)
            ax.plot(xs, ys, style, color=colour, label=label, linewidth=1.4,
                    drawstyle="steps-pre" if group == "domain_weights" else "default")
            drawn = True
    if not drawn:
        return None
    for j, x in enumerate(stage_switch_tokens(config)):
        ax.axvline(x, color="0.4", linestyle=":", linewidth=1.2, label="stage switch" if j == 0 else None)
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Data mixture: weights in force (solid) and realised shares (dashed)")
    ax.set_xlabel("tokens")
    ax.set_ylabel("probability / share of rows")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7 if len(names) > 4 else 8, ncol=2 if len(names) > 6 else 1, loc="center left",
              bbox_to_anchor=(1.01, 0.5))  # beside the axes: the lines span the whole plot
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
