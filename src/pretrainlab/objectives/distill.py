"""Logit distillation (Hinton, Vinyals & Dean 2015, *Distilling the Knowledge in a Neural Network*):
the student minimises, over target positions,

    (1 - alpha) * CE(student, targets) + alpha * T^2 * KL(teacher_T || student_T)

where `x_T = softmax(logits / T)`; the T^2 factor keeps the soft term's gradient scale independent of
T. The teacher is `cfg.teacher`: one run, or several whose predictions are combined into one
distribution (mean of logits, as the ensembles of Kim et al. 2025, arXiv 2509.14786, or mean of
probabilities). It is loaded once in `bind`, frozen, and run under `torch.inference_mode` on the
student's own micro-batch and autocast. With alpha = 0 the teacher is never run and the loss is
`next_token`'s, computed by `next_token` itself, so training is identical to it.

Metrics (per logged step): `ce` and `kl` (means per target token over the step's micro-batches),
`teacher_s` (seconds spent in the teacher this step) and `teacher_total_s` (the run's total teacher
time, carried in checkpoints, so the end line reports the teacher's cost apart from the training's).
The student's full logits are materialised (the KL needs every class), so memory per micro-batch is a
few (rows x vocabulary) float32 tensors.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from pretrainlab.data.batch import Batch
from pretrainlab.errors import ConfigError, PretrainlabError
from pretrainlab.model.ensemble import Combine, combine_logits
from pretrainlab.objectives.base import OBJECTIVES, ObjectiveOutput, unwrap
from pretrainlab.objectives.next_token import NextToken
from pretrainlab.train.callbacks import Callback

if TYPE_CHECKING:
    from pretrainlab.train.trainer import Trainer

_OPTIONS = {"alpha", "temperature"}


class Distill:
    """The `distill` objective. `bind(trainer)` loads the teacher; `set_teacher` does it directly."""

    def __init__(self, *, alpha: float = 0.5, temperature: float = 1.0) -> None:
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        self.teacher: list[nn.Module] = []
        self.combine: Combine = "logits"
        self._plain = NextToken()

    # ------------------------------------------------------------------ setup

    def bind(self, trainer: Trainer) -> None:
        """Load `trainer.cfg.teacher` on the trainer's device, check it fits the student, and add the
        `distill` callback that turns the step's sums into means and keeps the teacher's total time."""
        runs, models = load_teacher(trainer, "distill")
        self.set_teacher(models, trainer.cfg.teacher.combine)  # type: ignore[union-attr]
        trainer.callbacks.append(DistillMeter(self, [str(r) for r in runs]))

    def set_teacher(self, models: list[nn.Module], combine: Combine = "logits") -> None:
        """Use `models` (frozen, put in eval mode here) as the teacher, combined by `combine`."""
        if not models:
            raise ValueError("a teacher needs at least one model")
        for m in models:
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)
        self.teacher = list(models)
        self.combine = combine

    # ------------------------------------------------------------------ the loss

    def __call__(self, model: nn.Module, batch: Batch) -> ObjectiveOutput:
        if self.alpha == 0.0:
            out = self._plain(model, batch)
            out.metrics.update({"ce_sum": float(out.loss_sum.detach()), "distill_tokens": float(out.n_tokens)})
            return out
        if not self.teacher:
            raise RuntimeError("objective 'distill' has no teacher: the trainer calls bind(trainer) first")
        hidden = model(batch.inputs)
        B, T, d = hidden.shape
        logits = unwrap(model).logits(hidden.reshape(B * T, d)).float()
        teacher_logp, teacher_s = self.teacher_log_probs(batch.inputs)
        ce_tok = F.cross_entropy(logits, batch.targets.reshape(-1), reduction="none")
        student_logp = torch.log_softmax(logits / self.temperature, dim=-1)
        kl_tok = F.kl_div(student_logp, teacher_logp.reshape(B * T, -1), log_target=True, reduction="none").sum(-1)
        mask = batch.target_mask
        if mask is not None:
            m = mask.reshape(-1).to(ce_tok.dtype)
            ce_tok, kl_tok = ce_tok * m, kl_tok * m
        n_tokens = B * T if mask is None else int(mask.sum())
        ce_sum, kl_sum = ce_tok.sum(), kl_tok.sum()
        loss_sum = (1.0 - self.alpha) * ce_sum + self.alpha * self.temperature**2 * kl_sum
        metrics = {
            "ce_sum": float(ce_sum.detach()),
            "kl_sum": float(kl_sum.detach()),
            "distill_tokens": float(n_tokens),
            "teacher_s": teacher_s,
        }
        return ObjectiveOutput(loss=loss_sum / max(n_tokens, 1), loss_sum=loss_sum, n_tokens=n_tokens, metrics=metrics)

    def teacher_log_probs(self, inputs: torch.Tensor) -> tuple[torch.Tensor, float]:
        """(teacher log-probabilities at temperature T, (B, T, V) float32, an ordinary tensor; seconds spent).

        Runs under inference mode (and whatever autocast the caller set); the result is cloned out of
        inference mode so autograd may save it for the student's backward pass. On a GPU the clock starts
        after the student's queued work (its forward pass) has finished and stops after the teacher's, so
        the seconds are the teacher's alone.
        """
        wait_for_device(inputs.device)
        start = time.perf_counter()
        with torch.inference_mode():
            stacked = torch.stack([m.logits(m(inputs)).float() for m in self.teacher])  # type: ignore[operator]
            combined = combine_logits(stacked, self.combine)
            logp = torch.log_softmax(combined / self.temperature, dim=-1)
        wait_for_device(logp.device)
        seconds = time.perf_counter() - start
        return logp.clone(), seconds


def load_teacher(trainer: Trainer, objective: str) -> tuple[list[Path], list[nn.Module]]:
    """(run folders, models) of `trainer.cfg.teacher`, loaded on the trainer's device, each checked to predict
    over the student's vocabulary and to handle `data.seq_len`; ConfigError naming `objective` when the config
    has no teacher. Shared by the objectives that learn from a teacher (`distill`, `feature_distill`)."""
    from pretrainlab.eval.members import expand_members, load_members

    cfg = trainer.cfg
    if cfg.teacher is None:
        raise ConfigError(
            f"objective {objective!r} needs a teacher: set teacher=RUN_DIR",
            hint="teacher=[RUN_A, RUN_B] for an ensemble teacher, or a folder written by `pretrainlab ensemble`",
        )
    try:
        runs = expand_members(cfg.teacher.runs)
        models, _, _ = load_members(cfg.teacher.runs, data=cfg.data.path, device=trainer.device)
    except PretrainlabError as e:
        raise type(e)(f"teacher: {e.message}", hint=e.hint) from None
    vocab = int(trainer.model_cfg.vocab_size)
    for run, model in zip(runs, models):
        rows = int(model.output_weight.shape[0])  # type: ignore[union-attr]
        if rows != vocab:
            raise ConfigError(
                f"teacher: {run} predicts over {rows} tokens but the student's vocabulary is {vocab}",
                hint="distil into a student with the teacher's vocabulary (leave model.vocab_size unset)",
            )
        longest = int(model.cfg.max_seq_len)  # type: ignore[union-attr]
        if longest < cfg.data.seq_len:
            raise ConfigError(
                f"teacher: {run} handles sequences of at most {longest} tokens, shorter than "
                f"data.seq_len={cfg.data.seq_len}",
                hint=f"train the student with data.seq_len <= {longest}",
            )
    return runs, models


def wait_for_device(device: torch.device) -> None:
    """Block until the work queued on a CUDA `device` is done (CUDA kernels run asynchronously, so a
    wall clock read without it measures whatever was queued before); nothing on other devices."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class TeacherMeter(Callback):
    """The bookkeeping shared by the objectives that learn from a teacher (`distill`, `feature_distill`), one
    callback each (added by their `bind`): the step's `<key>_sum` metrics of `mean_keys` (summed over
    micro-batches by the trainer) become token means `<key>` over the step's `tokens_key` count;
    `teacher_total_s` accumulates `teacher_s` and is checkpointed, so the end line carries the run's whole
    teacher cost, which the end of training also prints when the teacher ran. Subclasses set `name`,
    `tokens_key`, `mean_keys` and say what their start line reads (`start_line`) and whether the teacher
    runs at all (`teacher_runs`)."""

    tokens_key = ""
    mean_keys: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.teacher_total_s = 0.0

    def start_line(self) -> str:
        raise NotImplementedError

    def teacher_runs(self) -> bool:
        return True

    def on_train_start(self, trainer: Trainer) -> None:
        say(trainer, self.start_line())

    def on_step_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        n = metrics.pop(self.tokens_key, 0.0)
        for key in self.mean_keys:
            total = metrics.pop(f"{key}_sum", None)
            if total is not None and n > 0:
                metrics[key] = total / n
        self.teacher_total_s += float(metrics.get("teacher_s", 0.0))
        metrics["teacher_total_s"] = round(self.teacher_total_s, 6)

    def on_train_end(self, trainer: Trainer) -> None:
        if self.teacher_runs():
            say(trainer, f"teacher cost {self.teacher_total_s:.1f} s of {trainer.elapsed_s:.1f} s training wall time")

    def state_dict(self) -> dict[str, Any]:
        return {"teacher_total_s": self.teacher_total_s}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.teacher_total_s = float(state.get("teacher_total_s", 0.0))


