"""`pretrainlab replicate procedural-warmup`: a short Dyck warm-up before natural text (Procedural
Pretraining: Warming Up Language Models with Abstract Data, Jiang, Shinnick et al., ICML 2026,
arXiv 2601.21725).

The paper trains first on procedural data (k-Dyck strings among others, ~0.1-0.3% of the tokens), then on
natural text. Claims (`../shared/papers/papers-data.md` section 10): models reach the baseline's loss with
55% of the natural data on C4 (67% CodeParrot, 86% DeepMind-Math); needle-in-a-haystack accuracy goes from
10% to 98% with a Dyck warm-up (2-layer, 4-head models trained on haystack retrieval); procedural data
with shuffled tokens gives no gain.

Protocol (the CPU transfer check of the notes, section 10c.2, at our scale), three arms on the same natural
data, schedule and seeds, byte tokens, one prepared folder (recipes/procedural_warmup_data.py):
- `natural`: natural text only, N steps from a random init;
- `dyck`: stage 1, W steps of k-Dyck strings (its own run, its own short cosine schedule); stage 2, the
  same N natural steps as `natural` (same seed: same data order, same schedule) from stage 1's weights with
  a fresh optimiser (`init_from`), as the paper's two separate trainings;
- `dyck_shuffled`: the same, with the Dyck strings' symbols permuted (the paper's shuffled-token control).
Equal natural tokens (the paper's additive setting): the warm-up arms see W extra, procedural, tokens.
W is 20% of N at tiny (the paper's 0.1-0.3% would be a step or two here, too few to learn any bracket).
Measured: the natural-text validation loss every `eval_every` steps of stage 2 (natural tokens to reach the
baseline's final loss, interpolated between evaluations, per seed against the same seed's baseline) and,
after training, `needle_recall` (eval/tasks/synthetic.py) zero-shot: facts "The number of Mia is 482."
planted in filler text, the value asked at the end; accuracy as the rank of the asked value among the
planted ones (chance 1 / needles) and as greedy exact match. `bracket_completion` is scored too (does the
warm-up survive the natural stage?), reported in the notes.

Rules (set before any run): claim 1, mean over seeds of tokens-to-reach / N <= 0.9 (the notes' check; a
seed that never reaches it counts as 1.0); claim 2, mean seed-paired L_natural - L_dyck >= 0.01 nats;
claim 3, mean acc_choice(dyck) - acc_choice(natural) >= 5 points; claim 4, the shuffled-token control gains
less than 0.01 nats (mean L_natural - L_shuffled < 0.01).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pretrainlab.recipes.procedural_warmup_data import (
    WarmupData,
    loss_at,
    natural_curve,
    prepare_warmup_data,
    tokens_to_reach,
)
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

PAPER = "Procedural Pretraining: Warming Up Language Models with Abstract Data (Jiang, Shinnick et al., " \
        "ICML 2026), arXiv 2601.21725"
FEWER_TOKENS = 0.9  # reach the baseline's final loss within 90% of its natural tokens (notes 10c.2)
LOSS_MARGIN = 0.01  # nats (notes 10c.2)
RECALL_MARGIN = 0.05  # 5 points of needle recall, ours (the paper's gain is 88 points on a trained task)
ARMS = ("natural", "dyck", "dyck_shuffled")
QUARTERS = (0.25, 0.5, 0.75)  # where the notes read the natural-stage curves


@dataclass(frozen=True)
class Scale:
    """One scale: model, natural steps N and warm-up steps W, Dyck data, evaluation and the needle task."""

    seq_len: int
    batch_rows: int
    natural_steps: int
    warmup_steps: int
    n_layers: int
    d_model: int
    n_heads: int
    lr: float
    eval_every: int
    val_tokens: int
    dyck_k: int
    dyck_depth: int
    dyck_length: int  # most symbols in a Dyck string
    dyck_documents: int
    needle_n: int
    needle_words: int  # filler words around the facts (the whole haystack must fit seq_len)
    needles: int

    @property
    def tokens_per_step(self) -> int:
        return self.seq_len * self.batch_rows

    @property
    def warmup_tokens(self) -> int:
        return self.warmup_steps * self.tokens_per_step


SCALES: dict[str, Scale] = {
    # 2 layers x 4 heads (the paper's needle models), d 128; 400 natural steps of 1,024 tokens (0.41M), an
    # 80-step (82k-token) 4-Dyck warm-up; 6 short warm-up runs and 9 natural-stage runs.
    "tiny": Scale(seq_len=256, batch_rows=4, natural_steps=400, warmup_steps=80, n_layers=2, d_model=128,
                  n_heads=4, lr=3e-3, eval_every=40, val_tokens=8192, dyck_k=4, dyck_depth=16, dyck_length=256,
                  dyck_documents=2000, needle_n=200, needle_words=25, needles=3),
    # 4 layers x d 192, 2,000 natural steps of 2,048 tokens (4M), a 200-step (0.4M) warm-up (10%).
    "small": Scale(seq_len=256, batch_rows=8, natural_steps=2000, warmup_steps=200, n_layers=4, d_model=192,
                   n_heads=4, lr=2e-3, eval_every=100, val_tokens=32768, dyck_k=16, dyck_depth=16,
                   dyck_length=256, dyck_documents=8000, needle_n=400, needle_words=25, needles=3),
}


def base_tree(data: Path, scale: Scale) -> dict[str, Any]:
    """The natural stage's RunConfig (every arm): natural text only, AdamW, cosine to 10% with a warm-up of
    1/16 of the steps (25 at tiny), clip 1.0, the validation losses every `eval_every` steps."""
    return {
        "data": {"path": data.as_posix(), "seq_len": scale.seq_len, "mode": "random", "weights": {"natural": 1.0}},
        "model": {"n_layers": scale.n_layers, "d_model": scale.d_model, "n_heads": scale.n_heads},
        "optim": {"name": "adamw", "lr": scale.lr, "weight_decay": 0.1, "betas": [0.9, 0.95]},
        "schedule": {"name": "cosine", "warmup_steps": max(1, scale.natural_steps // 16), "min_lr_ratio": 0.1},
        "train": {"steps": scale.natural_steps, "global_batch_tokens": scale.tokens_per_step,
                  "micro_batch_size": scale.batch_rows, "grad_clip": 1.0, "compile": False, "progress": False,
                  "log_every": 10},
        "eval": {"every": scale.eval_every, "max_tokens_per_domain": scale.val_tokens, "batch_size": 32},
    }


def warmup_arms(scale: Scale) -> dict[str, dict[str, Any]]:
    """Stage 1 of the warm-up arms: W steps of one procedural domain (cosine, warm-up W/8 steps), evaluated
    at the end."""
    common = {"train.steps": scale.warmup_steps, "schedule.warmup_steps": max(1, scale.warmup_steps // 8),
              "eval.every": None}
    return {arm: {**common, "data.weights": {arm: 1.0}} for arm in ARMS[1:]}


def natural_arms(warmups: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """Stage 2 of the warm-up arms for one seed: the natural stage from that seed's stage-1 weights, the
    token embeddings re-drawn (recipes/procedural_warmup.py), as the paper does."""
    return {arm: {"init_from": str(run), "callbacks": [{"name": "reinit_embeddings"}]}
            for arm, run in warmups.items()}


def task_specs(scale: Scale, filler: str) -> dict[str, Any]:
    """The evaluations scored after training (zero-shot)."""
    return {
        "needle_recall": {"n": scale.needle_n, "length": scale.needle_words, "needles": scale.needles,
                          "filler": filler, "seed": 0},
        "bracket_completion": {"n": 100, "k": scale.dyck_k, "separator": "", "min_length": 8, "max_length": 64,
                               "max_depth": scale.dyck_depth, "seed": 0},
    }


# ------------------------------------------------------------------------------------------- claims


def fraction_to_reach(warm: list[tuple[float, float]], baseline: list[tuple[float, float]]) -> float:
    """Natural tokens the warm-up run needs to reach the baseline's final loss, over the baseline's natural
    tokens; 1.0 when it never does (the least it could be); NaN without a baseline curve."""
    if not baseline or not warm:
        return math.nan
    end_tokens, target = baseline[-1]
    reached = tokens_to_reach(warm, target)
    return 1.0 if reached is None else reached / end_tokens


def claim_fewer_tokens(fractions: list[float]) -> Claim:
    f, _ = mean_sd(fractions)
    return Claim(
        claim="A Dyck warm-up reaches the natural-text-only baseline's final validation loss with fewer natural "
        f"tokens: mean over seeds of (natural tokens to reach it / the baseline's) <= {FEWER_TOKENS} (a seed "
        "that never reaches it counts as 1.0)",
        paper_figure="the same loss with 55% of the data on C4 (67% CodeParrot, 86% DeepMind-Math), 0.1-0.3% "
        "procedural tokens, up to 1.3B parameters",
        our_figure=f"{100 * f:.0f}% of the natural tokens" if math.isfinite(f) else "not measured",
        spread=spread_text(fractions),
        holds=bool(f <= FEWER_TOKENS) if math.isfinite(f) else None,
    )


def claim_lower_loss(natural: list[float], dyck: list[float]) -> Claim:
    d, diffs = paired_gap(natural, dyck)
    return Claim(
        claim="At equal natural tokens the Dyck warm-up ends with a lower natural-text validation loss: mean "
        f"seed-paired L_natural - L_dyck >= {LOSS_MARGIN} nats",
        paper_figure="lower loss at every budget (C4, CodeParrot, DeepMind-Math); the notes' CPU check asks "
        f">= {LOSS_MARGIN} nats",
        our_figure=f"{d:+.4f} nats (natural {mean_sd(natural)[0]:.4f}, dyck {mean_sd(dyck)[0]:.4f})",
        spread=spread_text(diffs, digits=4),
        holds=bool(d >= LOSS_MARGIN) if math.isfinite(d) else None,
    )


def claim_needle(natural: list[float], dyck: list[float], needles: int) -> Claim:
    d, diffs = paired_gap(dyck, natural)
    return Claim(
        claim="A Dyck warm-up improves needle-in-a-haystack recall: mean seed-paired acc(dyck) - acc(natural) >= "
        f"{100 * RECALL_MARGIN:.0f} points (acc: the asked value ranks first among the {needles} planted ones, "
        f"chance {100 / needles:.0f}%)",
        paper_figure="10% -> 98% (2-layer, 4-head models trained on haystack retrieval after the warm-up, 10 seeds); "
        "ours is zero-shot after natural text",
        our_figure=f"{100 * d:+.1f} points (natural {100 * mean_sd(natural)[0]:.1f}%, dyck "
        f"{100 * mean_sd(dyck)[0]:.1f}%)",
        spread=spread_text([100 * x for x in diffs], digits=1) + " (points)",
        holds=bool(d >= RECALL_MARGIN) if math.isfinite(d) else None,
    )


def claim_control(natural: list[float], shuffled: list[float]) -> Claim:
    d, diffs = paired_gap(natural, shuffled)
    return Claim(
        claim="Procedural data with shuffled tokens gives no gain: mean seed-paired L_natural - L_shuffled < "
        f"{LOSS_MARGIN} nats",
        paper_figure="shuffled-token procedural data: no gain (abstract / section 10a controls)",
        our_figure=f"{d:+.4f} nats (shuffled {mean_sd(shuffled)[0]:.4f})",
        spread=spread_text(diffs, digits=4),
        holds=bool(d < LOSS_MARGIN) if math.isfinite(d) else None,
    )


# ------------------------------------------------------------------------------------------- protocol


def check_tasks_fit(data: Path, tasks: dict[str, Any], window: int) -> None:
    """Generate and tokenise the after-training tasks now: one that does not fit the window (a haystack of
    long filler sentences) fails before any training, not after it."""
    from pretrainlab.data.prepared import PreparedData
    from pretrainlab.eval.tasks.evaluate import load_tasks
    from pretrainlab.eval.tasks.registry import resolve_tasks

    load_tasks(resolve_tasks(tasks), PreparedData(data).tokenizer, window=window)


def score_tasks_after(run: Path, tasks: dict[str, Any]) -> dict[str, float]:
    """Score `tasks` on a run's final checkpoint, as `pretrainlab eval RUN --tasks` does (recorded in the
    run's tasks-step<N>.json and metrics.jsonl), and return {"<task>/<metric>": value}."""
    import json

    from pretrainlab.eval.load import load_run
    from pretrainlab.eval.tasks.cli import load_run_tasks, score_run_tasks
    from pretrainlab.eval.tasks.registry import resolve_tasks

    loaded = load_run_tasks(run, resolve_tasks(tasks))
    model, _, prepared, ckpt = load_run(run, None, device="cpu")
    path = score_run_tasks(run, model, prepared, ckpt, loaded, device="cpu", autocast_dtype=None)
    results = json.loads(Path(path).read_text(encoding="utf-8"))["results"]
    return {f"{e['task']}/{m}": float(v) if v is not None else math.nan
            for e in results.values() if e["task"] in tasks for m, v in e["metrics"].items()}


