"""The Journey Matters replication (Jin et al., ICLR 2025, arXiv 2501.12486): pruning windows and the N-bar law.

`pretrainlab replicate journey --scale tiny|small`. The recipe is the `gradual_pruning` callback
(`recipes/journey.py`: global magnitude pruning from t_s to t_e to a target sparsity, every step logging the
live non-embedding count and the run its mean N-bar as `avg_params`). This module is the protocol of
`../shared/papers/papers-model.md` §4(c):

1. windows: at one model size, prune to S = 0.6 over (t_s, t_e) in {(0, .5), (.25, .75), (.5, 1)} of the run,
   plus the dense model, `--seeds` seeds each; claim: (.25, .75) is no worse than the best other window
   + 0.01 nats (mean over seeds);
2. the average-parameter law: dense and (.25, .75)-pruned models at two more sizes join the window runs, and
   L = E + A / x^alpha (`science/fit.py` `fit_power_law`) is fitted over every run once with x = N-bar
   (`avg_params`) and once with x = the final live count; claim: the N-bar fit has the higher R^2 (loss space,
   1 - SS_res / SS_tot over the same runs). Final-N cannot tell the three windows apart (same final count)
   nor place a pruned model next to the dense one it started as; N-bar can.

Every run sees the same tokens (the paper's compute axis is fixed here: one step count for every size), so
the Chinchilla form L(N-bar, D) reduces to its N-bar term. The extra sizes run the first `size_seeds` seeds
(all three at tiny: one seed of the widest model can sit on the early loss plateau much longer than another,
0.3 nats worse at the end, which would decide the fit by itself).

Differences from the paper: 58M-468M LLaMA models up to 20x Chinchilla tokens and 80 schedules there, with
pruning every 100 steps; here sub-million-parameter byte-level models, about 1 token per parameter, an event
every steps/20 steps (11 events per window), and a fixed learning rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pretrainlab.science.replication import (
    Claim,
    Replication,
    ReplicationContext,
    ReplicationResult,
    mean_sd,
    register_replication,
    spread_text,
)

PAPER = ("The Journey Matters: Average Parameter Count over Pre-training Unifies Sparse and Dense Scaling Laws "
         "(Jin et al., ICLR 2025), arXiv 2501.12486")
WINDOW_MARGIN = 0.01  # nats (CPU protocol, papers-model.md §4(c))
Fits = dict[str, tuple[Any, float, float, str]]  # "avg" | "final" -> (fit or None, R^2, RMSE, why it failed)


@dataclass(frozen=True)
class Scale:
    """One scale of the protocol."""

    sizes: tuple[tuple[str, int, int, int], ...]  # (label, n_layers, d_model, n_heads), small to large
    window_size: str  # the size the windows are compared at
    sparsity: float
    windows: tuple[tuple[float, float], ...]
    recommended: tuple[float, float]  # the paper's window, also pruned at the other sizes
    seq_len: int
    batch_rows: int
    steps: int
    lr: float
    train_tokens: int  # unique training tokens (split over the pre-training domains)
    val_tokens: int  # validation tokens per domain
    size_seeds: int  # seeds of the other sizes' runs (the first ones)
    evals_per_run: int = 2


SCALES: dict[str, Scale] = {
    # About 12 minutes on 2 CPU cores with 3 seeds (measured figures in the closing note).
    "tiny": Scale(
        sizes=(("d64", 4, 64, 4), ("d96", 4, 96, 4), ("d128", 4, 128, 4)), window_size="d96", sparsity=0.6,
        windows=((0.0, 0.5), (0.25, 0.75), (0.5, 1.0)), recommended=(0.25, 0.75), seq_len=128, batch_rows=16,
        steps=300, lr=3e-3, train_tokens=524_288, val_tokens=32_768, size_seeds=3,
    ),
    # Wider and longer (not timed here): hours on 2 CPU cores, minutes on a GPU.
    "small": Scale(
        sizes=(("d128", 6, 128, 4), ("d192", 6, 192, 6), ("d256", 6, 256, 8)), window_size="d192",
        sparsity=0.6, windows=((0.0, 0.5), (0.25, 0.75), (0.5, 1.0)), recommended=(0.25, 0.75), seq_len=128,
        batch_rows=32, steps=600, lr=2e-3, train_tokens=1_048_576, val_tokens=65_536, size_seeds=2,
    ),
}


def window_name(window: tuple[float, float]) -> str:
    return f"prune {window[0]:g}-{window[1]:g}"


def base_tree(scale: Scale, data: Path) -> dict[str, Any]:
    """The RunConfig shared by every run (AdamW, cosine with 5% warm-up, clip 1.0, fp32)."""
    return {
        "data": {"path": data.as_posix(), "seq_len": scale.seq_len, "mode": "random"},
        "optim": {"name": "adamw", "lr": scale.lr, "weight_decay": 0.1, "betas": [0.9, 0.95]},
        "schedule": {"name": "cosine", "warmup_fraction": 0.05, "min_lr_ratio": 0.1},
        "train": {"steps": scale.steps, "global_batch_tokens": scale.seq_len * scale.batch_rows,
                  "micro_batch_size": scale.batch_rows, "grad_clip": 1.0, "precision": "fp32", "compile": False,
                  "progress": False, "log_every": 10},
        "eval": {"every": max(1, scale.steps // scale.evals_per_run), "max_tokens_per_domain": scale.val_tokens,
                 "batch_size": 32},
    }


def size_overrides(scale: Scale, label: str) -> dict[str, Any]:
    _, layers, width, heads = next(s for s in scale.sizes if s[0] == label)
    return {"model.n_layers": layers, "model.d_model": width, "model.n_heads": heads, "model.linear": "dense"}


def pruning(scale: Scale, window: tuple[float, float]) -> list[dict[str, Any]]:
    return [{"name": "gradual_pruning", "options": {"sparsity": scale.sparsity, "start": window[0],
                                                    "end": window[1]}}]


def window_arms(scale: Scale) -> dict[str, dict[str, Any]]:
    size = size_overrides(scale, scale.window_size)
    arms: dict[str, dict[str, Any]] = {"dense": dict(size)}
    for w in scale.windows:
        arms[window_name(w)] = {**size, "callbacks": pruning(scale, w)}
    return arms


def size_arms(scale: Scale) -> dict[str, dict[str, Any]]:
    arms: dict[str, dict[str, Any]] = {}
    for label, *_ in scale.sizes:
        if label != scale.window_size:
            arms[f"dense {label}"] = size_overrides(scale, label)
            arms[f"{window_name(scale.recommended)} {label}"] = {**size_overrides(scale, label),
                                                                "callbacks": pruning(scale, scale.recommended)}
    return arms


@dataclass
class FitPoint:
    """One run of the fit: its arm, final live non-embedding count, N-bar and validation loss."""

    arm: str
    final_params: float
    avg_params: float
    loss: float


def fit_point(arm: str, end: dict[str, Any]) -> FitPoint:
    """Final count: `live_params` of a pruned run's end line, else `params_non_embedding`; N-bar: `avg_params`,
    else (a dense run) `params_non_embedding`."""
    dense = _num(end.get("params_non_embedding"))
    live, avg = _num(end.get("live_params")), _num(end.get("avg_params"))
    return FitPoint(arm, live if math.isfinite(live) else dense, avg if math.isfinite(avg) else dense,
                    _num(end.get("val_loss")))


def run_protocol(ctx: ReplicationContext, scale: Scale) -> ReplicationResult:
    """Window runs at one size, dense and pruned runs at the others, then the claims."""
    from pretrainlab.recipes.spdf_replication import prepare_domains, token_budget
    from pretrainlab.science.arms import run_arms

    data = prepare_domains(ctx)
    train = token_budget(ctx, data, data.pretrain, scale.train_tokens, scale.val_tokens)
    seeds = list(range(1, ctx.seeds + 1))
    _say(f"data: {'+'.join(data.pretrain)} ({train})")
    _say(f"stage 1/2: windows at {scale.window_size}: {', '.join(window_arms(scale))} x {len(seeds)} seed(s)")
    windows = run_arms(ctx, "windows", base_tree(scale, train), window_arms(scale), seeds)
    size_seeds = seeds[:max(1, scale.size_seeds)]
    _say(f"stage 2/2: dense and pruned at the other sizes x {len(size_seeds)} seed(s)")
    sizes = run_arms(ctx, "sizes", base_tree(scale, train), size_arms(scale), size_seeds)

    losses = {arm: res.values("val_loss") for arm, res in windows.items()}
    points = [fit_point(arm, end) for results in (windows, sizes) for arm, res in results.items()
              for end in res.ends]
    fits = fit_both(points)
    mean_fits = fit_both(arm_means(points))  # no fit below 6 arms
    claims = [window_claim(scale, losses), fit_claim(points, fits, mean_fits)]
    _plot(points, fits, ctx.out / "plots" / "journey.png")
    notes = [
        f"Data: {data.origin} (pre-training domains only); {scale.train_tokens:,} unique tokens; every run "
        f"{scale.steps} steps of {scale.seq_len * scale.batch_rows:,} tokens, lr {scale.lr}, byte vocabulary.",
        "Sizes (layers x width): " + ", ".join(f"{lab} {n}x{d}" for lab, n, d, _ in scale.sizes)
        + f"; windows compared at {scale.window_size} over {len(seeds)} seed(s), the other sizes "
        f"{len(size_seeds)} seed(s); target sparsity {scale.sparsity} of the attention/MLP projections, an event "
        f"every {max(1, scale.steps // 20)} steps.",
        "Counts are non-embedding parameters (live entries for pruned runs); N-bar is the exact mean over every "
        "training step of the live count (`avg_params`).",
    ]
    details = {
        "scale": scale.__dict__,
        "window_val_loss": losses,
        "fit_points": [p.__dict__ for p in points],
        "fits": {k: ({"params": f.params, "r2": r2, "rmse": rmse} if f is not None else None)
                 for k, (f, r2, rmse, _) in fits.items()},
        "fits_on_arm_means": {k: ({"params": f.params, "r2": r2, "rmse": rmse} if f is not None else None)
                              for k, (f, r2, rmse, _) in mean_fits.items()},
        "runs": {arm: [str(r) for r in res.runs] for results in (windows, sizes) for arm, res in results.items()},
        "data": str(train),
    }
    return ReplicationResult(name="journey", paper=PAPER, scale=ctx.scale, seeds=ctx.seeds, wall_s=0.0,
                             claims=claims, notes=notes, details=details)


# ------------------------------------------------------------------------------------------------ claims


def window_claim(scale: Scale, losses: dict[str, list[float]]) -> Claim:
    """Rule: mean loss of the recommended window <= the best other window's mean + WINDOW_MARGIN."""
    rec = window_name(scale.recommended)
    others = [window_name(w) for w in scale.windows if w != scale.recommended]
    means = {a: mean_sd(losses[a])[0] for a in [*others, rec, "dense"] if a in losses}
    finite_others = [a for a in others if math.isfinite(means[a])]
    claim = (f"Pruning to S = {scale.sparsity} between 25% and 75% of training is no worse than the best other "
             f"window ({', '.join(o.removeprefix('prune ') for o in others)}) + {WINDOW_MARGIN} nats "
             "(mean validation loss over seeds; CPU protocol, papers-model.md §4(c)).")
    paper = "pruning from 25% to 75% of compute is near-optimal among 80 schedules [abs]"
    spread = "; ".join(f"{a}: {spread_text(losses[a])}" for a in means)
    if not finite_others or not math.isfinite(means[rec]):
        return Claim(claim, paper, "losses not finite: " + ", ".join(f"{a} {m:.3f}" for a, m in means.items()),
                     spread, None)
    best = min(finite_others, key=lambda a: means[a])
    our = (f"{rec} {means[rec]:.3f} vs best other {best} {means[best]:.3f} ({means[rec] - means[best]:+.3f}); "
           + ", ".join(f"{a} {means[a]:.3f}" for a in means if a not in (rec, best)))
    return Claim(claim, paper, our, spread, bool(means[rec] <= means[best] + WINDOW_MARGIN))


