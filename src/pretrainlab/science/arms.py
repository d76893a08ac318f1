"""Arms x seeds: the experiment shape of most replications (a baseline and its variants, repeated).

`run_arms` runs every arm (a name and the dotted overrides that make it from one base RunConfig) over the
same seeds as ONE sweep (`science/sweep.py` `run_sweep`) in `ctx.out / "sweeps" / name`, so the sweep's
folder layout, logs, results.csv, `pretrainlab report` and its resume semantics come for free: running a
replication again skips finished runs, resumes interrupted ones from their newest checkpoint and restarts
those without one. A point's run folder is named from its overrides and seed only (never from the other
arms), so adding an arm or a seed later reuses every run already done.

Each arm comes back as an `ArmResult`: its run folders and each run's metrics.jsonl end line (val_loss,
params_non_embedding, avg_params, wall_s, ...), in seed order.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pretrainlab.errors import ConfigError, PretrainlabError
from pretrainlab.science.replication import ReplicationContext


@dataclass
class ArmResult:
    """One arm's runs, one per seed (in the order of `seeds`), and each run's end line.

    A run that did not finish (only with `run_arms(..., allow_failed=True)`) has an empty end line, so its
    `values` are NaN and the claims' spread reports it as non-finite.
    """

    name: str
    runs: list[Path]
    ends: list[dict[str, Any]]
    seeds: list[int] = field(default_factory=list)

    def values(self, key: str) -> list[float]:
        """The end line's `key` of every seed's run (e.g. "val_loss"); NaN where a run lacks it."""
        out = []
        for end in self.ends:
            v = end.get(key)
            out.append(float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan)
        return out


def run_arms(
    ctx: ReplicationContext,
    name: str,
    base: dict[str, Any],
    arms: dict[str, dict[str, Any]],
    seeds: Sequence[int],
    *,
    allow_failed: bool = False,
    quiet: bool = False,
) -> dict[str, ArmResult]:
    """Run every arm x seed as one sweep `ctx.out / "sweeps" / name` and return each arm's results.

    `base` is a RunConfig tree (nested mapping); `arms` maps an arm's name to its dotted overrides (an empty
    mapping is the base itself); every arm runs with every seed in `seeds`. Runs go `ctx.jobs` at a time.
    Raises ConfigError for arms that make the same run, and PretrainlabError naming the points (and the logs
    folder) when a run did not finish, unless `allow_failed` (then its end line is empty).
    """
    from pretrainlab.science.sweep import run_sweep

    if not arms:
        raise ConfigError(f"run_arms {name!r}: no arms given")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ConfigError(f"run_arms {name!r}: no seeds given", hint="pass at least one seed")
    seen: dict[str, str] = {}
    for arm, overrides in arms.items():
        key = json.dumps(overrides, sort_keys=True, default=str)
        if key in seen:
            raise ConfigError(f"run_arms {name!r}: arms {seen[key]!r} and {arm!r} have the same overrides",
                              hint="give each arm different settings (seeds repeat an arm)")
        seen[key] = arm
    spec = {
        "name": name,
        "out_dir": str(Path(ctx.out) / "sweeps"),
        "base": base,
        "axes": [{"list": [dict(o) for o in arms.values()]}] if any(arms.values()) else [],
        "seeds": seeds,
        "executor": "local",
        "jobs": ctx.jobs,
    }
    rows = run_sweep(spec, jobs=ctx.jobs, quiet=quiet)
    folder = Path(ctx.out) / "sweeps" / name
    by_name = {str(r["name"]): r for r in rows}
    listing = json.loads((folder / "points.json").read_text(encoding="utf-8"))
    results: dict[str, ArmResult] = {}
    unfinished: list[str] = []
    for arm, overrides in arms.items():
        result = ArmResult(name=arm, runs=[], ends=[], seeds=list(seeds))
        for seed in seeds:
            entry = next((e for e in listing if e.get("seed") == seed and _same(overrides, e.get("overrides", {}))),
                         None)
            if entry is None:  # cannot happen for a sweep made from these arms
                raise PretrainlabError(f"run_arms {name!r}: no point for arm {arm!r} seed {seed} in {folder}")
            run_dir = folder / "runs" / entry["name"]
            row = by_name.get(entry["name"])
            end = _end_line(run_dir) if row is not None and row.get("status") == "done" else None
            if end is None:
                unfinished.append(f"{entry['name']} (arm {arm}, seed {seed})")
            result.runs.append(run_dir)
            result.ends.append(end or {})
        results[arm] = result
    if unfinished and not allow_failed:
        raise PretrainlabError(
            f"{len(unfinished)} run(s) of {name!r} did not finish: {', '.join(unfinished[:5])}"
            + (" ..." if len(unfinished) > 5 else ""),
            hint=f"see the logs in {folder / 'logs'}; run the same command again to resume",
        )
    return results


def _same(ours: dict[str, Any], theirs: dict[str, Any]) -> bool:
    """Whether a point's overrides (the arm's plus `seed`) are exactly the arm's."""
    rest = {k: v for k, v in theirs.items() if k != "seed"}
    return json.dumps(rest, sort_keys=True, default=str) == json.dumps(ours, sort_keys=True, default=str)


def _end_line(run_dir: Path) -> dict[str, Any] | None:
    from pretrainlab.train.metrics import read_metrics

    ends = [r for r in read_metrics(run_dir / "metrics.jsonl") if isinstance(r, dict) and r.get("event") == "end"]
    return ends[-1] if ends else None


__all__ = ["ArmResult", "run_arms"]
