"""Loss-spike and NaN/Inf detection: skip the bad update or stop the run.

A step is bad when its loss or gradient norm is not finite, or (after `warmup_steps` good steps)
its loss exceeds `spike_factor` times a running mean of recent losses (an exponential moving
average, like the spike heuristics of PaLM (arXiv:2204.02311) and OLMo's loss-spike monitoring).

Policy `skip` returns False from `on_before_optimizer_step`, so the trainer leaves parameters and
optimiser state (Adam moments and step count included) untouched; the gradients are dropped and the
next batch is drawn. After more than `max_skips` skips in total the run aborts. Policy `abort`
stops at the first bad step. Aborting raises `TrainingAborted` (exit code 3) naming the step and
the value.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

from pretrainlab.errors import PretrainlabError
from pretrainlab.train.callbacks import Callback, StepInfo, register_callback

if TYPE_CHECKING:
    from pretrainlab.train.trainer import Trainer


class TrainingAborted(PretrainlabError):
    """Training stopped because it diverged (non-finite or spiking loss); the CLI exits with 3."""

    exit_code = 3


@register_callback("stability")
class StabilityCallback(Callback):
    """Options: `policy` skip|abort, `spike_factor`, `warmup_steps`, `ema_beta`, `max_skips`."""

    def __init__(
        self,
        policy: Literal["skip", "abort"] = "skip",
        spike_factor: float = 3.0,
        warmup_steps: int = 20,
        ema_beta: float = 0.98,
        max_skips: int = 10,
    ) -> None:
        if policy not in ("skip", "abort"):
            raise ValueError(f"policy must be 'skip' or 'abort' (got {policy!r})")
        if not spike_factor > 1.0:
            raise ValueError(f"spike_factor must be > 1 (got {spike_factor!r})")
        if not 0.0 <= ema_beta < 1.0:
            raise ValueError(f"ema_beta must lie in [0, 1) (got {ema_beta!r})")
        if warmup_steps < 0 or max_skips < 0:
            raise ValueError("warmup_steps and max_skips must be >= 0")
        self.policy = policy
        self.spike_factor = float(spike_factor)
        self.warmup_steps = int(warmup_steps)
        self.ema_beta = float(ema_beta)
        self.max_skips = int(max_skips)
        self.mean: float | None = None
        self.good_steps = 0
        self.skips = 0
        self._skipped_this_step = False

    def _problem(self, info: StepInfo) -> str | None:
        if not math.isfinite(info.loss):
            return f"the loss is {info.loss}"
        if not math.isfinite(info.grad_norm):
            return f"the gradient norm is {info.grad_norm} (loss {info.loss:.4f})"
        if self.mean is not None and self.good_steps >= self.warmup_steps and info.loss > self.spike_factor * self.mean:
            return f"the loss {info.loss:.4f} is above {self.spike_factor} x its running mean {self.mean:.4f}"
        return None

    def on_before_optimizer_step(self, trainer: Trainer, info: StepInfo) -> bool:
        problem = self._problem(info)
        self._skipped_this_step = problem is not None
        if problem is None:
            # Bias-corrected EMA would weigh early steps oddly; a plain mean over the first steps is enough.
            self.good_steps += 1
            if self.mean is None:
                self.mean = info.loss
            else:
                beta = min(self.ema_beta, 1.0 - 1.0 / self.good_steps)
                self.mean = beta * self.mean + (1.0 - beta) * info.loss
            return True
        step = info.step + 1
        if self.policy == "abort":
            raise TrainingAborted(
                f"step {step}: {problem}; training stopped (stability policy 'abort')",
                hint="lower optim.lr, lengthen the warm-up, keep train.grad_clip on, or use policy 'skip'",
            )
        self.skips += 1
        if self.skips > self.max_skips:
            raise TrainingAborted(
                f"step {step}: {problem}; that is {self.skips} skipped steps, more than max_skips={self.max_skips}",
                hint="the run diverges: lower optim.lr or lengthen the warm-up, then restart or resume",
            )
        if getattr(trainer, "is_main", True):
            print(f"warning: step {step}: {problem}; update skipped ({self.skips}/{self.max_skips})", flush=True)
        return False

    def on_step_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        metrics["skipped_steps"] = self.skips

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "good_steps": self.good_steps, "skips": self.skips}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mean = state["mean"]
        self.good_steps = int(state["good_steps"])
        self.skips = int(state["skips"])
