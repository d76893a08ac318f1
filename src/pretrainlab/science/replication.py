"""Replications: a paper's protocol at small scale, ending in claims that hold or not.

A replication is registered under a name (`pretrainlab replicate <name>`). It runs its experiments
into a folder and returns a `ReplicationResult`: one `Claim` per paper claim, each with the paper's
figure, ours, the spread over seeds, and `holds` computed from the figures by the rule the claim states
(never typed in). `write_replication` writes `replication.json` in the format of `../shared/design.md`.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pretrainlab.registry import Registry

REPLICATION_FILE = "replication.json"
SCALES = ("tiny", "small")


@dataclass
class Claim:
    """One claim: `claim` states it and the rule that decides `holds` (e.g. "... by at least 0.03")."""

    claim: str
    paper_figure: str
    our_figure: str
    spread: str
    holds: bool | None  # None: could not be measured at this scale (said in `our_figure`)


@dataclass
class ReplicationResult:
    name: str
    paper: str
    scale: str
    seeds: int
    wall_s: float
    claims: list[Claim]
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["wall_s"] = round(self.wall_s, 1)
        return out


@dataclass
class ReplicationContext:
    """What a protocol gets: where to write, at which scale, how many seeds and jobs, and optional data."""

    out: Path
    scale: str
    seeds: int
    jobs: int
    data: Path | None


@dataclass
class Replication:
    name: str
    paper: str
    default_seeds: int
    run: Callable[[ReplicationContext], ReplicationResult]
    summary: str = ""


REPLICATIONS: Registry[Replication] = Registry("replication")


def register_replication(replication: Replication) -> Replication:
    REPLICATIONS.register(replication.name)(replication)
    return replication


def load_builtin_replications() -> None:
    """Import the recipe modules that register replications."""
    from pretrainlab.recipes import infinite_compute  # noqa: F401
    from pretrainlab.recipes import low_rank_tricks_replication, sltrain_replication  # noqa: F401
    from pretrainlab.recipes import journey_replication, spdf_replication  # noqa: F401
    from pretrainlab.recipes import curriculum_replication  # noqa: F401
    from pretrainlab.recipes import dedup_replication  # noqa: F401
    from pretrainlab.recipes import quality_filter_replication  # noqa: F401
    from pretrainlab.recipes import skill_it_replication  # noqa: F401
    from pretrainlab.recipes import procedural_warmup_replication  # noqa: F401
    from pretrainlab.recipes import climb_replication  # noqa: F401
    from pretrainlab.recipes import preselect_replication  # noqa: F401


def write_replication(out: Path, result: ReplicationResult) -> Path:
    """Write `replication.json` atomically and return its path."""
    path = Path(out) / REPLICATION_FILE
    tmp = path.with_name(path.name + ".tmp")
    plain = json.loads(json.dumps(result.to_dict(), default=_json_default))
    tmp.write_text(json.dumps(_finite_or_none(plain), indent=2, allow_nan=False))
    os.replace(tmp, path)
    return path


def print_claims(result: ReplicationResult) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{result.name} ({result.paper}) at scale {result.scale}, {result.seeds} seed(s), "
                  f"{result.wall_s / 60:.1f} min", show_lines=True)
    for col in ("claim", "paper", "ours", "spread", "holds"):
        table.add_column(col, overflow="fold")
    for c in result.claims:
        verdict = "n/a" if c.holds is None else ("yes" if c.holds else "NO")
        # escaped: figures carry provenance tags such as "[abs]" that rich would read as markup and drop
        table.add_row(*(escape(t) for t in (c.claim, c.paper_figure, c.our_figure, c.spread)), verdict)
    console = Console(width=max(120, Console().width))
    console.print(table)
    for note in result.notes:
        console.print(f"note: {escape(note)}")


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value) of the finite values; NaN when there are none."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return math.nan, math.nan
    return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0


def paired_gap(a: Sequence[float], b: Sequence[float]) -> tuple[float, list[float]]:
    """The mean of the seed-paired differences a_i - b_i (a claim's figure) and the differences (its spread)."""
    diffs = [float(x) - float(y) for x, y in zip(a, b)]
    return mean_sd(diffs)[0], diffs


def spread_text(values: Sequence[float], digits: int = 3) -> str:
    """'±sd sd over n seeds (min..max)' for a claim's spread column; non-finite values are counted apart."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    bad = len(values) - len(vals)
    extra = f"; {bad} non-finite left out" if bad else ""
    if not vals:
        return f"no finite values{extra}"
    m, sd = mean_sd(vals)
    if len(vals) == 1:
        return f"1 seed (no spread){extra}"
    return f"±{sd:.{digits}f} sd over {len(vals)} seeds ({min(vals):.{digits}f}..{max(vals):.{digits}f}){extra}"


def _finite_or_none(obj: Any) -> Any:
    """Non-finite floats become null, so replication.json is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_none(v) for v in obj]
    return obj


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
