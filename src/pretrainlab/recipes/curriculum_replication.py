"""`pretrainlab replicate curriculum`: a staged data curriculum against the same data shuffled
(daVinci-LLM, Qin et al., arXiv 2603.27164; `../shared/papers/papers-data.md` section 9).

daVinci-LLM trains a 3B model on 8T tokens in two stages: broad web/code/science text for 6T tokens, then
a stage that brings in question-answer data conservatively (30% QA for 1T tokens) and then heavily (70%
QA for 1T tokens). The paper reports that adding the QA stage beats adjusting proportions alone (+20.3 on
code, +15.8 on science benchmarks), and that going straight to 70% QA collapses. It does not compare the
staged order with the same data shuffled, which is the question here: at equal tokens per domain, does the
order matter?

Protocol (fixed before any run; the domains are recipes/curriculum_data.py's `general` and `qa`):
- Four arms, same model, seeds, learning-rate schedule and number of steps; the loader's windows of each
  domain are drawn in the same seeded order in every arm, so arms with equal domain shares see the same
  windows, only in another order.
  - `curriculum`: daVinci's stages at their share of the run: 75% of the tokens at 0% QA, 12.5% at 30% QA,
    12.5% at 70% QA (`data.stages`, switching at those fractions of the run's tokens);
  - `shuffled`: one constant mixture, the token-weighted mean of the stages (12.5% QA): the same tokens
    per domain as `curriculum`, in expectation (the realised shares are reported);
  - `reverse`: the curriculum's stages in reverse order (70% QA first): same tokens per domain, a control
    for the order;
  - `direct`: daVinci's ablation, stage 1 and then straight to 70% QA for the last 25% (more QA tokens,
    17.5%, than the other arms).
- Cosine learning rate over the whole run (5% warm-up, down to 10%), so the QA stages fall in the decay
  as daVinci's stage 2 runs at its lowest learning rate.
- Measured: the final validation loss (nats per token) on the `qa` domain (the target) and on `general`,
  each over the same held-out windows for every arm, seeds 0..K-1 (default 3); differences are paired by
  seed. Claims and their thresholds are in the `claim_*` functions (set before the first run).
- Not measured: benchmark accuracy (the paper's figures are GSM8K/MATH/code/science scores; a byte-level
  model of 1M parameters answers none of them), so validation loss on held-out QA stands in for them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
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

PAPER = "daVinci-LLM: Data Darwinism and a two-stage adaptive curriculum (Qin et al., arXiv 2603.27164)"
NAME = "curriculum"
TARGET, GENERAL = "qa", "general"
TARGET_MARGIN = 0.02  # nats: the curriculum must lower the target loss at least this much vs shuffled
GENERAL_TOLERANCE = 0.05  # nats: ... without raising the general loss by more than this
ORDER_MARGIN = 0.02  # nats: reverse order ends at least this much above the curriculum on the target
DIRECT_MARGIN = 0.05  # nats: straight to 70% QA costs at least this much general loss (papers-data.md 9c)


@dataclass(frozen=True)
class Stage:
    """A mixture stage: its share of the run's tokens and the share of `qa` in it (the rest is `general`)."""

    label: str
    fraction: float
    qa: float

    @property
    def weights(self) -> dict[str, float]:
        return {GENERAL: round(1.0 - self.qa, 6), TARGET: self.qa}


# daVinci's stages S1 (6T of 8T tokens, no QA), S2-1 (1T, 30% QA), S2-2 (1T, 70% QA)
CURRICULUM = (Stage("S1: 0% QA", 0.75, 0.0), Stage("S2-1: 30% QA", 0.125, 0.3), Stage("S2-2: 70% QA", 0.125, 0.7))
DIRECT = (Stage("S1: 0% QA", 0.75, 0.0), Stage("S2: 70% QA", 0.25, 0.7))


@dataclass(frozen=True)
class Scale:
    """Model, batch, run length, learning rate and evaluation of one scale."""

    seq_len: int
    batch_rows: int
    steps: int  # a multiple of 8, so every stage bound falls on a batch boundary
    n_layers: int
    d_model: int
    n_heads: int
    lr: float
    val_tokens: int  # per domain, the same windows for every arm
    evals: int  # evaluations during the run (for the curves), besides the final one

    @property
    def tokens(self) -> int:
        return self.steps * self.seq_len * self.batch_rows


