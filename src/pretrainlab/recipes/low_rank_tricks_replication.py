"""`pretrainlab replicate low-rank-tricks`: weight refactorisation and momentum reset for low-rank
pretraining (Glentis et al. 2025, "Scalable parameter- and memory-efficient pretraining for LLMs").

The paper benchmarks efficient pretraining methods and proposes two cheap fixes for pure low-rank training
(W = (alpha / r) B A): every T steps, re-balance the factors by an SVD of their product, leaving the
function unchanged (`refactorize` callback), and zero the AdamW moments (`momentum_reset` callback); both
live in recipes/low_rank_tricks.py. Claims (abstract): properly tuned full-rank training is best; low-rank
with both tricks gets lower perplexity than plain low-rank (at 1B, lower than GaLore and Fira).

Protocol (the CPU check of `../shared/papers/papers-model.md` section 2c): five arms (and two diagnostic
ones) on the same budget, data order and schedule, each over the same seeds: dense; low_rank at r = d/4
(both factors Kaiming-uniform, alpha = r/4: the paper's 60M setting r = 128, alpha = 32 at d = 512);
low_rank + refactorize; low_rank + momentum_reset (both moments, of the low-rank factors; Adam's step count kept);
low_rank + both; and two diagnostic arms added after the first run (see DIAGNOSTIC_ARMS).
The period T is scaled to the run length: the paper's T = 200 of its 11k steps (1.8% of the run) becomes
round(steps x 200 / 11000) steps here (7 of 400 at tiny). Relative to the second moment's memory that is of
the same order as the paper's, T / (1 / (1 - beta2)) = 7 / 20 here (beta2 0.95), 200 / 1000 there (0.999),
but not relative to the first moment's: T / (1 / (1 - beta1)) = 0.7 here, 20 there (both beta1 0.9), hence
the diagnostic arm `both_slow`.
The learning rates of dense and of low_rank are each the best of a 3-point grid on seed 0 (1e-3..1e-2 for
dense, 3e-3..3e-2 for low-rank, whose alpha / r = 1/4 wants more); the three trick arms use low_rank's
(the tricks are added to the tuned baseline, not re-tuned: conservative for them).
Compared runs use seeds 1..K. Everything else as the SLTrain replication (recipes/sltrain_replication.py):
byte vocabulary, AdamW without weight decay, cosine with 10% warm-up to 10%, gradient clipping 1.0.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from pretrainlab.recipes.sltrain_replication import base_tree
from pretrainlab.science.replication import (
    Claim,
    Replication,
    ReplicationContext,
    ReplicationResult,
    mean_sd,
    paired_gap,
    register_replication,
    spread_text,
)

PAPER = "Scalable parameter and memory efficient pretraining for LLM: recipes, weight refactorization and " \
        "momentum reset (Glentis et al. 2025)"
GRID_SEED = 0
PAPER_PERIOD = 200 / 11_000  # T = 200 steps of the 60M run's 11k
TRICKS_MARGIN = 0.02  # nats: papers-model.md section 2c, set before any run
TRICK_ARMS = ("refactorize", "momentum_reset", "both")
# Diagnostic arms, added after the first tiny run (momentum reset alone hurt, both together did not help):
# both tricks with Adam's step count restarted at each reset (as re-creating AdamW in the public LORO code
# does), and both tricks every SLOW_PERIODS first-moment memories (1 / (1 - beta1) = 10 steps), so that the
# first moment recovers within a period, as it does with the paper's T = 200 at beta1 = 0.9.
DIAGNOSTIC_ARMS = ("both_reset_step", "both_slow")
BETA1 = 0.9  # base_tree's AdamW beta1
SLOW_PERIODS = 5


@dataclass(frozen=True)
class Scale:
    """One scale: data budget, model, run length, the low-rank rank and the lr grid."""

    train_tokens: int
    val_tokens: int
    seq_len: int
    batch_rows: int
    steps: int
    n_layers: int
    d_model: int
    n_heads: int
    rank: int
    lrs: tuple[float, ...]  # dense's lr grid
    low_rank_lrs: tuple[float, ...]  # low_rank's (as many points: the same tuning budget)

    @property
    def every(self) -> int:
        """The tricks' period T in steps: the paper's share of the run (200 / 11000), at least 1."""
        return max(1, round(self.steps * PAPER_PERIOD))

    @property
    def slow_every(self) -> int:
        """The diagnostic arm's period: SLOW_PERIODS first-moment memories, 1 / (1 - beta1) steps each."""
        return max(1, round(SLOW_PERIODS / (1 - BETA1)))


