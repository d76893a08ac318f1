"""`pretrainlab replicate preselect`: predictive data selection (Shum et al. 2025, arXiv 2503.00808) at CPU scale.

Claim (abstract): a 1B model trained on 30B tokens selected by PreSelect surpasses one trained on 300B
random tokens (a 10x compute reduction); PreSelect beats other selection baselines. The method is in
recipes/preselect.py; this module is the protocol of `../shared/papers/papers-data.md` section 2(c), on
real text (recipes/preselect_pool.py builds the data):

1. Data: a candidate pool mixing several real corpora, and a held-out target domain that is NOT in the pool
   (Project Gutenberg novels; the fallback: pydoc prose). Each pool domain's documents are split (seeded)
   into a reference-training half and the candidates; the target's into a benchmark set and an evaluation
   set, disjoint.
2. Reference models of different quality: `n_refs` small models trained for the same steps on different
   mixtures of the pool domains (seeded Dirichlet(1) weights over the reference halves). Their
   "downstream" figure is bits per byte on the target's benchmark set, which ranks them. Mixtures rather
   than step counts or sizes: with compute alone, more training lowers the loss on almost every document,
   so every document predicts the ranking and strength says nothing about the target; the paper's Llama
   1 and 2 models differ in data as well as size, and its benchmark ranking is not its compute ranking.
3. Scoring: `scored_docs` candidates (seeded sample) get each reference model's bits per byte and their
   predictive strength; positives are the documents with strength 1 (if fewer than `min_positives`
   reach 1, the highest strength that many reach: said in the notes), negatives as many of the lowest. A
   hashed word 1-2-gram logistic regression is trained on them and scores every candidate.
4. Three arms select the same number of bytes (`keep_fraction` of the pool, the paper's top 10% by
   length): `preselect` (highest classifier scores), `random` (a seeded random sample, the paper's
   baseline) and `perplexity` (lowest bits per byte under the best reference model: the paper's key
   ablation, "is it only a perplexity filter?"). Each arm trains the same model from scratch for the
   same steps and tokens on its selection (byte vocabulary, AdamW, cosine, the same lr for all: data
   selection, not optimisation, is compared) over seeds 1..K, evaluated on the target's evaluation set
   every `steps / evals` steps.
5. Claims, rules set before any run (the notes' tau = 0.05): L_random - L_preselect >= 0.05 nats/byte;
   the preselect arm reaches the random arm's final target loss within half the steps (>= 2x fewer
   tokens; the paper: 10x); L_perplexity - L_preselect > 0. Per-seed differences give the spread.

Differences from the paper: models of 0.1-0.5M parameters on ~0.3M tokens instead of 1B on 30B; six
Llama models ranked by benchmark accuracy there, here five tiny models ranked by a held-out domain's
bits per byte; bits per byte instead of per character; a logistic regression on hashed n-grams instead of
fastText; one target domain instead of a benchmark suite.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

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

PAPER = "Predictive Data Selection: The Data That Predicts Is the Data That Teaches (Shum et al. 2025), " \
        "arXiv 2503.00808"
TAU = 0.05  # nats per byte: papers-data.md section 2(c), set before any run
COMPUTE_RATIO = 2.0  # the preselect arm reaches random's final loss with at most 1 / 2 of the steps
ARMS = ("preselect", "random", "perplexity")
MIXTURE_SEED = 1234


@dataclass(frozen=True)
class Scale:
    """One scale: how much data, how many and which reference models, the compared models and run length."""

    ref_docs: int  # reference-training documents per pool domain
    cand_docs: int  # candidate documents per pool domain
    bench_docs: int  # target documents that rank the reference models
    eval_docs: int  # target documents the compared models are evaluated on
    scored_docs: int  # candidates scored by every reference model
    min_positives: int
    n_refs: int
    ref_layers: int
    ref_width: int
    ref_steps: int
    n_layers: int
    d_model: int
    n_heads: int
    steps: int
    evals: int  # evaluations per compared run (the compute-ratio curve)
    lr: float
    keep_fraction: float = 0.1
    seq_len: int = 128
    batch_rows: int = 8
    val_tokens: int = 32_768


SCALES: dict[str, Scale] = {
    # ~3.9k candidates (2.2 MB), 1.5k scored by 5 reference models (2 x 64, 200 steps); the three arms train
    # 3 x 96 models for 300 steps of 1,024 tokens on 10% of the pool's bytes (~1.4 epochs).
    "tiny": Scale(ref_docs=300, cand_docs=500, bench_docs=150, eval_docs=300, scored_docs=1500, min_positives=50,
                  n_refs=5, ref_layers=2, ref_width=64, ref_steps=200, n_layers=3, d_model=96, n_heads=4,
                  steps=300, evals=6, lr=3e-3),
    "small": Scale(ref_docs=1000, cand_docs=2000, bench_docs=300, eval_docs=500, scored_docs=6000,
                   min_positives=200, n_refs=6, ref_layers=3, ref_width=96, ref_steps=400, n_layers=4, d_model=128,
                   n_heads=4, steps=1000, evals=10, lr=3e-3, batch_rows=16),
}


# ------------------------------------------------------------------------------------------- configs


def run_tree(data: str, *, n_layers: int, d_model: int, n_heads: int, steps: int, lr: float, scale: Scale,
             eval_every: int | None = None) -> dict[str, Any]:
    """A RunConfig tree: byte vocabulary data at `data`, AdamW without weight decay, cosine with 10% warm-up
    to 10%, clipping 1.0, fp32, evaluation on the target's validation documents."""
    return {
        "data": {"path": data, "seq_len": scale.seq_len, "mode": "random"},
        "model": {"n_layers": n_layers, "d_model": d_model, "n_heads": n_heads},
        "optim": {"name": "adamw", "lr": lr, "weight_decay": 0.0, "betas": [0.9, 0.95]},
        "schedule": {"name": "cosine", "warmup_fraction": 0.1, "min_lr_ratio": 0.1},
        "train": {"steps": steps, "global_batch_tokens": scale.seq_len * scale.batch_rows,
                  "micro_batch_size": scale.batch_rows, "grad_clip": 1.0, "precision": "fp32", "compile": False,
                  "progress": False, "log_every": 25},
        "eval": {"every": eval_every, "max_tokens_per_domain": scale.val_tokens, "batch_size": 32},
    }


