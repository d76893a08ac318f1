"""Measured peak memory of short runs against `pretrainlab memory`'s estimate (issue 6: within 20%).

Each configuration trains for a few steps in its own process (`pretrainlab train`), so the peak resident
set size (ru_maxrss) belongs to that run alone. The run's end line carries `peak_memory_mb` (measured),
`memory_baseline_mb` (the RSS at trainer start, before the model is built: interpreter, torch, data
handles) and `memory_estimate_mb` = baseline + parameters + buffers + optimiser state + max(gradients +
activations + loss head + loader, evaluation) + touched token pages. The baseline is about 300 MiB, so
the shapes make the model terms about as large, and the script also prints the ratio of the model terms
alone, (peak - baseline) / (estimate - baseline), the honest check of the formulas, and the estimate's
terms, to find which one is off when a ratio is. Each configuration runs under glibc's default malloc
settings and with MALLOC_MMAP_THRESHOLD_=131072 (large blocks mmapped and returned on free), which
separates the allocator's cache from the tensors (docs/memory.md).

Usage: python benchmarks/bench_memory.py [--steps 2] [--threads 2] [--only dense,low_rank] [--malloc default,mmap]
Last line: RESULT {json}.
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
from typing import Any

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers import make_prepared  # noqa: E402

VOCAB, SEQ, MICRO = 8192, 256, 8
MODEL = {"n_layers": 4, "d_model": 256, "n_heads": 4}

CONFIGS: dict[str, dict[str, Any]] = {
    # two micro-batches per step: the gradients of the first coexist with the activations of the second
    "dense": {"train": {"global_batch_tokens": 2 * MICRO * SEQ}},
    "dense-bf16": {"train": {"precision": "bf16"}},
    "low_rank": {"model": {"linear": "low_rank", "linear_options": {"rank_fraction": 0.25}}},
    "galore": {"optim": {"name": "galore", "options": {"rank": 64}}},
    "sparse_low_rank": {"model": {"linear": "sparse_low_rank", "linear_options": {"rank_fraction": 0.25}}},
}


def _data(root: Path) -> Path:
    rng = np.random.default_rng(0)
    docs = [list(rng.integers(0, VOCAB - 2, size=int(rng.integers(200, 2000)))) for _ in range(300)]
    val = [list(rng.integers(0, VOCAB - 2, size=500)) for _ in range(10)]
    return make_prepared(root / "data", train={"web": docs}, val={"web": val}, vocab_size=VOCAB,
                         eot_id=VOCAB - 2, pad_id=VOCAB - 1)


def _config(name: str, root: Path, data: Path, steps: int, threads: int) -> dict[str, Any]:
    tree: dict[str, Any] = {
        "name": name, "out_dir": str(root / "runs"),
        "data": {"path": str(data), "seq_len": SEQ},
        "model": dict(MODEL),
        "optim": {"lr": 1e-3},
        "schedule": {"warmup_steps": 1},
        "train": {"steps": steps, "global_batch_tokens": MICRO * SEQ, "micro_batch_size": MICRO,
                  "precision": "fp32", "compile": False, "progress": False, "log_every": 1, "threads": threads},
        "eval": {"max_tokens_per_domain": 2048, "batch_size": 4},
    }
    for section, values in CONFIGS[name].items():
        tree[section] = {**tree.get(section, {}), **values}
    return tree


def _estimate_terms(tree: dict[str, Any]) -> dict[str, float]:
    from pretrainlab.config import RunConfig
    from pretrainlab.train.memory import command_compute_dtype, estimate_memory, mib, resolve_for_memory
    from pretrainlab.train.batch_plan import plan_batches

    cfg = RunConfig.model_validate(tree)
    model_cfg, _ = resolve_for_memory(cfg)
    plan = plan_batches(cfg, 1)
    est = estimate_memory(cfg, model_cfg, micro_batch_size=plan.micro_batch_size, global_rows=plan.global_rows,
                          compute_dtype=command_compute_dtype(cfg))
    return {k: round(mib(v), 1) for k, v in (
        ("params", est.param_bytes), ("grads", est.grad_bytes), ("optim", est.optim_bytes),
        ("activations", est.activation_bytes), ("copies", est.weight_copy_bytes), ("head", est.head_bytes),
        ("eval", est.eval_bytes))}


def _run(name: str, malloc: str, root: Path, data: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Train configuration `name` in a fresh process; its end line's measured peak and estimate."""
    run_name = f"{name}-{malloc}"
    tree = _config(name, root, data, args.steps, args.threads)
    tree["name"] = run_name
    path = root / f"{run_name}.yaml"
    path.write_text(yaml.safe_dump(tree))
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    if malloc == "mmap":
        env["MALLOC_MMAP_THRESHOLD_"] = "131072"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pretrainlab.cli", "train", str(path)],
                          capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"config": name, "malloc": malloc, "error": proc.stderr[-2000:]}
    lines = [json.loads(line) for line in (root / "runs" / run_name / "metrics.jsonl").read_text().splitlines()]
    end = [r for r in lines if r.get("event") == "end"][-1]
    baseline = end.get("memory_baseline_mb", 0.0)
    peak, est = end["peak_memory_mb"], end["memory_estimate_mb"]
    return {"config": name, "malloc": malloc, "peak_mb": peak, "estimate_mb": est, "ratio": round(peak / est, 3),
            "baseline_mb": baseline, "wall_s": round(wall, 1),
            "model_terms_ratio": round((peak - baseline) / (est - baseline), 3) if baseline else None,
            "terms_mb": _estimate_terms(tree)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default=None, help="comma-separated configuration names")
    ap.add_argument("--malloc", default="default,mmap", help="glibc settings to run under: default (as a run "
                    "starts), mmap (MALLOC_MMAP_THRESHOLD_=131072: large blocks are mmapped and returned on free)")
    args = ap.parse_args()
    names = args.only.split(",") if args.only else ["dense", "dense-bf16", "low_rank", "galore"]
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = _data(root)
        for malloc in args.malloc.split(","):
            for name in names:
                row = _run(name, malloc, root, data, args)
                results.append(row)
                if "error" in row:
                    print(f"{name} [{malloc}]: failed\n{row['error']}")
                    continue
                print(f"{name:16s} [{malloc:7s}] measured {row['peak_mb']:7.1f} MiB  "
                      f"estimate {row['estimate_mb']:7.1f} MiB  ratio {row['ratio']:.3f}  "
                      f"baseline {row['baseline_mb']:6.1f}  model terms ratio {row['model_terms_ratio']}  "
                      f"({row['wall_s']:.0f} s)  terms {row['terms_mb']}", flush=True)
    print("RESULT " + json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
