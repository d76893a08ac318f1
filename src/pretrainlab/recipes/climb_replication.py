"""`pretrainlab replicate climb`: clustering-based iterative data mixture bootstrapping (CLIMB, Diao et al.,
NVIDIA 2025, arXiv 2504.13161; the CPU protocol of `../shared/papers/papers-data.md` section 3c).

Claim (abstract, table 2): a mixture searched over semantic clusters with proxy models and a predictor
beats the mixtures it is compared with (350M: average accuracy 54.83 for CLIMB vs 52.17 for random
mixtures; the final predictor's Spearman with true scores 0.94). Here the objective is a target domain's
validation loss (the paper's domain-targeted variant gains 5% over random mixing on MMLU social sciences).

Protocol:
1. pool: several real domains in one prepared folder (byte tokenizer, 5% of each domain's documents held
   out): with `../shared/data/corpora` present, WikiText-2, AG News, TinyStories, GSM8K questions,
   Tiny Shakespeare and web text (targets: `wiki` and `news`); without them, the Python standard library's
   source plus generated arithmetic word problems (target: `qa`); or `--data PREPARED` (its `wiki`/`news`
   domains as targets when it has them, else its first domain).
2. cluster (data/cluster.py): TF-IDF + SVD embeddings of every training document (cut at 2,048 tokens),
   k-means K_init, Ward-merged into K super-clusters; the targets' held-out documents become
   validation-only domains, half of them `<target>` (scored by the search) and half `<target>_test`
   (scored only by the final comparison: text no search decision has seen).
3. search (science/climb.py): budget 16/8/4 proxies (the paper's 4:2:1), objective = mean val_loss over the
   targets' search halves, predictor chosen per fit by cross-validated Spearman (science/mixture_predictor.py).
4. final: a larger model trained at equal tokens, seeds 1..K, on the CLIMB mixture, the uniform mixture over
   clusters, and the best of iteration 1's random (size-weighted Dirichlet) mixtures as measured by its proxy;
   scored on the `<target>_test` halves.

Claims, rules fixed before any run: CLIMB beats uniform by >= 0.03 nats (papers-data.md 3c); CLIMB is no
worse than the best random proxy mixture (mean difference <= 0); the final predictor's cross-validated
Spearman over every proxy >= 0.6 (3c). Differences from the paper: 0.3M-parameter byte-level proxies trained
from scratch on ~160k tokens (the paper: 62M/350M proxies in the WSD decay stage of continued pretraining),
16/8/4 proxies instead of 64/32/16, TF-IDF embeddings instead of stella_en_400M_v5, no quality pruning of
clusters, and validation loss instead of downstream accuracy.
"""

from __future__ import annotations

import math
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
    paired_gap,
    register_replication,
    spread_text,
)
from pretrainlab.science.corpora import CORPORA

PAPER = "CLIMB: CLustering-based Iterative Data Mixture Bootstrapping for Language Model Pre-training " \
        "(Diao et al., NVIDIA 2025), arXiv 2504.13161"
TARGETS = ("wiki", "news")
FALLBACK_TARGETS = ("qa",)
FALLBACK_QA_DOCUMENTS = 20_000
UNIFORM_MARGIN = 0.03  # nats: papers-data.md 3c, set before any run
SPEARMAN_MIN = 0.6  # papers-data.md 3c
SEARCH_SEED = 0


@dataclass(frozen=True)
class Scale:
    """One scale: clustering, the proxies, the search budget and the final models."""

    k_init: int
    clusters: int
    seq_len: int
    batch_rows: int
    proxy_steps: int
    proxy_layers: int
    proxy_d_model: int
    proxy_heads: int
    final_steps: int
    final_layers: int
    final_d_model: int
    final_heads: int
    budget: tuple[int, ...]
    lr: float
    proxy_val_tokens: int
    final_val_tokens: int


