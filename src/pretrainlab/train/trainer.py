"""The training loop: one code path for 1 or N processes, CPU or GPU, and every recipe.

Each optimiser step draws one global batch (this rank's rows), runs it as micro-batches with
gradient accumulation, normalises the summed loss by the step's target tokens over all micro-batches
and ranks (so packed and masked batches weigh each token equally, and 1 process equals N), clips
the gradient norm, asks the callbacks whether to apply the update, and steps the optimiser with the
scheduled learning rate. Around it: evaluation, metrics.jsonl, checkpoints, exact resume.

The loop is never edited for a recipe: models come from registries, losses from objectives, the
data mixture through `trainer.loader.set_weights`, and everything else through callbacks
(`train/callbacks.py`).
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pretrainlab.config import RunConfig
from pretrainlab.data.prepared import PreparedData
from pretrainlab.errors import ConfigError, DataError
from pretrainlab.optim import build_optimizer, build_schedule, check_optimizer, check_schedule
from pretrainlab.train.batch_plan import plan_batches
from pretrainlab.train.callbacks import Callback, StepInfo, build_callbacks, default_callbacks
from pretrainlab.train.compile_choice import choose_compile
from pretrainlab.train.distributed import DistContext
from pretrainlab.train.metrics import MetricsWriter, ProgressDisplay, ThroughputMeter, read_metrics
from pretrainlab.train.precision import autocast, autocast_dtype, precision_name
from pretrainlab.train.run_folder import METRICS_FILE, environment, prepare_run_dir, write_config, write_env
from pretrainlab.train.trackers import check_trackers, start_trackers


class Trainer:
    """Builds everything a run needs from a RunConfig (config errors first, then data, model, optimiser)
    and trains it with `fit()`. The run folder is `Path(cfg.out_dir) / cfg.name`.

    Public state for callbacks: `cfg`, `ctx`, `data`, `loader`, `model` (possibly wrapped), `module`
    (the plain Decoder), `optimizer`, `plan`, `step` (optimiser steps done), `tokens`, `run_dir`,
    `callbacks`, `exit_code`.
    """

    def __init__(self, cfg: RunConfig, *, resume: bool = False, ctx: DistContext | None = None) -> None:
        from pretrainlab.data.loader import TokenLoader
        from pretrainlab.model import build_model, count_parameters, flops_per_token, resolve_model_config
        from pretrainlab.objectives import build_objective
        from pretrainlab.train.distributed import init_distributed, unwrap_model, wrap_model

        self.cfg = cfg
        self.resume = resume
        self.ctx = ctx if ctx is not None else init_distributed(cfg.parallel, cfg.device)
        self.device = self.ctx.device
        self.is_main = self.ctx.is_main

        # Everything that can be wrong with the config is checked before the model is built.
        self.plan = plan_batches(cfg, self.ctx.world_size)
        check_schedule(cfg.schedule, cfg.train.steps)
        check_optimizer(cfg.optim)
        check_trackers(cfg.trackers)
        build_callbacks(cfg.callbacks, defaults=default_callbacks(cfg))  # their errors first
        self.objective = build_objective(cfg.objective, cfg.objective_options)
        self.data = PreparedData(cfg.data.path)
        # Continued pretraining: the source fills the model section; a resume with a checkpoint of its own
        # takes it from its config.yaml and never opens the source.
        self.init_source = None
        if cfg.init_from is not None:
            from pretrainlab.train.init_from import resolve_init_from

            run_dir = Path(cfg.out_dir) / cfg.name
            cfg, self.init_source = resolve_init_from(cfg, self.data, run_dir=run_dir, resume=resume, warn=self._say)
            self.cfg = cfg
        elif cfg.init_optimizer:
            raise ConfigError("init_optimizer=true needs init_from (the run whose optimiser state to load)",
                              hint="set init_from=RUN_DIR, or remove init_optimizer")
        # built now: the model section may have been filled from init_from (e.g. model.linear's own callbacks)
        self.callbacks: list[Callback] = build_callbacks(cfg.callbacks, defaults=default_callbacks(cfg))
        self.model_cfg = resolve_model_config(cfg.model, vocab_size=self.data.vocab_size, seq_len=cfg.data.seq_len)
        schedule = None
        if cfg.data.stages:
            from pretrainlab.data.mixture_schedule import MixtureSchedule

            schedule = MixtureSchedule.from_stages(cfg.data.stages, domains=self.data.domains, steps=cfg.train.steps,
                                                   tokens_per_batch=self.plan.tokens_per_step)
        self.loader = TokenLoader(
            self.data,
            seq_len=cfg.data.seq_len,
            global_rows=self.plan.global_rows,
            seed=cfg.seed,
            mode=cfg.data.mode,
            weights=cfg.data.weights,
            rank=self.ctx.rank,
            world_size=self.ctx.world_size,
            schedule=schedule,
            max_epochs=cfg.data.max_epochs,
        )
        self._has_val = any(self.data.shard(d, "val").n_tokens > 1 for d in self.data.domains)
        self.autocast_dtype = autocast_dtype(cfg.train.precision, self.device)
        bind = getattr(self.objective, "bind", None)
        if callable(bind):  # objectives that need more than a batch (e.g. a teacher) set up here
            bind(self)
        self.run_dir = Path(cfg.out_dir) / cfg.name
        if self.is_main:
            prepare_run_dir(cfg, resume=resume)
        _barrier(self.ctx)

        from pretrainlab.train.memory import current_rss_bytes, reset_peak_memory

        self.memory_baseline_rss = current_rss_bytes()  # the CPU memory estimate's baseline: before the model
        reset_peak_memory(self.device)  # CUDA: the end line's peak is this run's (CPU: the process's lifetime peak)
        _seed_everything(cfg.seed)
        _set_deterministic(cfg.train.deterministic, self.device)
        model = build_model(self.model_cfg)
        if self.init_source is not None:  # before wrapping: DDP/FSDP start from the loaded weights
            self.init_source.load_into(model, run_dir=self.run_dir if resume else None, say=self._say)
        self.wrapped = wrap_model(model, self.ctx)
        self.module = unwrap_model(self.wrapped)
        self.optimizer = build_optimizer(self.module, cfg.optim)
        if self.init_source is not None:  # init_optimizer: the source's state where names and shapes match
            self.init_source.load_optimizer_into(self.wrapped, self.optimizer, say=self._say)
        self.lr_multiplier = build_schedule(cfg.schedule, cfg.train.steps)
        self.param_counts = count_parameters(self.module, self.model_cfg)
        self.flops_per_token = float(flops_per_token(self.model_cfg, cfg.data.seq_len))
        self.compiled, self.compile_reason = choose_compile(
            cfg.train.compile,
            device=self.device,
            deterministic=cfg.train.deterministic,
            total_flops=self.flops_per_token * self.plan.tokens_per_step * cfg.train.steps,
            peak_flops=self._peak_flops() if cfg.train.compile == "auto" else None,
        )
        self.model = torch.compile(self.wrapped) if self.compiled else self.wrapped

        self.step = 0
        self.tokens = 0
        self.elapsed_s = 0.0  # training wall time of earlier sessions of this run (resume)
        self.exit_code = 0
        self.last_checkpoint: Path | None = None
        self.last_metrics: dict[str, Any] = {}
        self._stop: tuple[str, bool, int] | None = None
        self._checkpointed_step = -1
        self._restored_from: Path | None = None
        self.writer: MetricsWriter | None = None
        self.progress: ProgressDisplay | None = None
        if resume:
            self._restore()

    # ------------------------------------------------------------------ public API for callbacks

    def request_stop(self, reason: str, *, checkpoint: bool = True, exit_code: int = 0) -> None:
        """End training after the current step (with a checkpoint unless `checkpoint=False`);
        `fit` then returns and `exit_code` tells the CLI what to exit with."""
        if self._stop is None:
            self._stop = (reason, checkpoint, exit_code)

    @property
    def lr(self) -> float:
        """The learning rate of the next step (first parameter group)."""
        return self.cfg.optim.lr * self.lr_multiplier(self.step)

    # ------------------------------------------------------------------ the loop

    def fit(self) -> dict[str, float]:
        """Train to `train.steps` (or until a callback stops it); return the final metrics."""
        cfg = self.cfg
        total = cfg.train.steps
        if self._restored_from is not None and self.step >= total:
            end = [r for r in read_metrics(self.run_dir / METRICS_FILE) if r.get("event") == "end"]
            if end:
                self._say(f"run {self.run_dir} is already complete (step {self.step}); nothing to do")
                return {k: v for k, v in end[-1].items() if k != "event"}
        self.writer = MetricsWriter(self.run_dir / METRICS_FILE) if self.is_main else None
        if self.writer is not None:
            if self.resume:
                self.writer.truncate_after(self.step)
            write_config(self.run_dir, cfg)
            write_env(
                self.run_dir,
                environment(self.device, world_size=self.ctx.world_size, precision=precision_name(self.autocast_dtype)),
            )
        threads_before = torch.get_num_threads()
        if cfg.train.threads is not None:
            torch.set_num_threads(cfg.train.threads)  # process-wide: restored when fit() returns
        self.progress = ProgressDisplay(total, enabled=cfg.train.progress, quiet=not self.is_main)
        self._print_summary()
        self.meter = ThroughputMeter(self.flops_per_token, self._peak_flops())
        session_start = time.perf_counter()
        final: dict[str, Any] = {}
        try:
            if self.writer is not None and cfg.trackers:  # TensorBoard, W&B, MLflow...: every record; closed
                trackers = start_trackers(cfg, self.run_dir, resume=self.resume, step=self.step, warn=self._say)
                self.writer.sinks.append(trackers)  # with the writer, in the finally below
                session_start = time.perf_counter()  # starting them is not training time
            for cb in self.callbacks:
                cb.on_train_start(self)
            self.progress.start(self.step)
            self.meter.restart()
            while self.step < total and self._stop is None:
                self._train_step()
                self._after_step()
            self.elapsed_s += time.perf_counter() - session_start
            session_start = time.perf_counter()
            if self._stop is None:
                final = self._finish()
            else:
                final = self._stopped()
        finally:
            try:  # a callback's on_train_end that raises must not leave the writer and trackers open
                for cb in self.callbacks:
                    cb.on_train_end(self)
            finally:
                try:
                    self.progress.stop()
                finally:
                    if self.writer is not None:
                        self.writer.close()
                    torch.set_num_threads(threads_before)
        return final

    def _train_step(self) -> None:
        from pretrainlab.train.checkpoint import crash_point
        from pretrainlab.train.distributed import all_reduce_max, all_reduce_sum, no_sync

        for cb in self.callbacks:
            cb.on_step_start(self)
        batch = self.loader.next_batch()
        self.model.train()
        sums = torch.zeros(2, dtype=torch.float64, device=self.device)  # [loss_sum, n_tokens]
        extra: dict[str, float] = {}
        mbs, accum = self.plan.micro_batch_size, self.plan.accum_steps
        for i in range(accum):
            micro = batch.rows(i * mbs, (i + 1) * mbs).to(self.device)
            with no_sync(self.model, self.ctx, enabled=i < accum - 1):
                with autocast(self.device, self.autocast_dtype):
                    out = self.objective(self.model, micro)
                out.loss_sum.backward()
            sums[0] += out.loss_sum.detach().double()
            sums[1] += torch.as_tensor(out.n_tokens, dtype=torch.float64, device=self.device)
            for k, v in (out.metrics or {}).items():  # objectives report sums (e.g. loss_sum/<domain>)
                extra[k] = extra.get(k, 0.0) + float(v)
            if i == 0:
                crash_point("micro_batch", self.step + 1)
        all_reduce_sum(sums, self.ctx)
        loss_sum, n_tokens = sums.tolist()
        # The backward passes summed per-token losses; DDP/FSDP then averaged over ranks. Rescale so the
        # gradient is that of the mean loss over every target token of the step, on all ranks.
        scale = (self.ctx.world_size if self.ctx.is_distributed else 1) / max(n_tokens, 1.0)
        params = [p for p in self.module.parameters() if p.grad is not None]
        torch._foreach_mul_([p.grad for p in params], scale)
        grad_norm = self._clip(params)
        loss = loss_sum / n_tokens if n_tokens > 0 else math.nan

        lr_mult = self.lr_multiplier(self.step)
        info = StepInfo(
            step=self.step, loss=loss, grad_norm=grad_norm, lr=self.cfg.optim.lr * lr_mult, tokens=self.tokens
        )
        apply = True
        for cb in self.callbacks:
            apply = cb.on_before_optimizer_step(self, info) is not False and apply
        if self.ctx.is_distributed:  # one rank's veto holds for all, so replicas never diverge
            veto = all_reduce_max(torch.tensor([0.0 if apply else 1.0], device=self.device), self.ctx)
            apply = bool(veto.item() == 0.0)
        if apply:
            for group in self.optimizer.param_groups:
                group["lr"] = group.get("base_lr", self.cfg.optim.lr) * lr_mult
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

        self.step += 1
        self.tokens += self.plan.tokens_per_step
        self.meter.add(self.plan.tokens_per_step)
        self._step_metrics = {
            "step": self.step, "tokens": self.tokens, "loss": loss, "lr": info.lr, "grad_norm": grad_norm,
            **_per_domain_means(extra, self.loader.domains),
        }
        if not apply:
            self._step_metrics["skipped"] = True

    def _clip(self, params: list[torch.nn.Parameter]) -> float:
        """Clip to `train.grad_clip` (when set) and return the global gradient norm before clipping."""
        max_norm = self.cfg.train.grad_clip if self.cfg.train.grad_clip is not None else math.inf
        if not params:
            return 0.0
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
        if hasattr(norm, "full_tensor"):  # FSDP2: a DTensor
            norm = norm.full_tensor()
        return float(norm)

    def _after_step(self) -> None:
        from pretrainlab.train.checkpoint import crash_point
        from pretrainlab.train.distributed import all_reduce_max

        cfg = self.cfg
        metrics = self._step_metrics
        log_now = self.step % cfg.train.log_every == 0 or self.step == 1 or self.step == cfg.train.steps
        if log_now:
            metrics["tokens_per_s"], metrics["mfu"] = self.meter.rate()
            if len(self.loader.domains) >= 2:  # domain_weights, domain_share, domain_epochs
                metrics.update(self.loader.mixture_metrics())
        for cb in self.callbacks:
            cb.on_step_end(self, metrics)
        self.last_metrics = metrics
        if log_now and self.writer is not None:
            self.writer.write(metrics)
        if self.progress is not None:
            self.progress.update(self.step, metrics, log_line=log_now)
        crash_point("step_end", self.step)

        if cfg.eval.every is not None and self.step % cfg.eval.every == 0 and self.step < cfg.train.steps:
            self._evaluate()
        if self.ctx.is_distributed:  # a stop requested on any rank (e.g. one got SIGTERM) stops all, alike
            mine = [float(self._stop[2]), float(self._stop[1])] if self._stop is not None else [-1.0, 0.0]
            code, wants_checkpoint = all_reduce_max(torch.tensor(mine, device=self.device), self.ctx).tolist()
            if code >= 0:
                reason = self._stop[0] if self._stop is not None else "another process asked to stop"
                self._stop = (reason, wants_checkpoint > 0, int(code))
        every = cfg.train.checkpoint_every
        if every is not None and self.step % every == 0 and self.step < cfg.train.steps:
            self.save_checkpoint()
        elif self._stop is not None and self._stop[1]:
            self.save_checkpoint()

    def _finish(self) -> dict[str, Any]:
        """End of training: final evaluation, the end line, the final checkpoint."""
        from pretrainlab.train.memory import end_line_fields

        final: dict[str, Any] = {
            k: v for k, v in self.last_metrics.items() if k not in ("tokens_per_s", "mfu", "lr", "skipped")
        }
        final.update(self._evaluate() or {})
        final.update({"step": self.step, "tokens": self.tokens, "wall_s": round(self.elapsed_s, 3)})
        final.update({"params": self.param_counts["params"],
                      "params_non_embedding": self.param_counts["params_non_embedding"],
                      "flops_per_token": self.flops_per_token})
        final.update(end_line_fields(self))  # peak_memory_mb, memory_estimate_mb
        if len(self.loader.domains) >= 2:
            mixture = self.loader.mixture_metrics()
            final.update(domain_share=mixture["domain_share"], domain_epochs=mixture["domain_epochs"])
        if self.writer is not None:
            self.writer.write({"event": "end", **final})
        if self._checkpointed_step != self.step:
            self.save_checkpoint()
        self._say(
            f"done: {self.step} steps, {self.tokens:,} tokens in {self.elapsed_s:.1f} s; run folder {self.run_dir}"
        )
        return final

    def _stopped(self) -> dict[str, Any]:
        reason, _, code = self._stop  # type: ignore[misc]
        self.exit_code = code
        saved = self._checkpointed_step == self.step
        where = f"checkpoint {self.last_checkpoint}" if saved else "no checkpoint written"
        self._say(
            f"stopped at step {self.step}/{self.cfg.train.steps} ({reason}); {where}; "
            f"continue with: pretrainlab train <config> --resume"
        )
        return {k: v for k, v in self.last_metrics.items()}

    # ------------------------------------------------------------------ evaluation

    def _evaluate(self) -> dict[str, float] | None:
        if not self._has_val:
            return None
        from pretrainlab.eval.evaluate import evaluate

        result = evaluate(
            self.model,
            self.data,
            seq_len=self.cfg.data.seq_len,
            max_tokens_per_domain=self.cfg.eval.max_tokens_per_domain,
            batch_size=self.cfg.eval.batch_size,
            device=self.device,
            autocast_dtype=self.autocast_dtype,
            ctx=self.ctx,
        )
        record: dict[str, Any] = {"step": self.step, "tokens": self.tokens, **result}
        for cb in self.callbacks:
            cb.on_eval(self, record)
        if self.writer is not None:
            self.writer.write(record)
        self.progress.message(
            f"eval step {self.step}: val_loss {result.get('val_loss', math.nan):.4f}  "
            f"val_bpb {result.get('val_bpb', math.nan):.4f}"
        )
        self.meter.restart()
        return {k: v for k, v in record.items() if k not in ("step", "tokens")}  # with what callbacks added

    # ------------------------------------------------------------------ checkpoints

    def save_checkpoint(self) -> Path | None:
        """Write a checkpoint of everything needed to continue exactly (every rank must call this)."""
        from pretrainlab.train.checkpoint import save_checkpoint
        from pretrainlab.train.distributed import broadcast_object, full_model_state, full_optimizer_state

        for cb in self.callbacks:
            cb.on_checkpoint_save(self)
        model_state = full_model_state(self.wrapped, self.ctx)
        optim_state = full_optimizer_state(self.wrapped, self.optimizer, self.ctx)
        path = None
        if self.is_main:
            state = {
                "trainer": {"step": self.step, "tokens": self.tokens, "elapsed_s": self.elapsed_s},
                "optimizer": optim_state,
                "schedule": {"name": self.cfg.schedule.name, "step": self.step},
                "loader": self.loader.state_dict(),
                "rng": _rng_state(),
                "callbacks": {cb.name: cb.state_dict() for cb in self.callbacks},
                "data_fingerprint": self.data.fingerprint,
            }
            path = str(
                save_checkpoint(
                    self.run_dir, self.step, model_state=model_state, state=state, keep=self.cfg.train.keep_checkpoints
                )
            )
        path = broadcast_object(path, self.ctx)
        self.last_checkpoint = Path(path) if path else None
        self._checkpointed_step = self.step
        if hasattr(self, "meter"):
            self.meter.restart()
        return self.last_checkpoint

    def _restore(self) -> None:
        from pretrainlab.train.checkpoint import find_latest_checkpoint, load_checkpoint
        from pretrainlab.train.distributed import load_full_model_state, load_full_optimizer_state

        path = find_latest_checkpoint(self.run_dir, warn=self._say)
        if path is None:
            self._say(f"--resume: no complete checkpoint in {self.run_dir / 'checkpoints'}; starting from step 0")
            return
        model_state, state = load_checkpoint(path)
        allow = self.cfg.data.allow_fingerprint_change
        if state.get("data_fingerprint") != self.data.fingerprint and not allow:
            raise DataError(
                f"{path}: the checkpoint was trained on prepared data with fingerprint "
                f"{str(state.get('data_fingerprint'))[:12]}..., "
                f"but {self.data.path} has {self.data.fingerprint[:12]}...",
                hint="point data.path at the original data, or set data.allow_fingerprint_change=true "
                "to continue anyway",
            )
        load_full_model_state(self.wrapped, model_state, self.ctx)
        from pretrainlab.optim.state_check import changed_hyperparameters, check_state_shapes, hyperparameters

        check_state_shapes(self.optimizer, dict(self.module.named_parameters()), state["optimizer"].get("state", {}),
                           source=f"--resume from {path}",
                           hint="resume with the optim.name and optim.options the run was started with (its "
                           "config.yaml), or start a new run from it with init_from (a fresh optimiser)")
        configured = hyperparameters(self.optimizer)
        load_full_optimizer_state(self.wrapped, self.optimizer, state["optimizer"], self.ctx)
        changed = changed_hyperparameters(configured, hyperparameters(self.optimizer))
        if changed:
            self._say("warning: --resume keeps the checkpoint's optimiser hyperparameters, not the config's: "
                      + "; ".join(changed) + " (optim.lr and the schedule are the config's)")
        for group in self.optimizer.param_groups:
            group["base_lr"] = self.cfg.optim.lr
        self.loader.load_state_dict(state["loader"], allow_fingerprint_change=allow)
        saved = state.get("callbacks", {})
        for cb in self.callbacks:
            if cb.name in saved:
                cb.load_state_dict(saved[cb.name])
        counters = state["trainer"]
        self.step = int(counters["step"])
        self.tokens = int(counters["tokens"])
        self.elapsed_s = float(counters.get("elapsed_s", 0.0))
        _set_rng_state(state["rng"])
        self._restored_from = path
        self._checkpointed_step = self.step
        self.last_checkpoint = path
        self._say(f"resumed from {path} (step {self.step}, {self.tokens:,} tokens)")

    # ------------------------------------------------------------------ reporting

    def _peak_flops(self) -> float | None:
        from pretrainlab.model import peak_flops

        try:
            peak = float(peak_flops(self.device, self.autocast_dtype or torch.float32))
        except (RuntimeError, ValueError):
            return None
        return peak * self.ctx.world_size

    def _print_summary(self) -> None:
        from pretrainlab.train.memory import summary_line

        p = self.plan
        counts = self.param_counts
        lines = [
            f"run folder   {self.run_dir}",
            f"model        {self.model_cfg.n_layers} layers x {self.model_cfg.d_model} wide, "
            f"{counts['params']:,} parameters ({counts['params_non_embedding']:,} without embeddings)",
            f"FLOPs/token  {self.flops_per_token:.3g} (training, forward + backward)",
            f"batch        {p.tokens_per_step:,} tokens/step = {p.global_rows} rows x {p.seq_len}; "
            f"micro-batch {p.micro_batch_size} x {p.accum_steps} accumulation step(s) x {p.world_size} process(es)",
            f"precision    {precision_name(self.autocast_dtype)} on {self.device}"
            + f", {'compiled' if self.compiled else 'eager'} ({self.compile_reason})"
            + (", deterministic" if self.cfg.train.deterministic else ""),
            f"schedule     {self.cfg.schedule.name}, lr {self.cfg.optim.lr:g}, {self.cfg.train.steps} steps"
            + (f" (resuming at step {self.step})" if self.step else ""),
            f"callbacks    {', '.join(cb.name for cb in self.callbacks) or 'none'}",
            summary_line(self),
        ]
        if not self._has_val:
            lines.append(f"evaluation   skipped: {self.data.path} has no validation tokens")
        for line in lines:
            self._say(line)

    def _say(self, text: str) -> None:
        if not self.is_main:
            return
        progress = getattr(self, "progress", None)
        if progress is not None:
            progress.message(text)
        else:
            print(text, flush=True)


# ---------------------------------------------------------------------- process-wide state


def _barrier(ctx: DistContext) -> None:
    from pretrainlab.train.distributed import barrier

    barrier(ctx)


def _seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices) alike on every rank: replicas start identical."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _set_deterministic(enabled: bool, device: torch.device) -> None:
    """Bitwise-reproducible kernels (torch.use_deterministic_algorithms).

    Strict on the CPU, where every op the models use has a deterministic kernel; on GPUs an op without
    one (e.g. some scatter/index backward kernels) warns instead of stopping the run.
    """
    if enabled:
        import os

        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(enabled, warn_only=enabled and device.type != "cpu")


def _rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states as tensors and plain containers (no pickle needed to read)."""
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np.asarray(np_state["state"]["key"], dtype=np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": n["bit_generator"],
            "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
            "has_gauss": n["has_gauss"],
            "gauss": n["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _per_domain_means(extra: dict[str, float], domains: list[str]) -> dict[str, float]:
    """Objective sums `loss_sum/<d>` and `tokens/<d>` (d a domain index or name) become `loss/<domain name>`,
    the mean training loss of that domain's rows in this step (this process's rows); other keys pass through."""
    out: dict[str, float] = {}
    for key, value in extra.items():
        if key.startswith("tokens/"):
            continue
        if key.startswith("loss_sum/"):
            d = key.split("/", 1)[1]
            n = extra.get(f"tokens/{d}", 0.0)
            name = domains[int(d)] if d.isdigit() and int(d) < len(domains) else d
            if n > 0:
                out[f"loss/{name}"] = value / n
            continue
        out[key] = value
    return out
