"""`mixing_agent`: online domain re-weighting by a policy over recent per-domain validation losses.

In the spirit of the Data Mixing Agent (Yang et al. 2025, arXiv 2507.15640; notes papers-data.md section 4):
every `every` optimiser steps the callback measures each domain's validation loss (the first `val_tokens`
targets of its val split, always the same ones, so the measurements are comparable), hands the history to a
policy (recipes/mixing_policy.py: `heuristic`, `linear`, `random`), and applies the mixture it proposes with
`trainer.loader.set_weights` (in place, from the next batch). The paper learns its agent by offline RL; the
`linear` policy is learned by a lighter method (recipes/mixing_linear.py), `heuristic` is a fixed rule.

Options (all optional):
- `every` (100): optimiser steps between re-weightings; `val_tokens` (8192): validation targets per domain
  (eval/domain_losses.py: fixed windows, no random numbers drawn, the same losses on every rank).
- `policy` (`heuristic`); `temperature` (0.1) and `window` (3 intervals) are the heuristic's;
  `policy_path` (a JSON/.npz file from `pretrainlab mixing-policy`) is the linear policy's and required by it.
- `floor` (0.1): every proposal p becomes (1 - floor) p + floor base, so no domain the prior draws falls to 0
  unless `floor: 0`. A domain whose prior weight is 0 (data.weights) is never drawn.
- `target` (a domain or a list) and `source_weight` (0.5): the paper balances retention of the source field
  against gain on the target field. With a target, `base` is the prior rescaled so that the source domains
  share `source_weight` of it and the target domains the rest, and the reward logged is the decrease of
  source_weight x mean source relative loss + (1 - source_weight) x mean target relative loss. Without a
  target, base = the prior and the reward is the decrease of the mean relative loss.
The prior is the mixture in force when the run starts (data.weights, or proportional to train tokens).

Logged: `mixing_agent/weight/<d>` on every train line (the mixture in force for that step), and at each
re-weighting (and at the start) one `{"event": "mixing_agent", ...}` line in metrics.jsonl with the losses,
the new weights, the policy's state vector and the previous interval's transition (state, action, reward):
the trajectories `fit_linear_policy` learns from. Non-finite or non-positive losses, or a proposal that is not
a finite probability vector, keep the previous weights with a warning: the loader never gets a bad vector.
State (prior, history, current weights, pending transition, the linear policy's parameters) is checkpointed,
so a resumed run re-weights exactly as an uninterrupted one. Refused with `data.stages` (a schedule and an
online policy would both own the mixture).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from pretrainlab.errors import ConfigError
from pretrainlab.eval.domain_losses import DomainLosses
from pretrainlab.recipes.mixing_linear import LinearPolicy, load_linear_policy
from pretrainlab.recipes.mixing_policy import POLICIES, HeuristicPolicy, MixingPolicy, Observation, features
from pretrainlab.train.callbacks import Callback, check_one_mixture_owner, register_callback

if TYPE_CHECKING:
    from pretrainlab.train.trainer import Trainer

STATE_VERSION = 1
HEURISTIC_DEFAULTS = {"temperature": 0.1, "window": 3}


def balanced_loss(rel: np.ndarray, target: np.ndarray | None, source_weight: float) -> float:
    """source_weight x mean source relative loss + (1 - source_weight) x mean target relative loss (the mean
    over all domains without a target, or when one of the two fields is empty)."""
    if target is None or target.all() or not target.any():
        return float(rel.mean())
    return source_weight * float(rel[~target].mean()) + (1 - source_weight) * float(rel[target].mean())


def balanced_base(prior: np.ndarray, target: np.ndarray | None, source_weight: float) -> np.ndarray:
    """The prior rescaled so that the source domains hold `source_weight` of it and the targets the rest
    (a field the prior gives no weight keeps none; the other then holds everything)."""
    if target is None:
        return prior.copy()
    out = np.zeros_like(prior)
    for mask, share in ((~target, source_weight), (target, 1.0 - source_weight)):
        mass = prior[mask].sum()
        if mass > 0:
            out[mask] = prior[mask] / mass * share
    if out.sum() <= 0:  # every weight on a field given share 0: keep the prior rather than nothing
        return prior.copy()
    return out / out.sum()


def finalise(proposal: np.ndarray, base: np.ndarray, floor: float) -> np.ndarray | None:
    """(1 - floor) x proposal (restricted to base > 0, renormalised) + floor x base, or None when the proposal
    is not a usable vector (non-finite, negative, nothing on an allowed domain) or the result is not a
    finite probability vector."""
    p = np.asarray(proposal, dtype=np.float64)
    if p.shape != base.shape or not np.isfinite(p).all() or (p < 0).any():
        return None
    p = np.where(base > 0, p, 0.0)
    if not p.sum() > 0:
        return None
    out = (1.0 - floor) * p / p.sum() + floor * base
    out = out / out.sum()
    if not (np.isfinite(out).all() and (out >= 0).all() and abs(out.sum() - 1.0) < 1e-9):
        return None
    return out


@register_callback("mixing_agent")
class MixingAgent(Callback):
    """Every `every` steps, measure per-domain validation losses and set the mixture a policy proposes
    (Data Mixing Agent, Yang et al. 2025); see the module doc for the options."""

    owns_mixture = True  # one online re-weighting callback per run (train/callbacks.py check_one_mixture_owner)

    def __init__(self, every: int = 100, policy: str = "heuristic", val_tokens: int = 8192,
                 temperature: float | None = None, floor: float = 0.1, window: int | None = None,
                 target: str | list[str] | None = None, source_weight: float | None = None,
                 policy_path: str | None = None) -> None:
        self.every = _positive_int("every", every)
        self.val_tokens = _positive_int("val_tokens", val_tokens)
        self.floor = _fraction("floor", floor)
        if not isinstance(policy, str) or policy not in POLICIES:
            raise ValueError(f"policy={policy!r} is not a known mixing policy (valid: {', '.join(POLICIES.names())})")
        self.policy_name = policy
        given = {k: v for k, v in (("temperature", temperature), ("window", window)) if v is not None}
        if policy != "heuristic" and given:
            raise ValueError(f"{', '.join(given)} set the heuristic policy's rule, not policy={policy!r}'s: remove it")
        if (policy == "linear") != (policy_path is not None):
            raise ValueError("policy_path (a fitted linear policy file) is required by policy=linear and only by it")
        if target is None:
            self.target_names: list[str] | None = None
            if source_weight is not None:
                raise ValueError("source_weight balances source against target domains: give target too")
        else:
            names = [target] if isinstance(target, str) else target
            if not isinstance(names, list) or not names or not all(isinstance(t, str) and t for t in names):
                raise ValueError(f"target={target!r} must be a domain name or a non-empty list of them")
            self.target_names = list(names)
        self.source_weight = _fraction("source_weight", 0.5 if source_weight is None else source_weight)
        self.policy: MixingPolicy
        if policy == "heuristic":
            temp = given.get("temperature", HEURISTIC_DEFAULTS["temperature"])
            if isinstance(temp, bool) or not isinstance(temp, (int, float)) or not temp > 0 or not math.isfinite(temp):
                raise ValueError(f"temperature={temp!r} must be a number > 0")
            window = _positive_int("window", given.get("window", HEURISTIC_DEFAULTS["window"]))
            self.policy = HeuristicPolicy(temperature=float(temp), window=window)
        elif policy == "linear":
            if not isinstance(policy_path, str) or not policy_path:
                raise ValueError(f"policy_path={policy_path!r} must be a file path")
            self.policy_path = policy_path
            self.policy = LinearPolicy(load_linear_policy(policy_path))
        else:
            self.policy = POLICIES.get(policy)()
        self._window = getattr(self.policy, "window", 1)
        self._reset_state()

    def _reset_state(self) -> None:
        self.domains: list[str] | None = None
        self.prior: np.ndarray | None = None
        self.base: np.ndarray | None = None
        self.current: np.ndarray | None = None
        self.target: np.ndarray | None = None
        self.losses: list[list[float]] = []  # the first measurement, then the most recent ones
        self.tokens: list[int] = []
        self.steps: list[int] = []
        self.pending: dict[str, Any] | None = None  # the last re-weighting's (state, action, balanced loss)
        self.updates = 0
        self._meter: DomainLosses | None = None  # built at train start (the windows are fixed for the run)

    # ------------------------------------------------------------------ hooks

    def on_train_start(self, trainer: Trainer) -> None:
        field = self._field(trainer)
        check_one_mixture_owner(trainer)
        loader = trainer.loader
        domains = list(loader.domains)
        if len(domains) < 2:
            raise ConfigError(f"{field}: mixing_agent re-weights domains, and {trainer.data.path} has only "
                              f"{len(domains)} ({', '.join(domains)})", hint="prepare the data with >= 2 domains")
        target = None
        if self.target_names is not None:
            unknown = [t for t in self.target_names if t not in domains]
            if unknown:
                raise ConfigError(f"{field}.options.target names unknown domain {unknown[0]!r}; the data has: "
                                  f"{', '.join(domains)}", hint="use one of those domain names")
            target = np.asarray([d in self.target_names for d in domains])
        if isinstance(self.policy, LinearPolicy) and self.policy.params.domains != domains:
            raise ConfigError(f"{field}.options.policy_path: the policy was fitted for domains "
                              f"{self.policy.params.domains}, the data has {domains}",
                              hint="fit a policy on runs over the same domains (same names, same order)")
        if self.domains is None:  # a fresh run (or the callback added on resume): the current mixture is the prior
            self.domains = domains
            self.prior = np.asarray([loader.weights[d] for d in domains], dtype=np.float64)
            self.current = self.prior.copy()
        elif self.domains != domains:
            raise ConfigError(f"{field}: the checkpoint's mixing_agent state is over domains {self.domains}, "
                              f"the data has {domains}", hint="resume on the data the run started with")
        if target is not None:
            silent = [d for d, t, w in zip(domains, target, self.prior) if t and w <= 0]
            if silent:
                raise ConfigError(f"{field}.options.target names domain {silent[0]!r}, which the prior mixture "
                                  "gives weight 0 (data.weights, or no training rows): the agent re-weights the "
                                  "domains it draws, and this one would never be drawn nor measured",
                                  hint=f"give {silent[0]} training data and a weight > 0 in data.weights, or drop "
                                  "it from the target")
        self.target = target
        self.base = balanced_base(self.prior, target, self.source_weight)
        no_val = [d for d, w in zip(domains, self.prior) if w > 0 and trainer.data.shard(d, "val").n_tokens < 2]
        if no_val:
            raise ConfigError(f"{field}: domain {no_val[0]!r} has no validation tokens to measure its loss on",
                              hint="prepare the data with validation.fraction > 0 (or give it weight 0)")
        drawn = [d for d, w in zip(domains, self.prior) if w > 0]
        self._meter = DomainLosses.for_trainer(trainer, self.val_tokens, drawn)
        try:  # the loader refuses when data.stages owns the mixture: say so now, naming this callback
            loader.set_weights(dict(zip(domains, self.current.tolist())))
        except ConfigError as e:
            raise ConfigError(f"{field} (mixing_agent): {e.message}",
                              hint="remove data.stages (data.weights sets the agent's prior) or the callback") from None
        if not self.losses:
            self._measure(trainer, reweight=False)

    def on_step_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        if self.current is None:
            return
        for d, w in zip(self.domains, self.current.tolist()):
            metrics[f"mixing_agent/weight/{d}"] = w
        if trainer.step % self.every == 0 and trainer.step < trainer.cfg.train.steps:
            reward = self._measure(trainer, reweight=True)
            if reward is not None:
                metrics["mixing_agent/reward"] = reward

    # ------------------------------------------------------------------ one re-weighting

    def _measure(self, trainer: Trainer, *, reweight: bool) -> float | None:
        """Measure the losses, log the last transition's reward, and (with `reweight`) apply the next mixture.
        Returns the reward of the interval that just ended (None when there is none)."""
        assert self.domains is not None and self.current is not None and self._meter is not None
        losses = self._meter.of(trainer)
        vec = np.asarray([losses.get(d, math.nan) for d in self.domains], dtype=np.float64)
        usable = self.prior > 0
        if not (np.isfinite(vec[usable]).all() and (vec[usable] > 0).all()):
            bad = [d for d, v, u in zip(self.domains, vec, usable) if u and not (math.isfinite(v) and v > 0)]
            trainer._say(f"warning: mixing_agent at step {trainer.step}: validation loss of {', '.join(bad)} is "
                         f"{', '.join(str(losses.get(d)) for d in bad)}; the weights stay as they are")
            self.pending = None
            return None
        measured = {d: (float(v) if u else None) for d, v, u in zip(self.domains, vec.tolist(), usable)}
        vec = np.where(usable, vec, 1.0)  # a domain never drawn is not measured usefully; keep it neutral
        self._remember(vec, trainer)
        obs = Observation(domains=self.domains, losses=np.asarray(self.losses), tokens=np.asarray(self.tokens),
                          weights=self.current, base=self.base, update=self.updates, seed=int(trainer.cfg.seed))
        balanced = balanced_loss(obs.rel[-1], self.target, self.source_weight)
        transition = None
        if self.pending is not None:
            transition = {**{k: v for k, v in self.pending.items() if k != "balanced"},
                          "reward": self.pending["balanced"] - balanced}
        if reweight:
            new = None
            with np.errstate(all="ignore"):  # a bad proposal is caught below, not printed
                try:
                    new = finalise(self.policy.propose(obs), self.base, self.floor)
                except (FloatingPointError, ValueError) as e:
                    trainer._say(f"warning: mixing_agent at step {trainer.step}: policy {self.policy_name} failed "
                                 f"({e})")
            if new is None:
                trainer._say(f"warning: mixing_agent at step {trainer.step}: policy {self.policy_name} proposed no "
                             "finite probability vector; the weights stay as they are")
            else:
                trainer.loader.set_weights(dict(zip(self.domains, new.tolist())))
                self.current = new
            self.updates += 1
        state = features(obs)  # what the policy saw: the weights before this re-weighting
        self.pending = {"state": state.tolist(), "action": self.current.tolist(), "balanced": balanced}
        self._log(trainer, measured, transition, state)
        return None if transition is None else transition["reward"]

    def _remember(self, vec: np.ndarray, trainer: Trainer) -> None:
        """Append a measurement; keep the first (the reference L_0) and the last window + 1."""
        self.losses.append(vec.tolist())
        self.tokens.append(int(trainer.tokens))
        self.steps.append(int(trainer.step))
        keep = max(self._window, 1) + 1
        if len(self.losses) > keep + 1:
            for history in (self.losses, self.tokens, self.steps):
                del history[1:-keep]

    def _log(self, trainer: Trainer, measured: dict[str, float | None], transition: dict[str, Any] | None,
             state: np.ndarray) -> None:
        """One `mixing_agent` line; `measured` holds None for a domain the prior never draws (not measured)."""
        if trainer.writer is None:
            return
        line: dict[str, Any] = {
            "event": "mixing_agent", "step": trainer.step, "tokens": trainer.tokens, "policy": self.policy_name,
            "domains": self.domains,
            "mixing_agent": {"val_loss": measured,
                             "weight": dict(zip(self.domains, self.current.tolist()))},
            "state": state.tolist(),
        }
        if transition is not None:
            line["transition"] = transition
            line["mixing_agent"]["reward"] = transition["reward"]
        trainer.writer.write(line)

    def _field(self, trainer: Trainer) -> str:
        index = [i for i, c in enumerate(trainer.cfg.callbacks) if c.name == self.name]
        return f"callbacks.{index[0]}" if index else f"callback {self.name!r}"

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        if self.domains is None:
            return {"version": STATE_VERSION}
        return {
            "version": STATE_VERSION, "policy": self.policy_name, "domains": self.domains,
            "prior": self.prior.tolist(), "current": self.current.tolist(), "losses": self.losses,
            "tokens": self.tokens, "steps": self.steps, "pending": self.pending, "updates": self.updates,
            "policy_state": self.policy.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from pretrainlab.errors import CheckpointError

        if state.get("version") != STATE_VERSION:
            raise CheckpointError(f"mixing_agent state version {state.get('version')!r} is not {STATE_VERSION}",
                                  hint="resume with the pretrainlab version that wrote the checkpoint")
        self._reset_state()
        if "domains" not in state:
            return
        self.domains = list(state["domains"])
        self.prior = np.asarray(state["prior"], dtype=np.float64)
        self.current = np.asarray(state["current"], dtype=np.float64)
        self.losses = [list(map(float, row)) for row in state["losses"]]
        self.tokens = [int(t) for t in state["tokens"]]
        self.steps = [int(s) for s in state["steps"]]
        self.pending = state["pending"]
        self.updates = int(state["updates"])
        if state.get("policy") == self.policy_name:
            self.policy.load_state_dict(state.get("policy_state", {}))


def _positive_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{key}={value!r} must be an integer >= 1")
    return value


def _fraction(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{key}={value!r} must be a number in [0, 1]")
    return float(value)
