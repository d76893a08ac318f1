"""Gradual global magnitude pruning during pre-training (*The Journey Matters*, Jin et al., ICLR 2025).

Callback `gradual_pruning`: from step t_s to step t_e (by default 25% and 75% of `train.steps`) an event
every `every` steps prunes the prunable weights by global magnitude: one threshold over all surviving
entries of all of them, the smallest entries masked. Each of the N events removes the same fraction
p = 1 - (1 - S)^(1/N) of the entries still alive, so the density of the prunable weights is (1 - p)^k
after event k and exactly 1 - S after the last (counts are rounded once per event, globally: the live
count after event k is round(L0 (1 - p)^k), and after event N it is round(n (1 - S)) exactly). Masks
only shrink.

Prunable weights (`scope: blocks`): the weight of every `nn.Linear` in `model.blocks` (the attention and
MLP projections, a fused qkv or gate_up counted as one matrix) and of every `MaskedLinear`-like module
there (a 2-D `weight` with a bool buffer `mask` of its shape, whose own masked entries count as pruned
from the start and whose `mask` is narrowed with ours). Embedding, head, norms and low-rank factors are
never pruned.

Masked entries are exactly zero at every forward pass:
- at an event the newly masked weights are set to 0 and their optimiser state (AdamW `exp_avg`,
  `exp_avg_sq`: every state tensor of the parameter's shape) is zeroed, so the moments do not push them
  back (with m = v = 0 Adam's update is exactly 0);
- a gradient hook on each prunable parameter zeroes masked gradient entries during backward, so the
  gradient norm (logged, and used for clipping) is that of the pruned model; the gradients are zeroed
  again in `on_before_optimizer_step`;
- the weights are re-zeroed right after every optimiser step, by a step post-hook on the optimiser
  (registered in `on_train_start`, as the `masked_linear` callback does), so nothing between
  `optimizer.step()` and the next forward (another callback's `on_step_end`, a checkpoint) sees a pruned
  entry that an optimiser moved: AdamW leaves them at 0 by itself (zero gradient and moments, decay of 0),
  but GaLore and Fira update zero-gradient entries (their update is a projection, and Fira adds a residual);
  `on_step_end` re-zeroes once more (a no-op after the hook).

Event timing: an event "at step t" runs in `on_step_start` when t optimiser steps are done, before the
forward pass of step t + 1; t_s = round(start * steps), t_e = min(round(end * steps), steps - 1) (an
event after the last step would change no training step); N = ceil((t_e - t_s) / every) + 1 events
evenly spread from t_s to t_e inclusive: t_s, t_s + every, ..., t_e with the paper's N = (t_e - t_s) / f + 1
when `every` divides t_e - t_s, gaps of at most `every` otherwise.

Logged on every train step: `live_params` (non-embedding parameters minus masked entries: N_t of the
paper, counted for the forward pass of that step), `density` (live fraction of the prunable weights),
`avg_params` (N-bar: the exact running mean of `live_params` over every step so far; the end line
copies it, and `pretrainlab fit SWEEP --x avg_params` uses it) and `flops_per_token_live` (theoretical
training FLOPs per token of the pruned model: `flops_per_token` minus 6 per pruned weight; the dense
masked matmuls take the same time as before).

State: the masks (bool, CPU), the running sum of `live_params` and the live count before the first event
are in the callback's checkpoint state, so a resumed run continues bitwise. DDP: every rank prunes its
own copy; the weights are bitwise equal across ranks (the same all-reduced gradients and optimiser
steps), so the masks are too, which each event checks with one all-reduce (a mismatch stops the run).
FSDP is refused: sharded parameters would need the magnitudes gathered to rank one threshold.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from pretrainlab.errors import ConfigError
from pretrainlab.train.callbacks import Callback, StepInfo, register_callback

if TYPE_CHECKING:
    from pretrainlab.train.trainer import Trainer

PAPER = "The Journey Matters: Average Parameter Count over Pre-training Unifies Sparse and Dense Scaling Laws " \
    "(Jin et al., ICLR 2025)"
SCOPES = ("blocks",)


def _round(x: float) -> int:
    """Round half up (not Python's banker's rounding), so schedules read as written."""
    return int(math.floor(x + 0.5))


def default_every(steps: int) -> int:
    """Steps between pruning events when `every` is not given: about 20 events per run length (so 11 in the
    default 50% window)."""
    return max(1, steps // 20)


def pruning_steps(steps: int, start: float, end: float, every: int) -> list[int]:
    """The event times (optimiser steps done, 0 .. steps-1; the event at t runs before training step t+1):
    N = ceil((t_e - t_s) / every) + 1 events evenly spread from t_s to t_e inclusive (t_s, t_s + every, ...,
    t_e when `every` divides t_e - t_s, as in the paper), t_s = round(start * steps),
    t_e = min(round(end * steps), steps - 1)."""
    t_e = min(_round(end * steps), steps - 1)
    t_s = min(_round(start * steps), t_e)
    gaps = -(-(t_e - t_s) // every)
    if gaps == 0:
        return [t_s]
    return [t_s + _round(k * (t_e - t_s) / gaps) for k in range(gaps + 1)]


def target_live(k: int, n_events: int, initial: int, final: int) -> int:
    """Live prunable entries after event k of n_events (k = 0: before the first): round(initial * q^k) with
    q = (final / initial)^(1 / n_events), the same fraction 1 - q of the survivors per event; exactly
    `final` after the last."""
    if k <= 0 or initial <= final:
        return initial if k <= 0 else min(initial, final)
    if k >= n_events:
        return final
    return _round(initial * (final / initial) ** (k / n_events))


def expected_avg_params(
    non_embedding: int, prunable: int, steps: int, sparsity: float,
    start: float = 0.25, end: float = 0.75, every: int | None = None,
) -> float:
    """N-bar the callback will log for a dense model with `prunable` of its `non_embedding` parameters in the
    pruned projections (the mean over the steps of the live count the forward pass of each step sees).
    Used to size runs (a pruned model matching a dense model's N-bar) before training."""
    events = pruning_steps(steps, start, end, every or default_every(steps))
    final = _round(prunable * (1.0 - sparsity))
    total, done = 0, 0
    for i in range(1, steps + 1):  # training step i runs after the events at t < i
        while done < len(events) and events[done] < i:
            done += 1
        total += non_embedding - prunable + target_live(done, len(events), prunable, final)
    return total / steps


def prunable_weights(model: nn.Module) -> list[tuple[str, nn.Module, nn.Parameter]]:
    """(name, module, weight) of the prunable projections of a Decoder's blocks, in module order: every
    `nn.Linear` and every MaskedLinear-like module (2-D `weight` with a bool `mask` buffer of its shape)."""
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.Module):
        return []
    out = []
    for name, module in blocks.named_modules():
        weight = getattr(module, "weight", None)
        if not isinstance(weight, nn.Parameter) or weight.dim() != 2:
            continue
        if isinstance(module, nn.Linear) or _own_mask(module) is not None:
            out.append((f"blocks.{name}.weight", module, weight))
    return out


