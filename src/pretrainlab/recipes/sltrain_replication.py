"""`pretrainlab replicate sltrain`: SLTrain (Han et al., NeurIPS 2024, arXiv 2406.02214) at CPU scale.

SLTrain parameterises every attention and MLP projection as W = (alpha / r) B A + S, a low-rank product
plus a sparse matrix on a fixed random support of density delta (`model.linear=sparse_low_rank`, see
model/sparse_low_rank.py). The paper's claims (LLaMA 60M-1B on C4): SLTrain is far better than pure
low-rank training, close to full-rank training, with about half the parameters.

Protocol (the CPU check of `../shared/papers/papers-model.md` section 1c): three arms trained on the same
token budget, data order and schedule, each over the same seeds:
- `dense`: full-rank projections;
- `low_rank`: W = (alpha / r') B A (both factors Kaiming-uniform, the pure low-rank baseline), with r'
  chosen so that its non-embedding parameters are the nearest to SLTrain's (r' >= r: equal parameters is
  the stricter comparison, and the rank is at least SLTrain's);
- `sltrain`: rank r plus the sparse part at density delta.
Byte vocabulary (the embedding stays small, so the parameter ratio is the projections'), alpha = r / 4 as
the paper's 60M script (r = 128, alpha = 32), AdamW without weight decay, cosine with 10% warm-up to 10%
(the paper's schedule). The learning rate of every arm is the best of a 3-point grid on seed 0, the same
size for every arm: 1e-3..1e-2 for dense, 3e-3..3e-2 for the low-rank arms (the paper uses 3e-3 for
SLTrain with alpha / r = 1/4; low-rank nets want more); the compared runs use seeds 1..K, never the grid's
seed. Rank and density apply per fused matrix (qkv is one matrix, gate_up another), so r is chosen
to put SLTrain's non-embedding parameters near the paper's share (~43% of dense at 60M by our arithmetic).

Differences from the paper: a byte vocabulary and the built-in corpus (Python source) instead of T5 tokens
on C4; ~0.4M tokens per run instead of 1.1B+; rank per fused matrix; lr from a 3-point grid per arm.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

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

PAPER = "SLTrain: a sparse plus low-rank approach for parameter and memory efficient pretraining (Han et al., " \
        "NeurIPS 2024), arXiv 2406.02214"
GRID_SEED = 0
LOW_RANK_MARGIN = 0.05  # nats: papers-model.md section 1c, set before any run
DENSE_RATIO = 1.05  # L_SLTrain <= 1.05 L_dense: papers-model.md section 1c
HALF_PARAMS = 0.6  # "about half the parameters": at most 60% of dense's non-embedding parameters (ours)
# The paper's C4 perplexities at 60M (papers-model.md section 1b, [mem]: from memory, not re-verified).
PAPER_PPL_60M = {"dense": 34.06, "low_rank": 78.18, "sltrain": 34.15}


@dataclass(frozen=True)
class Scale:
    """One scale of the protocol: data budget, model, run length, SLTrain's rank and density, lr grid."""

    train_tokens: int  # unique training tokens D (runs draw random windows; steps x batch <= D: no repeats)
    val_tokens: int
    seq_len: int
    batch_rows: int
    steps: int
    n_layers: int
    d_model: int
    n_heads: int
    rank: int
    density: float
    lrs: tuple[float, ...]  # dense's lr grid
    low_rank_lrs: tuple[float, ...]  # the low-rank and SLTrain arms' grid (as many points: the same budget)

    def grids(self) -> dict[str, tuple[float, ...]]:
        """Each arm's lr grid."""
        return {"dense": self.lrs, "low_rank": self.low_rank_lrs, "sltrain": self.low_rank_lrs}


