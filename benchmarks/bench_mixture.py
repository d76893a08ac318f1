"""What changing the data mixture costs: training step time and `TokenLoader.next_batch` time, side by side.

Builds a synthetic 4-domain prepared folder (~2M tokens) in a temp dir, then in one process:

* the training step of three real `Trainer.fit` runs (tiny decoder, 2 x 64, seq_len 64, 8 rows, fp32;
  every step logged, so each carries the mixture metrics): a fixed mixture, `loader.set_weights` called at
  every step (what an online re-weighting callback such as Skill-it does at most), and a 4-stage
  `data.stages` curriculum. The three fits run in threads that pass a baton at every step, so their steps
  interleave one by one (A B C A B C ...) and never overlap: machine load hits every variant alike;
* `next_batch()` alone with the same three mixtures, plus the 4-stage schedule with `data.max_epochs`
  caps, in interleaved rounds;
* the added work itself: one `set_weights`, one `MixtureSchedule.weights_at`, one `mixture_metrics()`.

    python benchmarks/bench_mixture.py [--steps 200] [--rounds 5] [--batches 2000] [--threads 1]

Figures are medians. The last line is `RESULT {json}`.
"""

from __future__ import annotations

import argparse
import json
import contextlib
import io
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pretrainlab.config import RunConfig
from pretrainlab.data.loader import TokenLoader
from pretrainlab.data.mixture_schedule import MixtureSchedule
from pretrainlab.data.prepared import MANIFEST_FORMAT, PreparedData, fingerprint_of
from pretrainlab.data.shards import ShardWriter, token_dtype
from pretrainlab.train.callbacks import Callback

DOMAINS = ("web", "code", "math", "books")
VOCAB, EOT, PAD = 258, 256, 257
SEQ, ROWS = 64, 8
STAGES = [  # a 4-stage curriculum over the whole run
    {"weights": {"web": 4, "code": 1, "math": 1, "books": 1}, "until_fraction": 0.25},
    {"weights": {"web": 2, "code": 2, "math": 1, "books": 1}, "until_fraction": 0.5},
    {"weights": {"web": 1, "code": 2, "math": 2, "books": 1}, "until_fraction": 0.75},
    {"weights": {"web": 1, "code": 1, "math": 3, "books": 1}},
]


def build_folder(root: Path, n_tokens: int, seed: int = 0) -> Path:
    """Four domains of random bytes in documents of log-normal lengths (no validation split)."""
    rng = np.random.default_rng(seed)
    dtype = token_dtype(VOCAB)
    domains: dict[str, Any] = {}
    for name in DOMAINS:
        stats: dict[str, Any] = {}
        with ShardWriter(root, name, "train", dtype) as w:
            while w.n_tokens < n_tokens // len(DOMAINS):
                lengths = np.clip(rng.lognormal(5.0, 1.0, size=1_000).astype(np.int64), 2, 5_000)
                tokens = rng.integers(0, EOT, size=int(lengths.sum()), dtype=np.uint16)
                tokens[np.cumsum(lengths) - 1] = EOT
                w.write(tokens, lengths, lengths)
            stats["train"] = {"documents": w.n_docs, "tokens": w.n_tokens, "bytes": w.n_bytes}
        with ShardWriter(root, name, "val", dtype) as w:
            stats["val"] = {"documents": 0, "tokens": 0, "bytes": 0}
        domains[name] = {**stats, "skipped_empty": 0, "invalid_utf8_documents": 0, "bad_lines": 0, "sources": []}
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "tokenizer": {"kind": "bytes", "vocab_size": VOCAB, "eot_id": EOT, "pad_id": PAD, "sha256": ""},
        "dtype": dtype.name, "domains": domains, "config": {"synthetic": True},
    }
    manifest["fingerprint"] = fingerprint_of(manifest)
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return root


def random_weights(rng: np.random.Generator) -> dict[str, float]:
    return dict(zip(DOMAINS, rng.dirichlet(np.ones(len(DOMAINS))).tolist()))


