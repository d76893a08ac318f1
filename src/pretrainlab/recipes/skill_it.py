"""Skill-it online data selection (Chen et al., NeurIPS 2023, arXiv 2307.14430) as the `skill_it` callback.

Skills are the prepared data's domains, each with its validation shard. Training runs in rounds of `every`
optimiser steps. At the start of each round the callback measures every domain's validation loss on the
first `val_tokens` targets of its shard (eval/domain_losses.py) and sets the loader's mixture to

    p_i  proportional to  exp(eta * sum_{j in target} A_ij * sum_{last `window` rounds} L_j)

(recipes/skill_graph.py `skill_it_weights`; with `normalise` each L_j is divided by its loss at the first
round), through `trainer.loader.set_weights`, in place, from that round's first batch. A is the skills
graph; `target` restricts its columns to the domains whose loss is to be minimised (the paper's
fine-tuning variant; default: all domains, its pre-training variant). Only domains with a training row (and
weight > 0 in `data.weights` when it is given) are sampled: a validation-only domain, e.g. a held-out target,
is measured but gets weight 0 and no probe. The first round starts at step 0, so
with `normalise` its mixture is the official code's exp(eta * A 1).

Options (paper's LEGO values where it gives them): `every` (100), `eta` (0.5), `window` (3), `graph`
("identity" default, "complete", "estimate", a k x k list in the data's domain order, or
{domain: {domain: weight}}), `target` (a domain name or a list; default all), `normalise` (false, as the
official scripts), `val_tokens` (4096 per domain, per round), and for `graph: estimate` `probe_steps` (10)
and `probe_tokens` (4096 per domain).

`graph: estimate` is the paper's linear approximation, done once when training starts (and kept in the
checkpoint): from the current model, for each domain i train for `probe_steps` steps on batches of domain i
alone (the run's batch size, micro-batching, objective, optimiser, gradient clipping and scheduled learning
rate: the run's own first steps, on one domain; a fresh AdamW at the peak rate would mostly measure the shock
of its first updates, which raised every domain's loss in our runs), record every domain's loss drop on `probe_tokens` validation tokens, then put the model,
optimiser state and RNG streams back exactly; A is the drops with each row divided by its largest
(skill_graph.py `estimate_graph`). The main run is therefore bit-identical to one given that graph
explicitly; only the start takes longer (k x probe_steps steps and k + 1 measurements). Refused with FSDP
(sharded parameters); DDP ranks train identical copies on their own rows, as in training.

Logged: the graph once (printed, and written to `skill_graph.json` in the run folder with, when estimated,
the probe losses), and on every train line `skill_it/round`, `skill_it/weight/<domain>` (the mixture in
force) and `skill_it/val_loss/<domain>` (the losses of the latest round). State (graph, the initial and the
last `window` rounds' losses, round count, weights) is saved in checkpoints, so a resumed run continues
exactly; a saved graph is kept over the configured one. `data.stages` (a fixed curriculum) and this
callback both want the mixture: that is a ConfigError when training starts.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pretrainlab.errors import ConfigError
from pretrainlab.recipes.skill_graph import (
    check_graph_spec,
    estimate_graph_by,
    graph_from_spec,
    skill_it_weights,
)
from pretrainlab.train.callbacks import Callback, check_one_mixture_owner, register_callback

if TYPE_CHECKING:
    from pretrainlab.eval.domain_losses import DomainLosses
    from pretrainlab.train.trainer import Trainer

GRAPH_FILE = "skill_graph.json"
STATE_VERSION = 1


@register_callback("skill_it")
class SkillIt(Callback):
    """Skill-it's online mixture from per-domain validation losses and a skills graph (see the module doc)."""

    owns_mixture = True  # one online re-weighting callback per run (train/callbacks.py check_one_mixture_owner)

    def __init__(
        self,
        every: int = 100,
        eta: float = 0.5,
        window: int = 3,
        graph: Any = "identity",
        target: str | list[str] | None = None,
        normalise: bool = False,
        val_tokens: int = 4096,
        probe_steps: int = 10,
        probe_tokens: int = 4096,
    ) -> None:
        for key, value in (("every", every), ("window", window), ("val_tokens", val_tokens),
                           ("probe_steps", probe_steps), ("probe_tokens", probe_tokens)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key}={value!r} must be a positive integer")
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not math.isfinite(eta) or eta < 0:
            raise ValueError(f"eta={eta!r} must be a finite number >= 0")
        if not isinstance(normalise, bool):
            raise ValueError(f"normalise={normalise!r} must be true or false")
        check_graph_spec(graph, where="graph")
        if target is not None and not (isinstance(target, str) or (
                isinstance(target, Sequence) and target and all(isinstance(t, str) for t in target))):
            raise ValueError(f"target={target!r} must be a domain name or a non-empty list of domain names")
        self.every, self.eta, self.window = every, float(eta), window
        self.graph_spec = graph
        self.target_names = None if target is None else ([target] if isinstance(target, str) else list(target))
        self.normalise = normalise
        self.val_tokens, self.probe_steps, self.probe_tokens = val_tokens, probe_steps, probe_tokens
        # state (checkpointed)
        self.graph: list[list[float]] | None = None
        self.graph_domains: list[str] | None = None
        self.initial: list[float] | None = None
        self.recent: list[list[float]] = []
        self.rounds = 0
        self.last_round_step: int | None = None
        self.weights: dict[str, float] | None = None
        # per session
        self._meter: DomainLosses | None = None
        self._field = "callbacks (skill_it).options"
        self._targets: list[int] = []
        self._allowed: list[bool] = []

    # ------------------------------------------------------------------ hooks

    def on_train_start(self, trainer: Trainer) -> None:
        from pretrainlab.eval.domain_losses import DomainLosses

        domains = trainer.loader.domains
        self._field = _field(trainer)
        if trainer.cfg.data.stages:
            raise ConfigError("data.stages (a fixed curriculum) and the skill_it callback both set the mixture",
                              hint="remove data.stages, or the skill_it callback")
        check_one_mixture_owner(trainer)
        unknown = [t for t in self.target_names or [] if t not in domains]
        if unknown:
            raise ConfigError(f"{self._field}.target names unknown domain {unknown[0]!r}; the data has: "
                              f"{', '.join(domains)}")
        self._targets = [domains.index(t) for t in self.target_names] if self.target_names else list(range(len(domains)))
        # Skills it can sample: a training row at this seq_len, and weight > 0 in data.weights when given. A
        # validation-only domain (e.g. a held-out target) is measured, never drawn nor probed.
        rows = trainer.loader.windows_per_epoch()
        prior = trainer.cfg.data.weights
        self._allowed = [rows[d] > 0 and (prior is None or float(prior.get(d, 0.0)) > 0) for d in domains]
        if not any(self._allowed):
            raise ConfigError(f"{self._field}: skill_it has no domain to sample: none has a training row of "
                              f"data.seq_len + 1 tokens with weight > 0 in data.weights",
                              hint="give data.weights > 0 to domains with training data")
        if self.graph_domains is not None and self.graph_domains != domains:
            raise ConfigError(f"the skill_it state in the checkpoint is for domains {self.graph_domains}, the data "
                              f"has {domains}", hint="resume on the data the run started with")
        self._meter = DomainLosses.for_trainer(trainer, self.val_tokens)
        if self.graph is None:
            self._set_graph(trainer, domains)
        elif self.graph_spec != "estimate":
            configured = graph_from_spec(self.graph_spec, domains, where=f"{self._field}.graph")
            if not np.array_equal(configured, np.asarray(self.graph)):
                trainer._say("warning: skill_it keeps the skills graph saved in the checkpoint, not the config's")
        if self._round_due(trainer) or self.weights is None:
            self._round(trainer)

    def on_step_start(self, trainer: Trainer) -> None:
        if self._round_due(trainer):
            self._round(trainer)

    def on_step_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        metrics["skill_it/round"] = self.rounds
        for d, w in (self.weights or {}).items():
            metrics[f"skill_it/weight/{d}"] = w
        for d, v in zip(self.graph_domains or [], self.recent[-1] if self.recent else []):
            metrics[f"skill_it/val_loss/{d}"] = v

    # ------------------------------------------------------------------ rounds

    def _round_due(self, trainer: Trainer) -> bool:
        return trainer.step % self.every == 0 and self.last_round_step != trainer.step

    def _round(self, trainer: Trainer) -> None:
        """Measure the losses, append them to the history, set the mixture (paper's Algorithm 1, one round)."""
        assert self._meter is not None and self.graph is not None and self.graph_domains is not None
        losses = self._meter.of(trainer)
        row = [losses[d] for d in self.graph_domains]
        if self.initial is None:
            self.initial = row
        self.recent = (self.recent + [row])[-self.window:]
        p = skill_it_weights(np.asarray(self.graph), self.recent, eta=self.eta, window=self.window,
                             targets=self._targets, initial=self.initial if self.normalise else None,
                             allowed=self._allowed)
        self.weights = {d: float(v) for d, v in zip(self.graph_domains, p)}
        trainer.loader.set_weights(self.weights)
        self.weights = trainer.loader.weights  # the probabilities in force (the loader renormalises)
        self.rounds += 1
        self.last_round_step = trainer.step

    # ------------------------------------------------------------------ the graph

    def _set_graph(self, trainer: Trainer, domains: list[str]) -> None:
        from pretrainlab.io_atomic import write_json_atomic

        record: dict[str, Any] = {"domains": domains, "source": self.graph_spec if isinstance(self.graph_spec, str)
                                  else "explicit", "step": trainer.step}
        if self.graph_spec == "estimate":
            graph, before, after = self._estimate(trainer, domains)
            record.update({"probe_steps": self.probe_steps, "probe_tokens": self.probe_tokens,
                           "loss_before": before, "loss_after_probe": after})
        else:
            try:
                graph = graph_from_spec(self.graph_spec, domains, where=f"{self._field}.graph")
            except ValueError as e:
                raise ConfigError(str(e), hint="list one row (and column) per domain, in the data's domain order")
        self.graph = graph.tolist()
        self.graph_domains = list(domains)
        record["graph"] = self.graph
        if trainer.is_main:
            write_json_atomic(trainer.run_dir / GRAPH_FILE, record)
        width = max(len(d) for d in domains)
        trainer._say(f"skill_it: skills graph ({record['source']}; row i -> column j: training on i lowers j's loss)")
        for d, r in zip(domains, self.graph):
            trainer._say(f"  {d:>{width}}  " + " ".join(f"{v:5.2f}" for v in r))

    def _estimate(self, trainer: Trainer, domains: list[str]) -> tuple[np.ndarray, list[float], list[list[float]]]:
        """The linear approximation (module doc): probes from the current model, everything restored after."""
        from pretrainlab.eval.domain_losses import DomainLosses

        if trainer.cfg.parallel == "fsdp":
            raise ConfigError("skill_it graph=estimate does not work with parallel=fsdp (sharded parameters)",
                              hint="estimate the graph in a run with parallel=none or ddp and give it explicitly")
        meter = DomainLosses.for_trainer(trainer, self.probe_tokens)
        saved = _Snapshot.take(trainer)
        trainer._say(f"skill_it: estimating the skills graph ({len(domains)} probes x {self.probe_steps} steps)")
        try:
            graph, before, after = estimate_graph_by(
                domains,
                measure=lambda: [meter.of(trainer)[d] for d in domains],
                train_on=lambda d: _probe(trainer, d, self.probe_steps),
                reset=lambda: saved.restore(trainer, rng=False),
                trainable=self._allowed,
            )
        except ValueError as e:
            raise ConfigError(f"{self._field}.graph=estimate: {e}", hint="lower probe_steps or the learning rate") from None
        finally:
            saved.restore(trainer, rng=True)
        return graph, before, after

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "graph": self.graph, "graph_domains": self.graph_domains,
                "initial": self.initial, "recent": self.recent, "rounds": self.rounds,
                "last_round_step": self.last_round_step, "weights": self.weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not isinstance(state, Mapping) or state.get("version") != STATE_VERSION:
            raise ConfigError("the checkpoint's skill_it state was not written by this version of the callback",
                              hint="start a new run")
        self.graph, self.graph_domains = state["graph"], state["graph_domains"]
        self.initial, self.recent = state["initial"], [list(r) for r in state["recent"]]
        self.rounds, self.last_round_step = int(state["rounds"]), state["last_round_step"]
        self.weights = None if state["weights"] is None else dict(state["weights"])