SCALES: dict[str, Scale] = {
    # 400 steps of 1,024 tokens (0.41M tokens per run), d 128 x 4 layers: dense 0.85M non-embedding
    # parameters, SLTrain 0.37M (44%); 18 runs.
    "tiny": Scale(train_tokens=2_000_000, val_tokens=32_768, seq_len=128, batch_rows=8, steps=400,
                  n_layers=4, d_model=128, n_heads=4, rank=40, density=0.03, lrs=(1e-3, 3e-3, 1e-2),
                  low_rank_lrs=(3e-3, 1e-2, 3e-2)),
    # 1,000 steps of 2,048 tokens (2M per run), d 192 x 6 layers: a few hours on 2 cores, minutes on a GPU.
    "small": Scale(train_tokens=8_000_000, val_tokens=65_536, seq_len=128, batch_rows=16, steps=1000,
                   n_layers=6, d_model=192, n_heads=6, rank=60, density=0.03, lrs=(1e-3, 3e-3, 1e-2),
                   low_rank_lrs=(3e-3, 1e-2, 3e-2)),
}


def base_tree(data: str, *, seq_len: int, batch_rows: int, steps: int, n_layers: int, d_model: int,
              n_heads: int, val_tokens: int) -> dict[str, Any]:
    """The RunConfig shared by every arm of the low-rank replications (SLTrain's optimiser and schedule:
    AdamW, no weight decay, cosine with 10% warm-up to 10%; gradient clipping 1.0; evaluation at the end)."""
    return {
        "data": {"path": data, "seq_len": seq_len, "mode": "random"},
        "model": {"n_layers": n_layers, "d_model": d_model, "n_heads": n_heads},
        "optim": {"name": "adamw", "lr": 3e-3, "weight_decay": 0.0, "betas": [0.9, 0.95]},
        "schedule": {"name": "cosine", "warmup_fraction": 0.1, "min_lr_ratio": 0.1},
        "train": {"steps": steps, "global_batch_tokens": seq_len * batch_rows, "micro_batch_size": batch_rows,
                  "grad_clip": 1.0, "compile": False, "progress": False, "log_every": 10},
        "eval": {"max_tokens_per_domain": val_tokens, "batch_size": 32},
    }


def arm_models(scale: Scale) -> dict[str, dict[str, Any]]:
    """The three arms' `model.linear` overrides; the low-rank rank is the one nearest SLTrain's parameters."""
    alpha = scale.rank / 4
    sltrain = {"model.linear": "sparse_low_rank",
               "model.linear_options": {"rank": scale.rank, "alpha": alpha, "density": scale.density}}
    r = equal_params_rank(scale)
    low_rank = {"model.linear": "low_rank", "model.linear_options": {"rank": r, "alpha": r / 4, "init": "kaiming"}}
    return {"dense": {}, "low_rank": low_rank, "sltrain": sltrain}


def equal_params_rank(scale: Scale) -> int:
    """The `low_rank` rank (>= SLTrain's) whose non-embedding parameter count is nearest SLTrain's."""
    from pretrainlab.science.arms import non_embedding_params

    sizes = {"n_layers": scale.n_layers, "d_model": scale.d_model, "n_heads": scale.n_heads}
    target = non_embedding_params({**sizes, "linear": "sparse_low_rank",
                                   "linear_options": {"rank": scale.rank, "density": scale.density}})
    dense = non_embedding_params(sizes)
    best, best_gap = scale.rank, math.inf
    for r in range(scale.rank, scale.d_model + 1):
        n = non_embedding_params({**sizes, "linear": "low_rank", "linear_options": {"rank": r}})
        if abs(n - target) < best_gap:
            best, best_gap = r, abs(n - target)
        if n > target or n >= dense:
            break
    return best


# ------------------------------------------------------------------------------------------- claims


