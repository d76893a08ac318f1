"""Feature distillation (PELA's intermediate pretraining, Guo et al., CVPR 2024, *PELA: Learning
Parameter-Efficient Models with Low-Rank Approximation*): after a trained model is compressed into a low-rank
student (`model/surgery.py`, or `init_from` a dense run into a `model.linear=low_rank` run), the student keeps
learning the data while matching the frozen original block by block:

    loss = CE(student, targets) + kappa * mean over blocks l of MSE(h_l^student, h_l^teacher)

`h_l` is the output of block l (the residual stream after it, shape (B, T, d_model)), read with forward hooks
on `model.blocks`; the MSE is the mean over target positions and the d_model features, so with kappa = 1 (PELA's
kappa_fm) it weighs like the cross-entropy per token. The CE is computed by `next_token` itself (same options,
fused head or not), so with kappa = 0 the teacher is never run and training is exactly `next_token`'s. PELA's
optional logit MSE (kappa_sr = 0 in its scripts) and weight-perturbation term are not included.

The teacher is `cfg.teacher` (one run folder), loaded, checked and frozen as `distill` loads its teacher
(`objectives/distill.py: load_teacher`); student and teacher must have the same `n_layers` and `d_model`
(block l of the one is matched with block l of the other). Positions outside `batch.target_mask` count for
neither term.

Metrics per logged step: `ce` and `feature_mse` (token means over the step's micro-batches, so
`loss = ce + kappa * feature_mse`), `teacher_s` and `teacher_total_s` (checkpointed) as for `distill`.
A `torch.compile`d student may break its graph at the hooks (they append to a Python list).
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from pretrainlab.data.batch import Batch
from pretrainlab.errors import ConfigError
from pretrainlab.objectives.base import OBJECTIVES, ObjectiveOutput, unwrap
from pretrainlab.objectives.distill import TeacherMeter, load_teacher, wait_for_device
from pretrainlab.objectives.next_token import NextToken

if TYPE_CHECKING:
    from torch.utils.hooks import RemovableHandle

    from pretrainlab.train.trainer import Trainer

_OPTIONS = {"kappa"}


class _BlockTap:
    """Forward hooks on every block of a model that keep the blocks' outputs while `active` (one list per
    forward pass); inactive (evaluation, sampling) they do nothing."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.active = False
        self.outputs: list[torch.Tensor] = []
        blocks = getattr(model, "blocks", None)
        if not isinstance(blocks, nn.ModuleList) or len(blocks) == 0:
            raise ValueError("feature_distill needs a decoder whose blocks are `model.blocks`")
        self.handles: list[RemovableHandle] = [b.register_forward_hook(self._hook) for b in blocks]

    def _hook(self, module: nn.Module, args: Any, output: torch.Tensor) -> None:
        if self.active:
            self.outputs.append(output)

    def run(self, fn: Any) -> tuple[Any, list[torch.Tensor]]:
        """`fn()` with the hooks on; (its result, the block outputs it produced in order)."""
        self.outputs, self.active = [], True
        try:
            result = fn()
        finally:
            self.active = False
        outputs, self.outputs = self.outputs, []
        return result, outputs

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


