"""`pretrainlab preselect score|train|select`: PreSelect data selection from the command line.

    pretrainlab preselect score --runs runs/a runs/b runs/c --target held_out.txt --docs pool.jsonl --out ps
    pretrainlab preselect score --runs runs/a runs/b --scores a=0.41 b=0.37 --docs prepared/pool --out ps
    pretrainlab preselect train ps                      # -> ps/classifier.npz
    pretrainlab preselect select --classifier ps/classifier.npz --docs pool.jsonl --keep-fraction 0.1 --out kept

`score` writes `<out>/scores.jsonl` (per document: id, source, bytes, each run's bits per byte, predictive
strength, text) and `<out>/summary.json`; `train` fits the classifier on its positives and negatives;
`select` writes `<out>/kept.jsonl` ({"text", "id", "score"}, ready for a `jsonl` prepare source) and
`<out>/summary.json`. The method: recipes/preselect.py; docs/preselect.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

SCORES_FORMAT = "pretrainlab-preselect-scores/1"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("preselect", help="PreSelect data selection: score documents by how well reference runs' "
                       "losses predict their ranking, train a fast classifier, keep a corpus's top fraction",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    s = actions.add_parser("score", help="each document's bits per byte under each run, and its predictive strength")
    s.add_argument("--runs", nargs="+", required=True, metavar="RUN", help="reference run folders (at least 2)")
    rank = s.add_mutually_exclusive_group(required=True)
    rank.add_argument("--scores", nargs="+", metavar="NAME=VALUE",
                      help="each run's benchmark figure (NAME: the run folder's name); higher is better unless "
                      "--lower-is-better")
    rank.add_argument("--target", nargs="+", metavar="PATH",
                      help="held-out target text (files or a prepared folder): runs ranked by bits per byte on it")
    rank.add_argument("--task", metavar="SPEC", help="a task as for `pretrainlab eval --tasks` (NAME, NAME=PATH)")
    s.add_argument("--lower-is-better", action="store_true", help="with --scores: lower figures are better")
    s.add_argument("--task-metric", default=None, help="with --task: the metric (default acc, else bpb)")
    s.add_argument("--task-limit", type=int, default=None, metavar="N", help="with --task: its first N examples")
    s.add_argument("--target-domain", nargs="+", default=None, metavar="D", help="with a prepared --target: domains")
    s.add_argument("--target-split", default="val", help="with a prepared --target: the split (default val)")
    _doc_args(s, split_default="train")
    s.add_argument("--out", required=True, help="output folder (scores.jsonl, summary.json)")
    s.set_defaults(func=run_score)

    t = actions.add_parser("train", help="train the hashed n-gram classifier on a score folder's labels")
    t.add_argument("scores", help="folder written by `preselect score`")
    t.add_argument("--out", default=None, help="classifier file (default: <scores>/classifier.npz)")
    t.add_argument("--positive-strength", type=float, default=1.0,
                   help="positives: strength >= this (default 1: every pair in order, the paper's rule)")
    t.add_argument("--max-per-class", type=int, default=None, metavar="N", help="at most N positives and N negatives")
    t.add_argument("--word-ngrams", nargs=2, type=int, default=[1, 2], metavar=("LO", "HI"))
    t.add_argument("--char-ngrams", nargs=2, type=int, default=None, metavar=("LO", "HI"),
                   help="add char_wb n-grams (e.g. 3 5)")
    t.add_argument("--no-word-ngrams", action="store_true", help="only char n-grams")
    t.add_argument("--features", type=int, default=2**18, help="hashed features per analyzer (default 2^18)")
    t.add_argument("--c", type=float, default=1.0, help="inverse L2 regularisation strength (default 1)")
    t.add_argument("--seed", type=int, default=0, help="seed of tie-breaking and of the held-out split")
    t.set_defaults(func=run_train)

    c = actions.add_parser("select", help="keep the top fraction of a corpus by classifier score")
    c.add_argument("--classifier", required=True, help="classifier .npz from `preselect train`")
    keep = c.add_mutually_exclusive_group(required=True)
    keep.add_argument("--keep-fraction", type=float, help="fraction of the corpus to keep (0..1]")
    keep.add_argument("--threshold", type=float, help="keep documents scoring at least this")
    c.add_argument("--by", choices=["bytes", "documents"], default="bytes",
                   help="what --keep-fraction counts (default bytes, the paper's rule)")
    _doc_args(c, split_default="train")
    c.add_argument("--out", required=True, help="output folder (kept.jsonl, summary.json)")
    c.set_defaults(func=run_select)


def _doc_args(p: argparse.ArgumentParser, *, split_default: str) -> None:
    p.add_argument("--docs", nargs="+", required=True, metavar="PATH",
                   help="documents: a prepared folder, or text / .jsonl files and globs")
    p.add_argument("--domain", nargs="+", default=None, metavar="D", help="with a prepared folder: its domains")
    p.add_argument("--split", default=split_default, help=f"with a prepared folder: the split (default {split_default})")
    p.add_argument("--text-field", default="text", help="the text field of .jsonl files")
    p.add_argument("--doc-split", default="file", choices=["file", "blank_lines", "line", "separator"],
                   help="how text files split into documents (as a prepare text source)")
    p.add_argument("--max-docs", type=int, default=None, metavar="N", help="a seeded random sample of N documents")
    p.add_argument("--sample-seed", type=int, default=0, help="seed of --max-docs")


def _read_docs(args: argparse.Namespace) -> list[Any]:
    from pretrainlab.recipes.preselect_docs import read_documents

    return read_documents(args.docs, domains=args.domain, split=args.split, text_field=args.text_field,
                          doc_split=args.doc_split, max_docs=args.max_docs, seed=args.sample_seed)


def parse_scores(words: list[str]) -> dict[str, float]:
    """NAME=VALUE words as a mapping; ConfigError naming a bad word."""
    from pretrainlab.errors import ConfigError

    out: dict[str, float] = {}
    for w in words:
        name, sep, value = w.partition("=")
        try:
            if not sep or not name:
                raise ValueError
            out[name] = float(value)
        except ValueError:
            raise ConfigError(f"--scores {w!r} is not NAME=VALUE", hint="e.g. --scores run_a=0.41 run_b=0.37") from None
    return out


def run_score(args: argparse.Namespace) -> int:
    import time

    import numpy as np

    from pretrainlab.errors import ConfigError
    from pretrainlab.io_atomic import write_json_atomic, write_text_atomic
    from pretrainlab.recipes import preselect as ps
    from pretrainlab.recipes.preselect_docs import jsonl_text, read_documents
    from pretrainlab.train.distributed import resolve_device

    if len(args.runs) < 2:
        raise ConfigError(f"--runs needs at least 2 reference runs (got {len(args.runs)})")
    start = time.perf_counter()
    device = resolve_device("auto")
    docs = _read_docs(args)  # read before any model loads: bad paths fail fast
    if args.scores:
        bench = ps.benchmark_given(args.runs, parse_scores(args.scores), higher_is_better=not args.lower_is_better)
    elif args.target:
        target = read_documents(args.target, domains=args.target_domain, split=args.target_split,
                                text_field=args.text_field, doc_split=args.doc_split)
        bench = ps.benchmark_target_bpb(args.runs, target, device=device)
    else:
        bench = ps.benchmark_task(args.runs, args.task, args.task_metric, device=device, limit=args.task_limit)
    names = ps.run_label(args.runs)
    print("benchmark (" + bench.source + ", " + ("higher" if bench.higher_is_better else "lower") + " is better): "
          + ", ".join(f"{n} {v:.4f}" for n, v in zip(names, bench.values)), flush=True)
    bpb = ps.reference_bpb(args.runs, docs, device=device, say=lambda t: print(t, flush=True))
    strength, pairs = ps.predictive_strength(bpb, bench.quality)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = ({"id": d.id, "source": d.source, "bytes": d.n_bytes, "strength": _num(strength[i]),
             "bpb": [_num(v) for v in bpb[:, i]], "text": d.text} for i, d in enumerate(docs))
    write_text_atomic(out / "scores.jsonl", jsonl_text(rows))
    values, counts = np.unique(strength[np.isfinite(strength)], return_counts=True)
    summary = {
        "format": SCORES_FORMAT,
        "runs": [{"name": n, "path": str(r), "benchmark": float(v), "mean_bpb": _num(np.nanmean(bpb[m]))}
                 for m, (n, r, v) in enumerate(zip(names, args.runs, bench.values))],
        "benchmark_source": bench.source,
        "higher_is_better": bench.higher_is_better,
        "pairs": pairs,
        "documents": len(docs),
        "unscored_documents": int((~np.isfinite(strength)).sum()),
        "strength_counts": {f"{v:.4f}": int(c) for v, c in zip(values, counts)},
        "strength_by_source": _by_source(docs, strength),
        "docs": [str(p) for p in args.docs],
        "wall_s": round(time.perf_counter() - start, 2),
    }
    write_json_atomic(out / "summary.json", summary)
    full = int(np.sum(strength >= 1.0 - 1e-12))
    top = f"; the highest strength is {values[-1]:.3f} ({counts[-1]} documents)" if values.size and not full else ""
    print(f"scored {len(docs)} documents over {pairs} run pairs: {full} with every pair in order (strength 1){top}; "
          f"wrote {out / 'scores.jsonl'} and {out / 'summary.json'} ({summary['wall_s']} s)")
    return 0


def load_scores(folder: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(summary, rows) of a folder written by `preselect score`; DataError naming the file when it is not one."""
    import json

    from pretrainlab.errors import DataError
    from pretrainlab.recipes.preselect_docs import read_jsonl

    summary_path = folder / "summary.json"
    hint = "pass a folder written by `pretrainlab preselect score`"
    if not summary_path.is_file():
        raise DataError(f"{folder} has no summary.json: not a `preselect score` folder", hint=hint)
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{summary_path}: not valid JSON ({e})", hint=hint) from None
    if not isinstance(summary, dict) or summary.get("format") != SCORES_FORMAT:
        raise DataError(f"{summary_path}: not a `preselect score` summary (format "
                        f"{summary.get('format') if isinstance(summary, dict) else None!r})", hint=hint)
    rows = read_jsonl(folder / "scores.jsonl")
    for i, r in enumerate(rows, start=1):
        if not isinstance(r.get("text"), str) or not isinstance(r.get("bytes"), int) or "strength" not in r:
            raise DataError(f"{folder / 'scores.jsonl'}:{i}: needs text, bytes and strength", hint=hint)
    return summary, rows