def mixtures(domains: list[str], n: int, seed: int = MIXTURE_SEED) -> list[dict[str, float]]:
    """`n` seeded Dirichlet(1) mixtures over `domains` (rounded to 4 decimals, so configs stay readable)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        w = rng.dirichlet(np.ones(len(domains)))
        out.append({d: round(float(x), 4) for d, x in zip(domains, w)})
    return out


def positive_level(strength: np.ndarray, min_count: int) -> float:
    """1.0 when at least `min_count` documents reach it, else the highest strength that many reach."""
    s = np.sort(strength[np.isfinite(strength)])[::-1]
    if s.size == 0:
        return 1.0
    return 1.0 if np.sum(s >= 1.0 - 1e-12) >= min_count else float(s[min(min_count, s.size) - 1])


# ------------------------------------------------------------------------------------------- claims


def claim_beats_random(random: list[float], selected: list[float]) -> Claim:
    """Mean over seeds of L_random - L_preselect >= TAU (seed-paired differences in the spread)."""
    d, diffs = paired_gap(random, selected)
    return Claim(
        claim="Data selected by PreSelect beats a random selection of the same size at equal tokens: mean target "
        f"val loss L_random - L_preselect >= {TAU} nats/byte",
        paper_figure="1B model: 30B PreSelect tokens surpass 300B random tokens (10x compute reduction) [abs]",
        our_figure=f"{d:+.3f} nats/byte (random {mean_sd(random)[0]:.3f}, preselect {mean_sd(selected)[0]:.3f})",
        spread=spread_text(diffs),
        holds=bool(d >= TAU) if math.isfinite(d) else None,
    )


def claim_compute(ratios: list[float]) -> Claim:
    """Mean over seeds of the step ratio (random's steps / steps the preselect run needs to reach random's
    final target loss; 0 when it never does) >= COMPUTE_RATIO."""
    finite = [r for r in ratios if math.isfinite(r)]
    m = float(np.mean(finite)) if finite else math.nan
    reached = sum(r > 0 for r in finite)
    return Claim(
        claim=f"PreSelect needs fewer tokens: its run reaches the random run's final target loss within 1/"
        f"{COMPUTE_RATIO:g} of the steps (mean over seeds of the step ratio >= {COMPUTE_RATIO:g}; 0 when not reached)",
        paper_figure="10x compute reduction (30B vs 300B tokens, 1B model) [abs]",
        our_figure=f"{m:.2f}x fewer steps (reached in {reached} of {len(ratios)} seeds)",
        spread=spread_text(ratios, digits=2),
        holds=bool(m >= COMPUTE_RATIO) if math.isfinite(m) else None,
    )


def claim_beats_perplexity(perplexity: list[float], selected: list[float]) -> Claim:
    """Mean over seeds of L_perplexity - L_preselect > 0."""
    d, diffs = paired_gap(perplexity, selected)
    return Claim(
        claim="PreSelect beats a perplexity filter of the same size (the documents with the lowest bits per byte "
        "under the best reference model): mean L_perplexity - L_preselect > 0",
        paper_figure="the CPU protocol's key ablation (papers-data.md s2c); the paper reports PreSelect above "
        "other selection baselines (DCLM, FineWeb-Edu at 3B / 100B tokens) [abs]; its perplexity rows not verified",
        our_figure=f"{d:+.3f} nats/byte (perplexity {mean_sd(perplexity)[0]:.3f}, preselect {mean_sd(selected)[0]:.3f})",
        spread=spread_text(diffs),
        holds=bool(d > 0) if math.isfinite(d) else None,
    )


def steps_to_reach(curve: list[tuple[int, float]], level: float) -> float:
    """The first step at which the (step, loss) curve reaches `level` (linear between evaluations; the curve
    starts at step 0 from above); NaN when it never does."""
    prev: tuple[int, float] | None = None
    for step, loss in curve:
        if loss <= level:
            if prev is None or prev[1] == loss:
                return float(step)
            return prev[0] + (step - prev[0]) * (prev[1] - level) / (prev[1] - loss)
        prev = (step, loss)
    return math.nan


def eval_curve(run_dir: Path) -> list[tuple[int, float]]:
    """(step, val_loss) of a run's evaluation lines."""
    from pretrainlab.train.metrics import read_metrics

    return [(int(r["step"]), float(r["val_loss"])) for r in read_metrics(Path(run_dir) / "metrics.jsonl")
            if isinstance(r, dict) and "event" not in r and isinstance(r.get("val_loss"), (int, float))]