SCALES: dict[str, Scale] = {
    # 400 steps of 1,024 tokens, d 128 x 4 layers, r = 32: 21 runs.
    "tiny": Scale(train_tokens=2_000_000, val_tokens=32_768, seq_len=128, batch_rows=8, steps=400,
                  n_layers=4, d_model=128, n_heads=4, rank=32, lrs=(1e-3, 3e-3, 1e-2),
                  low_rank_lrs=(3e-3, 1e-2, 3e-2)),
    "small": Scale(train_tokens=8_000_000, val_tokens=65_536, seq_len=128, batch_rows=16, steps=1000,
                   n_layers=6, d_model=192, n_heads=6, rank=48, lrs=(1e-3, 3e-3, 1e-2),
                   low_rank_lrs=(3e-3, 1e-2, 3e-2)),
}


def arm_overrides(scale: Scale) -> dict[str, dict[str, Any]]:
    """dense, low_rank and the three trick arms (low_rank plus callbacks every `scale.every` steps)."""
    low_rank = {"model.linear": "low_rank",
                "model.linear_options": {"rank": scale.rank, "alpha": scale.rank / 4, "init": "kaiming"}}
    refactorize = {"name": "refactorize", "options": {"every": scale.every}}
    reset = {"name": "momentum_reset", "options": {"every": scale.every, "second": True}}
    return {
        "dense": {},
        "low_rank": low_rank,
        "refactorize": {**low_rank, "callbacks": [refactorize]},
        "momentum_reset": {**low_rank, "callbacks": [reset]},
        "both": {**low_rank, "callbacks": [refactorize, reset]},
        "both_reset_step": {**low_rank, "callbacks": [
            refactorize, {"name": "momentum_reset", "options": {**reset["options"], "reset_step": True}}]},
        "both_slow": {**low_rank, "callbacks": [
            {"name": "refactorize", "options": {"every": scale.slow_every}},
            {"name": "momentum_reset", "options": {"every": scale.slow_every, "second": True}}]},
    }


# ------------------------------------------------------------------------------------------- claims


def claim_tricks_help(low_rank: list[float], both: list[float]) -> Claim:
    """Mean over seeds of L_low_rank - L_both >= TRICKS_MARGIN (seed-paired differences in the spread)."""
    d, diffs = paired_gap(low_rank, both)
    return Claim(
        claim="Weight refactorisation plus momentum reset improve plain low-rank training: mean val loss "
        f"L_low_rank - L_low_rank+both >= {TRICKS_MARGIN} nats",
        paper_figure="lower perplexity than plain low-rank; at 1B below GaLore and Fira with ~25% less memory "
        "(abstract); per-size figures not verified",
        our_figure=f"{d:+.3f} nats (low-rank {mean_sd(low_rank)[0]:.3f}, +both {mean_sd(both)[0]:.3f})",
        spread=spread_text(diffs),
        holds=bool(d >= TRICKS_MARGIN) if math.isfinite(d) else None,
    )


def claim_dense_best(losses: dict[str, list[float]]) -> Claim:
    """mean L_dense < the mean loss of every low-rank arm."""
    dense = mean_sd(losses["dense"])[0]
    others = {a: mean_sd(v)[0] for a, v in losses.items() if a != "dense"}
    best = min(others, key=lambda a: others[a] if math.isfinite(others[a]) else math.inf)
    gap = others[best] - dense
    diffs = [o - d for d, o in zip(losses["dense"], losses[best])]
    return Claim(
        claim="Properly tuned full-rank training remains best: mean L_dense < the mean loss of every low-rank arm",
        paper_figure="'properly tuned full-rank training is best' (abstract)",
        our_figure=f"best low-rank arm {best} {others[best]:.3f} vs dense {dense:.3f} ({gap:+.3f} nats)",
        spread=f"{best} - dense: " + spread_text(diffs),
        holds=bool(gap > 0) if math.isfinite(gap) else None,
    )


# ------------------------------------------------------------------------------------------- protocol