SCALES: dict[str, Scale] = {
    # proxies: 0.33M non-embedding parameters, 80 steps of 2,048 tokens; finals: 0.79M, 200 steps of 2,048.
    "tiny": Scale(k_init=64, clusters=8, seq_len=128, batch_rows=16, proxy_steps=80, proxy_layers=3,
                  proxy_d_model=96, proxy_heads=3, final_steps=200, final_layers=4, final_d_model=128,
                  final_heads=4, budget=(16, 8, 4), lr=3e-3, proxy_val_tokens=8_192, final_val_tokens=32_768),
    # proxies: 0.33M on 250k tokens (papers-data.md 3c); finals: 2.4M on 2M tokens.
    "small": Scale(k_init=64, clusters=8, seq_len=128, batch_rows=16, proxy_steps=120, proxy_layers=3,
                   proxy_d_model=96, proxy_heads=3, final_steps=1000, final_layers=6, final_d_model=192,
                   final_heads=6, budget=(16, 8, 4), lr=3e-3, proxy_val_tokens=16_384, final_val_tokens=65_536),
}


def run_tree(data: str, scale: Scale, *, final: bool) -> dict[str, Any]:
    """The RunConfig of a proxy (`final` False) or of a final run: untied embeddings, AdamW without weight decay,
    cosine with 10% warm-up to 10%, gradient clipping 1.0, evaluation at the end only.

    Untied (added after the first tiny run): with tied input/output embeddings a third of the 80-step proxies
    were still on the byte-unigram plateau (loss ~3.2) at the end, whichever the mixture, so the measured
    objective said when a proxy left the plateau rather than what its mixture was worth (cross-validated
    Spearman 0.24); untied, every proxy leaves it within 20 steps and seeds differ by ~0.015 nats."""
    layers, width, heads = ((scale.final_layers, scale.final_d_model, scale.final_heads) if final
                            else (scale.proxy_layers, scale.proxy_d_model, scale.proxy_heads))
    return {
        "data": {"path": data, "seq_len": scale.seq_len, "mode": "random"},
        "model": {"n_layers": layers, "d_model": width, "n_heads": heads, "tie_embeddings": False},
        "optim": {"name": "adamw", "lr": scale.lr, "weight_decay": 0.0, "betas": [0.9, 0.95]},
        "schedule": {"name": "cosine", "warmup_fraction": 0.1, "min_lr_ratio": 0.1},
        "train": {"steps": scale.final_steps if final else scale.proxy_steps,
                  "global_batch_tokens": scale.seq_len * scale.batch_rows, "micro_batch_size": scale.batch_rows,
                  "grad_clip": 1.0, "compile": False, "progress": False, "log_every": 20},
        "eval": {"max_tokens_per_domain": scale.final_val_tokens if final else scale.proxy_val_tokens,
                 "batch_size": 32},
    }


# ------------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Pool:
    path: Path  # the prepared pool (before clustering)
    targets: tuple[str, ...]
    origin: str  # what the domains are, for the notes


def pool_data(ctx: ReplicationContext) -> Pool:
    """`--data` when given, else the shared corpora when present, else the built-in fallback; prepared once
    under `ctx.out / "data"` and reused."""
    from pretrainlab.data.prepared import PreparedData

    if ctx.data is not None:
        have = PreparedData(ctx.data).domains
        targets = tuple(t for t in TARGETS if t in have) or (have[0],)
        return Pool(Path(ctx.data), targets, f"--data {ctx.data} (targets {', '.join(targets)})")
    out = Path(ctx.out) / "data"
    if corpora_present():
        return Pool(_prepare(out / "pool-corpora", corpora_sources()), TARGETS,
                    f"{CORPORA}: wiki = WikiText-2 (valid) paragraphs, news = AG News (dev) lines, stories = "
                    "TinyStories (first 2 MiB), math = GSM8K train questions, drama = Tiny Shakespeare speeches, "
                    "web = two Common Crawl samples of Dolma's tests")
    from pretrainlab.recipes.curriculum_data import arithmetic_qa_jsonl

    qa = arithmetic_qa_jsonl(out / "sources" / "arithmetic_qa.jsonl", FALLBACK_QA_DOCUMENTS, seed=0)
    sources = [{"type": "stdlib", "domain": "code"}, {"type": "jsonl", "domain": "qa", "paths": [qa.as_posix()]}]
    return Pool(_prepare(out / "pool-stdlib-qa", sources), FALLBACK_TARGETS,
                "built-in: code = the Python standard library's source, qa = "
                f"{FALLBACK_QA_DOCUMENTS:,} generated arithmetic word problems")