class DistillMeter(TeacherMeter):
    """Added by `Distill.bind`: `ce` and `kl` as token means, and the teacher's cost (see TeacherMeter)."""

    name = "distill"
    tokens_key = "distill_tokens"
    mean_keys = ("ce", "kl")

    def __init__(self, objective: Distill, runs: list[str]) -> None:
        super().__init__()
        self.objective = objective
        self.runs = runs

    def start_line(self) -> str:
        o = self.objective
        what = self.runs[0] if len(self.runs) == 1 else f"ensemble of {len(self.runs)} (mean of {o.combine})"
        run_note = "" if o.alpha > 0 else "; alpha = 0: the teacher is not run"
        return f"teacher      {what}; alpha {o.alpha:g}, temperature {o.temperature:g}{run_note}"

    def teacher_runs(self) -> bool:
        return self.objective.alpha > 0


def say(trainer: Trainer, text: str) -> None:
    """Print `text` through the trainer's own output (its `_say`: the main process only), or on the main
    process when the trainer has none."""
    out = getattr(trainer, "_say", None)
    if callable(out):
        out(text)
    elif getattr(trainer, "is_main", True):
        print(text, flush=True)


def _number(options: dict[str, Any], key: str, default: float) -> float:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise ConfigError(f"objective_options.{key}={value!r} must be a finite number")
    return float(value)


@OBJECTIVES.register("distill")
def distill(options: dict[str, Any]) -> Distill:
    unknown = sorted(set(options) - _OPTIONS)
    if unknown:
        raise ConfigError(
            f"objective_options.{unknown[0]} is not an option of objective 'distill'",
            hint=f"valid options: {', '.join(sorted(_OPTIONS))}",
        )
    alpha = _number(options, "alpha", 0.5)
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(
            f"objective_options.alpha={alpha!r} must lie in [0, 1]",
            hint="alpha weighs the KL to the teacher against the cross-entropy on the data (0: plain next_token)",
        )
    temperature = _number(options, "temperature", 1.0)
    if temperature <= 0:
        raise ConfigError(
            f"objective_options.temperature={temperature!r} must be > 0",
            hint="1.0 distils the teacher's own distribution; larger values soften it",
        )
    return Distill(alpha=alpha, temperature=temperature)