def claim_beats_low_rank(low_rank: list[float], sltrain: list[float], params: dict[str, float]) -> Claim:
    """Mean over seeds of L_low_rank - L_SLTrain >= LOW_RANK_MARGIN (seed-paired differences in the spread)."""
    d, diffs = paired_gap(low_rank, sltrain)
    ppl = PAPER_PPL_60M
    return Claim(
        claim=f"SLTrain beats pure low-rank training at (nearly) equal non-embedding parameters: "
        f"mean val loss L_low_rank - L_SLTrain >= {LOW_RANK_MARGIN} nats",
        paper_figure=f"60M on C4: perplexity {ppl['low_rank']} low-rank vs {ppl['sltrain']} SLTrain "
        f"({math.log(ppl['low_rank'] / ppl['sltrain']):.2f} nats) (from memory, unverified); "
        "'much better than low-rank' (abstract)",
        our_figure=f"{d:+.3f} nats (low-rank {mean_sd(low_rank)[0]:.3f}, SLTrain {mean_sd(sltrain)[0]:.3f}; "
        f"non-embedding params {params.get('low_rank', math.nan):,.0f} vs {params.get('sltrain', math.nan):,.0f})",
        spread=spread_text(diffs),
        holds=bool(d >= LOW_RANK_MARGIN) if math.isfinite(d) else None,
    )


def claim_close_to_dense(dense: list[float], sltrain: list[float], params: dict[str, float]) -> Claim:
    """mean L_SLTrain <= DENSE_RATIO mean L_dense, with at most HALF_PARAMS of dense's non-embedding params."""
    ld, ls = mean_sd(dense)[0], mean_sd(sltrain)[0]
    ratio = ls / ld
    share = params.get("sltrain", math.nan) / params.get("dense", math.nan)
    ppl = PAPER_PPL_60M
    per_seed = [s / d for s, d in zip(sltrain, dense)]
    ok = math.isfinite(ratio) and math.isfinite(share)
    return Claim(
        claim=f"SLTrain stays close to full-rank with about half its non-embedding parameters: "
        f"mean L_SLTrain <= {DENSE_RATIO} x mean L_dense, with <= {HALF_PARAMS:.0%} of its non-embedding params",
        paper_figure=f"60M: perplexity {ppl['sltrain']} vs {ppl['dense']} (loss ratio "
        f"{math.log(ppl['sltrain']) / math.log(ppl['dense']):.3f}), 44M vs 58M parameters "
        "(non-embedding ~43% by our arithmetic) (from memory, unverified)",
        our_figure=f"loss ratio {ratio:.3f} (SLTrain {ls:.3f}, dense {ld:.3f}); params {share:.0%} of dense "
        f"({params.get('sltrain', math.nan):,.0f} / {params.get('dense', math.nan):,.0f})",
        spread="per-seed loss ratio " + spread_text(per_seed),
        holds=bool(ratio <= DENSE_RATIO and share <= HALF_PARAMS) if ok else None,
    )


def claim_dense_best(dense: list[float], sltrain: list[float]) -> Claim:
    """mean L_dense <= mean L_SLTrain (the paper's full-rank rows are the lowest at every size)."""
    g, diffs = paired_gap(sltrain, dense)
    ppl = PAPER_PPL_60M
    return Claim(
        claim="Full-rank training remains (slightly) better than SLTrain: mean L_SLTrain - L_dense >= 0",
        paper_figure=f"60M: {ppl['sltrain']} vs {ppl['dense']} perplexity; full-rank lowest at 60M-1B "
        "[from memory, unverified]",
        our_figure=f"{g:+.3f} nats (SLTrain {mean_sd(sltrain)[0]:.3f}, dense {mean_sd(dense)[0]:.3f})",
        spread=spread_text(diffs),
        holds=bool(g >= 0) if math.isfinite(g) else None,
    )


# ------------------------------------------------------------------------------------------- protocol


