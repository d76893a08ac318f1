"""Tokens/s of `TokenLoader.next_batch` (random and packed) next to what a training step consumes.

Builds a synthetic ~50M-token prepared folder (two domains, random document lengths) in a temp dir,
times the loader at seq_len 256 x 12 rows and 128 x 32 rows, and, when `pretrainlab.model` is
importable, times training steps (forward, backward, AdamW) of the matching benchmark model shapes
(`bench-a`: 6 x 384, `bench-b`: 4 x 128) so the two figures come from the same machine and run.
Otherwise the reference ~2.3k tokens/s (nanoGPT, preset a, /work/shared/bench/README.md) is shown.

    python benchmarks/bench_loader.py [--tokens 50_000_000] [--seconds 2] [--steps 4]

The last line is `RESULT {json}`. Packed tokens/s count row positions (padding included, as the
model computes on them); `fill` is the fraction that are real tokens. On a shared machine the
training figure drops with the load; the reference figure is printed alongside for that reason.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pretrainlab.data.loader import TokenLoader
from pretrainlab.data.prepared import MANIFEST_FORMAT, PreparedData, fingerprint_of
from pretrainlab.data.shards import ShardWriter, token_dtype

REFERENCE_TRAIN_TOKENS_PER_S = 2276  # nanoGPT train.py fp32, preset a (/work/shared/bench/README.md)
SHAPES = [(256, 12, "bench-a", 65), (128, 32, "bench-b", 8192)]  # seq_len, rows, model preset, its vocab
VOCAB, EOT, PAD = 8192, 8190, 8191


def build_folder(root: Path, n_tokens: int, seed: int = 0) -> Path:
    """Two domains ('web' 70%, 'code' 30%) of random tokens in documents of log-normal lengths."""
    rng = np.random.default_rng(seed)
    dtype = token_dtype(VOCAB)
    domains: dict[str, Any] = {}
    for name, share in (("web", 0.7), ("code", 0.3)):
        target = int(n_tokens * share)
        stats: dict[str, Any] = {}
        with ShardWriter(root, name, "train", dtype) as w:
            while w.n_tokens < target:
                lengths = np.clip(rng.lognormal(5.5, 1.0, size=2_000).astype(np.int64), 2, 20_000)
                tokens = rng.integers(0, EOT, size=int(lengths.sum()), dtype=np.uint16)
                tokens[np.cumsum(lengths) - 1] = EOT
                w.write(tokens, lengths, lengths * 4)
            stats["train"] = {"documents": w.n_docs, "tokens": w.n_tokens, "bytes": w.n_bytes}
        with ShardWriter(root, name, "val", dtype) as w:
            stats["val"] = {"documents": 0, "tokens": 0, "bytes": 0}
        domains[name] = {**stats, "skipped_empty": 0, "invalid_utf8_documents": 0, "bad_lines": 0, "sources": []}
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "tokenizer": {"kind": "bytes", "vocab_size": VOCAB, "eot_id": EOT, "pad_id": PAD, "sha256": ""},
        "dtype": dtype.name,
        "domains": domains,
        "config": {"synthetic": True},
    }
    manifest["fingerprint"] = fingerprint_of(manifest)
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def time_loader(data: PreparedData, seq_len: int, rows: int, mode: str, seconds: float) -> dict[str, float]:
    t0 = time.perf_counter()
    loader = TokenLoader(data, seq_len=seq_len, global_rows=rows, seed=0, mode=mode)  # type: ignore[arg-type]
    build_s = time.perf_counter() - t0
    for _ in range(20):
        loader.next_batch()
    n, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        for _ in range(50):
            loader.next_batch()
        n += 50
    fill = loader.fill_rate()
    real = sum(fill[d] * w for d, w in loader.weights.items())
    return {"tokens_per_s": n * rows * seq_len / elapsed, "build_s": build_s, "fill_rate": real}


def time_training(preset: str, vocab: int, seq_len: int, rows: int, steps: int) -> float | None:
    """Tokens/s of full training steps of the project's model, or None when it is not available."""
    try:
        from pretrainlab.config import ModelConfig
        from pretrainlab.data.batch import Batch
        from pretrainlab.model import build_model, resolve_model_config
        from pretrainlab.objectives import build_objective
    except ImportError:
        return None
    cfg = resolve_model_config(ModelConfig(preset=preset), vocab_size=vocab, seq_len=seq_len)
    model = build_model(cfg)
    objective = build_objective("next_token", {})
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    tokens = torch.randint(0, vocab, (rows, seq_len + 1))
    batch = Batch(tokens=tokens, loss_mask=None, domains=torch.zeros(rows, dtype=torch.int64))

    def step() -> None:
        out = objective(model, batch)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        out.loss.item()

    for _ in range(2):  # warm-up: optimiser state allocation, allocator caches
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * rows * seq_len / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=50_000_000)
    ap.add_argument("--seconds", type=float, default=2.0, help="timing per loader configuration")
    ap.add_argument("--steps", type=int, default=4, help="timed training steps per shape (0: skip)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        data = PreparedData(build_folder(Path(tmp), args.tokens))
        total = sum(data.domain_tokens().values())
        print(f"synthetic folder: {total / 1e6:.1f}M tokens in {time.perf_counter() - t0:.1f}s")
        results: dict[str, Any] = {
            "tokens": total,
            "torch_threads": torch.get_num_threads(),
            "reference_train_tokens_per_s": REFERENCE_TRAIN_TOKENS_PER_S,
            "shapes": {},
        }
        print(f"{'shape':>10} {'random tok/s':>14} {'packed tok/s':>14} {'fill':>6} {'train tok/s':>12} {'ratio':>7}")
        for seq_len, rows, preset, vocab in SHAPES:
            loader = {m: time_loader(data, seq_len, rows, m, args.seconds) for m in ("random", "packed")}
            train = time_training(preset, vocab, seq_len, rows, args.steps) if args.steps else None
            source = f"measured ({preset})" if train is not None else "reference (nanoGPT preset a)"
            train_figure = train if train is not None else float(REFERENCE_TRAIN_TOKENS_PER_S)
            ratio = min(loader[m]["tokens_per_s"] for m in loader) / train_figure
            key = f"{seq_len}x{rows}"
            results["shapes"][key] = {
                "random_tokens_per_s": round(loader["random"]["tokens_per_s"]),
                "packed_tokens_per_s": round(loader["packed"]["tokens_per_s"]),
                "packed_fill_rate": round(loader["packed"]["fill_rate"], 4),
                "packed_layout_build_s": round(loader["packed"]["build_s"], 3),
                "train_tokens_per_s": round(train_figure),
                "train_source": source,
                "loader_over_train": round(ratio, 1),
                "loader_over_reference": round(
                    min(loader[m]["tokens_per_s"] for m in loader) / REFERENCE_TRAIN_TOKENS_PER_S, 1
                ),
            }
            print(
                f"{key:>10} {loader['random']['tokens_per_s']:>14,.0f} {loader['packed']['tokens_per_s']:>14,.0f} "
                f"{loader['packed']['fill_rate']:>6.3f} {train_figure:>12,.0f} {ratio:>6.0f}x  ({source}; "
                f"packed layout built in {loader['packed']['build_s']:.2f}s)"
            )
    print(f"reference training figure: {REFERENCE_TRAIN_TOKENS_PER_S:,} tokens/s (nanoGPT preset a, quiet machine)")
    print("RESULT " + json.dumps(results))


if __name__ == "__main__":
    main()
