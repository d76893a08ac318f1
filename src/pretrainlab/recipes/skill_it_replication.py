"""`pretrainlab replicate skill-it`: Skill-it's online data selection (Chen et al., NeurIPS 2023,
arXiv 2307.14430) in its fine-tuning setting: minimise one target domain's loss, sampling from every domain
by the skills graph and the target's validation loss (the `skill_it` callback, recipes/skill_it.py).

Claims, with rules fixed before the first run:
1. Skill-it (graph estimated by the paper's linear approximation) reaches a lower target validation loss than
   uniform, skill-stratified sampling at equal tokens: mean over seeds of L_uniform - L_skill_it >= 0.02 nats
   (the CPU protocol's tau, papers-data.md section 0).
2. The graph matters: Skill-it with the estimated graph beats Skill-it with the identity graph (the control:
   it up-weights the target alone, ignoring the other domains' effect on it): mean L_identity - L_skill_it
   >= 0.01 nats and lower on every seed.
3. The paper's Natural Instructions comparison: Skill-it beats training on the target domain only (paper:
   13.6% lower target loss): mean L_target_only - L_skill_it >= 0.02 nats.

Data: several real domains when `../shared/data/corpora` is present: the target `books` (three Project
Gutenberg novels), `stories` (TinyStories, narrative English: the related domain), `wiki` (WikiText-2) and
`code` (Python standard library, the unrelated one); else the built-in stdlib split into prose (`docs`, the
target: pydoc topics) and three code domains; `--data PREPARED` uses its domains with the last as target.
Real domains rather than a LEGO chain: the callback's signal is a language-modelling loss over whole
sequences, which on LEGO text is dominated by the random clauses rather than the skill's answer token, so
the skills would be indistinguishable at this scale; real domains with one related and one unrelated helper
let the estimated graph say something. Each domain gets the same number of unique tokens (a fixed cut).

Protocol: as in the paper, Skill-it adapts a model that has already learned generic statistics (there a
pre-trained GPT-Neo 125M): one base model is trained on the uniform mixture (seed 0), then every arm
continues from it (`init_from`, fresh AdamW, the same steps, batch and schedule; seeds 1..K set the data
order): `uniform`, `skill_it` (graph: estimate, 10 probe steps per domain at the start, from the base),
`skill_it_identity` and `target_only`. Skill-it uses the paper's LEGO values eta 0.5 and window 3, and
rounds of `every` steps (the paper has 6 rounds; we take 8); losses are divided by the first round's
(`normalise`, the paper's option, the official `--normalize_loss`), chosen after a one-seed pilot: unnormalised
byte-level losses (about 2.5 nats, summed over a window of 3, times eta 0.5) put about 0.9 of every Skill-it
mixture on the target whatever the graph, leaving the graph no say. Figures: the target's validation loss at
the end on `val_tokens` per domain.
"""

from __future__ import annotations

import json
import math
import sysconfig
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pretrainlab.errors import DataError
from pretrainlab.science.replication import (
    Claim,
    Replication,
    ReplicationContext,
    ReplicationResult,
    mean_sd,
    register_replication,
    spread_text,
)
from pretrainlab.science.corpora import CORPORA

NAME = "skill-it"
PAPER = ("Skill-it! A Data-Driven Skills Framework for Understanding and Training Language Models "
         "(Chen et al., NeurIPS 2023), arXiv 2307.14430")
BASE_SEED = 0
MARGIN = 0.02  # nats: the CPU protocol's tau (papers-data.md section 0), claims 1 and 3
GRAPH_MARGIN = 0.01  # nats, claim 2 (and every seed)
ARMS = ("uniform", "skill_it", "skill_it_identity", "target_only")


@dataclass(frozen=True)
class Scale:
    """Model, budgets and run lengths; Skill-it's round length and probes."""

    n_layers: int
    d_model: int
    n_heads: int
    seq_len: int
    batch_rows: int
    train_tokens: int  # unique training tokens over all domains (an even split)
    val_tokens: int  # validation tokens per domain, final evaluation (the claims' figure)
    base_steps: int  # the shared base model (uniform mixture)
    steps: int  # every arm, from the base
    every: int  # Skill-it's round length (steps)
    round_tokens: int  # validation tokens per domain measured at each round
    probe_steps: int
    probe_tokens: int
    lr: float
    evals: int = 4  # evaluations per arm run (the target-loss curves)