def _field(trainer: Trainer) -> str:
    """`callbacks.<i>.options` of this callback in the run's config (for error messages)."""
    names = [c.name for c in trainer.cfg.callbacks]
    return f"callbacks.{names.index('skill_it')}.options" if "skill_it" in names else "callbacks (skill_it).options"


# ---------------------------------------------------------------------- probes


class _Snapshot:
    """The model's parameters and buffers, the optimiser's state and the process's RNG streams, to put back
    exactly after the graph's probes (in place: the optimiser keeps its references to the parameters)."""

    def __init__(self, model: dict[str, torch.Tensor], optim: dict[str, Any], rng: dict[str, Any]) -> None:
        self.model, self.optim, self.rng = model, optim, rng

    @classmethod
    def take(cls, trainer: Trainer) -> _Snapshot:
        model = {k: v.detach().clone() for k, v in trainer.module.state_dict().items()}
        rng: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(),
                               "torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return cls(model, copy.deepcopy(trainer.optimizer.state_dict()), rng)

    def restore(self, trainer: Trainer, *, rng: bool) -> None:
        trainer.module.load_state_dict(self.model)
        trainer.optimizer.load_state_dict(copy.deepcopy(self.optim))
        trainer.optimizer.zero_grad(set_to_none=True)
        if rng:
            random.setstate(self.rng["python"])
            np.random.set_state(self.rng["numpy"])
            torch.set_rng_state(self.rng["torch"])
            if "cuda" in self.rng:
                torch.cuda.set_rng_state_all(self.rng["cuda"])


