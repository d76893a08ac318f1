"""`pretrainlab quickstart`: the whole pipeline in a few minutes on the built-in stdlib corpus.

prepare (byte-level BPE on the interpreter's standard library, ~2% of files held out) -> a throughput
probe that sets `train.steps` so the cosine schedule completes within the time budget -> train ->
validation bits-per-byte next to gzip -9 on the same held-out files -> a generated sample -> next steps.

The defaults live in `configs/quickstart.yaml` (a `prepare:` and a `run:` section). Overrides whose key
starts with `prepare.` go to the prepare config, all others to the run config.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from pretrainlab.config import PrepareConfig, RunConfig, apply_overrides, load_yaml, parse_override, validate
from pretrainlab.errors import ConfigError
from pretrainlab.train.callbacks import Callback

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "quickstart.yaml"
SAMPLE_PROMPT = "def "
PROBE_STEPS = 3
SETUP_ALLOWANCE_S = 75.0
"""Time allowed, beyond the training budget, for imports, prepare and the throughput probe."""
FINISH_RESERVE_S = 25.0
"""Time kept after training for the final evaluation, checkpoint, gzip comparison and sample."""


def quickstart(out: str | Path = "quickstart", minutes: float = 3.0, overrides: list[str] | None = None) -> int:
    """Prepare, train for `minutes`, evaluate against gzip, sample; write `<out>/quickstart.json`."""
    if not minutes > 0:
        raise ConfigError(f"--minutes must be > 0 (got {minutes})", hint="e.g. --minutes 3")
    started = time.perf_counter()
    out = Path(out)
    prep_cfg, run_cfg = quickstart_configs(out, overrides or [])
    budget_s = minutes * 60.0

    data = _prepare_or_reuse(prep_cfg)
    if not any(data.shard(d, "val").n_tokens > 1 for d in data.domains):
        raise ConfigError(
            f"{data.path} has no validation documents, so neither the model nor gzip can be measured",
            hint="raise prepare.validation.fraction (or use more files: prepare.sources.0.max_files)",
        )
    threads, step_s, timings = plan_threads(run_cfg, data, max_seconds=max(1.0, 0.04 * budget_s))
    # The whole command ends by `deadline`: a slow prepare shortens training (the schedule still completes).
    deadline = started + budget_s + SETUP_ALLOWANCE_S + FINISH_RESERVE_S
    train_budget_s = max(step_s, min(budget_s, deadline - FINISH_RESERVE_S - time.perf_counter()))
    steps = max(1, int(train_budget_s / step_s))
    run_cfg = run_cfg.model_copy(
        update={"train": run_cfg.train.model_copy(update={"steps": steps, "threads": threads})}
    )
    probe = ", ".join(f"{n} thread{'s' if n > 1 else ''} {t:.2f} s/step" for n, t in timings.items())
    _say(f"throughput probe: {probe} -> {threads} thread{'s' if threads > 1 else ''}, {steps} steps of "
         f"{run_cfg.train.global_batch_tokens:,} tokens in {train_budget_s:.0f} s")

    from pretrainlab.train.trainer import Trainer

    trainer = Trainer(run_cfg)
    train_start = time.perf_counter()
    # A safety net for a machine that slows down after the probe: stop (the schedule unfinished) in time.
    trainer.callbacks.append(TimeLimit(max(train_budget_s, deadline - FINISH_RESERVE_S - train_start)))
    final = trainer.fit()
    train_s = time.perf_counter() - train_start

    metrics = _full_validation(trainer, final)
    baseline = _gzip(data)
    sample = _sample(trainer, data)
    record = {
        "run_dir": str(trainer.run_dir),
        "data": str(data.path),
        "steps": trainer.step,
        "planned_steps": steps,
        "tokens": trainer.tokens,
        "params": trainer.param_counts,
        "train_s": round(train_s, 2),
        "wall_s": round(time.perf_counter() - started, 2),
        "val_loss": metrics["val_loss"],
        "val_bpb": metrics["val_bpb"],
        "val_tokens": metrics["val_tokens"],
        "gzip_per_document_bpb": baseline.per_document_bpb,
        "gzip_concatenated_bpb": baseline.concatenated_bpb,
        "val_documents": baseline.documents,
        "val_bytes": baseline.bytes,
        "sample_prompt": SAMPLE_PROMPT,
        "sample": sample,
    }
    (out / "quickstart.json").write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    _print_summary(record, out)
    return 0


def quickstart_configs(out: Path, overrides: list[str]) -> tuple[PrepareConfig, RunConfig]:
    """The default configs with `overrides` applied and the output paths placed under `out`."""
    tree = load_yaml(DEFAULT_CONFIG)
    prep_over = [o for o in overrides if parse_override(o)[0][0] == "prepare"]
    run_over = ["run." + o for o in overrides if parse_override(o)[0][0] != "prepare"]
    tree = apply_overrides(tree, prep_over + run_over)
    unknown = set(tree) - {"prepare", "run"}
    if unknown:
        raise ConfigError(f"{DEFAULT_CONFIG}: unknown sections {sorted(unknown)}")
    prep_tree, run_tree = tree.get("prepare") or {}, tree.get("run") or {}
    prep_tree.update(output=str(out / "data"), overwrite=True)
    run_tree.update(out_dir=str(out), overwrite=True)
    run_tree.setdefault("data", {})["path"] = str(out / "data")
    prep_cfg = validate(PrepareConfig, prep_tree, source="quickstart prepare config")
    run_cfg = validate(RunConfig, run_tree, source="quickstart run config")
    return prep_cfg, run_cfg


def plan_threads(cfg: RunConfig, data: Any, *, max_seconds: float) -> tuple[int, float, dict[int, float]]:
    """(threads, seconds per step, every timing) for `cfg`: one thread against all of them, the faster kept.

    On a machine shared with other busy processes, intra-op parallelism can be several times slower than
    a single thread (each parallel region waits for its slowest, descheduled thread), while on an idle
    machine all cores win; measuring both settles it. An explicit `train.threads` (or an accelerator,
    where CPU threads hardly matter) is only timed.
    """
    from pretrainlab.train.distributed import resolve_device

    if cfg.train.threads is not None or resolve_device(cfg.device).type != "cpu":
        n = cfg.train.threads or torch.get_num_threads()
        t = measure_step_seconds(cfg, data, threads=n, max_seconds=max_seconds)
        return n, t, {n: t}
    all_threads = torch.get_num_threads()
    timings = {1: measure_step_seconds(cfg, data, threads=1, max_seconds=max_seconds)}
    if all_threads > 1:
        timings[all_threads] = measure_step_seconds(
            cfg, data, threads=all_threads, max_seconds=max_seconds, give_up_s=timings[1]
        )
    best = min(timings, key=lambda n: timings[n])
    torch.set_num_threads(best)
    return best, timings[best], timings


def measure_step_seconds(
    cfg: RunConfig,
    data: Any,
    *,
    threads: int | None = None,
    steps: int = PROBE_STEPS,
    max_seconds: float = 30.0,
    give_up_s: float | None = None,
) -> float:
    """Seconds per optimiser step of `cfg` on this machine: the median of up to `steps` timed steps after
    a warm-up one, each a full step as the trainer runs it (micro-batches, backward, clipping, optimiser).

    Timing stops early once the probe has spent `max_seconds` (at least one step is always timed). With
    `give_up_s`, a timed step slower than that (or a warm-up step three times slower) ends the probe at
    once and its time is returned: the caller only needs to know it lost.
    """
    if threads is not None:
        torch.set_num_threads(threads)
    from pretrainlab.data.batch import Batch
    from pretrainlab.model import build_model, resolve_model_config
    from pretrainlab.objectives import build_objective
    from pretrainlab.optim import build_optimizer
    from pretrainlab.train.batch_plan import plan_batches
    from pretrainlab.train.distributed import resolve_device
    from pretrainlab.train.precision import autocast, autocast_dtype

    device = resolve_device(cfg.device)
    plan = plan_batches(cfg)
    dtype = autocast_dtype(cfg.train.precision, device)
    model = build_model(resolve_model_config(cfg.model, vocab_size=data.vocab_size, seq_len=cfg.data.seq_len))
    model.to(device).train()
    optimizer = build_optimizer(model, cfg.optim)
    objective = build_objective(cfg.objective, cfg.objective_options)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, data.vocab_size, (plan.micro_batch_size, cfg.data.seq_len + 1), generator=g)
    batch = Batch(tokens=tokens, loss_mask=None, domains=torch.zeros(plan.micro_batch_size, dtype=torch.long))
    batch = batch.to(device)
    times: list[float] = []
    probe_start = time.perf_counter()
    for i in range(steps + 1):
        t0 = time.perf_counter()
        for _ in range(plan.accum_steps):
            with autocast(device, dtype):
                loss = objective(model, batch).loss
            loss.backward()
        if cfg.train.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip, foreach=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.detach().item()  # a sync point on accelerators
        took = time.perf_counter() - t0
        if give_up_s is not None and took > give_up_s * (3.0 if i == 0 else 1.0):
            return took
        if i > 0:
            times.append(took)
            if time.perf_counter() - probe_start > max_seconds:
                break
    return sorted(times)[len(times) // 2]


class TimeLimit(Callback):
    """Stop training (with a checkpoint) once it has run `limit_s` seconds."""

    name = "quickstart_time_limit"

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self.start = time.perf_counter()

    def on_train_start(self, trainer: Any) -> None:
        self.start = time.perf_counter()

    def on_step_end(self, trainer: Any, metrics: dict[str, Any]) -> None:
        if time.perf_counter() - self.start > self.limit_s:
            trainer.request_stop(f"time limit of {self.limit_s:.0f} s")


def _prepare_or_reuse(cfg: PrepareConfig) -> Any:
    """Open `cfg.output` when it already holds data prepared with this exact config, else prepare it."""
    from pretrainlab.data.prepare import prepare
    from pretrainlab.data.prepared import PreparedData
    from pretrainlab.errors import DataError

    wanted = cfg.model_dump(mode="json")
    for key in ("output", "overwrite"):
        wanted.pop(key, None)
    if (Path(cfg.output) / "manifest.json").is_file():
        try:
            existing = PreparedData(cfg.output)
            if existing.manifest.get("config") == wanted:
                _say(f"reusing the prepared data in {cfg.output} (same config)")
                return existing
        except DataError:
            pass
    _say("preparing the standard library corpus (byte-level BPE, held-out files for validation)")
    return PreparedData(prepare(cfg, progress=False))


def _full_validation(trainer: Any, final: dict[str, Any]) -> dict[str, float]:
    """Validation over every held-out token (what gzip is compared on): the trainer's final figures when
    they cover everything, else a fresh evaluation of the trained model."""
    cfg = trainer.cfg
    if cfg.eval.max_tokens_per_domain is None and "val_bpb" in final:
        return {k: float(v) for k, v in final.items() if k.startswith("val_")}
    from pretrainlab.eval.evaluate import evaluate

    return evaluate(
        trainer.model,
        trainer.data,
        seq_len=cfg.data.seq_len,
        max_tokens_per_domain=None,
        batch_size=cfg.eval.batch_size,
        device=trainer.device,
        autocast_dtype=trainer.autocast_dtype,
    )


def _gzip(data: Any) -> Any:
    from pretrainlab.eval.gzip_baseline import gzip_baseline

    return gzip_baseline(data)


def _sample(trainer: Any, data: Any) -> str:
    from pretrainlab.eval.generate import generate

    return generate(
        trainer.module,
        data.tokenizer,
        SAMPLE_PROMPT,
        max_tokens=160,
        temperature=0.8,
        top_k=50,
        seed=0,
        device=trainer.device,
        max_seq_len=trainer.model_cfg.max_seq_len,
    )


def _print_summary(r: dict[str, Any], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.rule("sample")
    console.print(r["sample_prompt"] + r["sample"], markup=False, highlight=False)
    table = Table(title=f"held-out stdlib code: {r['val_documents']} files, {r['val_bytes']:,} bytes")
    table.add_column("compressor")
    table.add_column("bits/byte", justify="right")
    table.add_row(f"this model ({r['steps']} steps, {r['tokens']:,} tokens, {r['train_s']:.0f} s)", f"{r['val_bpb']:.3f}",
                  style="bold")
    table.add_row("gzip -9, each file alone", f"{r['gzip_per_document_bpb']:.3f}")
    table.add_row("gzip -9, files concatenated", f"{r['gzip_concatenated_bpb']:.3f}")
    console.print(table)
    console.print(f"{gzip_verdict(r)}; total wall time {r['wall_s']:.0f} s")
    run = r["run_dir"]
    console.print(
        f"\nrun folder: {run}  (config.yaml, metrics.jsonl, checkpoints/); summary: {out / 'quickstart.json'}\n"
        "next:\n"
        f"  pretrainlab generate {run} --prompt \"class \" --max-tokens 200\n"
        f"  pretrainlab eval {run}\n"
        f"  pretrainlab train {run}/config.yaml name=longer train.steps={max(2 * r['steps'], 100)}",
        markup=False,
        highlight=False,
    )


def _say(text: str) -> None:
    print(f"[quickstart] {text}", flush=True)


def gzip_verdict(r: dict[str, Any]) -> str:
    """One honest sentence: the model against both gzip -9 figures (each file alone, and concatenated)."""
    bpb, alone, joined = r["val_bpb"], r["gzip_per_document_bpb"], r["gzip_concatenated_bpb"]
    if bpb < min(alone, joined):
        return f"the model beats gzip -9 ({bpb:.3f} vs {min(alone, joined):.3f} bits per byte at gzip's best)"
    if bpb < max(alone, joined):
        return (f"the model beats gzip -9 on each file alone ({bpb:.3f} vs {alone:.3f}) but not on the files "
                f"concatenated ({joined:.3f}): train longer (--minutes)")
    return f"the model does not beat gzip -9 ({bpb:.3f} vs {min(alone, joined):.3f} bits per byte): train longer (--minutes)"