SCALES: dict[str, Scale] = {
    # 13 runs of 1,024-token steps: about 10 minutes on 2 CPU cores (measured figure in the README).
    "tiny": Scale(n_layers=4, d_model=96, n_heads=4, seq_len=128, batch_rows=8, train_tokens=640_000,
                  val_tokens=8_192, base_steps=150, steps=200, every=25, round_tokens=2_048, probe_steps=10,
                  probe_tokens=2_048, lr=3e-3),
    "small": Scale(n_layers=6, d_model=192, n_heads=6, seq_len=128, batch_rows=16, train_tokens=2_000_000,
                   val_tokens=32_768, base_steps=400, steps=600, every=75, round_tokens=8_192, probe_steps=20,
                   probe_tokens=8_192, lr=2e-3),
}


# ------------------------------------------------------------------------------------------------ data


@dataclass
class Domains:
    """A prepared folder, its domains (manifest order) and the target."""

    source: Path
    domains: list[str]
    target: str
    origin: str


def prepare_domains(ctx: ReplicationContext) -> Domains:
    """`--data` (last domain is the target), else the shared corpora, else the stdlib split by domain."""
    from pretrainlab.data.prepared import PreparedData

    if ctx.data is not None:
        domains = PreparedData(ctx.data).domains
        if len(domains) < 2:
            raise DataError(f"--data {ctx.data}: Skill-it needs at least two domains (a target and others to "
                            f"sample from), it has {domains}", hint="prepare the data with sources of 2+ domains")
        return Domains(Path(ctx.data), domains, domains[-1], f"--data {ctx.data} (target: its last domain)")
    corpora = corpora_sources()
    if corpora is not None:
        path = _prepare(Path(ctx.out) / "data" / "corpora-bytes", corpora)
        return Domains(path, PreparedData(path).domains, "books",
                       f"{CORPORA}: target books (Sherlock Holmes, Botchan, The Wizard of Oz), stories (TinyStories "
                       "validation file), wiki (WikiText-2 valid), code (Python standard library, 80 modules)")
    path = _prepare(Path(ctx.out) / "data" / "stdlib-skills-bytes", stdlib_sources())
    return Domains(path, PreparedData(path).domains, "docs",
                   "the built-in stdlib corpus: target docs (pydoc topics' prose), code (top-level modules), "
                   "email and asyncio (their packages' code)")


def corpora_sources() -> list[dict[str, Any]] | None:
    """The shared corpora's sources (None when a file is missing: a user's clone has no ../shared)."""
    books = [CORPORA / "gutenberg-books" / f for f in ("sherlock_holmes.txt", "botchan.txt", "wizard_of_oz.txt")]
    files = {"books": books, "stories": [CORPORA / "tinystories" / "tinystories_val.txt"],
             "wiki": [CORPORA / "wikitext-2" / "wiki.valid.tokens"]}
    if not all(p.is_file() for paths in files.values() for p in paths):
        return None
    out: list[dict[str, Any]] = [{"type": "text", "domain": d, "paths": [p.as_posix() for p in paths],
                                  "split": "blank_lines"} for d, paths in files.items()]
    out.append({"type": "stdlib", "domain": "code", "max_files": 80})
    return out


def stdlib_sources() -> list[dict[str, Any]]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return [
        {"type": "text", "domain": "docs", "paths": [(stdlib / "pydoc_data" / "topics.py").as_posix()],
         "split": "line"},
        {"type": "text", "domain": "code", "paths": [(stdlib / "*.py").as_posix()], "split": "file"},
        {"type": "text", "domain": "email", "paths": [(stdlib / "email" / "*.py").as_posix()], "split": "file"},
        {"type": "text", "domain": "asyncio", "paths": [(stdlib / "asyncio" / "*.py").as_posix()], "split": "file"},
    ]


def _prepare(path: Path, sources: list[dict[str, Any]]) -> Path:
    from pretrainlab.config import PrepareConfig, validate
    from pretrainlab.data.prepare import prepare

    if (path / "manifest.json").is_file():
        return path
    cfg = validate(PrepareConfig, {"sources": sources, "tokenizer": {"kind": "bytes"},
                                   "validation": {"fraction": 0.05}, "output": str(path), "overwrite": True},
                   source="replication data")
    return Path(prepare(cfg, progress=False))


