"""Benchmark `pretrainlab prepare`: end-to-end throughput against bare `encode_batch`, and peak memory.

(a) throughput: the same text (the stdlib corpus, plus `--extra` globs) through the whole prepare
    pipeline with an already-trained BPE (vocab 8192), versus the `tokenizers` library's own
    `encode_batch` over that text held in memory. Target: prepare >= 0.8x encode_batch.
(b) `--memory-gb G`: write a synthetic corpus of G GB (many files of Zipf-distributed words) to a temp
    folder, run prepare in a subprocess and sample its peak resident memory (children included).
    Target: under 1.5 GB for G=1, and not growing with G.

    python benchmarks/bench_prepare.py [--extra '/work/shared/data/corpora/tinystories/*'] [--memory-gb 1]
Prints a table and a final `RESULT {json}` line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import yaml

from pretrainlab.config import PrepareConfig, validate
from pretrainlab.data.diagnostics import Diagnostics
from pretrainlab.data.prepare import prepare
from pretrainlab.data.sources import open_source


def _sources(extra: list[str]) -> list[dict]:
    out: list[dict] = [{"type": "stdlib", "domain": "code"}]
    for i, pattern in enumerate(extra):
        out.append({"type": "text", "domain": f"extra{i}", "paths": [pattern]})
    return out


def throughput(work: Path, extra: list[str], vocab_size: int, batch_bytes: int) -> dict:
    from tokenizers import Tokenizer

    sources = _sources(extra)
    train_cfg = {
        "sources": sources,
        "tokenizer": {"kind": "bpe", "vocab_size": vocab_size, "train_sample_bytes": 4_000_000},
        "validation": {"fraction": 0.0},
        "output": str(work / "trained"),
        "batch_bytes": batch_bytes,
    }
    t0 = time.perf_counter()
    trained = prepare(validate(PrepareConfig, train_cfg), progress=False)
    train_s = time.perf_counter() - t0

    cfg = dict(train_cfg, tokenizer={"kind": "file", "path": str(trained / "tokenizer.json")}, output=str(work / "run"))
    t0 = time.perf_counter()
    out = prepare(validate(PrepareConfig, cfg), progress=False)
    prepare_s = time.perf_counter() - t0
    manifest = json.loads((out / "manifest.json").read_text())
    text_bytes = sum(d["train"]["bytes"] + d["val"]["bytes"] for d in manifest["domains"].values())
    tokens = sum(d["train"]["tokens"] + d["val"]["tokens"] for d in manifest["domains"].values())

    texts = [d.text for i, s in enumerate(validate(PrepareConfig, cfg).sources) for d in open_source(s, i).documents(Diagnostics())]
    texts = [t for t in texts if t.strip()]
    tok = Tokenizer.from_file(str(trained / "tokenizer.json"))
    batches, cur, size = [], [], 0
    for t in texts:
        cur.append(t)
        size += len(t)
        if size >= batch_bytes:
            batches.append(cur)
            cur, size = [], 0
    batches.append(cur)
    t0 = time.perf_counter()
    n_tok = 0
    for b in batches:
        n_tok += sum(len(e.ids) for e in tok.encode_batch(b, add_special_tokens=False))
    encode_s = time.perf_counter() - t0
    # The faster entry point (no character offsets), which prepare itself uses: the stricter baseline.
    t0 = time.perf_counter()
    for b in batches:
        tok.encode_batch_fast(b, add_special_tokens=False)
    encode_fast_s = time.perf_counter() - t0
    mb = text_bytes / 1e6
    return {
        "text_mb": round(mb, 2),
        "tokens": tokens,
        "bpe_train_s": round(train_s, 2),
        "prepare_s": round(prepare_s, 2),
        "prepare_mb_s": round(mb / prepare_s, 2),
        "encode_batch_s": round(encode_s, 2),
        "encode_batch_mb_s": round(mb / encode_s, 2),
        "ratio": round(encode_s / prepare_s, 3),
        "encode_batch_fast_mb_s": round(mb / encode_fast_s, 2),
        "ratio_vs_fast": round(encode_fast_s / prepare_s, 3),
        "encode_batch_tokens": n_tok,
    }


def synthetic_corpus(folder: Path, gigabytes: float, file_mb: float = 8.0, seed: int = 0) -> int:
    """Files of sentences over a Zipf-distributed vocabulary of pseudo-words; returns bytes written."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("etaoinshrdlcumwfgypbvkjxqz"))
    freq = 1.0 / np.arange(1, 27)
    words = ["".join(rng.choice(letters, size=int(rng.integers(1, 10)), p=freq / freq.sum())) for _ in range(20000)]
    ranks = np.minimum(rng.zipf(1.3, size=2_000_000), len(words)) - 1
    pool, pos = [], 0
    for _ in range(50_000):
        n = int(rng.integers(4, 25))
        sent = " ".join(words[r] for r in ranks[pos : pos + n])
        pos = (pos + n) % (len(ranks) - 30)
        pool.append(sent[:1].upper() + sent[1:] + rng.choice([". ", ". ", "? ", "! ", ".\n\n"]))
    pool_arr = np.array(pool, dtype=object)
    target, written, i = int(gigabytes * 1e9), 0, 0
    folder.mkdir(parents=True, exist_ok=True)
    per_file = int(file_mb * 1e6)
    while written < target:
        idx = rng.integers(0, len(pool), size=per_file // 60)
        text = "".join(pool_arr[idx])[: min(per_file, target - written)]
        data = text.encode()
        (folder / f"part-{i:05d}.txt").write_bytes(data)
        written += len(data)
        i += 1
    return written


def memory(work: Path, gigabytes: float) -> dict:
    corpus = work / "synthetic"
    t0 = time.perf_counter()
    n_bytes = synthetic_corpus(corpus, gigabytes)
    gen_s = time.perf_counter() - t0
    cfg = {
        "sources": [{"type": "text", "domain": "web", "paths": [str(corpus)], "split": "blank_lines"}],
        "tokenizer": {"kind": "bpe", "vocab_size": 8192, "train_sample_bytes": 16_000_000},
        "output": str(work / "mem_out"),
    }
    cfg_path = work / "mem.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "pretrainlab", "prepare", str(cfg_path), "--no-progress"], stdout=subprocess.DEVNULL)
    peak = 0
    ps = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            rss = ps.memory_info().rss + sum(c.memory_info().rss for c in ps.children(recursive=True))
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(0.1)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"prepare failed with exit code {proc.returncode}")
    return {
        "corpus_gb": round(n_bytes / 1e9, 3),
        "generate_s": round(gen_s, 1),
        "prepare_s": round(wall, 1),
        "prepare_mb_s": round(n_bytes / 1e6 / wall, 2),
        "peak_rss_gb": round(peak / 1e9, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--extra", action="append", default=[], help="extra text globs to add (e.g. shared corpora)")
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--batch-bytes", type=int, default=4_000_000)
    parser.add_argument("--memory-gb", type=float, default=None, help="also run the memory test on a corpus this big")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--workdir", default=None, help="where to put temporary files (default: a temp folder)")
    args = parser.parse_args()

    result: dict = {"cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        if not args.skip_throughput:
            extra = [p for p in args.extra if __import__("glob").glob(p, recursive=True)]
            result["throughput"] = throughput(work, extra, args.vocab_size, args.batch_bytes)
        if args.memory_gb:
            result["memory"] = memory(work, args.memory_gb)

    print(f"{'measure':<28}{'value':>14}")
    for section in ("throughput", "memory"):
        for k, v in result.get(section, {}).items():
            print(f"{section + '.' + k:<28}{v:>14}")
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