def run_protocol(ctx: ReplicationContext, scale: Scale) -> ReplicationResult:
    """Prepare the data, run stage 1 of the warm-up arms, the natural stage of every arm on seeds 0..K-1,
    score the needle task, compute the claims."""
    from pretrainlab.science.arms import ArmResult, run_arms

    data: WarmupData = prepare_warmup_data(ctx.out, ctx.data, k=scale.dyck_k, max_depth=scale.dyck_depth,
                                           max_length=scale.dyck_length, documents=scale.dyck_documents)
    base = base_tree(data.path, scale)
    tasks = task_specs(scale, data.filler)
    check_tasks_fit(data.path, tasks, scale.seq_len)
    seeds = list(range(ctx.seeds))
    _say(f"data {data.path}; natural text: {data.origin}; {scale.warmup_steps} warm-up steps, then "
         f"{scale.natural_steps} natural steps; seeds {seeds}")
    stage1 = run_arms(ctx, "procedural-warmup-stage1", base, warmup_arms(scale), seeds)
    res: dict[str, ArmResult] = {"natural": run_arms(ctx, "procedural-warmup-natural", base, {"natural": {}},
                                                     seeds)["natural"]}
    res.update({a: ArmResult(a, [], [], seeds) for a in ARMS[1:]})
    for i, seed in enumerate(seeds):  # one sweep per seed: each starts from its own seed's warm-up
        done = run_arms(ctx, f"procedural-warmup-s{seed}", base,
                        natural_arms({a: stage1[a].runs[i] for a in ARMS[1:]}), [seed])
        for a in ARMS[1:]:
            res[a].runs += done[a].runs
            res[a].ends += done[a].ends

    curves = {a: [natural_curve(r, 0) for r in res[a].runs] for a in ARMS}
    final = {a: [c[-1][1] if c else math.nan for c in curves[a]] for a in ARMS}
    fractions = {a: [fraction_to_reach(w, b) for w, b in zip(curves[a], curves["natural"])] for a in ARMS[1:]}
    scores = {a: [score_tasks_after(r, tasks) for r in res[a].runs] for a in ARMS}

    def metric(arm: str, key: str) -> list[float]:
        return [s.get(key, math.nan) for s in scores[arm]]

    claims = [
        claim_fewer_tokens(fractions["dyck"]),
        claim_lower_loss(final["natural"], final["dyck"]),
        claim_needle(metric("natural", "needle_recall/acc_choice"), metric("dyck", "needle_recall/acc_choice"),
                     scale.needles),
        claim_control(final["natural"], final["dyck_shuffled"]),
    ]
    plot_natural_curves(curves, ctx.out / "plots" / "natural_val_loss.png", scale)
    natural_tokens = scale.natural_steps * scale.tokens_per_step
    equal_total = {a: [loss_at(c, natural_tokens - scale.warmup_tokens) for c in curves[a]] for a in ARMS[1:]}
    after_warmup = {a: stage1[a].values("val_loss/natural") for a in ARMS[1:]}
    own_loss = {a: stage1[a].values(f"val_loss/{a}") for a in ARMS[1:]}

    along = {a: [_mean_text([loss_at(c, q * natural_tokens) for c in curves[a]]) for q in QUARTERS] for a in ARMS}
    chance = [v for a in ARMS for v in metric(a, "needle_recall/acc_choice")]
    band = 2 * math.sqrt((1 / scale.needles) * (1 - 1 / scale.needles) / scale.needle_n)

    def pct(arm: str, key: str) -> str:
        return f"{100 * mean_sd(metric(arm, key))[0]:.1f}%"

    notes = [
        f"Scale {ctx.scale}: byte tokens, {scale.n_layers} layers x {scale.n_heads} heads, d_model {scale.d_model}, "
        f"sequence {scale.seq_len}; {scale.natural_steps} natural steps of {scale.tokens_per_step:,} tokens "
        f"({natural_tokens:,} natural tokens per arm); warm-up arms first a run of {scale.warmup_steps} steps "
        f"({scale.warmup_tokens:,} tokens, {100 * scale.warmup_steps / scale.natural_steps:.0f}% extra) of "
        f"{scale.dyck_k}-Dyck strings (depth <= {scale.dyck_depth}, <= {scale.dyck_length} symbols); AdamW lr "
        f"{scale.lr:g}, cosine; seeds {seeds}. Natural text: {data.origin}.",
        "Equal natural tokens (additive). Equal total tokens instead (the warm-up arm at "
        f"{natural_tokens - scale.warmup_tokens:,} natural tokens vs the baseline's end): dyck "
        + _mean_text(equal_total["dyck"]) + ", dyck_shuffled " + _mean_text(equal_total["dyck_shuffled"])
        + f" vs natural {mean_sd(final['natural'])[0]:.4f} (read off the curves, between evaluations).",
        "Stage 1 (end): val loss on its own domain dyck " + _mean_text(own_loss["dyck"]) + " (the "
        f"{scale.dyck_k}-Dyck entropy floor is {dyck_floor(scale):.3f}, {dyck_floor(scale, stack=False):.3f} "
        "without the stack), dyck_shuffled " + _mean_text(own_loss["dyck_shuffled"]) + "; on natural text "
        "with the stage-1 embeddings (stage 2 re-draws them) dyck " + _mean_text(after_warmup["dyck"])
        + ", dyck_shuffled " + _mean_text(after_warmup["dyck_shuffled"]) + "; the shuffled control's fraction "
        f"of tokens to reach the baseline: {_mean_text(fractions['dyck_shuffled'])}.",
        f"needle_recall ({scale.needle_n} examples, <= {scale.needle_words} filler words from "
        f"{Path(data.filler).name if data.filler != 'generated' else 'the generated haystack'}, {scale.needles} "
        "facts): rank accuracy natural " + pct("natural", "needle_recall/acc_choice") + ", dyck "
        + pct("dyck", "needle_recall/acc_choice") + ", dyck_shuffled " + pct("dyck_shuffled", "needle_recall/acc_choice")
        + "; greedy exact match natural " + pct("natural", "needle_recall/acc") + ", dyck " + pct("dyck", "needle_recall/acc")
        + ", dyck_shuffled " + pct("dyck_shuffled", "needle_recall/acc") + ".",
        "Natural validation loss along the natural stage (means over seeds at "
        + ", ".join(f"{100 * q:.0f}%" for q in QUARTERS) + " of its tokens): "
        + "; ".join(f"{a} {' / '.join(along[a])}" for a in ARMS) + ".",
        *([f"Every run's needle rank accuracy is within 2 binomial standard errors ({100 * band:.1f} points) "
           f"of chance ({100 / scale.needles:.0f}%): the zero-shot probe does not separate the arms at this scale."]
          if chance and all(abs(v - 1 / scale.needles) <= band for v in chance) else []),
        f"bracket_completion ({scale.dyck_k}-Dyck prefixes, after the natural stage) per-token accuracy: natural "
        + pct("natural", "bracket_completion/acc_token") + ", dyck " + pct("dyck", "bracket_completion/acc_token")
        + ", dyck_shuffled " + pct("dyck_shuffled", "bracket_completion/acc_token") + "; exact: natural "
        + pct("natural", "bracket_completion/acc") + ", dyck " + pct("dyck", "bracket_completion/acc") + ".",
        "Differences from the paper: byte tokens shared by both stages (the embeddings are re-drawn for stage 2 "
        "all the same, as the paper's are); a warm-up of "
        f"{100 * scale.warmup_steps / scale.natural_steps:.0f}% of the natural tokens instead of 0.1-0.3%; one "
        "learning rate for every arm (no grid); the needle probe is zero-shot after natural text, not a trained "
        "retrieval task.",
    ]
    details = {
        "scale": asdict(scale),
        "data": str(data.path),
        "natural_text": data.origin,
        "warmup_arms": warmup_arms(scale),
        "seeds": seeds,
        "final_val_loss_natural": final,
        "fraction_to_reach_baseline": fractions,
        "equal_total_tokens_loss": equal_total,
        "tasks": scores,
        "curves": {a: [[list(p) for p in c] for c in cs] for a, cs in curves.items()},
        "wall_s": {a: r.values("wall_s") for a, r in res.items()},
        "runs": {a: [str(p) for p in r.runs] for a, r in res.items()},
        "warmup_runs": {a: [str(p) for p in r.runs] for a, r in stage1.items()},
    }
    return ReplicationResult(name="procedural-warmup", paper=PAPER, scale=ctx.scale, seeds=len(seeds), wall_s=0.0,
                             claims=claims, notes=notes, details=details)