def token_budget(ctx: ReplicationContext, data: Domains, scale: Scale) -> Path:
    """`scale.train_tokens` unique tokens split evenly over the domains (seeded chunks of each)."""
    from pretrainlab.data.subset import write_token_budget

    name = f"budget-{scale.train_tokens}-{scale.val_tokens}"
    return write_token_budget(data.source, Path(ctx.out) / "data" / name, train_tokens=scale.train_tokens,
                              val_tokens=scale.val_tokens, seed=0, domains=data.domains).path


# ------------------------------------------------------------------------------------------------ runs


def base_tree(scale: Scale, data: Path, steps: int) -> dict[str, Any]:
    """The RunConfig of every run (AdamW, cosine with 10% warm-up to 10%, clip 1.0, fp32, byte vocabulary)."""
    return {
        "data": {"path": data.as_posix(), "seq_len": scale.seq_len, "mode": "random"},
        "model": {"n_layers": scale.n_layers, "d_model": scale.d_model, "n_heads": scale.n_heads},
        "optim": {"name": "adamw", "lr": scale.lr, "weight_decay": 0.1, "betas": [0.9, 0.95]},
        "schedule": {"name": "cosine", "warmup_fraction": 0.1, "min_lr_ratio": 0.1},
        "train": {"steps": steps, "global_batch_tokens": scale.seq_len * scale.batch_rows,
                  "micro_batch_size": scale.batch_rows, "grad_clip": 1.0, "precision": "fp32", "compile": False,
                  "progress": False, "log_every": 5},
        "eval": {"every": max(1, steps // scale.evals), "max_tokens_per_domain": scale.val_tokens, "batch_size": 32},
    }


def resolved_model(scale: Scale, vocab_size: int) -> dict[str, Any]:
    """The model section with every size written out, so a continued run's config equals the one its folder
    records (init_from fills unset sizes) and a second `replicate` skips finished runs."""
    from pretrainlab.config import ModelConfig
    from pretrainlab.model import resolve_model_config

    cfg = ModelConfig(n_layers=scale.n_layers, d_model=scale.d_model, n_heads=scale.n_heads)
    return resolve_model_config(cfg, vocab_size=vocab_size, seq_len=scale.seq_len).model_dump(mode="json")


def arm_overrides(scale: Scale, domains: list[str], target: str, base_run: str) -> dict[str, dict[str, Any]]:
    """The four arms, each continuing from `base_run`: uniform, skill_it (estimated graph), skill_it_identity,
    target_only."""
    uniform = {d: 1.0 for d in domains}
    skill = {"every": scale.every, "eta": 0.5, "window": 3, "target": target, "normalise": True,
             "val_tokens": scale.round_tokens}
    estimate = {**skill, "graph": "estimate", "probe_steps": scale.probe_steps, "probe_tokens": scale.probe_tokens}
    start = {"init_from": base_run}
    return {
        "uniform": {**start, "data.weights": uniform},
        "skill_it": {**start, "data.weights": uniform, "callbacks": [{"name": "skill_it", "options": estimate}]},
        "skill_it_identity": {**start, "data.weights": uniform,
                              "callbacks": [{"name": "skill_it", "options": {**skill, "graph": "identity"}}]},
        "target_only": {**start, "data.weights": {target: 1.0}},
    }


# ------------------------------------------------------------------------------------------------ claims


def _gain(worse: list[float], better: list[float]) -> tuple[list[float], float]:
    diffs = [a - b for a, b in zip(worse, better)]
    return diffs, mean_sd(diffs)[0]


def _pct(worse: list[float], better: list[float]) -> float:
    w, b = mean_sd(worse)[0], mean_sd(better)[0]
    return 100.0 * (w - b) / w if w else math.nan


def claim_beats_uniform(uniform: list[float], skill: list[float], target: str) -> Claim:
    """Claim 1: mean L_uniform - L_skill_it >= MARGIN on the target domain."""
    diffs, d = _gain(uniform, skill)
    return Claim(
        claim=f"Skill-it (estimated graph) reaches a lower target ({target}) validation loss than uniform, "
        f"skill-stratified sampling at equal tokens: mean L_uniform - L_skill_it >= {MARGIN} nats",
        paper_figure="Skill-it beats skill-stratified sampling on the target skill in the fine-tuning settings "
        "(LEGO, Addition, NI; per-setting figures not verified); abstract: +36.5 LEGO accuracy points over "
        "random sampling (continual pre-training)",
        our_figure=f"{d:+.3f} nats ({_pct(uniform, skill):+.1f}%; uniform {mean_sd(uniform)[0]:.3f}, "
        f"skill_it {mean_sd(skill)[0]:.3f})",
        spread=spread_text(diffs),
        holds=bool(d >= MARGIN) if math.isfinite(d) else None,
    )


def claim_graph_matters(identity: list[float], skill: list[float], target: str) -> Claim:
    """Claim 2: mean L_identity - L_skill_it >= GRAPH_MARGIN and every seed's pair improves."""
    diffs, d = _gain(identity, skill)
    finite = [x for x in diffs if math.isfinite(x)]
    holds = None if not finite or len(finite) < len(diffs) else bool(d >= GRAPH_MARGIN and all(x > 0 for x in finite))
    return Claim(
        claim=f"The skills graph matters: on the target ({target}) Skill-it with the estimated graph beats "
        f"Skill-it with the identity graph (control): mean L_identity - L_estimated >= {GRAPH_MARGIN} nats and "
        "lower on every seed",
        paper_figure="an ordering over skills in the graph is what helps; with a complete or empty graph Skill-it "
        "is about stratified (paper's discussion; no single figure)",
        our_figure=f"{d:+.3f} nats (identity {mean_sd(identity)[0]:.3f}, estimated {mean_sd(skill)[0]:.3f}); "
        f"{sum(x > 0 for x in finite)}/{len(diffs)} seeds lower",
        spread=spread_text(diffs),
        holds=holds,
    )


def claim_beats_target_only(target_only: list[float], skill: list[float], target: str) -> Claim:
    """Claim 3: mean L_target_only - L_skill_it >= MARGIN."""
    diffs, d = _gain(target_only, skill)
    return Claim(
        claim=f"Skill-it beats training on the target ({target}) alone: mean L_target_only - L_skill_it >= "
        f"{MARGIN} nats",
        paper_figure="13.6% lower target validation loss than target-only (Natural Instructions, Spanish "
        "question generation)",
        our_figure=f"{d:+.3f} nats ({_pct(target_only, skill):+.1f}%; target_only {mean_sd(target_only)[0]:.3f}, "
        f"skill_it {mean_sd(skill)[0]:.3f})",
        spread=spread_text(diffs),
        holds=bool(d >= MARGIN) if math.isfinite(d) else None,
    )


# ------------------------------------------------------------------------------------------------ protocol


def run_protocol(ctx: ReplicationContext, scale: Scale) -> ReplicationResult:
    """Train the base model, then the four arms from it over seeds 1..K; claims from the target's val loss."""
    from pretrainlab.data.prepared import PreparedData
    from pretrainlab.science.arms import run_arms

    data = prepare_domains(ctx)
    cut = token_budget(ctx, data, scale)
    domains = PreparedData(cut).domains
    _say(f"data {cut}: domains {', '.join(domains)}; target {data.target}")
    _say(f"stage 1/2: base model on the uniform mixture, {scale.base_steps} steps (seed {BASE_SEED})")
    base = base_tree(scale, cut, scale.base_steps)
    uniform = {d: 1.0 for d in domains}
    base_res = run_arms(ctx, "skill-it-base", base, {"base": {"data.weights": uniform}}, [BASE_SEED])
    base_run = base_res["base"].runs[0].resolve().as_posix()
    seeds = list(range(BASE_SEED + 1, BASE_SEED + 1 + ctx.seeds))
    _say(f"stage 2/2: {', '.join(ARMS)} from the base, {scale.steps} steps, seeds {seeds}")
    tree = base_tree(scale, cut, scale.steps)
    tree["model"] = resolved_model(scale, PreparedData(cut).vocab_size)
    res = run_arms(ctx, "skill-it", tree, arm_overrides(scale, domains, data.target, base_run), seeds)

    key = f"val_loss/{data.target}"
    losses = {a: r.values(key) for a, r in res.items()}
    claims = [claim_beats_uniform(losses["uniform"], losses["skill_it"], data.target),
              claim_graph_matters(losses["skill_it_identity"], losses["skill_it"], data.target),
              claim_beats_target_only(losses["target_only"], losses["skill_it"], data.target)]
    graphs = {str(s): _graph(r) for s, r in zip(seeds, res["skill_it"].runs)}
    mixtures = {a: {str(s): _final_mixture(r, domains) for s, r in zip(seeds, res[a].runs)}
                for a in ("skill_it", "skill_it_identity")}
    per_domain = {a: {d: mean_sd(r.values(f"val_loss/{d}"))[0] for d in domains} for a, r in res.items()}
    _plot(res, domains, data.target, Path(ctx.out) / "plots" / "skill_it.png")
    notes = [
        f"Data: {data.origin}; {scale.train_tokens:,} unique training tokens split evenly over {len(domains)} "
        f"domains, byte vocabulary, {scale.val_tokens:,} validation tokens per domain.",
        f"Scale {ctx.scale}: d_model {scale.d_model}, {scale.n_layers} layers, sequence {scale.seq_len}; base "
        f"{scale.base_steps} steps on the uniform mixture (seed {BASE_SEED}, shared by every arm and seed), then "
        f"{scale.steps} steps of {scale.seq_len * scale.batch_rows:,} tokens per arm, seeds {seeds} (data order "
        f"only: every arm starts from the one base model). Skill-it: eta 0.5, window 3, rounds of {scale.every} "
        f"steps, {scale.round_tokens:,} validation tokens per domain per round, losses divided by the first "
        f"round's (normalise; without it a one-seed pilot put ~0.9 of every mixture on the target); the graph "
        f"estimated from {scale.probe_steps} probe steps per domain on the base model (the run's warm-up "
        "learning rates).",
        "Estimated graphs (row i -> column j: training on i lowers j's loss; rows scaled to max 1), target column "
        "per seed: " + "; ".join(f"seed {s}: " + ", ".join(f"{d} {g[i][domains.index(data.target)]:.2f}"
                                                          for i, d in enumerate(domains))
                                 for s, g in graphs.items() if g) + ".",
        "Final Skill-it mixtures (mean over seeds): " + "; ".join(
            f"{a}: " + ", ".join(f"{d} {mean_sd([m[d] for m in ms.values() if m])[0]:.2f}" for d in domains)
            for a, ms in mixtures.items()) + ".",
        "Validation loss per domain (mean over seeds): " + "; ".join(
            f"{a}: " + ", ".join(f"{d} {v:.3f}" for d, v in per.items()) for a, per in per_domain.items()) + ".",
        "Differences from the paper: a sub-million-parameter byte-level model continued from a short uniform "
        "base run (there GPT-Neo 125M), real text domains (there LEGO, Addition, Natural Instructions), the "
        "validation loss as the figure (the paper also reports accuracy), 8 rounds (the paper has 6).",
    ]
    notes += shortfall_notes(claims, graphs, mixtures, domains, data.target, scale)
    details = {
        "scale": asdict(scale), "data": str(cut), "origin": data.origin, "target": data.target,
        "domains": domains, "seeds": seeds, "base_run": base_run,
        "arms": arm_overrides(scale, domains, data.target, base_run),
        "val_loss_target": losses, "val_loss_per_domain": per_domain, "graphs": graphs, "final_mixtures": mixtures,
        "wall_s": {a: r.values("wall_s") for a, r in res.items()},
        "runs": {a: [str(p) for p in r.runs] for a, r in res.items()},
    }
    return ReplicationResult(name=NAME, paper=PAPER, scale=ctx.scale, seeds=len(seeds), wall_s=0.0, claims=claims,
                             notes=notes, details=details)


def shortfall_notes(claims: list[Claim], graphs: dict[str, list[list[float]] | None],
                    mixtures: dict[str, dict[str, dict[str, float]]], domains: list[str], target: str,
                    scale: Scale) -> list[str]:
    """What the figures say about a claim that does not hold (claims 2 and 3), from the measured graphs and
    mixtures: how strong the graph's edges into the target are, how far the two Skill-it mixtures differ,
    and how often target-only repeats the target."""
    t = domains.index(target)
    edges = [g[i][t] for g in graphs.values() if g for i, d in enumerate(domains) if d != target]
    strongest = max(edges) if edges else math.nan
    mean_mix = {a: {d: mean_sd([m[d] for m in ms.values() if m])[0] for d in domains} for a, ms in mixtures.items()}
    moved = 0.5 * sum(abs(mean_mix["skill_it"][d] - mean_mix["skill_it_identity"][d]) for d in domains) \
        if all(mean_mix.values()) else math.nan
    epochs = scale.steps * scale.seq_len * scale.batch_rows / (scale.train_tokens / len(domains))
    notes = []
    # The explanations are stated only where the figures support them (thresholds fixed with this code, not
    # tuned to a run): a total variation below 0.1 counts as the graph barely moving the mixture, fewer than
    # 4 epochs as repetition not yet costing (Muennighoff et al. 2023), an edge below 0.5 as a weak helper.
    if claims[1].holds is False:
        why = ("; at this scale the graph moves too little data to show" if moved < 0.1 else
               "; the graph did move the mixture, yet the target loss did not follow") if math.isfinite(moved) else ""
        notes.append(f"Claim 2 does not hold: the estimated graph's strongest edge into {target} from another domain is "
                     f"{strongest:.2f} (its own: 1), so the estimated-graph mixture differs from the identity control's "
                     f"by a total variation of {moved:.2f}{why}.")
    if claims[2].holds is False:
        reasons = [f"target_only sees the {target} training tokens {epochs:.1f} times"
                   + (" (below the ~4 epochs after which repetition starts to cost)" if epochs < 4 else ""),
                   f"the strongest edge into {target} from another domain is {strongest:.2f}"
                   + (" (the helpers transfer little)" if strongest < 0.5 else "")]
        notes.append(f"Claim 3 does not hold: {'; '.join(reasons)}. The paper's gain over target-only came from "
                     "related Natural Instructions tasks with a pre-trained 125M model.")
    return notes


def _graph(run: Path) -> list[list[float]] | None:
    from pretrainlab.recipes.skill_it import GRAPH_FILE

    path = Path(run) / GRAPH_FILE
    return json.loads(path.read_text())["graph"] if path.is_file() else None


def _final_mixture(run: Path, domains: list[str]) -> dict[str, float]:
    """The Skill-it weights in force at the run's last logged train line ({} when none was logged)."""
    from pretrainlab.train.metrics import read_metrics

    lines = [r for r in read_metrics(Path(run) / "metrics.jsonl") if "skill_it/round" in r]
    return {d: float(lines[-1][f"skill_it/weight/{d}"]) for d in domains} if lines else {}


def _plot(res: dict[str, Any], domains: list[str], target: str, path: Path) -> None:
    """Left: the target's validation loss against step, mean over seeds, per arm. Right: Skill-it's weights
    (estimated graph) against step, mean over seeds, per domain."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pretrainlab.train.metrics import read_metrics

    def mean_curve(runs: list[Path], key: str, train: bool) -> tuple[list[int], list[float]]:
        curves = []
        for run in runs:
            lines = [r for r in read_metrics(Path(run) / "metrics.jsonl")
                     if key in r and "event" not in r and (("lr" in r) == train)]
            curves.append({int(r["step"]): float(r[key]) for r in lines})
        steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
        return steps, [sum(c[s] for c in curves) / len(curves) for s in steps]

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for arm, r in res.items():
        steps, ys = mean_curve(r.runs, f"val_loss/{target}", train=False)
        left.plot(steps, ys, marker="o", label=arm)
    left.set_xlabel("step (from the base model)")
    left.set_ylabel(f"{target} validation loss (nats/token)")
    left.legend(fontsize=8)
    for d in domains:
        steps, ys = mean_curve(res["skill_it"].runs, f"skill_it/weight/{d}", train=True)
        right.plot(steps, ys, label=d)
    right.set_xlabel("step")
    right.set_ylabel("Skill-it sampling weight (estimated graph)")
    right.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
        summary="online mixture from a skills graph and the target's loss vs uniform, identity-graph and "
        "target-only sampling",
    )
)
