"""`pretrainlab replicate quality-filter`: a heuristically quality-filtered corpus against the unfiltered one
at equal training tokens (A Pretrainer's Guide to Training Data, Longpre et al. 2023, arXiv 2305.13169).

The paper filters C4 with a quality classifier and finds that quality filtering improves most QA tasks
although it discards data, while it raises toxic generation, and that a filter's effect is not predictable
from the domain; there is no one-size-fits-all filter. Here the filter is prepare's `quality` filter
(Gopher's rules with their published thresholds, Rae et al. 2021), the corpus a mix of real text and web
junk, and the comparison is reported honestly both ways: on clean held-out text and on held-out junk.

Protocol: real documents per domain (recipes/filter_corpora.py: TinyStories, WikiText-2, Gutenberg and web
text from the shared corpora, or the stdlib's documentation topics), split into held-out and training
documents; generated junk (navigation and cookie boilerplate, symbol soup, repeated lines, keyword spam,
link lists, fragments, number tables) added until it is JUNK_SHARE of the mixed corpus's bytes, shuffled
in. Two arms on the same model, steps, tokens, learning rate and seeds: `unfiltered` (the mixed corpus) and
`quality_filtered` (the mixed corpus through `quality` with its defaults). Both are scored on the same
held-out folder (recipes/heldout_eval.py): the real domains (clean text) and a `junk` domain (junk the
runs never saw, made the same way).
"""

from __future__ import annotations

import math
import random
from collections import Counter
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

PAPER = "A Pretrainer's Guide to Training Data (Longpre et al. 2023, arXiv 2305.13169)"
CLEAN_MARGIN = 0.03  # nats: the CPU protocol of papers-data.md section 7c (classifier filter, 50% kept)
JUNK_REMOVED = 0.90  # the rules must drop this share of the planted junk ...
REAL_REMOVED = 0.10  # ... and at most this share of the real documents
JUNK = "junk"


@dataclass(frozen=True)
class Scale:
    """One scale: the real training text, the junk share, held-out size, model and run length."""

    train_bytes: int  # real training documents (spread evenly over the real domains)
    heldout_bytes: int  # held-out text per domain (the real ones and junk)
    junk_share: float  # of the mixed corpus's bytes
    seq_len: int
    batch_rows: int
    steps: int
    n_layers: int
    d_model: int
    n_heads: int
    lr: float

    @property
    def train_tokens(self) -> int:
        return self.steps * self.batch_rows * self.seq_len


SCALES: dict[str, Scale] = {
    # 300 steps of 1,024 byte tokens (307k) against ~550 KB mixed, ~350 KB after filtering: under one epoch.
    "tiny": Scale(train_bytes=360_000, heldout_bytes=24_000, junk_share=0.35, seq_len=128, batch_rows=8, steps=300,
                  n_layers=4, d_model=128, n_heads=4, lr=3e-3),
    "small": Scale(train_bytes=1_500_000, heldout_bytes=48_000, junk_share=0.35, seq_len=128, batch_rows=16,
                   steps=700, n_layers=6, d_model=192, n_heads=6, lr=2e-3),
}


@dataclass
class MixedCorpus:
    texts: list[str]  # the mixed training corpus, in file order
    kinds: list[str]  # per document: its real domain, or "junk:<kind>"
    heldout: dict[str, list[str]]  # per real domain, plus JUNK
    origin: str


def build_corpus(scale: Scale, documents: dict[str, list[str]], origin: str, seed: int = 0) -> MixedCorpus:
    """Held-out and training documents per domain, junk up to `junk_share` of the bytes, shuffled (seeded)."""
    from pretrainlab.recipes.filter_corpora import junk_document, take_bytes, vocabulary

    rng = random.Random(seed)
    heldout: dict[str, list[str]] = {}
    docs: list[tuple[str, str]] = []
    per_domain = scale.train_bytes // len(documents)
    for domain, texts in documents.items():
        held, rest = take_bytes(texts, scale.heldout_bytes)
        heldout[domain] = held
        docs += [(domain, t) for t in take_bytes(rest, per_domain)[0]]
    vocab = vocabulary([t for _, t in docs])
    real_bytes = sum(len(t.encode("utf-8")) for _, t in docs)
    junk_bytes = scale.junk_share / (1 - scale.junk_share) * real_bytes
    made = 0
    while made < junk_bytes:
        kind, text = junk_document(rng, vocab)
        docs.append((f"{JUNK}:{kind}", text))
        made += len(text.encode("utf-8"))
    held_rng = random.Random(seed + 1)
    heldout[JUNK] = []
    while sum(len(t.encode("utf-8")) for t in heldout[JUNK]) < scale.heldout_bytes:
        heldout[JUNK].append(junk_document(held_rng, vocab)[1])
    rng.shuffle(docs)
    return MixedCorpus(texts=[t for _, t in docs], kinds=[k for k, _ in docs], heldout=heldout, origin=origin)


