"""Arms x seeds: the experiment shape of most replications (a baseline and its variants, repeated).

`run_arms` runs every arm (a name and the dotted overrides that make it from one base RunConfig) over the
same seeds as ONE sweep (`science/sweep.py` `run_sweep`) in `ctx.out / "sweeps" / name`, so the sweep's
folder layout, logs, results.csv, `pretrainlab report` and its resume semantics come for free: running a
replication again skips finished runs, resumes interrupted ones from their newest checkpoint and restarts
those without one. A point's run folder is named from its overrides and seed only (never from the other
arms), so adding an arm or a seed later reuses every run already done.

Each arm comes back as an `ArmResult`: its run folders and each run's metrics.jsonl end line (val_loss,
params_non_embedding, avg_params, wall_s, ...), in seed order.

Also here, for the replications built on arms: `budget_data` (the fixed token budget from `--data` or the
built-in stdlib corpus, as the infinite-compute replication cuts it), `tune_lr` (a per-arm learning-rate
grid on its own seed), `non_embedding_params` (a config's count without building it) and
`plot_train_curves` (training loss against step, mean over seeds, one line per arm).
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


def tune_lr(
    ctx: ReplicationContext,
    name: str,
    base: dict[str, Any],
    arms: dict[str, dict[str, Any]],
    lrs: Sequence[float] | dict[str, Sequence[float]],
    seed: int,
    *,
    quiet: bool = False,
) -> tuple[dict[str, float], dict[str, dict[float, float]]]:
    """Each arm's learning rate: the lowest final val_loss over its grid on seed `seed` (one sweep `name`).

    `lrs` is one grid for every arm, or a grid per arm (e.g. centred where each family trains best; give
    every arm as many points, so every arm gets the same tuning budget). Returns (chosen lr per arm,
    {arm: {lr: val_loss}}; empty for an arm with a single lr, which runs nothing here). A diverged run
    (non-finite loss, or a run stopped by the stability callback) never wins; an arm whose every lr diverged
    is a PretrainlabError. Compare the arms on other seeds than `seed`: the grid's best runs were picked on
    the same validation data.
    """
    grids = {arm: [float(v) for v in (lrs[arm] if isinstance(lrs, dict) else lrs)] for arm in arms}
    empty = [arm for arm, g in grids.items() if not g]
    if empty:
        raise ConfigError(f"tune_lr {name!r}: no learning rate for arm {empty[0]!r}")
    chosen = {arm: g[0] for arm, g in grids.items() if len(g) == 1}  # nothing to choose
    tuned = {arm: g for arm, g in grids.items() if len(g) > 1}
    if not tuned:
        return chosen, {arm: {} for arm in arms}
    grid = {f"{arm}@{lr:g}": {**arms[arm], "optim.lr": lr} for arm, g in tuned.items() for lr in g}
    res = run_arms(ctx, name, base, grid, [seed], allow_failed=True, quiet=quiet)
    losses = {arm: {lr: res[f"{arm}@{lr:g}"].values("val_loss")[0] for lr in g} if arm in tuned else {}
              for arm, g in grids.items()}
    picked = pick_lrs({arm: losses[arm] for arm in tuned},
                      where=f"{name} (logs in {Path(ctx.out) / 'sweeps' / name / 'logs'})")
    return {arm: picked.get(arm, chosen.get(arm, math.nan)) for arm in arms}, losses


def pick_lrs(losses: dict[str, dict[float, float]], where: str = "lr grid") -> dict[str, float]:
    """Per arm, the lr of the lowest finite loss (ties: the smaller lr); PretrainlabError naming `where` for
    an arm with no finite loss (every lr diverged or failed)."""
    chosen: dict[str, float] = {}
    for arm, by_lr in losses.items():
        finite = {lr: v for lr, v in by_lr.items() if math.isfinite(v)}
        if not finite:
            raise PretrainlabError(f"{where}: every learning rate of arm {arm!r} diverged or failed "
                                   f"({', '.join(f'{lr:g}' for lr in by_lr)})",
                                   hint="lower the grid's learning rates or lengthen the warm-up")
        chosen[arm] = min(finite, key=lambda lr: (finite[lr], lr))
    return chosen


def non_embedding_params(model: dict[str, Any], *, vocab_size: int = 258, seq_len: int = 128) -> int:
    """The non-embedding parameter count of a `model` config tree (as runs log `params_non_embedding`),
    from a model built on the meta device: nothing is allocated."""
    import torch

    from pretrainlab.config import ModelConfig, validate
    from pretrainlab.model.decoder import build_model
    from pretrainlab.model.flops import count_parameters
    from pretrainlab.model.resolve import resolve_model_config

    cfg = resolve_model_config(validate(ModelConfig, model, source="model"), vocab_size=vocab_size, seq_len=seq_len)
    with torch.device("meta"):
        built = build_model(cfg)
    return count_parameters(built, cfg)["params_non_embedding"]


def budget_data(ctx: ReplicationContext, train_tokens: int, val_tokens: int) -> Path:
    """A prepared folder with `train_tokens` training and up to `val_tokens` validation tokens per domain, cut
    from `ctx.data` (`--data`) or else the built-in corpus (the Python standard library's source as bytes,
    prepared once into `ctx.out / "data"`); reused when it already holds this cut."""
    from pretrainlab.data.subset import write_token_budget

    source = ctx.data if ctx.data is not None else stdlib_bytes(Path(ctx.out) / "data" / "stdlib-bytes")
    cut = write_token_budget(source, Path(ctx.out) / "data" / f"budget-{train_tokens}-{val_tokens}",
                             train_tokens=train_tokens, val_tokens=val_tokens, seed=0)
    return cut.path


def stdlib_bytes(path: Path) -> Path:
    """The built-in stdlib corpus prepared with the byte tokenizer at `path` (reused when already there):
    the replications' data when no `--data` is given."""
    from pretrainlab.config import PrepareConfig, validate
    from pretrainlab.data.prepare import prepare

    if (path / "manifest.json").is_file():
        return path
    cfg = validate(PrepareConfig, {
        "sources": [{"type": "stdlib", "domain": "code"}],
        "tokenizer": {"kind": "bytes"},
        "validation": {"fraction": 0.05},
        "output": str(path),
    }, source="replication data")
    return Path(prepare(cfg, progress=False))