def step_ratio(random_run: Path, selected_run: Path) -> float:
    """random's final step / the steps the selected run needs to reach random's final val loss (0: never)."""
    rand, sel = eval_curve(random_run), eval_curve(selected_run)
    if not rand or not sel:
        return math.nan
    s = steps_to_reach(sel, rand[-1][1])
    return 0.0 if math.isnan(s) else rand[-1][0] / max(s, 1.0)


# ------------------------------------------------------------------------------------------- protocol


@dataclass
class Selection:
    """What stages 1-3 produce: the candidates, each arm's kept mask and prepared folder, and the figures the
    notes report (reference ranking, strengths, labels, domain shares)."""

    origin: str
    domains: list[str]
    cands: list[Any]
    keep: dict[str, np.ndarray]
    arm_data: dict[str, Path]
    shares: dict[str, dict[str, float]]
    mixes: list[dict[str, float]]
    ref_runs: list[Path]
    bench: Any
    best: int
    scored: list[Any]
    strength: np.ndarray
    pairs: int
    level: float
    report: str
    classifier_info: dict[str, Any]


def select_arms(ctx: ReplicationContext, scale: Scale, timing: dict[str, float]) -> Selection:
    """Stages 1-3: build the pool, train and rank the reference models, score a sample of candidates, train
    the classifier, and select the three arms' documents (prepared folders with the target's evaluation
    documents as validation). Stage wall times go into `timing`."""
    from pretrainlab.recipes import preselect as ps
    from pretrainlab.recipes.preselect_pool import TARGET, build_pool, domain_shares, prepare_docs
    from pretrainlab.science.arms import run_arms

    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timing[name] = round(now - clock, 1)
        clock = now

    out = Path(ctx.out)
    pool = build_pool(ctx.data, ref_docs=scale.ref_docs, cand_docs=scale.cand_docs, bench_docs=scale.bench_docs,
                      eval_docs=scale.eval_docs)
    domains = list(pool.reference)
    ref_data = prepare_docs(out / "data" / "reference", pool.reference, {TARGET: pool.bench})
    cands = [d for name in domains for d in pool.candidates[name]]
    _say(f"data: {pool.origin}; {len(cands):,} candidates ({sum(d.n_bytes for d in cands):,} bytes) over "
         f"{len(domains)} domains; target: {len(pool.bench)} benchmark + {len(pool.evaluation)} evaluation documents")
    lap("data")

    mixes = mixtures(domains, scale.n_refs)
    ref_base = run_tree(ref_data.as_posix(), n_layers=scale.ref_layers, d_model=scale.ref_width, n_heads=2,
                        steps=scale.ref_steps, lr=scale.lr, scale=scale)
    _say(f"stage 1/4: {scale.n_refs} reference models ({scale.ref_layers} x {scale.ref_width}, {scale.ref_steps} "
         "steps) on different mixtures of the pool domains")
    refs = run_arms(ctx, "reference", ref_base, {f"ref{i}": {"data.weights": w} for i, w in enumerate(mixes)}, [0])
    ref_runs = [r.runs[0] for r in refs.values()]
    bench = ps.benchmark_target_bpb(ref_runs, pool.bench)
    _say("reference bits per byte on the target: " + ", ".join(f"ref{i} {v:.3f}" for i, v in enumerate(bench.values)))
    lap("reference_models")

    _say(f"stage 2/4: every reference model scores {scale.scored_docs:,} candidates; classifier on the labels")
    rng = np.random.default_rng(0)
    scored_ix = np.sort(rng.choice(len(cands), size=min(scale.scored_docs, len(cands)), replace=False))
    scored = [cands[i] for i in scored_ix]
    bpb = ps.reference_bpb(ref_runs, scored)
    strength, pairs = ps.predictive_strength(bpb, bench.quality)
    level = positive_level(strength, scale.min_positives)
    lap("scoring")
    clf, report = ps.train_on_strength([d.text for d in scored], [d.n_bytes for d in scored], strength,
                                       positive_strength=level)
    clf.save(out / "classifier.npz")
    _say(report)
    lap("classifier")

    _say(f"stage 3/4: select {scale.keep_fraction:.0%} of the pool's bytes three ways")
    sizes = np.array([d.n_bytes for d in cands])
    best = int(np.argmax(bench.quality))
    best_bpb = ps.reference_bpb([ref_runs[best]], cands)[0]
    keep = {
        "preselect": ps.select_top(clf.scores([d.text for d in cands]), sizes, scale.keep_fraction),
        "random": ps.select_random(sizes, scale.keep_fraction, seed=0),
        "perplexity": ps.select_top(-np.nan_to_num(best_bpb, nan=np.inf), sizes, scale.keep_fraction),
    }
    arm_data = {arm: prepare_docs(out / "data" / f"arm-{arm}", {"train": [d for d, k in zip(cands, m) if k]},
                                  {TARGET: pool.evaluation}) for arm, m in keep.items()}
    shares = {arm: domain_shares(cands, m) for arm, m in keep.items()}
    for arm, sh in shares.items():
        _say(f"{arm}: {int(sizes[keep[arm]].sum()):,} bytes; " + ", ".join(f"{k} {v:.0%}" for k, v in sh.items()))
    lap("selection")
    return Selection(pool.origin, domains, cands, keep, arm_data, shares, mixes, ref_runs, bench, best, scored,
                     strength, pairs, level, report, clf.info)