def removal_rates(kinds: list[str], removed: set[int]) -> dict[str, Any]:
    """Share of junk and of real documents removed, and per kind / domain: {kind: [removed, total]}."""
    total, gone = Counter(kinds), Counter(kinds[i] for i in removed)
    junk = [k for k in total if k.startswith(f"{JUNK}:")]
    real = [k for k in total if not k.startswith(f"{JUNK}:")]

    def share(keys: list[str]) -> float:
        n = sum(total[k] for k in keys)
        return sum(gone[k] for k in keys) / n if n else math.nan

    return {"junk": share(junk), "real": share(real), "by_kind": {k: [gone[k], total[k]] for k in sorted(total)}}


# ------------------------------------------------------------------------------------------- claims


def claim_rules_separate(rates: dict[str, Any]) -> Claim:
    """junk removed >= JUNK_REMOVED and real removed <= REAL_REMOVED."""
    real_parts = ", ".join(f"{k} {g / n:.0%}" for k, (g, n) in rates["by_kind"].items()
                           if not k.startswith(f"{JUNK}:") and n)
    junk, real = rates["junk"], rates["real"]
    return Claim(
        claim=f"Gopher's quality rules (published thresholds) remove >= {JUNK_REMOVED:.0%} of the planted junk and "
        f"<= {REAL_REMOVED:.0%} of the real documents",
        paper_figure="rule filters drop planted garbage (Data Darwinism L2, CPU check); Gopher: rules tuned by "
        "inspection of MassiveWeb",
        our_figure=f"junk {junk:.1%} removed, real {real:.1%} ({real_parts})",
        spread="one corpus (deterministic)",
        holds=bool(junk >= JUNK_REMOVED and real <= REAL_REMOVED) if math.isfinite(junk) else None,
    )


def claim_clean_gain(unfiltered: list[float], filtered: list[float]) -> Claim:
    """Mean over seeds of L_unfiltered - L_filtered >= CLEAN_MARGIN on clean held-out text."""
    d, diffs = paired_gap(unfiltered, filtered)
    return Claim(
        claim=f"At equal training tokens the quality-filtered corpus gives a lower clean held-out loss: "
        f"L_unfiltered - L_filtered >= {CLEAN_MARGIN} nats",
        paper_figure="quality filtering improves most QA tasks despite discarding data (Longpre et al.); CPU "
        f"protocol: >= {CLEAN_MARGIN} nats",
        our_figure=f"{d:+.3f} nats (unfiltered {mean_sd(unfiltered)[0]:.3f}, filtered {mean_sd(filtered)[0]:.3f})",
        spread=spread_text(diffs),
        holds=bool(d >= CLEAN_MARGIN) if math.isfinite(d) else None,
    )


def claim_tradeoff(unfiltered: list[float], filtered: list[float]) -> Claim:
    """Mean over seeds of L_filtered - L_unfiltered > 0 on held-out text like what the filter removed."""
    d, diffs = paired_gap(filtered, unfiltered)
    return Claim(
        claim="No free lunch: on held-out text like what the filter removed (junk) the filtered model is worse: "
        "L_filtered - L_unfiltered > 0",
        paper_figure="no one-size-fits-all filter: quality filtering raises toxic generation, toxicity filtering "
        "hurts toxicity identification (Longpre et al.)",
        our_figure=f"{d:+.3f} nats on junk (filtered {mean_sd(filtered)[0]:.3f}, unfiltered {mean_sd(unfiltered)[0]:.3f})",
        spread=spread_text(diffs),
        holds=bool(d > 0) if math.isfinite(d) else None,
    )


# ------------------------------------------------------------------------------------------- protocol