def corpora_sources() -> list[dict[str, Any]]:
    c = CORPORA
    return [
        {"type": "text", "domain": "wiki", "paths": [(c / "wikitext-2" / "wiki.valid.tokens").as_posix()],
         "split": "blank_lines"},
        {"type": "text", "domain": "news", "paths": [(c / "agnews" / "dev.tsv").as_posix()], "split": "line"},
        {"type": "text", "domain": "stories", "paths": [(c / "tinystories" / "tinystories_train_first2MiB.txt").as_posix()],
         "split": "separator", "separator": "<|endoftext|>"},
        {"type": "jsonl", "domain": "math", "paths": [(c / "gsm8k" / "train.jsonl").as_posix()], "text_field": "question"},
        {"type": "text", "domain": "drama", "paths": [(c / "tinyshakespeare" / "input.txt").as_posix()],
         "split": "blank_lines"},
        {"type": "jsonl", "domain": "web", "paths": [(c / "web-commoncrawl-sample" / n).as_posix()
                                                     for n in ("cc_en_head-0091.jsonl", "cc_en_head-0174.jsonl")]},
    ]


def corpora_present() -> bool:
    return all(Path(p).is_file() for s in corpora_sources() for p in s["paths"])


def _prepare(path: Path, sources: list[dict[str, Any]]) -> Path:
    from pretrainlab.config import PrepareConfig, validate
    from pretrainlab.data.prepare import prepare

    if (path / "manifest.json").is_file():
        return path
    cfg = validate(PrepareConfig, {"sources": sources, "tokenizer": {"kind": "bytes"},
                                   "validation": {"fraction": 0.05}, "output": str(path), "overwrite": True},
                   source="climb replication data")
    return Path(prepare(cfg, progress=False))


def clustered(ctx: ReplicationContext, pool: Pool, scale: Scale) -> Path:
    """The pool clustered (k-means K_init merged to K; the targets' held-out documents split into search and
    test halves), under `ctx.out / "data"`, reused when already there."""
    from pretrainlab.data.cluster import cluster_prepared

    out = Path(ctx.out) / "data" / f"clusters-k{scale.k_init}-{scale.clusters}"
    data = cluster_prepared(pool.path, out, k=scale.k_init, merge_to=scale.clusters, seed=SEARCH_SEED,
                            eval_domains=list(pool.targets), test_fraction=0.5, max_doc_tokens=2048, say=_say)
    return data.path


# ------------------------------------------------------------------------------------------- claims


def claim_beats_uniform(uniform: list[float], climb: list[float]) -> Claim:
    """mean over seeds of L_uniform - L_climb >= UNIFORM_MARGIN (seed-paired differences in the spread)."""
    d, diffs = paired_gap(uniform, climb)
    return Claim(
        claim="The searched mixture beats the uniform mixture over clusters on held-out target text: mean "
        f"L_uniform - L_climb >= {UNIFORM_MARGIN} nats at equal tokens",
        paper_figure="350M: CLIMB 54.83 vs random mixtures 52.17 average accuracy; 1B: 60.41 vs 57.93 (table 2)",
        our_figure=f"{d:+.3f} nats (uniform {mean_sd(uniform)[0]:.3f}, CLIMB {mean_sd(climb)[0]:.3f})",
        spread=spread_text(diffs),
        holds=bool(d >= UNIFORM_MARGIN) if math.isfinite(d) else None,
    )


def claim_beats_random(best_random: list[float], climb: list[float]) -> Claim:
    """mean over seeds of L_climb - L_best_random <= 0."""
    d, diffs = paired_gap(climb, best_random)
    return Claim(
        claim="CLIMB is no worse than the best of iteration 1's random mixtures (picked by its proxy), retrained "
        "at the final scale: mean L_climb - L_best_random <= 0",
        paper_figure="350M: CLIMB 54.83 vs RegMix 53.78 vs random 52.17 (table 2)",
        our_figure=f"{d:+.3f} nats (best random {mean_sd(best_random)[0]:.3f}, CLIMB {mean_sd(climb)[0]:.3f})",
        spread=spread_text(diffs),
        holds=bool(d <= 0) if math.isfinite(d) else None,
    )