class FeatureDistill:
    """The `feature_distill` objective. `bind(trainer)` loads the teacher; `set_teacher` sets one directly."""

    def __init__(self, *, kappa: float = 1.0) -> None:
        self.kappa = float(kappa)
        self.teacher: nn.Module | None = None
        self._plain = NextToken()
        self._student_tap: _BlockTap | None = None
        self._teacher_tap: _BlockTap | None = None

    # ------------------------------------------------------------------ setup

    def bind(self, trainer: Trainer) -> None:
        """Load `trainer.cfg.teacher` (one run), check it has the student's n_layers and d_model, and add the
        `feature_distill` callback that turns the step's sums into means."""
        runs, models = load_teacher(trainer, "feature_distill")
        if len(models) != 1:
            raise ConfigError(
                f"teacher: objective 'feature_distill' matches the blocks of one teacher, got {len(models)} runs",
                hint="set teacher=RUN_DIR (one run folder); ensembles are for objective=distill",
            )
        student = trainer.model_cfg
        teacher_cfg = models[0].cfg  # type: ignore[union-attr]
        for f in ("n_layers", "d_model"):
            theirs, ours = getattr(teacher_cfg, f), getattr(student, f)
            if theirs != ours:
                raise ConfigError(
                    f"teacher: {runs[0]} has {f}={theirs} but the student's model.{f}={ours}; feature_distill "
                    "matches block l of the student with block l of the teacher",
                    hint=f"give the student the teacher's {f} (e.g. init_from the teacher with another "
                    "model.linear), or use objective=distill, which matches logits only",
                )
        self.set_teacher(models[0])
        trainer.callbacks.append(FeatureDistillMeter(self, str(runs[0])))

    def set_teacher(self, model: nn.Module) -> None:
        """Use `model` (frozen, put in eval mode here) as the teacher."""
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        if self._teacher_tap is not None:
            self._teacher_tap.remove()
        self.teacher = model
        self._teacher_tap = _BlockTap(model)

    # ------------------------------------------------------------------ the loss

    def __call__(self, model: nn.Module, batch: Batch) -> ObjectiveOutput:
        if self.kappa == 0.0:
            out = self._plain(model, batch)
            out.metrics.update({"ce_sum": float(out.loss_sum.detach()), "fd_tokens": float(out.n_tokens)})
            return out
        if self.teacher is None or self._teacher_tap is None:
            raise RuntimeError("objective 'feature_distill' has no teacher: the trainer calls bind(trainer) first")
        inner = unwrap(model)
        if self._student_tap is None or self._student_tap.model is not inner:
            if self._student_tap is not None:
                self._student_tap.remove()
            self._student_tap = _BlockTap(inner)
        out, student_h = self._student_tap.run(lambda: self._plain(model, batch))
        teacher_h, teacher_s = self.teacher_features(batch.inputs)
        if len(student_h) != len(teacher_h):
            raise RuntimeError(
                f"feature_distill: the student ran {len(student_h)} blocks, the teacher {len(teacher_h)}")
        per_token = feature_mse_per_token(student_h, teacher_h)  # (B, T)
        mask = batch.target_mask
        if mask is not None:
            per_token = per_token * mask.to(per_token.dtype)
        feature_sum = per_token.sum()
        loss_sum = out.loss_sum + self.kappa * feature_sum
        n = out.n_tokens
        metrics = {
            **out.metrics,
            "ce_sum": float(out.loss_sum.detach()),
            "feature_mse_sum": float(feature_sum.detach()),
            "fd_tokens": float(n),
            "teacher_s": teacher_s,
        }
        return ObjectiveOutput(loss=loss_sum / max(n, 1), loss_sum=loss_sum, n_tokens=n, metrics=metrics)

    def teacher_features(self, inputs: torch.Tensor) -> tuple[list[torch.Tensor], float]:
        """(the teacher's block outputs on `inputs`, ordinary tensors; seconds spent in the teacher)."""
        assert self.teacher is not None and self._teacher_tap is not None
        teacher = self.teacher
        wait_for_device(inputs.device)
        start = time.perf_counter()
        with torch.inference_mode():
            _, hidden = self._teacher_tap.run(lambda: teacher(inputs))
        wait_for_device(inputs.device)
        seconds = time.perf_counter() - start
        return [h.clone() for h in hidden], seconds


def feature_mse_per_token(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
    """(B, T), at least float32: for each position, the mean over blocks of the mean squared difference over
    features."""
    total = None
    for s, t in zip(student, teacher):
        dtype = torch.promote_types(s.dtype, torch.float32)  # bf16 autocast outputs are compared in float32
        term = (s.to(dtype) - t.to(dtype)).pow(2).mean(dim=-1)
        total = term if total is None else total + term
    assert total is not None
    return total / len(student)


class FeatureDistillMeter(TeacherMeter):
    """Added by `FeatureDistill.bind`: `ce` and `feature_mse` as token means, and the teacher's cost (the
    bookkeeping `distill` shares: objectives/distill.py TeacherMeter)."""

    name = "feature_distill"
    tokens_key = "fd_tokens"
    mean_keys = ("ce", "feature_mse")

    def __init__(self, objective: FeatureDistill, run: str) -> None:
        super().__init__()
        self.objective = objective
        self.run = run

    def start_line(self) -> str:
        note = "" if self.objective.kappa > 0 else "; kappa = 0: the teacher is not run"
        return f"teacher      {self.run}; feature distillation, kappa {self.objective.kappa:g}{note}"

    def teacher_runs(self) -> bool:
        return self.objective.kappa > 0


@OBJECTIVES.register("feature_distill")
def feature_distill(options: dict[str, Any]) -> FeatureDistill:
    unknown = sorted(set(options) - _OPTIONS)
    if unknown:
        raise ConfigError(
            f"objective_options.{unknown[0]} is not an option of objective 'feature_distill'",
            hint=f"valid options: {', '.join(sorted(_OPTIONS))}",
        )
    kappa = options.get("kappa", 1.0)
    if isinstance(kappa, bool) or not isinstance(kappa, (int, float)) or not math.isfinite(kappa) or kappa < 0:
        raise ConfigError(
            f"objective_options.kappa={kappa!r} must be a finite number >= 0",
            hint="kappa weighs the block-output MSE to the teacher against the cross-entropy "
            "(PELA: 1.0; 0: next_token)",
        )
    return FeatureDistill(kappa=float(kappa))
