"""The learned `linear` mixing policy and how it is fitted from logged re-weighting trajectories.

Policy: `p = softmax(W @ features + b)` over the domains the prior allows, with `features` the state of
recipes/mixing_policy.py (relative losses, their last change, current weights; 3K values for K domains).

Fit (`fit_linear_policy`): reward-weighted regression (Peters & Schaal 2007; AWR, Peng et al. 2019). Each
logged transition (state s, action a = the mixture chosen, reward r = decrease of the balanced relative
validation loss until the next re-weighting) gets weight exp((r - max r) / beta); the policy is the
softmax regression maximising the weighted log-likelihood sum_i w_i sum_k a_ik log p_k(s_i) (the logged
mixtures as soft labels), with an L2 penalty on W. This is a light stand-in for the paper's Conservative
Q-Learning (Yang et al. 2025, arXiv 2507.15640): no Q-function, no bootstrapping (each transition's own
one-interval reward, a myopic objective), no conservative penalty. What it shares with CQL is that it only
re-weights actions the data contains, so it never extrapolates to mixtures no trajectory tried.
Trajectories come from runs of the `mixing_agent` callback (any policy; `random` explores), read from
their metrics.jsonl by `read_trajectories`; `pretrainlab mixing-policy RUN... --out policy.json` does both.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pretrainlab.errors import DataError
from pretrainlab.recipes.mixing_policy import FEATURES, MixingPolicy, Observation, features, register_policy, \
    softmax_over

FORMAT = "pretrainlab.mixing_policy.linear/1"


@dataclass(frozen=True)
class Transition:
    """One re-weighting: the state seen, the mixture chosen, and the reward that mixture earned."""

    state: np.ndarray
    action: np.ndarray
    reward: float


@dataclass(frozen=True)
class LinearPolicyParams:
    """W (K, 3K) and b (K,) over `domains` (in the prepared data's order); `fit` says how they were made."""

    domains: list[str]
    W: np.ndarray
    b: np.ndarray
    fit: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "domains": list(self.domains), "features": list(FEATURES),
                "W": self.W.tolist(), "b": self.b.tolist(), "fit": self.fit}

    @classmethod
    def from_json(cls, tree: Any, *, where: str) -> LinearPolicyParams:
        """Parse and check a policy tree (DataError naming `where` and the bad key)."""
        if not isinstance(tree, dict):
            raise DataError(f"{where}: a linear mixing policy must be a JSON object with domains, W and b")
        missing = [k for k in ("domains", "W", "b") if k not in tree]
        if missing:
            raise DataError(f"{where}: the policy lacks {', '.join(missing)}",
                            hint="write it with `pretrainlab mixing-policy RUN... --out FILE`")
        if tree.get("format", FORMAT) != FORMAT:
            raise DataError(f"{where}: format {tree.get('format')!r} is not {FORMAT!r}")
        domains = tree["domains"]
        if not isinstance(domains, list) or not domains or not all(isinstance(d, str) for d in domains):
            raise DataError(f"{where}: domains must be a non-empty list of domain names")
        k = len(domains)
        try:
            W = np.asarray(tree["W"], dtype=np.float64)
            b = np.asarray(tree["b"], dtype=np.float64)
        except (TypeError, ValueError):
            raise DataError(f"{where}: W and b must be numeric arrays") from None
        if W.shape != (k, len(FEATURES) * k) or b.shape != (k,):
            raise DataError(f"{where}: W must be {k} x {len(FEATURES) * k} and b of length {k} for {k} domains "
                            f"(got W {W.shape}, b {b.shape})")
        if not (np.isfinite(W).all() and np.isfinite(b).all()):
            raise DataError(f"{where}: W and b must be finite")
        fit = tree.get("fit", {})
        return cls(domains=list(domains), W=W, b=b, fit=fit if isinstance(fit, dict) else {})


def save_linear_policy(params: LinearPolicyParams, path: str | Path) -> Path:
    """Write the policy as JSON (atomically)."""
    from pretrainlab.io_atomic import write_json_atomic

    return write_json_atomic(path, params.to_json())