def dyck_floor(scale: Scale, *, stack: bool = True, documents: int = 200) -> float:
    """Nats per symbol of the scale's Dyck strings for a model that knows the generator (with `stack`), or
    that knows everything but which bracket type closes (each close type then uniform): the floor of the
    warm-up's own loss, and what is left without tracking the stack. From `documents` strings."""
    from pretrainlab.data.procedural import build_generator
    from pretrainlab.data.procedural.dyck import pairs_of

    k, depth_cap = scale.dyck_k, scale.dyck_depth
    opening = {o for o, _ in pairs_of(k)}
    gen = build_generator("dyck", {"k": k, "max_depth": depth_cap, "min_length": scale.dyck_length // 4,
                                   "max_length": scale.dyck_length, "separator": ""}, 0)
    nats = n = 0.0
    for doc in gen.documents(0, documents):
        depth = 0
        for i, symbol in enumerate(doc):
            left = len(doc) - i
            closing = symbol not in opening
            if depth == 0:
                nats += math.log(k)
            elif depth < left and depth < depth_cap:  # open (a type) or close: a fair coin
                nats += math.log(2) + (0.0 if closing else math.log(k))
            if closing and not stack:
                nats += math.log(k)
            depth += -1 if closing else 1
            n += 1
    return nats / n