def run_train(args: argparse.Namespace) -> int:
    import numpy as np

    from pretrainlab.recipes.preselect import train_on_strength
    from pretrainlab.recipes.preselect_classifier import FeatureSettings

    folder = Path(args.scores)
    summary, rows = load_scores(folder)
    strength = np.array([np.nan if r["strength"] is None else float(r["strength"]) for r in rows])
    features = FeatureSettings(word_ngrams=None if args.no_word_ngrams else tuple(args.word_ngrams),
                               char_ngrams=tuple(args.char_ngrams) if args.char_ngrams else None,
                               n_features=args.features)
    clf, report = train_on_strength([r["text"] for r in rows], [r["bytes"] for r in rows], strength, features=features,
                               positive_strength=args.positive_strength, max_per_class=args.max_per_class,
                               c=args.c, seed=args.seed, info={"scores": str(folder), "runs": summary.get("runs")})
    out = clf.save(Path(args.out) if args.out else folder / "classifier.npz")
    print(report)
    print(f"wrote {out}")
    return 0


def run_select(args: argparse.Namespace) -> int:
    import numpy as np

    from pretrainlab.io_atomic import write_json_atomic, write_text_atomic
    from pretrainlab.recipes.preselect import select_top, selection_summary
    from pretrainlab.recipes.preselect_classifier import PreselectClassifier
    from pretrainlab.recipes.preselect_docs import jsonl_text

    clf = PreselectClassifier.load(args.classifier)
    docs = _read_docs(args)
    scores = clf.scores([d.text for d in docs])
    sizes = np.array([d.n_bytes for d in docs])
    if args.threshold is not None:
        keep = scores >= args.threshold
        rule = f"score >= {args.threshold:g}"
    else:
        keep = select_top(scores, sizes, args.keep_fraction, by=args.by)
        rule = f"top {args.keep_fraction:g} by {args.by}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "kept.jsonl", jsonl_text(
        {"text": d.text, "id": d.id, "score": float(s)} for d, s, k in zip(docs, scores, keep) if k))
    summary = selection_summary(docs, scores, keep, rule)
    summary.update({"classifier": str(args.classifier), "docs": [str(p) for p in args.docs]})
    write_json_atomic(out / "summary.json", summary)
    print(f"kept {summary['kept_documents']:,} of {len(docs):,} documents, {summary['kept_bytes']:,} of "
          f"{summary['bytes']:,} bytes ({rule}; lowest kept score {summary['lowest_kept_score']}); "
          f"wrote {out / 'kept.jsonl'}")
    for source, row in list(summary["by_source"].items())[:20]:
        print(f"  {source}: kept {row['kept']} of {row['documents']} documents")
    return 0


def _by_source(docs: list[Any], strength: Any) -> dict[str, dict[str, float]]:
    import numpy as np

    out: dict[str, dict[str, float]] = {}
    for source in dict.fromkeys(d.source for d in docs):
        s = np.array([strength[i] for i, d in enumerate(docs) if d.source == source], dtype=np.float64)
        s = s[np.isfinite(s)]
        out[source] = {"documents": int(s.size), "mean_strength": float(s.mean()) if s.size else None,
                       "full_strength": int(np.sum(s >= 1.0 - 1e-12))}
    return out


def _num(v: Any) -> float | None:
    import math

    v = float(v)
    return v if math.isfinite(v) else None
