"""Training-loop overhead: the full `Trainer` step vs a bare step of the same model, side by side.

The bare step is the minimum any framework must do (forward + next-token loss + backward + clip +
fused AdamW + zero_grad, batches drawn from the same TokenLoader); the Trainer adds gradient
accumulation bookkeeping, loss normalisation by target tokens, callbacks (stability, sigterm),
the LR schedule, metrics.jsonl lines and the progress display. Both run in one process on one
model, in interleaved rounds, so machine noise hits both alike. Shapes follow the reference preset
b of /work/shared/bench (4 x 128, seq 128, vocab 8192, batch 32 rows).

Usage: python benchmarks/bench_trainer.py [--steps 10] [--rounds 3] [--threads 2] [--precision fp32]
Last line: RESULT {json}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers import make_prepared  # noqa: E402

from pretrainlab.config import RunConfig  # noqa: E402
from pretrainlab.train.callbacks import Callback  # noqa: E402
from pretrainlab.train.precision import autocast  # noqa: E402
from pretrainlab.train.trainer import Trainer  # noqa: E402

VOCAB, SEQ, ROWS = 8192, 128, 32


class _Clock(Callback):
    """Wall time of the training steps only (no validation data; the final checkpoint comes after)."""

    def __init__(self) -> None:
        self.start = 0.0
        self.end = 0.0

    def on_train_start(self, trainer: Trainer) -> None:
        self.start = time.perf_counter()

    def on_step_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        if trainer.step == trainer.cfg.train.steps:  # before the final checkpoint is written
            self.end = time.perf_counter()


def _data(root: Path) -> Path:
    rng = np.random.default_rng(0)
    docs = [list(rng.integers(0, VOCAB - 2, size=int(rng.integers(100, 2000)))) for _ in range(400)]
    return make_prepared(root / "data", train={"web": docs}, vocab_size=VOCAB, eot_id=VOCAB - 2, pad_id=VOCAB - 1)


def _config(root: Path, data: Path, steps: int, threads: int, precision: str, name: str) -> RunConfig:
    return RunConfig.model_validate(
        {
            "name": name,
            "out_dir": str(root / "runs"),
            "overwrite": True,
            "data": {"path": str(data), "seq_len": SEQ},
            "model": {"n_layers": 4, "d_model": 128, "n_heads": 4},
            "schedule": {"warmup_steps": 0},
            "train": {
                "steps": steps,
                "global_batch_tokens": SEQ * ROWS,
                "micro_batch_size": ROWS,
                "precision": precision,
                "threads": threads,
                "progress": False,
                "log_every": 10**9,
            },
            "eval": {"max_tokens_per_domain": 1},
        }
    )


def trainer_round(cfg: RunConfig, steps: int) -> float:
    """Tokens/s of `Trainer.fit` over `steps` steps."""
    trainer = Trainer(cfg)
    clock = _Clock()
    trainer.callbacks.append(clock)
    trainer.fit()
    return steps * SEQ * ROWS / (clock.end - clock.start)


def bare_round(cfg: RunConfig, steps: int) -> float:
    """Tokens/s of the bare loop on a model built the same way."""
    trainer = Trainer(cfg)
    model, opt, objective, loader = trainer.model, trainer.optimizer, trainer.objective, trainer.loader
    dtype = trainer.autocast_dtype
    t0 = time.perf_counter()
    for _ in range(steps):
        batch = loader.next_batch()
        with autocast(trainer.device, dtype):
            out = objective(model, batch)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=True)
        out.loss.item()
    return steps * SEQ * ROWS / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = _data(root)
        cfg = _config(root, data, args.steps, args.threads, args.precision, "bench")
        trainer_round(_config(root, data, 2, args.threads, args.precision, "warmup"), 2)  # imports, kernels
        ours: list[float] = []
        bare: list[float] = []
        for r in range(args.rounds):
            order = (trainer_round, bare_round) if r % 2 == 0 else (bare_round, trainer_round)
            for fn in order:
                (ours if fn is trainer_round else bare).append(fn(cfg, args.steps))
    result: dict[str, Any] = {
        "precision": args.precision,
        "threads": args.threads,
        "trainer_tokens_per_s": round(statistics.median(ours)),
        "bare_tokens_per_s": round(statistics.median(bare)),
        "ratio": round(statistics.median(ours) / statistics.median(bare), 3),
        "rounds": {"trainer": [round(x) for x in ours], "bare": [round(x) for x in bare]},
    }
    print(f"trainer {result['trainer_tokens_per_s']:,} tok/s, bare step {result['bare_tokens_per_s']:,} tok/s, "
          f"ratio {result['ratio']}")
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