def run_protocol(ctx: ReplicationContext, scale: Scale) -> ReplicationResult:
    """Tune each arm's lr on seed 0, train every arm on seeds 1..K, and compute the claims."""
    from pretrainlab.science.arms import budget_data, plot_train_curves, run_arms, tune_lr

    data = budget_data(ctx, scale.train_tokens, scale.val_tokens)
    base = base_tree(data.as_posix(), seq_len=scale.seq_len, batch_rows=scale.batch_rows, steps=scale.steps,
                     n_layers=scale.n_layers, d_model=scale.d_model, n_heads=scale.n_heads,
                     val_tokens=scale.val_tokens)
    arms = arm_models(scale)
    grids = scale.grids()
    _say(f"data {data}; arms {', '.join(arms)}; lr grids {grids} on seed {GRID_SEED}")
    lrs, grid = tune_lr(ctx, "sltrain-lr", base, arms, grids, GRID_SEED)
    _say("chosen lr: " + ", ".join(f"{a} {lr:g}" for a, lr in lrs.items()))
    seeds = list(range(GRID_SEED + 1, GRID_SEED + 1 + ctx.seeds))
    res = run_arms(ctx, "sltrain", base, {a: {**o, "optim.lr": lrs[a]} for a, o in arms.items()}, seeds)

    losses = {a: r.values("val_loss") for a, r in res.items()}
    params = {a: r.values("params_non_embedding")[0] for a, r in res.items()}
    claims = [
        claim_beats_low_rank(losses["low_rank"], losses["sltrain"], params),
        claim_close_to_dense(losses["dense"], losses["sltrain"], params),
        claim_dense_best(losses["dense"], losses["sltrain"]),
    ]
    plot_train_curves(res, ctx.out / "plots" / "train_loss.png", title=f"SLTrain replication ({ctx.scale})")
    edge = [a for a, lr in lrs.items() if len(grids[a]) > 1 and lr in (min(grids[a]), max(grids[a]))]
    notes = [
        f"Scale {ctx.scale}: byte vocabulary, d_model {scale.d_model}, {scale.n_layers} layers, sequence "
        f"{scale.seq_len}, {scale.steps} steps of {scale.seq_len * scale.batch_rows:,} tokens "
        f"({scale.steps * scale.seq_len * scale.batch_rows:,} tokens per run), seeds {seeds}.",
        f"SLTrain rank {scale.rank} (alpha {scale.rank / 4:g}), density {scale.density}; low-rank rank "
        f"{arms['low_rank']['model.linear_options']['rank']} for equal parameters; rank and density apply per "
        "fused matrix (qkv, gate_up).",
        _lr_note(lrs, grid),
        "Non-embedding parameters: " + ", ".join(f"{a} {p:,.0f} ({p / params['dense']:.0%})" for a, p in params.items())
        + "; the forward of sparse_low_rank materialises the dense matrix (pure PyTorch), so it saves no time.",
    ]
    if edge:
        notes.append(f"chosen lr at the edge of the grid for: {', '.join(edge)} (a wider grid might do better)")
    details = {
        "scale": asdict(scale),
        "data": str(data),
        "arms": arms,
        "lr": lrs,
        "lr_grid": {a: {f"{lr:g}": v for lr, v in g.items()} for a, g in grid.items()},
        "seeds": seeds,
        "val_loss": losses,
        "params_non_embedding": params,
        "flops_per_token": {a: r.values("flops_per_token")[0] for a, r in res.items()},
        "wall_s": {a: r.values("wall_s") for a, r in res.items()},
        "skipped_steps": {a: r.values("skipped_steps") for a, r in res.items()},
        "runs": {a: [str(p) for p in r.runs] for a, r in res.items()},
    }
    return ReplicationResult(name="sltrain", paper=PAPER, scale=ctx.scale, seeds=len(seeds), wall_s=0.0,
                             claims=claims, notes=notes, details=details)


def _lr_note(lrs: dict[str, float], grid: dict[str, dict[float, float]]) -> str:
    if not any(grid.values()):
        return "Learning rates (no grid): " + ", ".join(f"{a} {lr:g}" for a, lr in lrs.items()) + "."
    tried = "; ".join(f"{a}: " + ", ".join(f"{lr:g} -> {v:.3f}" for lr, v in g.items()) for a, g in grid.items() if g)
    return f"Learning rate per arm: best final val loss over its grid on seed {GRID_SEED} ({tried})."


def _say(text: str) -> None:
    print(f"[sltrain] {text}", flush=True)


def _run(ctx: ReplicationContext) -> ReplicationResult:
    return run_protocol(ctx, SCALES[ctx.scale])


register_replication(
    Replication(
        name="sltrain",
        paper=PAPER,
        default_seeds=3,
        run=_run,
        summary="dense vs pure low-rank vs SLTrain (low-rank + fixed random sparse) at equal parameters",
    )
)