def fit_both(points: list[FitPoint]) -> Fits:
    """{"avg" | "final": (fit or None, R^2, RMSE, why it failed)} of L = E + A / x^alpha over the finite points
    (not fitted below 6 points)."""
    good = [p for p in points if all(math.isfinite(v) and v > 0 for v in (p.final_params, p.avg_params, p.loss))]
    ys = [p.loss for p in good]
    if len(good) < 6:
        skipped = (None, math.nan, math.nan, f"only {len(good)} runs with finite figures (the rule needs 6)")
        return {"avg": skipped, "final": skipped}
    return {"avg": _fit([p.avg_params for p in good], ys, "avg_params"),
            "final": _fit([p.final_params for p in good], ys, "final_params")}


def arm_means(points: list[FitPoint]) -> list[FitPoint]:
    """One point per arm: its counts and the mean of its seeds' finite losses (arms with none left out)."""
    by_arm: dict[str, list[FitPoint]] = {}
    for p in points:
        by_arm.setdefault(p.arm, []).append(p)
    out = []
    for arm, ps in by_arm.items():
        m = mean_sd([p.loss for p in ps])[0]
        if math.isfinite(m):
            out.append(FitPoint(arm, ps[0].final_params, ps[0].avg_params, m))
    return out


def fit_claim(points: list[FitPoint], fits: Fits | None = None, mean_fits: Fits | None = None) -> Claim:
    """Rule: R^2 of the N-bar fit > R^2 of the final-count fit, over the same runs (at least 6 finite ones).
    `fits` is `fit_both(points)` (computed when not given); `mean_fits`, when given, is `fit_both` over the arms'
    seed means (`arm_means`), added to the spread column to read the seeds' noise (not part of the rule)."""
    n = sum(1 for p in points if math.isfinite(p.loss))
    claim = ("The average-parameter law fits dense and pruned runs better than the final-parameter law: "
             "L = E + A / x^alpha fitted over the same runs has the higher R^2 with x = N-bar than with x = the final "
             "live count (CPU protocol, papers-model.md §4(c): >= 6 runs).")
    paper = "L(N-bar, D) fits sparse and dense runs with one law, 58M-468M [abs]; a final-N law does not"
    if n < 6:
        return Claim(claim, paper, f"not measured: only {n} runs with a finite loss", f"{n} runs", None)
    fits = fits if fits is not None else fit_both(points)
    (fa, ra, ea, why_a), (ff, rf, ef, why_f) = fits["avg"], fits["final"]
    spread = f"{n} runs, {len({p.arm for p in points})} arms; RMSE {ea:.4f} (N-bar) vs {ef:.4f} (final)"
    if fa is None or ff is None:
        why = "; ".join(w for w in (why_a and f"N-bar fit: {why_a}", why_f and f"final fit: {why_f}") if w)
        return Claim(claim, paper, f"not measured: {why}", spread, None)
    our = (f"R^2 {ra:.3f} (N-bar: alpha {fa.params['alpha']:.2f}) vs {rf:.3f} (final: alpha "
           f"{ff.params['alpha']:.2f})")
    if mean_fits is not None and mean_fits["avg"][0] is not None and mean_fits["final"][0] is not None:
        spread += (f"; over the {len(arm_means(points))} arms' seed means: R^2 {mean_fits['avg'][1]:.3f} vs "
                   f"{mean_fits['final'][1]:.3f}")
    return Claim(claim, paper, our, spread, bool(ra > rf))