SCALES: dict[str, Scale] = {
    # 12 runs of 400 steps x 1,536 tokens (614k tokens), d 128 x 4 layers: ~8 minutes on 2 cores
    "tiny": Scale(seq_len=128, batch_rows=12, steps=400, n_layers=4, d_model=128, n_heads=4, lr=3e-3,
                  val_tokens=32_768, evals=4),
    "small": Scale(seq_len=256, batch_rows=16, steps=1600, n_layers=6, d_model=192, n_heads=6, lr=2e-3,
                   val_tokens=65_536, evals=8),
}


def stages_tree(stages: tuple[Stage, ...]) -> list[dict[str, Any]]:
    """`data.stages` for `stages`: each but the last ends at the cumulative fraction of the run's tokens."""
    out: list[dict[str, Any]] = []
    done = 0.0
    for i, stage in enumerate(stages):
        done += stage.fraction
        entry: dict[str, Any] = {"weights": stage.weights}
        if i < len(stages) - 1:
            entry["until_fraction"] = round(done, 6)
        out.append(entry)
    return out


def average_weights(stages: tuple[Stage, ...]) -> dict[str, float]:
    """The token-weighted mean mixture of `stages`: a constant mixture with the same tokens per domain."""
    total = math.fsum(s.fraction for s in stages)
    qa = math.fsum(s.fraction * s.qa for s in stages) / total
    return {GENERAL: round(1.0 - qa, 6), TARGET: round(qa, 6)}


def arm_overrides() -> dict[str, dict[str, Any]]:
    """The four arms as dotted overrides of the base run."""
    return {
        "shuffled": {"data.weights": average_weights(CURRICULUM)},
        "curriculum": {"data.stages": stages_tree(CURRICULUM)},
        "reverse": {"data.stages": stages_tree(tuple(reversed(CURRICULUM)))},
        "direct": {"data.stages": stages_tree(DIRECT)},
    }


