"""Pre-training under infinite compute (Kim, Kotha, Liang, Hashimoto 2025, arXiv 2509.14786).

With the unique training tokens D fixed and compute free, the paper ranks recipes by the asymptote of
a scaling law rather than by one run: (1) weight decay far above the usual 0.1, tuned with the epoch
count, lets loss keep falling as parameters grow, where the standard recipe overfits; (2) ensembles of
independently trained members (mean of logits) reach a lower asymptote than scaling one model; (3) an
ensemble distilled into one small student through its samples keeps most of the ensemble's gain.

The recipe itself is configuration (`optim.weight_decay`, epochs = steps x batch / D, `seed` for
members, `objective=distill` or `pretrainlab synthesize` for students), so this module is the
replication protocol: `pretrainlab replicate infinite-compute --scale tiny|small`.
It follows the CPU protocol of `../shared/papers/papers-data.md` (byte vocabulary, sequence length 128,
a fixed token budget, models of 0.1-0.8M non-embedding parameters), with these differences:
learning rate fixed per scale (the paper tunes it too); epochs are counted in tokens seen, drawn as
random windows of the D tokens; ensemble members reuse the tuned single-model settings (the paper
re-tunes them: double the epochs, halve the weight decay).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pretrainlab.science.replication import Replication, ReplicationContext, ReplicationResult, register_replication

PAPER = "Pre-training under infinite compute (Kim, Kotha, Liang, Hashimoto 2025), arXiv 2509.14786"
DEFAULT_WD = 0.1


@dataclass(frozen=True)
class Scale:
    """One scale of the protocol: the token budget, the model sizes and the grids."""

    train_tokens: int
    val_tokens: int
    seq_len: int
    batch_rows: int
    sizes: tuple[tuple[str, int, int, int], ...]  # (label, n_layers, d_model, n_heads), small to large
    grid_sizes: tuple[str, ...]
    weight_decays: tuple[float, ...]
    epochs: tuple[int, ...]
    member_size: str
    ensemble_k: int
    synthetic_tokens: int
    synthetic_share: float
    data_fractions: tuple[float, ...]
    lr: float
    evals_per_run: int


SCALES: dict[str, Scale] = {
    # About 25 minutes on 2 CPU cores (measured figures in the closing note).
    "tiny": Scale(
        train_tokens=65_536, val_tokens=32_768, seq_len=128, batch_rows=32,
        sizes=(("0.1M", 2, 64, 2), ("0.2M", 4, 64, 2), ("0.4M", 2, 128, 4), ("0.8M", 4, 128, 4)),
        grid_sizes=("0.2M", "0.8M"), weight_decays=(0.1, 0.3, 1.0, 3.0), epochs=(8, 16, 32),
        member_size="0.2M", ensemble_k=4, synthetic_tokens=262_144, synthetic_share=0.75,
        data_fractions=(0.125, 0.25, 0.5), lr=3e-3, evals_per_run=8,
    ),
    # Four times the data and twice the widths: a few hours on 2 cores, minutes on a GPU.
    "small": Scale(
        train_tokens=262_144, val_tokens=65_536, seq_len=128, batch_rows=64,
        sizes=(("0.2M", 4, 64, 2), ("0.4M", 2, 128, 4), ("0.8M", 4, 128, 4), ("1.7M", 4, 192, 6)),
        grid_sizes=("0.4M", "1.7M"), weight_decays=(0.1, 0.3, 1.0, 3.0), epochs=(4, 8, 16, 32),
        member_size="0.4M", ensemble_k=4, synthetic_tokens=1_048_576, synthetic_share=0.75,
        data_fractions=(0.125, 0.25, 0.5), lr=3e-3, evals_per_run=8,
    ),
}


@dataclass(frozen=True)
class Point:
    """One training run of the protocol; `key` identifies it across stages (grid runs are reused)."""

    size: str
    weight_decay: float
    epochs: int
    seed: int
    data: str
    role: str  # grid | default | tuned | member | data | student
    weights: tuple[tuple[str, float], ...] = ()

    @property
    def key(self) -> tuple[Any, ...]:
        return (*self.unseeded, self.seed)

    @property
    def unseeded(self) -> tuple[Any, ...]:
        return (self.size, self.weight_decay, self.epochs, self.data, self.weights)


def base_tree(scale: Scale) -> dict[str, Any]:
    """The RunConfig shared by every run of the protocol (cosine with 1% warm-up, AdamW, clip 1.0, as the paper)."""
    return {
        "data": {"seq_len": scale.seq_len, "mode": "random"},
        "optim": {"name": "adamw", "lr": scale.lr, "weight_decay": DEFAULT_WD, "betas": [0.9, 0.95]},
        "schedule": {"name": "cosine", "warmup_fraction": 0.01, "min_lr_ratio": 0.1},
        "train": {"global_batch_tokens": scale.seq_len * scale.batch_rows, "micro_batch_size": scale.batch_rows,
                  "grad_clip": 1.0, "compile": False, "progress": False, "log_every": 10},
        "eval": {"max_tokens_per_domain": scale.val_tokens, "batch_size": 64},
    }


def point_overrides(scale: Scale, p: Point, train_tokens: int) -> dict[str, Any]:
    """The dotted overrides that make `p` from `base_tree` (its seed is set by the sweep's `seeds`); epochs
    are counted over the full budget's D, so a run on a fraction of the data does the same number of steps
    (compute fixed, data varied)."""
    _, layers, width, heads = next(s for s in scale.sizes if s[0] == p.size)
    tokens_per_step = scale.seq_len * scale.batch_rows
    steps = max(1, round(p.epochs * train_tokens / tokens_per_step))
    out: dict[str, Any] = {
        "model.n_layers": layers, "model.d_model": width, "model.n_heads": heads,
        "optim.weight_decay": p.weight_decay, "train.steps": steps,
        "eval.every": max(1, steps // scale.evals_per_run), "data.path": p.data,
    }
    if p.weights:
        out["data.weights"] = dict(p.weights)
    return out


def _run(ctx: ReplicationContext) -> ReplicationResult:
    from pretrainlab.recipes.infinite_compute_protocol import run_protocol

    return run_protocol(ctx, SCALES[ctx.scale])


register_replication(
    Replication(
        name="infinite-compute",
        paper=PAPER,
        default_seeds=3,
        run=_run,
        summary="weight decay x epochs x size grid, scaling-law asymptotes, ensembles, distillation into a student",
    )
)