def run_protocol(ctx: ReplicationContext, scale: Scale) -> ReplicationResult:
    """Tune dense's and low_rank's lr on seed 0, train the five arms on seeds 1..K, compute the claims."""
    from pretrainlab.science.arms import budget_data, plot_train_curves, run_arms, tune_lr

    data = budget_data(ctx, scale.train_tokens, scale.val_tokens)
    base = base_tree(data.as_posix(), seq_len=scale.seq_len, batch_rows=scale.batch_rows, steps=scale.steps,
                     n_layers=scale.n_layers, d_model=scale.d_model, n_heads=scale.n_heads,
                     val_tokens=scale.val_tokens)
    arms = arm_overrides(scale)
    grids = {"dense": scale.lrs, "low_rank": scale.low_rank_lrs}
    _say(f"data {data}; tricks every {scale.every} of {scale.steps} steps; lr grids {grids} on seed {GRID_SEED}")
    tuned, grid = tune_lr(ctx, "low-rank-tricks-lr", base, {a: arms[a] for a in grids}, grids, GRID_SEED)
    lrs = {a: tuned["dense"] if a == "dense" else tuned["low_rank"] for a in arms}
    _say(f"chosen lr: dense {tuned['dense']:g}, low-rank arms {tuned['low_rank']:g}")
    seeds = list(range(GRID_SEED + 1, GRID_SEED + 1 + ctx.seeds))
    res = run_arms(ctx, "low-rank-tricks", base, {a: {**o, "optim.lr": lrs[a]} for a, o in arms.items()}, seeds)

    losses = {a: r.values("val_loss") for a, r in res.items()}
    params = {a: r.values("params_non_embedding")[0] for a, r in res.items()}
    skipped = {a: r.values("skipped_steps") for a, r in res.items()}
    claims = [claim_tricks_help(losses["low_rank"], losses["both"]), claim_dense_best(losses)]
    plot_train_curves(res, ctx.out / "plots" / "train_loss.png", title=f"low-rank tricks ({ctx.scale})")
    single = [f"{a}: {mean_sd([x - y for x, y in zip(losses['low_rank'], losses[a])])[0]:+.3f} nats"
              for a in (*TRICK_ARMS, *DIAGNOSTIC_ARMS)]
    notes = [
        f"Scale {ctx.scale}: byte vocabulary, d_model {scale.d_model}, {scale.n_layers} layers, sequence "
        f"{scale.seq_len}, {scale.steps} steps of {scale.seq_len * scale.batch_rows:,} tokens, seeds {seeds}; "
        f"low-rank rank {scale.rank} (alpha {scale.rank / 4:g}, per fused matrix), tricks every {scale.every} "
        f"steps (the paper's 200 / 11000 of the run).",
        "Gain over plain low-rank (mean L_low_rank - L_arm): " + "; ".join(single) + ". Diagnostic arms (added "
        "after the first tiny run): both_reset_step restarts Adam's step count at each reset (bias correction "
        "anew, as re-creating AdamW in the public LORO code); both_slow applies both every "
        f"{scale.slow_every} steps ({SLOW_PERIODS} x 1 / (1 - beta1)), so the first moment recovers within a "
        "period as with the paper's T = 200; at the paper's share of the run (every "
        f"{scale.every} steps) a kept step count makes each reset damp the next updates to ~0.45 of a unit step.",
        "Learning rates: " + (", ".join(f"{a}: " + ", ".join(f"{lr:g} -> {v:.3f}" for lr, v in g.items())
                                        for a, g in grid.items() if g) or f"dense {tuned['dense']:g} (no grid)")
        + f"; trick arms use low_rank's {tuned['low_rank']:g}.",
        "Loss spikes (steps the stability callback skipped: non-finite, or loss > 3x its running mean), summed "
        "over seeds: " + ", ".join(f"{a} {int(sum(v for v in s if math.isfinite(v)))}" for a, s in skipped.items())
        + ".",
        "Non-embedding parameters: " + ", ".join(f"{a} {p:,.0f}" for a, p in params.items()) + ".",
    ]
    edge = [a for a, lr in tuned.items() if len(grids[a]) > 1 and lr in (min(grids[a]), max(grids[a]))]
    if edge:
        notes.append(f"chosen lr at the edge of the grid for: {', '.join(edge)} (a wider grid might do better)")
    details = {
        "scale": {**asdict(scale), "every": scale.every},
        "data": str(data),
        "arms": arms,
        "lr": lrs,
        "lr_grid": {a: {f"{lr:g}": v for lr, v in g.items()} for a, g in grid.items()},
        "seeds": seeds,
        "val_loss": losses,
        "params_non_embedding": params,
        "skipped_steps": skipped,
        "wall_s": {a: r.values("wall_s") for a, r in res.items()},
        "runs": {a: [str(p) for p in r.runs] for a, r in res.items()},
    }
    return ReplicationResult(name="low-rank-tricks", paper=PAPER, scale=ctx.scale, seeds=len(seeds), wall_s=0.0,
                             claims=claims, notes=notes, details=details)


def _say(text: str) -> None:
    print(f"[low-rank-tricks] {text}", flush=True)


def _run(ctx: ReplicationContext) -> ReplicationResult:
    return run_protocol(ctx, SCALES[ctx.scale])


register_replication(
    Replication(
        name="low-rank-tricks",
        paper=PAPER,
        default_seeds=3,
        run=_run,
        summary="dense vs low-rank with and without periodic SVD refactorisation and AdamW momentum reset",
    )
)