def _fit(x: list[float], y: list[float], name: str) -> tuple[Any, float, float, str]:
    """(fit, R^2, RMSE, "") or (None, nan, nan, why): a failed fit makes the claim n/a, never an error."""
    from pretrainlab.science.fit import FitError, fit_power_law

    try:
        fit = fit_power_law(x, y, bootstrap=0, seed=0, x_name=name)
    except FitError as e:
        return None, math.nan, math.nan, e.message
    pred = [float(v) for v in fit.predict(x)]
    mean = sum(y) / len(y)
    ss_res = sum((a - b) ** 2 for a, b in zip(y, pred))
    ss_tot = sum((a - mean) ** 2 for a in y)
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else math.nan
    return fit, r2, math.sqrt(ss_res / len(y)), ""


def _num(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan


def _plot(points: list[FitPoint], fits: Fits, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    arms = sorted({p.arm for p in points})
    for ax, key, label in ((axes[0], "final", "final live non-embedding parameters"),
                           (axes[1], "avg", "N-bar: average live non-embedding parameters")):
        for arm in arms:
            xs = [p.final_params if key == "final" else p.avg_params for p in points if p.arm == arm]
            ax.scatter(xs, [p.loss for p in points if p.arm == arm], label=arm, s=18)
        fit, r2, _, why = fits[key]
        if fit is not None:
            grid = np.geomspace(fit.x_range[0], fit.x_range[1], 50)
            ax.plot(grid, fit.predict(grid), color="black", lw=1, label=f"fit, R^2 {r2:.3f}")
        else:
            ax.set_title(f"no fit: {why}", fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel(label)
    axes[0].set_ylabel("validation loss (nats/token)")
    axes[1].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _say(text: str) -> None:
    print(f"[journey] {text}", flush=True)


def _run(ctx: ReplicationContext) -> ReplicationResult:
    return run_protocol(ctx, SCALES[ctx.scale])


register_replication(
    Replication(
        name="journey",
        paper=PAPER,
        default_seeds=3,
        run=_run,
        summary="gradual magnitude pruning windows at S=0.6; the average-parameter (N-bar) law vs final-N",
    )
)