def load_linear_policy(path: str | Path) -> LinearPolicyParams:
    """Read a policy file: JSON (as written by `save_linear_policy`) or .npz with arrays W, b and domains."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"mixing policy file {p} does not exist",
                        hint="fit one with `pretrainlab mixing-policy RUN... --out FILE`")
    if p.suffix == ".npz":
        try:
            with np.load(p, allow_pickle=False) as z:
                tree = {k: z[k].tolist() for k in z.files}
        except (OSError, ValueError) as e:
            raise DataError(f"{p}: not a readable .npz file ({e})") from None
    else:
        try:
            tree = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(f"{p}: not a readable JSON policy ({e})") from None
    return LinearPolicyParams.from_json(tree, where=str(p))


@register_policy("linear")
class LinearPolicy(MixingPolicy):
    """p = softmax(W @ features + b) over the allowed domains. The parameters are part of the callback's
    checkpointed state, so a resumed run uses the ones it started with even if the file changed since."""

    def __init__(self, params: LinearPolicyParams) -> None:
        self.params = params

    def propose(self, obs: Observation) -> np.ndarray:
        logits = self.params.W @ features(obs) + self.params.b
        return softmax_over(logits, obs.base > 0)

    def state_dict(self) -> dict[str, Any]:
        return {"params": self.params.to_json()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "params" in state:
            self.params = LinearPolicyParams.from_json(state["params"], where="checkpoint state of mixing_agent")


def fit_linear_policy(
    trajectories: Sequence[Sequence[Transition]],
    *,
    domains: Sequence[str] | None = None,
    beta: float | None = None,
    l2: float = 1e-2,
) -> LinearPolicyParams:
    """Fit W, b by reward-weighted regression on every transition of `trajectories` (see the module doc).

    `beta` (the reward temperature) defaults to the standard deviation of the rewards: lower is greedier.
    Features are standardised for the fit and the scaling folded back into W and b. Deterministic.
    """
    from scipy.optimize import minimize

    steps = [t for traj in trajectories for t in traj]
    if len(steps) < 2:
        raise DataError(f"fitting a mixing policy needs at least 2 transitions (got {len(steps)})",
                        hint="log trajectories with the mixing_agent callback (policy: random explores)")
    X = np.stack([np.asarray(t.state, dtype=np.float64) for t in steps])
    A = np.stack([np.asarray(t.action, dtype=np.float64) for t in steps])
    r = np.asarray([float(t.reward) for t in steps])
    k = A.shape[1]
    if X.shape[1] != len(FEATURES) * k:
        raise DataError(f"transitions have {X.shape[1]} state values for {k} domains; expected {len(FEATURES) * k}")
    if not (np.isfinite(X).all() and np.isfinite(A).all() and np.isfinite(r).all()) or (A < 0).any():
        raise DataError("transitions must have finite states and rewards and non-negative actions")
    A = A / A.sum(axis=1, keepdims=True)
    names = list(domains) if domains is not None else [f"domain{i}" for i in range(k)]
    if len(names) != k:
        raise DataError(f"{len(names)} domain names for actions over {k} domains")
    if beta is None:
        beta = float(r.std()) or 1.0
    if not beta > 0 or not l2 >= 0:
        raise DataError(f"beta must be > 0 and l2 >= 0 (got beta {beta}, l2 {l2})")
    w = np.exp((r - r.max()) / beta)
    w /= w.sum()

    mu, sd = X.mean(axis=0), X.std(axis=0)
    sd[sd == 0] = 1.0
    Xs = (X - mu) / sd
    n_feat = Xs.shape[1]

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        W, b = theta[: k * n_feat].reshape(k, n_feat), theta[k * n_feat:]
        z = Xs @ W.T + b
        z -= z.max(axis=1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        loss = -float(w @ (A * log_p).sum(axis=1)) + l2 * float((W * W).sum())
        g = (np.exp(log_p) - A) * w[:, None]  # d loss / d z
        grad_W = g.T @ Xs + 2 * l2 * W
        return loss, np.concatenate([grad_W.ravel(), g.sum(axis=0)])

    result = minimize(objective, np.zeros(k * n_feat + k), jac=True, method="L-BFGS-B")
    W = result.x[: k * n_feat].reshape(k, n_feat) / sd
    b = result.x[k * n_feat:] - W @ mu
    fit = {"method": "reward-weighted regression (a light stand-in for CQL)", "transitions": len(steps),
           "trajectories": len(trajectories), "beta": beta, "l2": l2, "converged": bool(result.success)}
    return LinearPolicyParams(domains=names, W=W, b=b, fit=fit)


def read_trajectories(run_dir: str | Path) -> tuple[list[str], list[Transition]]:
    """The domains and transitions a `mixing_agent` run logged (its `"event": "mixing_agent"` lines)."""
    from pretrainlab.train.metrics import read_metrics

    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise DataError(f"{path} does not exist", hint="give a run folder trained with the mixing_agent callback")
    domains: list[str] | None = None
    out: list[Transition] = []
    for i, rec in enumerate(read_metrics(path), start=1):
        if not isinstance(rec, dict) or rec.get("event") != "mixing_agent":
            continue
        names = rec.get("domains")
        if domains is None:
            domains = names
        elif names != domains:
            raise DataError(f"{path} line {i}: the domains changed within the run ({domains} then {names})")
        t = rec.get("transition")
        if isinstance(t, dict) and t.get("reward") is not None:
            out.append(Transition(np.asarray(t["state"], dtype=np.float64), np.asarray(t["action"], dtype=np.float64),
                                  float(t["reward"])))
    if domains is None:
        raise DataError(f"{path} has no mixing_agent lines",
                        hint="train with callbacks: [{name: mixing_agent, options: {policy: random}}]")
    return list(domains), out