class Baton:
    """Round-robin turns between n runs: one step each in order, never two at once."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.turn = 0
        self.done = [False] * n
        self.cond = threading.Condition()

    def pass_on(self, i: int) -> None:
        with self.cond:
            nxt = (i + 1) % self.n
            while self.done[nxt] and nxt != i:
                nxt = (nxt + 1) % self.n
            self.turn = nxt
            self.cond.notify_all()

    def wait(self, i: int) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.turn == i)


class StepTimer(Callback):
    """Wall time from on_step_start to on_step_end (first in the list: it brackets the other callbacks).

    It holds the baton from its step's start to its next step's start (so the metrics line and progress
    output of a step are written before another run's step is timed)."""

    name = "bench_step_timer"

    def __init__(self, baton: Baton, index: int) -> None:
        self.baton, self.index = baton, index
        self.times: list[float] = []
        self._t0 = 0.0
        self._holding = False

    def on_step_start(self, trainer: Any) -> None:
        if self._holding:
            self.baton.pass_on(self.index)
        self.baton.wait(self.index)
        self._holding = True
        self._t0 = time.perf_counter()

    def on_step_end(self, trainer: Any, metrics: dict[str, Any]) -> None:
        self.times.append(time.perf_counter() - self._t0)

    def on_train_end(self, trainer: Any) -> None:
        self.baton.done[self.index] = True
        self.baton.pass_on(self.index)


class ReweightEveryStep(Callback):
    """New Dirichlet weights before every step, as an online re-weighting policy would set them."""

    name = "bench_reweight"

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def on_step_start(self, trainer: Any) -> None:
        trainer.loader.set_weights(random_weights(self.rng))


def build_trainer(data: Path, out: Path, variant: str, steps: int, run: int) -> Any:
    from pretrainlab.train.trainer import Trainer

    data_section: dict[str, Any] = {"path": str(data), "seq_len": SEQ}
    if variant == "4-stage schedule":
        data_section["stages"] = STAGES
    else:
        data_section["weights"] = {d: 1.0 for d in DOMAINS}
    cfg = RunConfig.model_validate({
        "name": f"run-{run}", "out_dir": str(out), "data": data_section,
        "model": {"n_layers": 2, "d_model": 64, "n_heads": 2},
        "schedule": {"warmup_steps": 2},
        "train": {"steps": steps, "global_batch_tokens": SEQ * ROWS, "micro_batch_size": ROWS,
                  "precision": "fp32", "progress": False, "log_every": 1, "compile": False,
                  "threads": torch.get_num_threads()},
    })
    trainer = Trainer(cfg)
    if variant == "set_weights every step":
        trainer.callbacks.append(ReweightEveryStep(run))
    return trainer


def interleaved_step_times(data: Path, out: Path, variants: list[str], steps: int) -> dict[str, list[float]]:
    """Each variant's step times (the first 5 steps, warm-up, left out) from fits whose steps alternate."""
    with contextlib.redirect_stdout(io.StringIO()):
        trainers = [build_trainer(data, out, v, steps, i) for i, v in enumerate(variants)]
    baton = Baton(len(variants))
    timers = [StepTimer(baton, i) for i in range(len(variants))]
    for trainer, timer in zip(trainers, timers):
        trainer.callbacks.insert(0, timer)
    errors: list[BaseException] = []

    def fit(trainer: Any) -> None:
        try:
            trainer.fit()
        except BaseException as e:  # noqa: BLE001 - reported after the join
            errors.append(e)

    with contextlib.redirect_stdout(io.StringIO()):
        threads = [threading.Thread(target=fit, args=(t,)) for t in trainers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
    return {v: timer.times[5:] for v, timer in zip(variants, timers)}


def loader_times(data: PreparedData, variant: str, batches: int) -> list[float]:
    """Per-call time of next_batch (and set_weights before it, for that variant)."""
    kwargs: dict[str, Any] = {}
    if variant in ("4-stage schedule", "4-stage + max_epochs caps"):
        kwargs["schedule"] = MixtureSchedule.from_stages(STAGES, domains=data.domains, steps=batches,
                                                         tokens_per_batch=SEQ * ROWS)
    else:
        kwargs["weights"] = {d: 1.0 for d in DOMAINS}
    if variant == "4-stage + max_epochs caps":
        kwargs["max_epochs"] = 1000.0  # checked every batch, never reached: the check is what costs
    loader = TokenLoader(data, seq_len=SEQ, global_rows=ROWS, seed=0, **kwargs)
    rng = np.random.default_rng(0)
    weights = [random_weights(rng) for _ in range(batches)] if variant == "set_weights every batch" else None
    out = []
    for b in range(batches):
        t0 = time.perf_counter()
        if weights is not None:
            loader.set_weights(weights[b])
        loader.next_batch()
        out.append(time.perf_counter() - t0)
    return out


def added_work_us(data: PreparedData, repeats: int = 20_000) -> dict[str, float]:
    """Median microseconds of the per-step mixture work on its own."""
    fixed = TokenLoader(data, seq_len=SEQ, global_rows=ROWS, seed=0)
    schedule = MixtureSchedule.from_stages(STAGES, domains=data.domains, steps=100, tokens_per_batch=SEQ * ROWS)
    rng = np.random.default_rng(0)
    weights = [random_weights(rng) for _ in range(256)]
    timings: dict[str, Any] = {
        "set_weights": lambda i: fixed.set_weights(weights[i % 256]),
        "schedule.weights_at": lambda i: schedule.weights_at((i % 100) * SEQ * ROWS),
        "mixture_metrics()": lambda i: fixed.mixture_metrics(),
    }
    out = {}
    for name, fn in timings.items():
        times = []
        for i in range(repeats):
            t0 = time.perf_counter()
            fn(i)
            times.append(time.perf_counter() - t0)
        out[name] = 1e6 * statistics.median(times)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batches", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tokens", type=int, default=2_000_000)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    train_variants = ["fixed mixture", "set_weights every step", "4-stage schedule"]
    loader_variants = ["fixed mixture", "set_weights every batch", "4-stage schedule", "4-stage + max_epochs caps"]
    calls: dict[str, list[float]] = {v: [] for v in loader_variants}
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_folder(Path(tmp) / "data", args.tokens)
        data = PreparedData(folder)
        steps = interleaved_step_times(folder, Path(tmp) / "runs", train_variants, args.steps)
        for _ in range(args.rounds):
            for v in loader_variants:
                calls[v] += loader_times(data, v, args.batches)
        added = added_work_us(data)

    base_step = statistics.median(steps["fixed mixture"])
    base_call = statistics.median(calls["fixed mixture"])
    print(f"training step (2 x 64 decoder, {ROWS} x {SEQ} tokens, fp32, {args.threads} thread(s)); "
          f"median of {args.steps - 5} interleaved steps each")
    print(f"{'mixture':<28}{'ms/step':>10}{'vs fixed':>10}")
    result: dict[str, Any] = {"step_ms": {}, "next_batch_us": {}}
    for v in train_variants:
        m = statistics.median(steps[v])
        result["step_ms"][v] = round(1e3 * m, 3)
        print(f"{v:<28}{1e3 * m:>10.3f}{m / base_step:>9.3f}x")
    print(f"\nloader next_batch() ({ROWS} rows x {SEQ + 1} tokens); median of {args.rounds} x {args.batches} calls")
    print(f"{'mixture':<28}{'us/batch':>10}{'vs fixed':>10}")
    for v in loader_variants:
        m = statistics.median(calls[v])
        result["next_batch_us"][v] = round(1e6 * m, 2)
        print(f"{v:<28}{1e6 * m:>10.2f}{m / base_call:>9.3f}x")
    print("\nthe added work alone (median us): " + ", ".join(f"{k} {v:.2f}" for k, v in added.items()))
    result["added_us"] = {k: round(v, 3) for k, v in added.items()}
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