def claim_predictor(cv_spearman: float, heldout_spearman: float, n: int, kind: str) -> Claim:
    """The final predictor's cross-validated Spearman over every proxy >= SPEARMAN_MIN."""
    return Claim(
        claim=f"The predictor ranks proxies it did not see: cross-validated Spearman of the final predictor over "
        f"all proxies >= {SPEARMAN_MIN}",
        paper_figure="Spearman 0.94 of the final predictor with true scores (section 4)",
        our_figure=f"{cv_spearman:.2f} ({kind}, 5-fold over {n} proxies); prospective on the picks of iterations "
        f">= 2: {heldout_spearman:.2f}",
        spread="one search (seed 0)",
        holds=bool(cv_spearman >= SPEARMAN_MIN) if math.isfinite(cv_spearman) else None,
    )


# ------------------------------------------------------------------------------------------- protocol


def run_protocol(ctx: ReplicationContext, scale: Scale) -> ReplicationResult:
    """Pool, cluster, search, then the final comparison; the claims from its numbers."""
    from pretrainlab.data.cluster import cluster_rows
    from pretrainlab.data.prepared import PreparedData
    from pretrainlab.science.arms import non_embedding_params, plot_train_curves, run_arms
    from pretrainlab.science.climb import search_mixture

    pool = pool_data(ctx)
    data = clustered(ctx, pool, scale)
    rows = cluster_rows(PreparedData(data))
    _say(f"pool {pool.path}; clustered {data}; targets {', '.join(pool.targets)}")
    for r in rows:
        _say(f"  {r['cluster']}: {r['tokens']:,} tokens ({r['share']:.0%}), {' '.join(r['top_terms'][:5])}; "
             + ", ".join(f"{d} {s:.0%}" for d, s in list(r["composition"].items())[:3]))
    search = search_mixture(ctx, run_tree(data.as_posix(), scale, final=False), list(pool.targets),
                            budget=scale.budget, seed=SEARCH_SEED)
    assert search.chosen is not None
    best_random = search.best_measured(iteration=1)
    if best_random is None:
        raise DataError("no proxy of the search's first iteration finished", hint=f"see the logs under {ctx.out}/sweeps")
    clusters = search.domains
    mixtures = {"climb": search.chosen, "uniform": {c: 1.0 for c in clusters}, "best_random": best_random.weights}
    same = best_random.weights == search.chosen  # the predictor's argmin can be that very mixture: one arm, not two
    arms = {a: {"data.weights": w} for a, w in mixtures.items() if not (same and a == "best_random")}
    seeds = list(range(1, 1 + ctx.seeds))
    res = run_arms(ctx, "climb-final", run_tree(data.as_posix(), scale, final=True), arms, seeds)
    if same:
        res["best_random"] = res["climb"]
    test = [f"{t}_test" for t in pool.targets]

    def target_loss(arm: str) -> list[float]:
        per = [res[arm].values(f"val_loss/{t}") for t in test]
        return [sum(v) / len(v) for v in zip(*per)]

    losses = {a: target_loss(a) for a in mixtures}
    claims = [claim_beats_uniform(losses["uniform"], losses["climb"]),
              claim_beats_random(losses["best_random"], losses["climb"]),
              claim_predictor(search.cv_spearman, search.heldout_spearman, len(search.candidates),
                              search.iterations[-1]["predictor"])]
    plot_train_curves({a: res[a] for a in arms}, Path(ctx.out) / "plots" / "train_loss.png",
                      title=f"CLIMB final runs ({ctx.scale})")
    per_target = {a: {t: mean_sd(res[a].values(f"val_loss/{t}"))[0] for t in test} for a in mixtures}
    overall = {a: mean_sd(res[a].values("val_loss"))[0] for a in mixtures}
    fmt = lambda w: ", ".join(f"{d} {v:.2f}" for d, v in sorted(w.items(), key=lambda kv: -kv[1]) if v >= 0.005)  # noqa: E731
    notes = [
        f"Data: {pool.origin}. Clusters (k-means {scale.k_init} -> {scale.clusters}, TF-IDF + SVD embeddings): "
        + "; ".join(f"{r['cluster']} {r['share']:.0%} [{' '.join(r['top_terms'][:4])}] "
                    + "/".join(f"{d} {s:.0%}" for d, s in list(r["composition"].items())[:2]) for r in rows) + ".",
        f"Search: {sum(scale.budget)} proxies ({'/'.join(map(str, scale.budget))}), d_model {scale.proxy_d_model} x "
        f"{scale.proxy_layers} layers ({non_embedding_params(run_tree('', scale, final=False)['model']):,} non-embedding "
        f"parameters), {scale.proxy_steps} steps of {scale.seq_len * scale.batch_rows:,} tokens; objective = mean "
        f"val_loss over {', '.join(pool.targets)} (search halves); best proxy per iteration "
        + ", ".join(f"{it['best_measured']:.3f}" for it in search.iterations)
        + "; predictor per iteration " + ", ".join(f"{it['predictor']} (cv {it['cv_spearman']:.2f})" for it in search.iterations) + ".",
        f"Mixtures: CLIMB {fmt(search.chosen)} (predicted {search.chosen_predicted:.3f}); best random "
        f"(proxy {best_random.index}, measured {best_random.measured:.3f}) {fmt(best_random.weights)}; uniform "
        f"{1 / len(clusters):.3f} each" + ("; the CLIMB choice is the best random proxy's mixture (one arm)." if same
                                           else "."),
        f"Final runs: d_model {scale.final_d_model} x {scale.final_layers} layers "
        f"({non_embedding_params(run_tree('', scale, final=True)['model']):,} non-embedding parameters), "
        f"{scale.final_steps} steps of {scale.seq_len * scale.batch_rows:,} tokens, lr {scale.lr:g}, seeds {seeds}; "
        "test-half losses per target: " + "; ".join(f"{a} " + ", ".join(f"{t} {v:.3f}" for t, v in per_target[a].items())
                                                  for a in mixtures)
        + "; mean val_loss over every validation domain: " + ", ".join(f"{a} {v:.3f}" for a, v in overall.items()) + ".",
        "Differences from the paper: byte-level proxies trained from scratch (not continued pretraining in a WSD "
        f"decay), {sum(scale.budget)} proxies instead of 112, TF-IDF embeddings, no quality pruning, loss instead "
        "of accuracy.",
        "Protocol change after the first tiny run (the claims' rules unchanged): proxies and final models have "
        "untied embeddings, because tied 80-step proxies sat on the byte-unigram plateau and the objective "
        "measured plateau escape rather than the mixture.",
    ]
    details = {
        "scale": asdict(scale),
        "pool": str(pool.path),
        "data": str(data),
        "targets": list(pool.targets),
        "clusters": rows,
        "search": search.to_dict(),
        "mixtures": mixtures,
        "seeds": seeds,
        "target_test_loss": losses,
        "per_target": per_target,
        "val_loss": {a: r.values("val_loss") for a, r in res.items()},
        "wall_s": {a: r.values("wall_s") for a, r in res.items()},
        "runs": {a: [str(p) for p in r.runs] for a, r in res.items()},
    }
    return ReplicationResult(name="climb", paper=PAPER, scale=ctx.scale, seeds=len(seeds), wall_s=0.0,
                             claims=claims, notes=notes, details=details)


def _say(text: str) -> None:
    print(f"[climb] {text}", flush=True)


def _run(ctx: ReplicationContext) -> ReplicationResult:
    return run_protocol(ctx, SCALES[ctx.scale])


register_replication(
    Replication(
        name="climb",
        paper=PAPER,
        default_seeds=3,
        run=_run,
        summary="cluster a multi-domain pool, search a mixture over clusters with proxies and a predictor (CLIMB), "
        "compare it with uniform and the best random mixture on held-out target text",
    )
)
