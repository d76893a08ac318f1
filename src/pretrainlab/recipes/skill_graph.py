"""The arithmetic of Skill-it (Chen et al., NeurIPS 2023, arXiv 2307.14430): skills graphs and the online
mixture, as pure functions of numbers (the `skill_it` callback in recipes/skill_it.py feeds them).

- A skills graph A (k x k, rows and columns in domain order): A_ij >= 0 says how much training on skill i
  lowers the validation loss of skill j. `graph_from_spec` reads the named graphs ("identity": each skill
  helps only itself; "complete": every skill helps every other as much as itself, the paper's negative
  control), an explicit k x k list, or a {domain: {domain: weight}} mapping (missing entries are 0, so give
  the diagonal too; 1 by the paper's convention).
- `estimate_graph`: the paper's cheap linear approximation. From one model, train a copy on skill i alone
  for a few steps and record the drop of every skill j's loss: A_ij = max(L_j(before) - L_j(after i), 0).
  Each row is divided by its largest entry (usually the diagonal: a skill helps itself most), so rows are
  on one scale whatever their absolute drops; a row without any drop stays 0. `estimate_graph_by` runs that
  recipe over callables (train on i, measure, reset), so it is tested without a model.
- `skill_it_weights`: the online sampler (the paper's Algorithm 1, as the official `trainer/mw_trainer.py`):
  p_i proportional to exp(eta * sum_{j in targets} A_ij * sum_{tau in the last `window` rounds} L_j^tau),
  with L_j^tau optionally divided by the initial loss L_j^0 (`normalise`). Columns are restricted to the
  target skills (the fine-tuning variant; all skills: the pre-training variant); rows always cover every
  skill, so any skill that helps a target can be sampled.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

NAMED_GRAPHS = ("identity", "complete")


def graph_from_spec(spec: Any, domains: Sequence[str], *, where: str = "graph") -> np.ndarray:
    """The k x k graph (float64) a spec names: "identity", "complete", a k x k nested list in domain order,
    or {domain: {domain: weight}}. Raises ValueError naming `where` for a bad spec (unknown name or domain,
    wrong shape, a negative or non-finite weight)."""
    k = len(domains)
    if isinstance(spec, str):
        if spec == "identity":
            return np.eye(k)
        if spec == "complete":
            return np.ones((k, k))
        raise ValueError(f"{where}={spec!r} must be one of {', '.join(NAMED_GRAPHS)}, 'estimate', a k x k list or "
                         "a {domain: {domain: weight}} mapping")
    if isinstance(spec, Mapping):
        graph = np.zeros((k, k))
        index = {d: i for i, d in enumerate(domains)}
        for src, row in spec.items():
            if src not in index:
                raise ValueError(f"{where} names unknown domain {src!r}; the data has: {', '.join(domains)}")
            if not isinstance(row, Mapping):
                raise ValueError(f"{where}.{src} must map domains to weights, not {type(row).__name__}")
            for dst, w in row.items():
                if dst not in index:
                    raise ValueError(f"{where}.{src} names unknown domain {dst!r}; the data has: {', '.join(domains)}")
                graph[index[src], index[dst]] = _weight(w, f"{where}.{src}.{dst}")
        return graph
    if isinstance(spec, Sequence) and not isinstance(spec, (str, bytes)):
        rows = list(spec)
        if len(rows) != k or any(not isinstance(r, Sequence) or isinstance(r, (str, bytes)) or len(r) != k
                                 for r in rows):
            raise ValueError(f"{where} must be a {k} x {k} list (one row per domain: {', '.join(domains)})")
        return np.array([[_weight(w, f"{where}[{i}][{j}]") for j, w in enumerate(r)] for i, r in enumerate(rows)])
    raise ValueError(f"{where} must be a name, a k x k list or a mapping, not {type(spec).__name__}")


def check_graph_spec(spec: Any, *, where: str = "graph") -> None:
    """What can be checked before the domains are known (names, types, weights); ValueError naming `where`."""
    if isinstance(spec, str):
        if spec not in (*NAMED_GRAPHS, "estimate"):
            graph_from_spec(spec, [], where=where)  # raises the message for an unknown name
        return
    if isinstance(spec, Mapping):
        for src, row in spec.items():
            if not isinstance(row, Mapping):
                raise ValueError(f"{where}.{src} must map domains to weights, not {type(row).__name__}")
            for dst, w in row.items():
                _weight(w, f"{where}.{src}.{dst}")
        return
    if isinstance(spec, Sequence) and not isinstance(spec, bytes):
        n = len(spec)
        graph_from_spec(spec, [str(i) for i in range(n)], where=where)
        return
    raise ValueError(f"{where} must be a name, a k x k list or a mapping, not {type(spec).__name__}")


def estimate_graph(before: Sequence[float], after: Sequence[Sequence[float]]) -> np.ndarray:
    """A from losses: `before[j]` of the starting model, `after[i][j]` after training on skill i alone.
    A_ij = max(before_j - after_ij, 0), then each row divided by its largest entry (a zero row stays 0)."""
    b = np.asarray(before, dtype=np.float64)
    a = np.asarray(after, dtype=np.float64)
    if a.shape != (b.size, b.size):
        raise ValueError(f"after must be {b.size} x {b.size} (one row of losses per trained skill), not {a.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("losses must be finite to estimate a skills graph (a probe diverged: lower its steps)")
    drops = np.maximum(b[None, :] - a, 0.0)
    top = drops.max(axis=1, keepdims=True)
    return np.divide(drops, top, out=np.zeros_like(drops), where=top > 0)


def estimate_graph_by(
    domains: Sequence[str],
    *,
    measure: Callable[[], Sequence[float]],
    train_on: Callable[[str], None],
    reset: Callable[[], None],
    trainable: Sequence[bool] | None = None,
) -> tuple[np.ndarray, list[float], list[list[float]]]:
    """The linear-approximation recipe over callables: measure the starting losses, then per skill i
    `train_on(i)`, measure, `reset()` (back to the starting model). Returns (A, before, after).
    A skill that cannot be trained on (`trainable[i]` False: no training rows) is not probed: its `after` row
    is `before`, so its row of A is 0."""
    before = [float(v) for v in measure()]
    after: list[list[float]] = []
    for i, d in enumerate(domains):
        if trainable is not None and not trainable[i]:
            after.append(list(before))
            continue
        train_on(d)
        after.append([float(v) for v in measure()])
        reset()
    return estimate_graph(before, after), before, after


def skill_it_weights(
    graph: np.ndarray,
    history: Sequence[Sequence[float]],
    *,
    eta: float,
    window: int,
    targets: Sequence[int] | None = None,
    initial: Sequence[float] | None = None,
    allowed: Sequence[bool] | None = None,
) -> np.ndarray:
    """The mixture over all k skills after the rounds in `history` (each a loss per skill, oldest first):
    p_i proportional to exp(eta * sum_{j in targets} A_ij * S_j), S_j = sum over the last `window` rounds of
    L_j (divided by `initial[j]` when given: the `normalise` option, under which the first round's mixture is
    the official code's exp(eta * A 1)). With `allowed`, the softmax runs over those skills only (the others,
    e.g. validation-only domains with nothing to train on, get 0)."""
    g = np.asarray(graph, dtype=np.float64)
    k = g.shape[0]
    if not history:
        raise ValueError("skill_it_weights needs the losses of at least one round")
    cols = list(range(k)) if targets is None else list(targets)
    s = np.asarray(history[-window:], dtype=np.float64)[:, cols].sum(axis=0)
    if initial is not None:
        s = s / np.asarray(initial, dtype=np.float64)[cols]
    logits = eta * (g[:, cols] @ s)
    ok = np.ones(k, dtype=bool) if allowed is None else np.asarray(allowed, dtype=bool)
    if ok.shape != (k,) or not ok.any():
        raise ValueError(f"allowed must mark at least one of the {k} skills")
    logits = np.where(ok, logits - logits[ok].max(), -np.inf)  # the largest allowed is exp(0) = 1: no overflow
    p = np.exp(logits)
    return p / p.sum()


def _weight(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where} is {value!r}, not a number")
    if not math.isfinite(float(value)) or value < 0:
        raise ValueError(f"{where} is {value!r}; graph weights must be finite and >= 0")
    return float(value)


__all__ = ["NAMED_GRAPHS", "check_graph_spec", "estimate_graph", "estimate_graph_by", "graph_from_spec",
           "skill_it_weights"]