def _probe(trainer: Trainer, domain: str, steps: int) -> None:
    """Train the trainer's model for `steps` optimiser steps on batches of `domain` alone, as the run's next
    `steps` steps would train it (micro-batches, loss normalised by the step's target tokens over ranks,
    clipping, the scheduled learning rate: the warm-up at the start); its own loader, so the run's data order
    is untouched."""
    from pretrainlab.data.loader import TokenLoader
    from pretrainlab.train.distributed import all_reduce_sum
    from pretrainlab.train.precision import autocast

    cfg, plan, ctx = trainer.cfg, trainer.plan, trainer.ctx
    loader = TokenLoader(trainer.data, seq_len=cfg.data.seq_len, global_rows=plan.global_rows, seed=cfg.seed,
                         mode=cfg.data.mode, weights={domain: 1.0}, rank=ctx.rank, world_size=ctx.world_size)
    model = trainer.model
    model.train()
    params = [p for p in trainer.module.parameters() if p.requires_grad]
    max_norm = cfg.train.grad_clip if cfg.train.grad_clip is not None else math.inf
    for s in range(steps):
        for group in trainer.optimizer.param_groups:
            group["lr"] = group.get("base_lr", cfg.optim.lr) * trainer.lr_multiplier(trainer.step + s)
        batch = loader.next_batch()
        n_tokens = torch.zeros(1, dtype=torch.float64, device=trainer.device)
        for i in range(plan.accum_steps):
            micro = batch.rows(i * plan.micro_batch_size, (i + 1) * plan.micro_batch_size).to(trainer.device)
            with autocast(trainer.device, trainer.autocast_dtype):
                out = trainer.objective(model, micro)
            out.loss_sum.backward()
            n_tokens += float(out.n_tokens)
        all_reduce_sum(n_tokens, ctx)
        grads = [p.grad for p in params if p.grad is not None]
        scale = (ctx.world_size if ctx.is_distributed else 1) / max(float(n_tokens.item()), 1.0)
        torch._foreach_mul_(grads, scale)
        torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], max_norm, foreach=True)
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)


__all__ = ["GRAPH_FILE", "SkillIt"]
