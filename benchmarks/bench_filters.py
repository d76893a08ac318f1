"""Benchmark prepare's document filters, single process, on real text.

(a) Speed per filter and for the chain: every document of the real corpora (recipes/filter_corpora.py:
    TinyStories, WikiText-2, Gutenberg, web; plus the arXiv sample and GSM8K when present; else the stdlib's
    documentation topics) through each filter alone, then through the chains quality -> toxicity and
    quality -> toxicity -> minhash_dedup (FilterChain.check, as prepare runs it). MB/s of UTF-8 text per
    CPU second of this process (what one core does, whatever else runs on the machine) and per wall
    second. Target: the chain >= 5 MB/s per core.
(b) MinHash dedup at scale: `--docs` documents (default 100,000) of 300 B to 3 KB (log-uniform lengths) made
    of real sentences drawn at random, 10% of them near-copies of earlier ones (one word in a hundred
    replaced), through `minhash_dedup` with its defaults. Target: 100k documents in under 5 minutes.
    Also reports the share of planted copies removed and of distinct documents removed.

    python benchmarks/bench_filters.py [--docs 100000] [--skip-dedup]
Prints tables and a final `RESULT {json}` line.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import time

from rich.console import Console
from rich.table import Table

from pretrainlab.config import FilterConfig
from pretrainlab.data.filters.chain import FilterChain
from pretrainlab.recipes.filter_corpora import CORPORA, near_copy, real_documents, vocabulary

FILTERS = ("quality", "toxicity", "minhash_dedup")


def corpus() -> tuple[list[str], str]:
    docs, origin = real_documents(seed=0)
    texts = [t for v in docs.values() for t in v]
    extra = []
    if (CORPORA / "arxiv-sample" / "arxiv.jsonl").is_file():
        extra += [json.loads(line)["text"] for line in (CORPORA / "arxiv-sample" / "arxiv.jsonl").open()]
    if (CORPORA / "gsm8k" / "train.jsonl").is_file():
        rows = [json.loads(line) for line in (CORPORA / "gsm8k" / "train.jsonl").open()]
        extra += [f"Question: {r['question']}\nAnswer: {r['answer']}" for r in rows]
    if extra:
        origin += " + the arXiv sample + GSM8K train"
    return texts + extra, origin


def timed(fn) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def speed(texts: list[str]) -> list[dict]:
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    rows = []
    for name in FILTERS:
        chain = FilterChain([FilterConfig(name=name)], ["all"])
        cpu, wall = timed(lambda: [chain.check("all", t) for t in texts])
        rows.append({"what": name, "mb": mb, "cpu_s": cpu, "wall_s": wall, "removed": chain.stats[0].removed})
    for names in (FILTERS[:2], FILTERS):
        chain = FilterChain([FilterConfig(name=n) for n in names], ["all"])
        cpu, wall = timed(lambda: [chain.check("all", t) for t in texts])
        rows.append({"what": "chain " + " -> ".join(names), "mb": mb, "cpu_s": cpu, "wall_s": wall,
                     "removed": sum(s.removed for s in chain.stats)})
    return rows


def dedup_corpus(texts: list[str], n_docs: int, seed: int = 0) -> tuple[list[str], list[int]]:
    """`n_docs` documents of real sentences, 10% near-copies of earlier ones; returns (documents, the index of
    each document's original, -1 for originals)."""
    rng = random.Random(seed)
    sentences = [s for t in texts for s in re.split(r"(?<=[.!?])\s+", t) if 20 <= len(s) <= 400]
    vocab = vocabulary(texts[:5000])
    docs: list[str] = []
    original: list[int] = []
    for _ in range(n_docs):
        if docs and rng.random() < 0.1:
            i = rng.randrange(len(docs))
            while original[i] >= 0:
                i = original[i]
            docs.append(near_copy(docs[i], rng, vocab))
            original.append(i)
            continue
        target = math.exp(rng.uniform(math.log(300), math.log(3000)))
        parts, size = [], 0
        while size < target:
            s = rng.choice(sentences)
            parts.append(s)
            size += len(s) + 1
        docs.append(" ".join(parts))
        original.append(-1)
    return docs, original


def dedup_at_scale(texts: list[str], n_docs: int) -> dict:
    docs, original = dedup_corpus(texts, n_docs)
    chain = FilterChain([FilterConfig(name="minhash_dedup")], ["all"])
    keep: list[bool] = []
    cpu, wall = timed(lambda: keep.extend(chain.check("all", d) for d in docs))
    copies = [i for i, o in enumerate(original) if o >= 0]
    distinct = [i for i, o in enumerate(original) if o < 0]
    return {
        "docs": n_docs,
        "mb": sum(len(d.encode("utf-8")) for d in docs) / 1e6,
        "cpu_s": cpu,
        "wall_s": wall,
        "copies": len(copies),
        "copies_removed": sum(not keep[i] for i in copies) / len(copies),
        "distinct_removed": sum(not keep[i] for i in distinct) / len(distinct),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=100_000, help="documents for the MinHash benchmark")
    parser.add_argument("--skip-dedup", action="store_true", help="only the per-filter speeds")
    args = parser.parse_args()
    texts, origin = corpus()
    console = Console(width=120)
    rows = speed(texts)
    table = Table(title=f"filter speed on {len(texts):,} documents, {rows[0]['mb']:.1f} MB ({origin})")
    for col in ("filter", "MB/s per CPU s", "MB/s wall", "CPU s", "removed"):
        table.add_column(col, justify="left" if col == "filter" else "right")
    for r in rows:
        table.add_row(r["what"], f"{r['mb'] / r['cpu_s']:.1f}", f"{r['mb'] / r['wall_s']:.1f}", f"{r['cpu_s']:.2f}",
                      f"{r['removed']:,}")
    console.print(table)
    result: dict = {"speed": {r["what"]: round(r["mb"] / r["cpu_s"], 2) for r in rows}, "speed_mb": rows[0]["mb"]}
    if not args.skip_dedup:
        d = dedup_at_scale(texts, args.docs)
        console.print(f"minhash_dedup on {d['docs']:,} documents ({d['mb']:.0f} MB, {d['copies']:,} planted near-copies): "
                      f"{d['wall_s']:.0f} s wall, {d['cpu_s']:.0f} s CPU ({d['mb'] / d['cpu_s']:.1f} MB/s per CPU s); "
                      f"removed {d['copies_removed']:.1%} of the copies, {d['distinct_removed']:.2%} of the distinct "
                      f"documents; target < 300 s: {'met' if d['wall_s'] < 300 else 'NOT met'}")
        result["dedup"] = {k: round(v, 4) if isinstance(v, float) else v for k, v in d.items()}
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
