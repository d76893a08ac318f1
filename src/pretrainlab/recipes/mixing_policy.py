"""Mixing policies: map recent per-domain validation losses to the next domain weights.

The `mixing_agent` callback (recipes/mixing_agent.py) calls a policy every N steps, in the spirit of the
Data Mixing Agent (Yang et al. 2025, arXiv 2507.15640): the state is the current mixture plus the history of
per-domain evaluation feedback, the action is the next mixture. Three policies, by name (`POLICIES`):

- `heuristic` (default): a learning-progress x loss-gap rule (ours; the paper's agent is learned). With
  `rel_t[d] = L_t[d] / L_0[d]` the validation loss relative to its first measurement,
      score[d] = progress[d] * gap[d],  progress[d] = |slope[d]| * (T_t - T_0),  gap[d] = rel_t[d]
  where `slope[d]` is the least-squares slope of rel over the last `window` intervals per training token and
  T the tokens trained: progress is how much the domain's relative loss would move at its current rate over a
  span as long as the run so far (absolute learning progress, Portelas et al. 2019: a domain being forgotten
  moves as much as one being learned, the source-retention half of the paper's reward), and the gap scales it
  by how much loss is left relative to where the domain started. A domain that does not move (plateaued, or
  unlearnable noise) scores 0; of two domains moving alike, the one with more loss left scores more. Then
      p[d] proportional to base[d] * exp(score[d] / temperature)
  with `base` the prior mixture (balanced between source and target fields by the callback). Scores are
  relative-loss units (a steady learner halfway from its start scores 0.25), which sets the temperature's.
- `linear` (learned): `p = softmax(W @ features + b)`, `features` = (rel_t, rel_t - rel_{t-1}, current
  weights), W and b read from a policy file that `fit_linear_policy` writes from logged trajectories by
  reward-weighted regression (recipes/mixing_linear.py).
- `random`: a Dirichlet(1) draw per re-weighting, keyed by (seed, re-weighting number): the exploration
  trajectories a learned policy is fitted from (the paper collects 20 random re-weighting trajectories).

Every policy returns a probability vector that is 0 where `base` is 0; the callback mixes it with the
prior (`floor`) and refuses any vector that is not a finite probability vector.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from pretrainlab.registry import Registry

FEATURES = ("rel_loss", "rel_loss_delta", "weights")  # the linear policy's state, K values each
_RANDOM_SALT = 0x6D6978696E67  # "mixing": keeps the random policy's draws apart from other streams


@dataclass(frozen=True)
class Observation:
    """What a policy sees at one re-weighting.

    `losses` (n, K): per-domain validation loss at each kept measurement, oldest first, the first row being
    the run's first measurement (the reference L_0); `tokens` (n,): tokens trained at each; `weights` (K,):
    the mixture in force; `base` (K,): the prior mixture (0 = never draw); `update`: how many re-weightings
    came before this one; `seed`: the run's seed.
    """

    domains: list[str]
    losses: np.ndarray
    tokens: np.ndarray
    weights: np.ndarray
    base: np.ndarray
    update: int = 0
    seed: int = 0

    @property
    def rel(self) -> np.ndarray:
        """Losses relative to the first measurement, (n, K)."""
        return self.losses / self.losses[0]


def features(obs: Observation) -> np.ndarray:
    """The state vector (3K,): relative losses now, their change since the last measurement, current weights."""
    rel = obs.rel
    delta = rel[-1] - rel[-2] if len(rel) >= 2 else np.zeros(rel.shape[1])
    return np.concatenate([rel[-1], delta, obs.weights]).astype(np.float64)


def softmax_over(logits: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """softmax of `logits` over the `allowed` entries (others 0)."""
    out = np.zeros(logits.shape, dtype=np.float64)
    z = logits[allowed]
    z = np.exp(z - z.max())
    out[allowed] = z / z.sum()
    return out


class MixingPolicy:
    """Base class: `propose(obs)` returns the next mixture (a probability vector, 0 where obs.base is 0)."""

    name: str = "policy"

    def propose(self, obs: Observation) -> np.ndarray:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


POLICIES: Registry[type[MixingPolicy]] = Registry("mixing policy")


def register_policy(name: str) -> Callable[[type[MixingPolicy]], type[MixingPolicy]]:
    """Class decorator: make a policy available as the `mixing_agent` option `policy: <name>`."""

    def deco(cls: type[MixingPolicy]) -> type[MixingPolicy]:
        cls.name = name
        return POLICIES.register(name)(cls)

    return deco


def progress_slope(rel: np.ndarray, tokens: np.ndarray, window: int) -> np.ndarray:
    """Least-squares slope of each domain's relative loss against tokens over the last `window` intervals
    (the last window + 1 measurements); 0 with fewer than two measurements or no tokens between them."""
    r = rel[-(window + 1):]
    t = tokens[-(window + 1):].astype(np.float64)
    if len(t) < 2:
        return np.zeros(rel.shape[1])
    tc = t - t.mean()
    denom = float(tc @ tc)
    if denom == 0.0:
        return np.zeros(rel.shape[1])
    return tc @ (r - r.mean(axis=0)) / denom


@register_policy("heuristic")
class HeuristicPolicy(MixingPolicy):
    """score = |recent slope| x tokens so far x relative loss; p proportional to base * exp(score / temperature)
    (see the module doc)."""

    def __init__(self, temperature: float = 0.1, window: int = 3) -> None:
        self.temperature = float(temperature)
        self.window = int(window)

    def scores(self, obs: Observation) -> np.ndarray:
        rel = obs.rel
        slope = progress_slope(rel, obs.tokens, self.window)
        span = float(obs.tokens[-1] - obs.tokens[0])
        return np.abs(slope) * span * rel[-1]

    def propose(self, obs: Observation) -> np.ndarray:
        allowed = obs.base > 0
        logits = np.full(obs.base.shape, -np.inf)
        logits[allowed] = np.log(obs.base[allowed]) + self.scores(obs)[allowed] / self.temperature
        return softmax_over(logits, allowed)


@register_policy("random")
class RandomPolicy(MixingPolicy):
    """A Dirichlet(concentration) mixture over the allowed domains, drawn from a generator keyed by (seed,
    re-weighting number) only: no state to save, and a resumed run draws the same mixtures."""

    def __init__(self, concentration: float = 1.0) -> None:
        self.concentration = float(concentration)

    def propose(self, obs: Observation) -> np.ndarray:
        allowed = obs.base > 0
        rng = np.random.default_rng([obs.seed, obs.update, _RANDOM_SALT])
        out = np.zeros(obs.base.shape, dtype=np.float64)
        out[allowed] = rng.dirichlet(np.full(int(allowed.sum()), self.concentration))
        return out
