"""HellaSwag validation with a trained run: examples/s, tokens/s, wall time, and the shared-context speed-up.

Scores HellaSwag's validation set (10,042 questions x 4 endings; the text layout, .bz2 read directly)
with the run's newest checkpoint through `pretrainlab.eval.tasks` (the likelihood engine: each question's
context runs once into a KV cache, its 4 endings in one batch from it). Then, on a subset of questions
(`--compare`, 300 by default), the same requests are scored both ways in the same process:

- naive: one full forward of context + ending per choice (the context recomputed for every ending), and
- engine: the shared-context engine,

printing each wall time, the speed-up, and the largest difference between the two log-likelihoods (they
must agree: fp32 on the CPU to ~1e-4).

    python benchmarks/bench_tasks.py --run RUN [--file PATH] [--limit N] [--compare 300] [--device auto] [--threads N]

Nothing is trained: `--run` is a run folder (e.g. the quickstart's). The file defaults to
/work/shared/data/eval/hellaswag/hellaswag_val_full.txt.bz2; when it is absent the script says so and
exits 0. "tokens" are request tokens, context + ending for every choice (what a per-choice evaluation
forwards); "forwarded" counts what the engine actually runs (each context once + the endings).
The last line is `RESULT {json}`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from pretrainlab.eval.likelihood import ContinuationScore, score_continuations
from pretrainlab.eval.tasks import Engine, load_tasks, resolve_tasks, score_tasks

DEFAULT_FILE = "/work/shared/data/eval/hellaswag/hellaswag_val_full.txt.bz2"


class NaiveEngine:
    """The per-choice baseline: one full forward of (context + continuation) per request, batch of one."""

    def __init__(self, model: torch.nn.Module, bos_id: int, device: torch.device, autocast_dtype: torch.dtype | None):
        self.model, self.bos_id, self.device, self.autocast_dtype = model, bos_id, device, autocast_dtype
        self.window = int(model.cfg.max_seq_len)  # type: ignore[union-attr]

    @torch.no_grad()
    def continuations(self, requests: Sequence[tuple[Sequence[int], Sequence[int]]]) -> list[ContinuationScore]:
        out = []
        for ctx, cont in requests:
            seq = ((list(ctx) or [self.bos_id]) + list(cont))[-(self.window + 1) :]
            n_ctx = len(seq) - len(cont)
            x = torch.tensor([seq[:-1]], device=self.device)
            with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
                hidden = self.model(x)[0, n_ctx - 1 :]
            lp = F.log_softmax(self.model.logits(hidden).float(), dim=-1)  # type: ignore[operator]
            tgt = torch.tensor(list(cont), device=self.device)
            out.append(ContinuationScore(float(lp.gather(-1, tgt[:, None]).sum()), bool((lp.argmax(-1) == tgt).all()),
                                         len(cont)))
        return out

    def rolling(self, tokens: Sequence[int]) -> tuple[float, int]:
        raise NotImplementedError


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Any, device: torch.device) -> tuple[Any, float]:
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="run folder whose newest checkpoint is scored")
    ap.add_argument("--file", default=DEFAULT_FILE, help="HellaSwag file (text layout or jsonl, .bz2 is fine)")
    ap.add_argument("--limit", type=int, default=None, help="score only the first N questions")
    ap.add_argument("--compare", type=int, default=300, help="questions scored both naively and with the engine")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    if not Path(args.file).is_file():
        print(f"skipped: {args.file} not found (pass --file PATH to a HellaSwag validation file)")
        print("RESULT " + json.dumps({"skipped": f"{args.file} not found"}))
        return 0

    from pretrainlab.eval.entry import eval_autocast_dtype
    from pretrainlab.eval.load import load_run
    from pretrainlab.train.distributed import resolve_device

    device = resolve_device(args.device)
    model, cfg, prepared, ckpt = load_run(args.run, device=device)
    autocast = eval_autocast_dtype(cfg, device)
    params = sum(p.numel() for p in model.parameters())
    print(f"model   {args.run} @ {ckpt.name}: {cfg.model.n_layers or '?'} layers, {params:,} parameters, "
          f"window {model.cfg.max_seq_len}, {device}" + (f", autocast {autocast}" if autocast else ", fp32"))

    specs = resolve_tasks({"hellaswag": args.file})
    (task,), read_s = _timed(lambda: load_tasks(specs, prepared.tokenizer, limit=args.limit), device)
    requests = task.encoded.requests
    n_q, n_req = task.n_scored, len(requests)
    req_tokens = sum(len(c) + len(k) for c, k in requests)
    owners = task.encoded.owners
    forwarded = sum(len(requests[i][0]) for i in range(n_req) if i == 0 or owners[i] != owners[i - 1])
    forwarded += sum(len(k) for _, k in requests)  # each context once, every ending
    print(f"file    {args.file}: {task.n_examples:,} questions, scoring {n_q:,} ({n_req:,} requests, "
          f"{req_tokens:,} request tokens, {forwarded:,} forwarded); read + tokenised in {read_s:.1f} s")

    engine = Engine(model, prepared.eot_id, device, autocast)
    engine.continuations(requests[:8])  # warm-up (allocator, kernels)
    results, wall = _timed(lambda: score_tasks([task], engine), device)
    acc, acc_norm = results["task/hellaswag/acc"], results["task/hellaswag/acc_norm"]
    full = {"questions": n_q, "wall_s": wall, "examples_per_s": n_q / wall, "tokens_per_s": req_tokens / wall,
            "forwarded_tokens_per_s": forwarded / wall, "acc": acc, "acc_norm": acc_norm}
    print(f"engine  {n_q:,} questions in {wall:.1f} s: {n_q / wall:,.1f} examples/s, {req_tokens / wall:,.0f} "
          f"request tokens/s ({forwarded / wall:,.0f} forwarded/s); acc {acc:.4f}, acc_norm {acc_norm:.4f}")

    k = min(args.compare, n_q)
    subset = [i for i, owner in enumerate(task.encoded.owners) if owner < k]
    sub_requests = [requests[i] for i in subset]
    naive = NaiveEngine(model, prepared.eot_id, device, autocast)
    naive_scores, naive_s = _timed(lambda: naive.continuations(sub_requests), device)

    rows_scores, rows_s = _timed(lambda: score_continuations(model, sub_requests, device=device, autocast_dtype=autocast,
                                                             bos_id=prepared.eot_id, share_contexts=False), device)
    engine_scores, engine_s = _timed(lambda: engine.continuations(sub_requests), device)
    diff = max(abs(a.logprob - b.logprob) for other in (naive_scores, rows_scores)
               for a, b in zip(other, engine_scores))
    compare = {"questions": k, "naive_s": naive_s, "rows_s": rows_s, "engine_s": engine_s,
               "speedup": naive_s / engine_s, "speedup_vs_rows": rows_s / engine_s, "max_abs_logprob_diff": diff}
    print(f"compare {k} questions: per-choice forward, batch 1: {naive_s:.2f} s ({k / naive_s:,.1f} examples/s); "
          f"per-choice rows batched: {rows_s:.2f} s ({k / rows_s:,.1f} examples/s); shared-context engine "
          f"{engine_s:.2f} s ({k / engine_s:,.1f} examples/s): {naive_s / engine_s:.2f}x and "
          f"{rows_s / engine_s:.2f}x; max |log-likelihood difference| {diff:.2e}")
    print("RESULT " + json.dumps({"run": str(args.run), "device": str(device), "params": params, "full": full,
                                  "compare": compare}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
