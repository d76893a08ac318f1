"""Speed of the experiment tools, each next to the naive way of doing the same thing, in one run.

1. Sampling: `science.sampling.sample_sequences` (KV cache, batched) against recomputing the whole prefix
   for every new token, for one model and for a 4-member ensemble (tokens/s, identical settings).
2. Ensemble evaluation: `science.ensemble.score_prefix_ensembles` (one forward pass per member per batch
   for all K prefix ensembles) against evaluating each prefix ensemble k = 1..K separately with
   `eval.evaluate` (K(K+1)/2 member passes), on the same windows.
3. Scaling-law fits: one power-law and one Chinchilla fit, and each with 200 bootstrap resamples.

    python benchmarks/bench_science.py [--threads 2] [--width 128] [--layers 4]

The last line is `RESULT {json}`.
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

from pretrainlab.config import ModelConfig
from pretrainlab.model import build_model, resolve_model_config

VOCAB, EOT, PAD = 258, 256, 257


def _models(k: int, layers: int, width: int, seq_len: int) -> list[torch.nn.Module]:
    out = []
    for seed in range(k):
        torch.manual_seed(seed)
        cfg = resolve_model_config(ModelConfig(n_layers=layers, d_model=width, n_heads=max(1, width // 32)),
                                   vocab_size=VOCAB, seq_len=seq_len)
        out.append(build_model(cfg).eval())
    return out


@torch.inference_mode()
def _naive_sample(models: list[torch.nn.Module], n_rows: int, seq_len: int, seed: int) -> np.ndarray:
    """The reference: every step runs the full prefix through every member (no cache)."""
    from pretrainlab.model.ensemble import combine_logits

    gen = torch.Generator().manual_seed(seed)
    rows = torch.full((n_rows, 1), EOT, dtype=torch.long)
    for _ in range(seq_len):
        logits = combine_logits(torch.stack([m.logits(m(rows))[:, -1].float() for m in models]))
        logits[:, PAD] = float("-inf")
        nxt = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=gen)
        rows = torch.cat([rows, nxt], dim=1)
    return rows[:, 1:].numpy()


def bench_sampling(layers: int, width: int, seq_len: int, n_rows: int) -> dict[str, Any]:
    from pretrainlab.science.sampling import sample_sequences

    out: dict[str, Any] = {}
    for k in (1, 4):
        models = _models(k, layers, width, seq_len)
        t = time.perf_counter()
        sample_sequences(models, n_rows=n_rows, seq_len=seq_len, batch_size=n_rows, seed=0, eot_id=EOT, pad_id=PAD)
        cached = time.perf_counter() - t
        t = time.perf_counter()
        _naive_sample(models, n_rows, seq_len, seed=0)
        naive = time.perf_counter() - t
        tokens = n_rows * seq_len
        out[f"k{k}"] = {"cached_tokens_per_s": tokens / cached, "naive_tokens_per_s": tokens / naive,
                        "speedup": naive / cached}
    return out


def _prepared(root: Path, val_tokens: int) -> Path:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from helpers import make_prepared

    rng = np.random.default_rng(0)
    docs = [list(rng.integers(0, 256, size=500)) for _ in range(val_tokens // 500)]
    return make_prepared(root / "data", train={"text": docs[:4]}, val={"text": docs})


def bench_ensemble(layers: int, width: int, seq_len: int, val_tokens: int) -> dict[str, Any]:
    from pretrainlab.data.prepared import PreparedData
    from pretrainlab.eval.evaluate import evaluate
    from pretrainlab.eval.windows import val_windows
    from pretrainlab.model.ensemble import EnsembleDecoder
    from pretrainlab.science.ensemble import score_prefix_ensembles

    k = 4
    models = _models(k, layers, width, seq_len)
    with tempfile.TemporaryDirectory() as tmp:
        data = PreparedData(_prepared(Path(tmp), val_tokens))
        windows = [val_windows(data.shard("text", "val"), seq_len, PAD, None)]
        t = time.perf_counter()
        fast, _ = score_prefix_ensembles(models, windows, combine="logits", batch_size=32,
                                         device=torch.device("cpu"), autocast_dtype=None)
        one_pass = time.perf_counter() - t
        t = time.perf_counter()
        naive = [evaluate(EnsembleDecoder(models[:j]), data, seq_len=seq_len, max_tokens_per_domain=None,
                          batch_size=32, device=torch.device("cpu"), autocast_dtype=None)["val_loss"]
                 for j in range(1, k + 1)]
        separate = time.perf_counter() - t
    ours = (fast[:, 0, 0] / fast[:, 0, 1]).tolist()
    assert np.allclose(ours, naive, atol=1e-5), (ours, naive)
    return {"members": k, "val_tokens": val_tokens, "one_pass_s": one_pass, "separate_s": separate,
            "speedup": separate / one_pass}


def bench_fits() -> dict[str, Any]:
    from pretrainlab.science.fit import fit_chinchilla, fit_power_law

    rng = np.random.default_rng(0)
    n = np.geomspace(1e5, 1e8, 8)
    y = (1.8 + 400 / n ** 0.35) * np.exp(rng.normal(0, 0.01, n.size))
    nn_, dd = np.meshgrid(np.geomspace(1e5, 1e8, 5), np.geomspace(1e7, 1e10, 5))
    yc = (1.7 + 400 / nn_ ** 0.34 + 1000 / dd ** 0.28) * np.exp(rng.normal(0, 0.003, nn_.shape))
    out: dict[str, Any] = {}
    for name, call in (
        ("power", lambda b: fit_power_law(n, y, bootstrap=b)),
        ("chinchilla", lambda b: fit_chinchilla(nn_.ravel(), dd.ravel(), yc.ravel(), bootstrap=b)),
    ):
        t = time.perf_counter()
        call(0)
        single = time.perf_counter() - t
        t = time.perf_counter()
        call(200)
        out[name] = {"fit_s": single, "fit_with_200_bootstrap_s": time.perf_counter() - t}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--val-tokens", type=int, default=65_536)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    result = {
        "shape": f"{args.layers} x {args.width}, vocabulary {VOCAB}, seq_len {args.seq_len}, {args.threads} threads",
        "sampling": bench_sampling(args.layers, args.width, args.seq_len, args.rows),
        "ensemble_eval": bench_ensemble(args.layers, args.width, args.seq_len, args.val_tokens),
        "fits": bench_fits(),
    }
    s = result["sampling"]
    print(f"sampling {args.rows} x {args.seq_len} tokens ({result['shape']}):")
    for k, r in s.items():
        print(f"  {k}: KV cache {r['cached_tokens_per_s']:,.0f} tokens/s, recompute {r['naive_tokens_per_s']:,.0f} "
              f"tokens/s ({r['speedup']:.1f}x)")
    e = result["ensemble_eval"]
    print(f"ensemble K=1..{e['members']} on {e['val_tokens']:,} tokens: one pass {e['one_pass_s']:.2f} s, "
          f"separately {e['separate_s']:.2f} s ({e['speedup']:.2f}x)")
    for law, r in result["fits"].items():
        print(f"fit {law}: {r['fit_s']:.3f} s, with 200 bootstrap resamples {r['fit_with_200_bootstrap_s']:.2f} s")
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