def _own_mask(module: nn.Module) -> torch.Tensor | None:
    mask = getattr(module, "mask", None)
    weight = getattr(module, "weight", None)
    if not isinstance(mask, torch.Tensor) or not isinstance(weight, torch.Tensor):
        return None
    if mask.dtype == torch.bool and mask.shape == weight.shape:
        return mask
    return None


@register_callback("gradual_pruning")
class GradualPruning(Callback):
    """Gradual global magnitude pruning (Jin et al., ICLR 2025); see the module docstring.

    Options: `sparsity` (target fraction of the prunable weights that are zero, in (0, 1)), `start` and
    `end` (fractions of `train.steps`, default 0.25 and 0.75), `every` (steps between events, default
    max(1, steps // 20)), `scope` ("blocks": the attention and MLP projections of every block).
    """

    def __init__(
        self, sparsity: float, start: float = 0.25, end: float = 0.75, every: int | None = None, scope: str = "blocks"
    ) -> None:
        if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0.0 < sparsity < 1.0:
            raise ValueError(f"sparsity must be a number in (0, 1), the fraction of weights pruned (got {sparsity!r})")
        for key, value in (("start", start), ("end", end)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{key} must be a fraction of train.steps in [0, 1] (got {value!r})")
        if start > end:
            raise ValueError(f"start ({start}) must not be after end ({end})")
        if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
            raise ValueError(f"every must be a positive number of steps (got {every!r})")
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)} (got {scope!r})")
        self.sparsity = float(sparsity)
        self.start, self.end, self.every, self.scope = float(start), float(end), every, scope
        self.events: list[int] = []
        self.names: list[str] = []
        self.weights: list[nn.Parameter] = []
        self.masks: list[torch.Tensor] = []  # True = live
        self.dead: list[torch.Tensor] = []  # ~masks, kept so the per-step work allocates nothing
        self.own_masks: list[torch.Tensor | None] = []
        self.n_prunable = 0
        self.live = 0  # live prunable entries now
        self.initial_live: int | None = None  # live prunable entries before the first event
        self.live_sum = 0  # sum of logged live_params over the steps so far (exact)
        self.steps_counted = 0
        self.pruned = False  # has an event masked anything yet (before that the hooks have nothing to do)
        self._loaded: dict[str, Any] | None = None
        self._hooks: list[Any] = []

    # ------------------------------------------------------------------ setup

    def on_train_start(self, trainer: Trainer) -> None:
        if trainer.cfg.parallel == "fsdp":
            raise ConfigError(
                "callbacks: gradual_pruning does not support parallel=fsdp (global magnitude pruning ranks every "
                "weight of the model, and FSDP shards them over the processes)",
                hint="use parallel=ddp (or none) with gradual_pruning",
            )
        found = prunable_weights(trainer.module)
        if not found:
            raise ConfigError(
                f"callbacks: gradual_pruning found no prunable weights with model.linear={trainer.cfg.model.linear!r}",
                hint="prune a model whose projections are dense or masked (model.linear=dense or masked)",
            )
        steps = trainer.cfg.train.steps
        self.events = pruning_steps(steps, self.start, self.end, self.every or default_every(steps))
        self.names = [name for name, _, _ in found]
        self.weights = [w for _, _, w in found]
        self.own_masks = [_own_mask(m) for _, m, _ in found]
        self.n_prunable = sum(w.numel() for w in self.weights)
        self.masks = []
        for w, own in zip(self.weights, self.own_masks):
            self.masks.append(own.clone() if own is not None else torch.ones_like(w, dtype=torch.bool))
        if self._loaded is not None:
            self._restore(self._loaded)
            self._loaded = None
        self.live = sum(int(m.sum()) for m in self.masks)
        self.pruned = self.live < self.n_prunable
        self._apply_masks()
        self._hooks = [w.register_hook(self._grad_hook(i)) for i, w in enumerate(self.weights)]
        self._hooks.append(trainer.optimizer.register_step_post_hook(self._after_optimizer_step))
        self.base_params = int(trainer.param_counts["params_non_embedding"])
        self.base_flops = float(trainer.flops_per_token)

    def _grad_hook(self, i: int) -> Any:
        def hook(grad: torch.Tensor) -> torch.Tensor | None:
            if not self.pruned:
                return None
            return grad.masked_fill(self.dead[i], 0.0)

        return hook

    def _after_optimizer_step(self, *_: Any) -> None:
        """Optimiser step post-hook: pruned entries back to exactly 0 before anything else sees the weights."""
        if self.pruned:
            self._zero_weights()

    def on_train_end(self, trainer: Trainer) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks = []

    # ------------------------------------------------------------------ the schedule

    def on_step_start(self, trainer: Trainer) -> None:
        if trainer.step in self.events:
            k = self.events.index(trainer.step) + 1
            self.prune(k, trainer)

    @torch.no_grad()
    def prune(self, k: int, trainer: Trainer | None = None) -> int:
        """Event k (1-based) of the schedule: mask the smallest surviving weights by magnitude, globally, down
        to `target_live(k, ...)` live entries; ties broken by position (module order, then row-major).
        Returns the number of weights masked."""
        if self.initial_live is None:
            self.initial_live = self.live
            final = _round(self.n_prunable * (1.0 - self.sparsity))
            if self.live <= final and trainer is not None:
                trainer._say(f"gradual_pruning: density is already {self.live / self.n_prunable:.3f}, at or below "
                             f"the target {1 - self.sparsity:.3f}: nothing to prune")
        final = _round(self.n_prunable * (1.0 - self.sparsity))
        remove = self.live - target_live(k, len(self.events), self.initial_live, final)
        if remove > 0:
            self._mask_smallest(remove)
            self.pruned = True
            self._apply_masks()
            if trainer is not None:
                self._zero_optimizer_state(trainer.optimizer)
            self.live -= remove
        if trainer is not None and trainer.ctx.is_distributed:
            self._check_ranks_agree(trainer)
        return max(remove, 0)

    def _mask_smallest(self, remove: int) -> None:
        mags = [w.detach().abs().float().masked_fill(~m, math.inf) for w, m in zip(self.weights, self.masks)]
        threshold = torch.cat([m.flatten() for m in mags]).kthvalue(remove).values
        below = [m < threshold for m in mags]
        ties_needed = remove - sum(int(b.sum()) for b in below)
        for mag, drop, mask in zip(mags, below, self.masks):
            if ties_needed > 0:  # entries equal to the threshold: the first ones in position order
                tie = (mag == threshold).flatten()
                tie &= tie.cumsum(0) <= ties_needed
                ties_needed -= int(tie.sum())
                drop |= tie.view_as(drop)
            mask &= ~drop

    def _apply_masks(self) -> None:
        """After the masks changed: their complements (used every step), zero weights, narrow MaskedLinear masks."""
        self.dead = [~m for m in self.masks]
        self._zero_weights()
        for m, own in zip(self.masks, self.own_masks):
            if own is not None:
                own &= m

    @torch.no_grad()
    def _zero_weights(self) -> None:
        for w, dead in zip(self.weights, self.dead):
            w.masked_fill_(dead, 0.0)

    def _zero_optimizer_state(self, optimizer: torch.optim.Optimizer) -> None:
        for w, m in zip(self.weights, self.masks):
            for value in optimizer.state.get(w, {}).values():
                if isinstance(value, torch.Tensor) and value.shape == w.shape:
                    value.masked_fill_(~m, 0.0)

    def _check_ranks_agree(self, trainer: Trainer) -> None:
        from pretrainlab.train.distributed import all_reduce_max

        digest = float(self.live)
        for i, m in enumerate(self.masks):  # position checksum of the pruned entries (exact in float64)
            idx = (~m).flatten().nonzero().flatten()
            digest += float((int(idx.sum()) % 1_000_003) * (i + 1))
        both = all_reduce_max(torch.tensor([digest, -digest], dtype=torch.float64, device=trainer.device), trainer.ctx)
        if both[0].item() != digest or -both[1].item() != digest:
            raise RuntimeError(
                f"gradual_pruning: the masks differ between processes at step {trainer.step} "
                f"(rank {trainer.ctx.rank}); the replicas' weights are not identical"
            )

    # ------------------------------------------------------------------ every step

    def on_before_optimizer_step(self, trainer: Trainer, info: StepInfo) -> bool:
        if self.pruned:
            for w, dead in zip(self.weights, self.dead):
                if w.grad is not None:
                    w.grad.masked_fill_(dead, 0.0)
        return True

    def on_step_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        if self.pruned:
            self._zero_weights()
        pruned = self.n_prunable - self.live
        live_params = self.base_params - pruned
        self.live_sum += live_params
        self.steps_counted += 1
        metrics["live_params"] = live_params
        metrics["density"] = self.live / self.n_prunable
        metrics["avg_params"] = self.live_sum / self.steps_counted
        initial = self.initial_live if self.initial_live is not None else self.live
        metrics["flops_per_token_live"] = self.base_flops - 6.0 * (initial - self.live)

    # ------------------------------------------------------------------ checkpoint state

    def state_dict(self) -> dict[str, Any]:
        return {
            "masks": {n: m.cpu().clone() for n, m in zip(self.names, self.masks)} if self.pruned else {},
            "live_sum": self.live_sum,
            "steps_counted": self.steps_counted,
            "initial_live": self.initial_live,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._loaded = state  # applied in on_train_start, once the model's prunable weights are known

    def _restore(self, state: dict[str, Any]) -> None:
        masks = state.get("masks", {})
        missing = [n for n in masks if n not in self.names]
        if masks:
            missing += [n for n in self.names if n not in masks]
        if missing:
            raise ConfigError(
                f"callbacks: the checkpoint's gradual_pruning masks do not match the model (e.g. {missing[0]})",
                hint="resume with the model config the run was started with",
            )
        for i, name in enumerate(self.names):
            if name in masks:
                saved = masks[name]
                if saved.shape != self.masks[i].shape:
                    raise ConfigError(
                        f"callbacks: the checkpoint's gradual_pruning mask {name} has shape {tuple(saved.shape)}, "
                        f"the model's weight {tuple(self.masks[i].shape)}",
                        hint="resume with the model config the run was started with",
                    )
                self.masks[i] = saved.to(device=self.masks[i].device, dtype=torch.bool).clone()
        self.live_sum = int(state.get("live_sum", 0))
        self.steps_counted = int(state.get("steps_counted", 0))
        initial = state.get("initial_live")
        self.initial_live = None if initial is None else int(initial)