def train_curve(run_dir: Path) -> list[tuple[int, float]]:
    """(step, training loss) of a run's logged train lines."""
    from pretrainlab.train.metrics import read_metrics

    out = []
    for r in read_metrics(Path(run_dir) / "metrics.jsonl"):
        if isinstance(r, dict) and "event" not in r and "lr" in r and isinstance(r.get("loss"), (int, float)):
            out.append((int(r["step"]), float(r["loss"])))
    return out


def plot_train_curves(arms: dict[str, ArmResult], path: Path, title: str = "") -> Path:
    """Training loss against step, the mean over each arm's seeds (steps every seed logged), one line per
    arm, with its final val_loss (mean) in the legend; written as a PNG at `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, arm in arms.items():
        curves = [dict(train_curve(r)) for r in arm.runs]
        steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
        if not steps:
            continue
        ys = [sum(c[s] for c in curves) / len(curves) for s in steps]
        vals = [v for v in arm.values("val_loss") if math.isfinite(v)]
        label = f"{name} (val {sum(vals) / len(vals):.3f})" if vals else name
        ax.plot(steps, ys, label=label, lw=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (nats/token), mean over seeds")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _same(ours: dict[str, Any], theirs: dict[str, Any]) -> bool:
    """Whether a point's overrides (the arm's plus `seed`) are exactly the arm's."""
    rest = {k: v for k, v in theirs.items() if k != "seed"}
    return json.dumps(rest, sort_keys=True, default=str) == json.dumps(ours, sort_keys=True, default=str)


def _end_line(run_dir: Path) -> dict[str, Any] | None:
    from pretrainlab.train.metrics import read_metrics

    ends = [r for r in read_metrics(run_dir / "metrics.jsonl") if isinstance(r, dict) and r.get("event") == "end"]
    return ends[-1] if ends else None


__all__ = ["ArmResult", "budget_data", "non_embedding_params", "plot_train_curves", "pick_lrs", "run_arms",
           "train_curve", "tune_lr"]