def run_protocol(ctx: ReplicationContext, scale: Scale) -> ReplicationResult:
    """Build and prepare the mixed corpus with and without the quality filter, train both arms on every seed,
    score them on the shared held-out folder."""
    from pretrainlab.recipes.filter_corpora import documents_for
    from pretrainlab.recipes.filter_prepare import corpus_bytes, prepare_heldout, prepare_training, removed_indices
    from pretrainlab.recipes.heldout_eval import heldout_metrics, mean_loss
    from pretrainlab.recipes.sltrain_replication import base_tree
    from pretrainlab.science.arms import plot_train_curves, run_arms

    documents, origin = documents_for(ctx.data)
    corpus = build_corpus(scale, documents, origin)
    folder = Path(ctx.out) / "data"
    paths = {
        "unfiltered": prepare_training(folder / "unfiltered", corpus.texts),
        "quality_filtered": prepare_training(folder / "quality_filtered", corpus.texts, filters=[{"name": "quality"}]),
    }
    heldout = prepare_heldout(folder / "heldout", corpus.heldout)
    rates = removal_rates(corpus.kinds, removed_indices(paths["quality_filtered"]))
    _say(f"data: {corpus.origin}; {len(corpus.texts)} documents; quality removed {rates['junk']:.1%} of the junk, "
         f"{rates['real']:.1%} of the real documents")

    base = base_tree(paths["unfiltered"].as_posix(), seq_len=scale.seq_len, batch_rows=scale.batch_rows,
                     steps=scale.steps, n_layers=scale.n_layers, d_model=scale.d_model, n_heads=scale.n_heads,
                     val_tokens=4096)
    base["optim"]["lr"] = scale.lr
    arms = {arm: {"data.path": p.as_posix()} for arm, p in paths.items()}
    seeds = list(range(ctx.seeds))
    res = run_arms(ctx, "quality-filter", base, arms, seeds)

    real = [d for d in corpus.heldout if d != JUNK]
    metrics = {a: [heldout_metrics(run, heldout, max_tokens_per_domain=scale.heldout_bytes) for run in r.runs]
               for a, r in res.items()}
    clean = {a: [mean_loss(m, real) for m in ms] for a, ms in metrics.items()}
    junk = {a: [m.get(f"val_loss/{JUNK}", math.nan) for m in ms] for a, ms in metrics.items()}
    per_domain = {a: {d: mean_sd([m.get(f"val_loss/{d}", math.nan) for m in ms])[0] for d in [*real, JUNK]}
                  for a, ms in metrics.items()}
    claims = [claim_rules_separate(rates), claim_clean_gain(clean["unfiltered"], clean["quality_filtered"]),
              claim_tradeoff(junk["unfiltered"], junk["quality_filtered"])]
    plot_train_curves(res, Path(ctx.out) / "plots" / "train_loss.png", title=f"quality filter ({ctx.scale})")
    sizes = {a: corpus_bytes(p) for a, p in paths.items()}
    gains = {d: per_domain["unfiltered"][d] - per_domain["quality_filtered"][d] for d in real}
    notes = [
        f"Scale {ctx.scale}: byte vocabulary, d_model {scale.d_model}, {scale.n_layers} layers, sequence {scale.seq_len}, "
        f"{scale.steps} steps of {scale.seq_len * scale.batch_rows:,} tokens ({scale.train_tokens:,} per run, equal "
        f"for both arms), lr {scale.lr:g}, seeds {seeds}. Data: {corpus.origin}.",
        f"Training bytes: unfiltered {sizes['unfiltered']:,} ({scale.junk_share:.0%} generated junk), quality-filtered "
        f"{sizes['quality_filtered']:,}. Removed per kind: " + ", ".join(
            f"{k} {g}/{n}" for k, (g, n) in rates["by_kind"].items()) + ".",
        "Held-out loss per domain (seed means), unfiltered -> filtered: " + "; ".join(
            f"{d} {per_domain['unfiltered'][d]:.3f} -> {per_domain['quality_filtered'][d]:.3f}" for d in [*real, JUNK])
        + ". Gain per real domain: " + ", ".join(f"{d} {g:+.3f}" for d, g in gains.items()) + ".",
        "Reading: at equal tokens the unfiltered arm spends its junk share of every batch on junk, so the clean gain "
        "measures mostly the real tokens it did not see; the paper's filter is a classifier on real web text, "
        "where the removed documents are closer to the kept ones, and its gains were task-dependent.",
    ]
    details: dict[str, Any] = {
        "scale": asdict(scale),
        "data": {a: str(p) for a, p in paths.items()} | {"heldout": str(heldout)},
        "origin": corpus.origin,
        "removal": rates,
        "seeds": seeds,
        "clean_loss": clean,
        "junk_loss": junk,
        "per_domain_loss": per_domain,
        "train_bytes": sizes,
        "val_loss_own_split": {a: r.values("val_loss") for a, r in res.items()},
        "wall_s": {a: r.values("wall_s") for a, r in res.items()},
        "runs": {a: [str(p) for p in r.runs] for a, r in res.items()},
    }
    return ReplicationResult(name="quality-filter", paper=PAPER, scale=ctx.scale, seeds=len(seeds), wall_s=0.0,
                             claims=claims, notes=notes, details=details)


def _say(text: str) -> None:
    print(f"[quality-filter] {text}", flush=True)


def _run(ctx: ReplicationContext) -> ReplicationResult:
    return run_protocol(ctx, SCALES[ctx.scale])


register_replication(
    Replication(
        name="quality-filter",
        paper=PAPER,
        default_seeds=3,
        run=_run,
        summary="Gopher-rule quality-filtered vs unfiltered web-like corpus at equal tokens, on clean and junk held-out text",
    )
)