def run_protocol(ctx: ReplicationContext, scale: Scale) -> ReplicationResult:
    """Stages 1-3 (`select_arms`), then train the three arms over the seeds and compute the claims."""
    from pretrainlab.science.arms import run_arms

    timing: dict[str, float] = {}
    sel = select_arms(ctx, scale, timing)
    start = time.perf_counter()
    _say(f"stage 4/4: {len(ARMS)} arms x {ctx.seeds} seed(s), {scale.n_layers} x {scale.d_model} models, "
         f"{scale.steps} steps each")
    base = run_tree("", n_layers=scale.n_layers, d_model=scale.d_model, n_heads=scale.n_heads, steps=scale.steps,
                    lr=scale.lr, scale=scale, eval_every=max(1, scale.steps // scale.evals))
    seeds = list(range(1, ctx.seeds + 1))
    res = run_arms(ctx, "arms", base, {arm: {"data.path": sel.arm_data[arm].as_posix()} for arm in ARMS}, seeds)
    timing["arms"] = round(time.perf_counter() - start, 1)

    losses = {a: r.values("val_loss") for a, r in res.items()}
    ratios = [step_ratio(r, s) for r, s in zip(res["random"].runs, res["preselect"].runs)]
    claims = [claim_beats_random(losses["random"], losses["preselect"]), claim_compute(ratios),
              claim_beats_perplexity(losses["perplexity"], losses["preselect"])]
    sizes = np.array([d.n_bytes for d in sel.cands])
    mean_strength = {name: float(np.nanmean([sel.strength[i] for i, d in enumerate(sel.scored) if d.source == name]))
                     for name in sel.domains}
    every = max(1, scale.steps // scale.evals)
    notes = [
        f"Data: {sel.origin}. Documents cut to <= 2 KB pieces; {len(sel.cands):,} candidates, "
        f"{scale.keep_fraction:.0%} of their {int(sizes.sum()):,} bytes kept by each arm.",
        f"Reference models ({scale.ref_layers} x {scale.ref_width}, {scale.ref_steps} steps, byte vocabulary) on "
        "Dirichlet mixtures of the pool domains; target bits per byte "
        + ", ".join(f"ref{i} {v:.3f}" for i, v in enumerate(sel.bench.values)) + f" (best ref{sel.best}).",
        f"Predictive strength over {sel.pairs} pairs on {len(sel.scored):,} scored candidates; mean per domain: "
        + ", ".join(f"{k} {v:.2f}" for k, v in mean_strength.items())
        + f". Positives: strength >= {sel.level:g}"
        + ("" if sel.level == 1.0 else f" (fewer than {scale.min_positives} reached 1)") + f". {sel.report}.",
        "Share of each arm's bytes per pool domain: " + "; ".join(
            f"{arm}: " + ", ".join(f"{k} {v:.0%}" for k, v in sh.items()) for arm, sh in sel.shares.items()) + ".",
        f"Compared runs: {scale.n_layers} x {scale.d_model}, {scale.steps} steps of "
        f"{scale.seq_len * scale.batch_rows:,} tokens, lr {scale.lr:g} (not tuned per arm), seeds {seeds}; target "
        "val loss on the evaluation documents (disjoint from the benchmark documents that ranked the references), "
        f"evaluated every {every} steps: a step ratio is at most {scale.steps / every:g} (reached at the first "
        "evaluation).",
        "Wall time per stage (s): " + ", ".join(f"{k} {v}" for k, v in timing.items()) + ".",
    ]
    top, share = max(sel.shares["preselect"].items(), key=lambda kv: kv[1])
    if share >= 0.8:
        notes.insert(4, f"PreSelect's selection is {share:.0%} one source ({top}): strength varies little within a "
                     "source here, so the classifier learns which source tracks the ranking and the top fraction is "
                     "that source alone; the paper selects from one web crawl, where no source label separates "
                     "the documents.")
    details = {
        "scale": asdict(scale), "mixtures": sel.mixes, "benchmark_bpb": sel.bench.values.tolist(), "pairs": sel.pairs,
        "positive_strength": sel.level, "classifier": sel.classifier_info, "shares": sel.shares,
        "kept_bytes": {a: int(sizes[m].sum()) for a, m in sel.keep.items()},
        "val_loss": losses, "step_ratio": ratios, "seeds": seeds, "timing_s": timing,
        "curves": {a: [eval_curve(p) for p in r.runs] for a, r in res.items()},
        "runs": {a: [str(p) for p in r.runs] for a, r in res.items()},
        "reference_runs": [str(p) for p in sel.ref_runs],
    }
    _plot(details["curves"], Path(ctx.out) / "plots" / "target_loss.png", ctx.scale)
    return ReplicationResult(name="preselect", paper=PAPER, scale=ctx.scale, seeds=len(seeds), wall_s=0.0,
                             claims=claims, notes=notes, details=details)


def _plot(curves: dict[str, list[list[tuple[int, float]]]], path: Path, scale: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for arm, runs in curves.items():
        steps = sorted(set.intersection(*(set(s for s, _ in c) for c in runs))) if runs else []
        if steps:
            ys = [np.mean([dict(c)[s] for c in runs]) for s in steps]
            ax.plot(steps, ys, marker="o", label=arm)
    ax.set_xlabel("step")
    ax.set_ylabel("target val loss (nats/byte), mean over seeds")
    ax.set_title(f"PreSelect vs random vs perplexity selection ({scale})")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _say(text: str) -> None:
    print(f"[preselect] {text}", flush=True)


def _run(ctx: ReplicationContext) -> ReplicationResult:
    return run_protocol(ctx, SCALES[ctx.scale])


register_replication(
    Replication(
        name="preselect",
        paper=PAPER,
        default_seeds=3,
        run=_run,
        summary="PreSelect's top 10% vs a random 10% and a perplexity filter of one pool, on a held-out target",
    )
)