def plot_natural_curves(curves: dict[str, list[list[tuple[float, float]]]], path: Path, scale: Scale) -> Path:
    """Natural-text validation loss against natural tokens, the mean over seeds per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for arm, runs in curves.items():
        points = [dict(c) for c in runs if c]
        xs = sorted(set.intersection(*(set(p) for p in points))) if points else []
        if xs:
            ax.plot(xs, [sum(p[x] for p in points) / len(points) for x in xs], marker=".", label=arm)
    base = [c[-1][1] for c in curves.get("natural", []) if c]
    if base:
        ax.axhline(sum(base) / len(base), color="grey", lw=0.8, ls="--", label="natural's final loss")
    ax.set_xlabel("natural-text tokens seen")
    ax.set_ylabel("natural validation loss (nats/token), mean over seeds")
    ax.set_title(f"natural stage after a {scale.warmup_steps}-step procedural warm-up, vs natural only")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _mean_text(values: list[float | None]) -> str:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return f"{sum(vals) / len(vals):.4f}" if vals else "n/a"


def _say(text: str) -> None:
    print(f"[procedural-warmup] {text}", flush=True)


def _run(ctx: ReplicationContext) -> ReplicationResult:
    return run_protocol(ctx, SCALES[ctx.scale])


register_replication(
    Replication(
        name="procedural-warmup",
        paper=PAPER,
        default_seeds=3,
        run=_run,
        summary="natural text alone vs a short k-Dyck warm-up first (and a shuffled-token control): natural "
        "tokens to the baseline's loss, zero-shot needle recall",
    )
)