def base_tree(scale: Scale, data: Path) -> dict[str, Any]:
    """The RunConfig every arm shares (AdamW, cosine with 5% warm-up to 10%, clip 1.0, fp32)."""
    return {
        "data": {"path": data.as_posix(), "seq_len": scale.seq_len, "mode": "random"},
        "model": {"n_layers": scale.n_layers, "d_model": scale.d_model, "n_heads": scale.n_heads},
        "optim": {"name": "adamw", "lr": scale.lr, "weight_decay": 0.1, "betas": [0.9, 0.95]},
        "schedule": {"name": "cosine", "warmup_fraction": 0.05, "min_lr_ratio": 0.1},
        "train": {"steps": scale.steps, "global_batch_tokens": scale.seq_len * scale.batch_rows,
                  "micro_batch_size": scale.batch_rows, "grad_clip": 1.0, "precision": "fp32", "compile": False,
                  "progress": False, "log_every": max(1, min(10, scale.steps // 40))},
        "eval": {"every": max(1, scale.steps // (scale.evals + 1)), "max_tokens_per_domain": scale.val_tokens,
                 "batch_size": 32},
    }


# ------------------------------------------------------------------------------------------- claims


def claim_target(shuffled: list[float], curriculum: list[float]) -> Claim:
    """mean L_qa(shuffled) - L_qa(curriculum) >= TARGET_MARGIN."""
    gain, diffs = paired_gap(shuffled, curriculum)
    return Claim(
        claim="A staged curriculum (0% -> 30% -> 70% QA) lowers the target domain's loss vs the same data shuffled "
        f"(equal tokens per domain): mean L_qa(shuffled) - L_qa(curriculum) >= {TARGET_MARGIN} nats",
        paper_figure="a QA stage adds +20.3 code, +15.8 science points over proportion adjustment alone (3B, 8T "
        "tokens); no same-data shuffled control in the paper",
        our_figure=f"{gain:+.3f} nats (shuffled {mean_sd(shuffled)[0]:.3f}, curriculum {mean_sd(curriculum)[0]:.3f})",
        spread=spread_text(diffs),
        holds=bool(gain >= TARGET_MARGIN) if math.isfinite(gain) else None,
    )


def claim_general(shuffled: list[float], curriculum: list[float]) -> Claim:
    """mean L_general(curriculum) - L_general(shuffled) <= GENERAL_TOLERANCE."""
    cost, diffs = paired_gap(curriculum, shuffled)
    return Claim(
        claim="The curriculum keeps general text: mean L_general(curriculum) - L_general(shuffled) <= "
        f"{GENERAL_TOLERANCE} nats",
        paper_figure="overall 51.72 after the curriculum, on par with OLMo-3-7B (51.65); no general-loss figure",
        our_figure=f"{cost:+.3f} nats (curriculum {mean_sd(curriculum)[0]:.3f}, shuffled {mean_sd(shuffled)[0]:.3f})",
        spread=spread_text(diffs),
        holds=bool(cost <= GENERAL_TOLERANCE) if math.isfinite(cost) else None,
    )


def claim_order(reverse: list[float], curriculum: list[float]) -> Claim:
    """mean L_qa(reverse) - L_qa(curriculum) >= ORDER_MARGIN."""
    gap, diffs = paired_gap(reverse, curriculum)
    return Claim(
        claim="The order matters (our control): the same stages reversed (70% QA first) end worse on the target: "
        f"mean L_qa(reverse) - L_qa(curriculum) >= {ORDER_MARGIN} nats",
        paper_figure="not tested in the paper (QA data is placed last by design)",
        our_figure=f"{gap:+.3f} nats (reverse {mean_sd(reverse)[0]:.3f}, curriculum {mean_sd(curriculum)[0]:.3f})",
        spread=spread_text(diffs),
        holds=bool(gap >= ORDER_MARGIN) if math.isfinite(gap) else None,
    )


def claim_direct(direct: list[float], curriculum: list[float]) -> Claim:
    """mean L_general(direct) - L_general(curriculum) >= DIRECT_MARGIN."""
    cost, diffs = paired_gap(direct, curriculum)
    return Claim(
        claim="Going straight to 70% QA (no 30% stage) hurts general text: mean L_general(direct) - "
        f"L_general(curriculum) >= {DIRECT_MARGIN} nats",
        paper_figure="'going straight to 70% QA collapses' (stage-2 ablation; benchmark scores, no loss figure)",
        our_figure=f"{cost:+.3f} nats (direct {mean_sd(direct)[0]:.3f}, curriculum {mean_sd(curriculum)[0]:.3f})",
        spread=spread_text(diffs),
        holds=bool(cost >= DIRECT_MARGIN) if math.isfinite(cost) else None,
    )


# ------------------------------------------------------------------------------------------- protocol


def run_protocol(ctx: ReplicationContext, scale: Scale) -> ReplicationResult:
    """Prepare the two domains, train the four arms on seeds 0..K-1, compute the claims and plots."""
    from pretrainlab.recipes.curriculum_data import prepare_domains
    from pretrainlab.science.arms import plot_train_curves, run_arms

    data = prepare_domains(Path(ctx.out), ctx.data)
    arms = arm_overrides()
    seeds = list(range(ctx.seeds))
    _say(f"data {data.path} ({data.origin}); {scale.steps} steps x {scale.seq_len * scale.batch_rows:,} tokens; "
         f"arms {', '.join(arms)}; seeds {seeds}")
    res = run_arms(ctx, NAME, base_tree(scale, data.path), arms, seeds)

    target = {a: r.values(f"val_loss/{TARGET}") for a, r in res.items()}
    general = {a: r.values(f"val_loss/{GENERAL}") for a, r in res.items()}
    shares = {a: [_share(end) for end in r.ends] for a, r in res.items()}
    claims = [
        claim_target(target["shuffled"], target["curriculum"]),
        claim_general(general["shuffled"], general["curriculum"]),
        claim_order(target["reverse"], target["curriculum"]),
        claim_direct(general["direct"], general["curriculum"]),
    ]
    plots = Path(ctx.out) / "plots"
    plot_train_curves(res, plots / "train_loss.png", title=f"curriculum vs shuffled ({ctx.scale})")
    plot_domain_curves(res, plots / "domain_val_loss.png", scale)
    notes = [
        f"Scale {ctx.scale}: byte vocabulary, d_model {scale.d_model}, {scale.n_layers} layers, sequence "
        f"{scale.seq_len}, {scale.steps} steps of {scale.seq_len * scale.batch_rows:,} tokens "
        f"({scale.tokens:,} tokens per run), lr {scale.lr:g} cosine to 10%, seeds {seeds}. Data: {data.origin}.",
        "Curriculum stages (share of the run's tokens: QA share): "
        + "; ".join(f"{s.label} for {s.fraction:.1%}" for s in CURRICULUM)
        + f"; shuffled = {average_weights(CURRICULUM)} throughout; reverse = the stages in reverse order; "
        "direct = " + "; ".join(f"{s.label} for {s.fraction:.1%}" for s in DIRECT) + ".",
        "Final validation loss per arm (mean over seeds), qa / general: "
        + "; ".join(f"{a} {mean_sd(target[a])[0]:.3f} / {mean_sd(general[a])[0]:.3f}" for a in arms) + ".",
        "Mean of the two domains' final losses (equal weight; lower is better on both together): "
        + ", ".join(f"{a} {mean_sd([(x + y) / 2 for x, y in zip(target[a], general[a])])[0]:.3f}" for a in arms)
        + ".",
        "Realised QA share of the rows drawn (mean over seeds; the loader samples each row's domain): "
        + ", ".join(f"{a} {mean_sd(v)[0]:.4f}" for a, v in shares.items()) + ".",
        "The paper's figures are benchmark points of a 3B model after 8T tokens and compare a QA stage with "
        "re-weighting alone; ours are validation losses of a byte model of "
        f"{mean_sd(res['shuffled'].values('params_non_embedding'))[0] / 1e6:.2f}M non-embedding parameters at "
        "equal tokens per domain, so only the direction is comparable. Curves per domain: plots/domain_val_loss.png.",
    ]
    details = {
        "scale": asdict(scale),
        "data": str(data.path),
        "data_origin": data.origin,
        "arms": arms,
        "seeds": seeds,
        "val_loss_target": target,
        "val_loss_general": general,
        "val_loss": {a: r.values("val_loss") for a, r in res.items()},
        "qa_share": shares,
        "wall_s": {a: r.values("wall_s") for a, r in res.items()},
        "runs": {a: [str(p) for p in r.runs] for a, r in res.items()},
    }
    return ReplicationResult(name=NAME, paper=PAPER, scale=ctx.scale, seeds=len(seeds), wall_s=0.0, claims=claims,
                             notes=notes, details=details)


def _share(end: dict[str, Any]) -> float:
    share = end.get("domain_share")
    value = share.get(TARGET) if isinstance(share, dict) else None
    return float(value) if isinstance(value, (int, float)) else math.nan


def eval_curve(run_dir: Path, key: str) -> list[tuple[int, float]]:
    """(step, `key`) of a run's evaluation lines, the end line's included."""
    from pretrainlab.train.metrics import read_metrics

    out = []
    for r in read_metrics(Path(run_dir) / "metrics.jsonl"):
        if isinstance(r, dict) and "lr" not in r and isinstance(r.get(key), (int, float)) and "step" in r:
            out.append((int(r["step"]), float(r[key])))
    return out


def plot_domain_curves(arms: dict[str, Any], path: Path, scale: Scale) -> Path:
    """Validation loss on `general` and on `qa` against step (mean over seeds), one line per arm, with the
    curriculum's stage switches marked; a PNG at `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, domain in zip(axes, (GENERAL, TARGET)):
        for name, arm in arms.items():
            curves = [dict(eval_curve(r, f"val_loss/{domain}")) for r in arm.runs]
            steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
            if steps:
                ax.plot(steps, [sum(c[s] for c in curves) / len(curves) for s in steps], marker="o", ms=3,
                        label=name, lw=1.2)
        done = 0.0
        for stage in CURRICULUM[:-1]:
            done += stage.fraction
            ax.axvline(done * scale.steps, color="grey", ls=":", lw=0.8)
        ax.set_title(f"{domain} validation loss")
        ax.set_xlabel("step (dotted: the curriculum's stage switches)")
        ax.set_ylabel("nats/token, mean over seeds")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _say(text: str) -> None:
    print(f"[{NAME}] {text}", flush=True)


def _run(ctx: ReplicationContext) -> ReplicationResult:
    return run_protocol(ctx, SCALES[ctx.scale])


register_replication(
    Replication(
        name=NAME,
        paper=PAPER,
        default_seeds=3,
        run=_run,
        summary="a staged data curriculum (general, then 30% and 70% QA) vs the same data shuffled, reversed, "
        "and straight to 70% QA",
    )
)
