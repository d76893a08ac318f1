"""CLIMB's mixture search: iterative bootstrapping of a predictor over mixtures (Diao et al. 2025, arXiv
2504.13161, section 3 and `../shared/papers/papers-data.md` section 3).

Given domains (CLIMB's clusters, see data/cluster.py) and an objective to minimise (a proxy run's
validation loss on target data), the search spends a budget of proxy runs over iterations, 4:2:1 by
default as in the paper (64/32/16 there, 16/8/4 at our tiny scale):

1. iteration 1 samples mixtures from a Dirichlet prior weighted by domain size (mean = each domain's share
   of the tokens, total concentration `concentration` x number of domains), trains a proxy on each and fits
   a predictor mixture -> objective (science/mixture_predictor.py);
2. iteration k scores a large pool of fresh prior samples with the predictor, keeps the `top_n` predicted
   best and trains a seeded random `budget[k]` of them, then refits the predictor on every proxy so far;
3. the output is the final predictor's best mixture over a fresh pool and every tried mixture.

The objective is any function from a list of mixtures to their measured values (`ProxyObjective` trains
proxies as one resumable sweep in `ctx.out`; tests pass a cheap function). Everything random is keyed by
(seed, iteration), so the same seed and objective give the same candidates and the same choice, and a
search interrupted after its proxies' sweep resumes to the same result.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pretrainlab.errors import ConfigError
from pretrainlab.science.mixture_predictor import MixturePredictor, fit_predictor, spearman

Mixture = dict[str, float]
Objective = Callable[[list[Mixture]], list[float]]
DEFAULT_BUDGET = (16, 8, 4)
DEFAULT_POOL = 10_000
SALT = 0xC11B  # keeps the search's random streams apart from others keyed by the same seed
MIN_ALPHA = 0.05  # the prior's smallest Dirichlet parameter: a tiny domain is still sampled now and then


@dataclass
class Candidate:
    """One mixture the search trained a proxy on. `predicted` is the objective the predictor of the previous
    iteration gave it before it was trained (None in iteration 1), `measured` the proxy's (NaN if it failed)."""

    index: int
    iteration: int
    weights: Mixture
    predicted: float | None
    measured: float = math.nan


@dataclass
class SearchResult:
    """The search so far: every candidate, one summary per finished iteration, and (once done) the choice."""

    domains: list[str]
    prior: list[float]
    candidates: list[Candidate] = field(default_factory=list)
    iterations: list[dict[str, Any]] = field(default_factory=list)
    chosen: Mixture | None = None
    chosen_predicted: float | None = None
    chosen_measured: float | None = None  # when the chosen mixture is one of the tried ones

    @property
    def heldout_spearman(self) -> float:
        """Spearman of predicted vs measured over every candidate predicted before it was trained (iterations
        >= 2): the predictor's ranking on proxies it had not seen."""
        pairs = [(c.predicted, c.measured) for c in self.candidates if c.predicted is not None]
        if not pairs:
            return math.nan
        return spearman(np.array([p for p, _ in pairs]), np.array([m for _, m in pairs]))

    @property
    def cv_spearman(self) -> float:
        """The final predictor's cross-validated Spearman over every proxy (NaN before the first fit)."""
        return float(self.iterations[-1]["cv_spearman"]) if self.iterations else math.nan

    def best_measured(self, iteration: int | None = None) -> Candidate | None:
        """The candidate with the lowest measured objective (of one iteration, or of all)."""
        pool = [c for c in self.candidates if math.isfinite(c.measured) and (iteration is None or c.iteration == iteration)]
        return min(pool, key=lambda c: (c.measured, c.index)) if pool else None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["heldout_spearman"] = self.heldout_spearman
        out["cv_spearman"] = self.cv_spearman
        return out


def size_prior(sizes: Sequence[float], concentration: float = 1.0) -> np.ndarray:
    """Dirichlet parameters weighted by domain size: alpha_i = concentration x n x share_i (at least MIN_ALPHA),
    so a sample's mean is each domain's share of the tokens."""
    s = np.asarray(sizes, dtype=np.float64)
    if s.ndim != 1 or s.size < 2 or np.any(~np.isfinite(s)) or np.any(s < 0) or s.sum() <= 0:
        raise ConfigError("a mixture search needs >= 2 domains with non-negative sizes, not all 0")
    if not concentration > 0:
        raise ConfigError(f"concentration {concentration}: must be > 0")
    return np.maximum(concentration * s.size * s / s.sum(), MIN_ALPHA)


def sample_mixtures(rng: np.random.Generator, alpha: np.ndarray, n: int, decimals: int = 4) -> np.ndarray:
    """`n` Dirichlet(alpha) mixtures rounded to `decimals` (rows sum to exactly 1 at that precision)."""
    w = np.round(rng.dirichlet(alpha, size=n), decimals)
    top = np.argmax(w, axis=1)
    w[np.arange(n), top] = np.round(w[np.arange(n), top] + 1.0 - w.sum(axis=1), decimals)
    return w


def climb_search(
    domains: Sequence[str],
    sizes: Sequence[float],
    objective: Objective,
    *,
    budget: Sequence[int] = DEFAULT_BUDGET,
    pool: int = DEFAULT_POOL,
    top_n: int | None = None,
    concentration: float = 1.0,
    predictor: str = "auto",
    seed: int = 0,
    decimals: int = 4,
    on_iteration: Callable[[SearchResult], None] | None = None,
) -> SearchResult:
    """Run the search (module docstring) and return every candidate and the chosen mixture.

    `top_n` is how many of the pool's best-predicted mixtures iteration k draws its `budget[k]` from (default
    4 x budget[k]); `on_iteration` gets the partial result after each iteration (e.g. to write the log).
    """
    domains = list(domains)
    budget = [int(b) for b in budget]
    if len(set(domains)) != len(domains):
        raise ConfigError("a mixture search got the same domain twice")
    if not budget or any(b < 1 for b in budget) or budget[0] < 3:
        raise ConfigError(f"budget {budget}: needs >= 3 proxies in iteration 1 (to fit a predictor) and >= 1 after")
    if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1):
        raise ConfigError(f"top_n {top_n!r}: must be an integer >= 1 (or left out: 4 x each iteration's budget)")
    if pool < max(budget):
        raise ConfigError(f"pool {pool}: must be at least the largest iteration's budget ({max(budget)})")
    alpha = size_prior(sizes, concentration)
    result = SearchResult(domains=domains, prior=[float(a) for a in alpha])
    tried: set[tuple[float, ...]] = set()
    fitted: MixturePredictor | None = None
    for it, n in enumerate(budget, start=1):
        rng = np.random.default_rng([seed, it, SALT])
        if fitted is None:
            picks = _unique(sample_mixtures(rng, alpha, 4 * n, decimals), tried)[:n]
            predicted: list[float | None] = [None] * len(picks)
        else:
            fresh = _unique(sample_mixtures(rng, alpha, pool, decimals), tried)
            scores = fitted.predict(fresh)
            order = np.argsort(scores, kind="stable")[: max(n, 4 * n if top_n is None else top_n)]
            chosen = np.sort(rng.choice(order, size=min(n, order.size), replace=False))
            picks = fresh[chosen]
            predicted = [float(scores[i]) for i in chosen]
        mixtures = [_as_mixture(domains, row) for row in picks]
        values = list(objective(mixtures))
        if len(values) != len(mixtures):
            raise ValueError(f"the objective returned {len(values)} values for {len(mixtures)} mixtures")
        for row, mix, pred, val in zip(picks, mixtures, predicted, values):
            tried.add(tuple(float(v) for v in row))
            result.candidates.append(Candidate(index=len(result.candidates), iteration=it, weights=mix,
                                               predicted=pred, measured=_finite(val)))
        fitted = _refit(result, domains, predictor, seed)
        new = result.candidates[-len(mixtures):]
        result.iterations.append({
            "iteration": it, "trained": len(mixtures), "predictor": fitted.kind,
            "cv_spearman": fitted.cv_spearman[fitted.kind], "cv_spearman_by_model": fitted.cv_spearman,
            "heldout_spearman": spearman(np.array([c.predicted if c.predicted is not None else math.nan for c in new]),
                                         np.array([c.measured for c in new])) if it > 1 else math.nan,
            "best_measured": min((c.measured for c in result.candidates if math.isfinite(c.measured)), default=math.nan),
        })
        if on_iteration is not None:
            on_iteration(result)
    assert fitted is not None
    rng = np.random.default_rng([seed, len(budget) + 1, SALT])
    tried_rows = np.array([[c.weights[d] for d in domains] for c in result.candidates])
    final_pool = np.vstack([tried_rows, _unique(sample_mixtures(rng, alpha, pool, decimals), tried)])
    scores = fitted.predict(final_pool)
    best = int(np.argmin(scores))
    result.chosen = _as_mixture(domains, final_pool[best])
    result.chosen_predicted = float(scores[best])
    result.chosen_measured = result.candidates[best].measured if best < len(result.candidates) else None
    if on_iteration is not None:
        on_iteration(result)
    return result


def _refit(result: SearchResult, domains: list[str], predictor: str, seed: int) -> MixturePredictor:
    ok = [c for c in result.candidates if math.isfinite(c.measured)]
    if len(ok) < 3:
        raise ConfigError(f"only {len(ok)} of {len(result.candidates)} proxies gave a finite objective: too few "
                          "to fit a predictor", hint="see the proxies' logs (did they diverge?); lower the lr")
    x = np.array([[c.weights[d] for d in domains] for c in ok])
    return fit_predictor(x, np.array([c.measured for c in ok]), kind=predictor, seed=seed)


def _unique(rows: np.ndarray, tried: set[tuple[float, ...]]) -> np.ndarray:
    """The rows not tried yet, each once, in order."""
    seen = set(tried)
    keep = []
    for i, row in enumerate(rows):
        key = tuple(float(v) for v in row)
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return rows[keep]


def _as_mixture(domains: list[str], row: np.ndarray) -> Mixture:
    return {d: float(v) for d, v in zip(domains, row)}


def _finite(value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return math.nan
    return v if math.isfinite(v) else math.nan


# ------------------------------------------------------------------------------------------- proxies


class ProxyObjective:
    """The objective of a real search: train one proxy run per mixture (the RunConfig tree `base` with
    `data.weights` set) and return the mean of its final `val_loss/<target>` over `targets`.

    All proxies of a search are one sweep `ctx.out/sweeps/<name>` (science/arms.py `run_arms`): each call
    adds its mixtures to the sweep, so runs already finished are reused and interrupted ones resume.
    """

    def __init__(self, ctx: Any, base: dict[str, Any], targets: Sequence[str], *, name: str = "climb-proxies",
                 seed: int = 0, quiet: bool = False) -> None:
        if not targets:
            raise ConfigError("a CLIMB search needs at least one target domain", hint="pass --target DOMAIN")
        self.ctx = ctx
        self.base = base
        self.targets = list(targets)
        self.name = name
        self.seed = int(seed)
        self.quiet = quiet
        self.arms: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, Path] = {}

    def __call__(self, mixtures: list[Mixture]) -> list[float]:
        from pretrainlab.science.arms import run_arms

        names = []
        for mix in mixtures:
            name = f"proxy{len(self.arms):03d}"
            self.arms[name] = {"data.weights": dict(mix)}
            names.append(name)
        res = run_arms(self.ctx, self.name, self.base, self.arms, [self.seed], allow_failed=True, quiet=self.quiet)
        out = []
        for name in names:
            self.runs[name] = res[name].runs[0]
            vals = [res[name].values(f"val_loss/{t}")[0] for t in self.targets]
            out.append(sum(vals) / len(vals))
        return out


def mixture_fragment(data_path: str, weights: Mixture, digits: int = 4) -> dict[str, Any]:
    """The config fragment `{data: {path, weights}}` of a chosen mixture (zero weights left out)."""
    return {"data": {"path": str(data_path), "weights": {d: round(float(w), digits) for d, w in weights.items()
                                                          if round(float(w), digits) > 0}}}


def write_search(out: Path, result: SearchResult, data_path: str, extra: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write `search.json` (every candidate with its predicted and measured objective, per-iteration
    summaries) and, once the search has chosen, `mixture.yaml` (the config fragment), both atomically."""
    import yaml

    from pretrainlab.io_atomic import strict_json, write_json_atomic, write_text_atomic

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"search": out / "search.json"}
    write_json_atomic(paths["search"], strict_json({**result.to_dict(), "data": str(data_path), **(extra or {})}))
    if result.chosen is not None:
        paths["mixture"] = out / "mixture.yaml"
        header = (f"# CLIMB mixture: predicted objective {result.chosen_predicted:.4f}; search log {paths['search']}\n"
                  "# use: pretrainlab train CONFIG.yaml and merge this data section (or pass data.weights=...)\n")
        write_text_atomic(paths["mixture"], header + yaml.safe_dump(mixture_fragment(data_path, result.chosen),
                                                                    sort_keys=False))
    return paths




def search_domains(data_path: str | Path, seq_len: int) -> tuple[list[str], list[int]]:
    """The domains a search mixes over and their training tokens: a clustered folder's clusters, else every
    domain with training tokens; domains too small for one row of `seq_len + 1` tokens are left out."""
    from pretrainlab.data.cluster import cluster_domains
    from pretrainlab.data.prepared import PreparedData

    data = PreparedData(data_path)
    names = cluster_domains(data) if isinstance(data.manifest.get("clusters"), dict) else data.domains
    tokens = data.domain_tokens("train")
    keep = [d for d in names if tokens[d] >= seq_len + 1]
    if len(keep) < 2:
        raise ConfigError(f"{data.path} has {len(keep)} domain(s) with at least one row of {seq_len + 1} training "
                          "tokens; a mixture search needs >= 2", hint="cluster the data (pretrainlab cluster) first")
    return keep, [tokens[d] for d in keep]


def search_mixture(
    ctx: Any,
    base: dict[str, Any],
    targets: Sequence[str],
    *,
    name: str = "climb-proxies",
    quiet: bool = False,
    **options: Any,
) -> SearchResult:
    """A CLIMB search with proxies made from the RunConfig tree `base` (its data.path a prepared folder,
    normally clustered): checks the tree and the targets, runs `climb_search` (`options`: budget, pool, top_n,
    concentration, predictor, seed) with `ProxyObjective`, writes the log and the chosen mixture into
    `ctx.out` after every iteration, and returns the result."""
    from pretrainlab.config import RunConfig, validate
    from pretrainlab.data.prepared import PreparedData

    cfg = validate(RunConfig, base, source="proxy config")
    if cfg.data.weights is not None or cfg.data.stages:
        raise ConfigError("the proxy config sets data.weights or data.stages; the search sets the weights",
                          hint="remove them from the proxy config")
    data = PreparedData(cfg.data.path)
    missing = [t for t in targets if t not in data.domains]
    if missing:
        raise ConfigError(f"target {missing[0]!r} is not a domain of {data.path}", hint=f"it has: {', '.join(data.domains)}")
    no_val = [t for t in targets if data.shard(t, "val").n_tokens <= 1]
    if no_val:
        raise ConfigError(f"target {no_val[0]!r} of {data.path} has no validation tokens to score proxies on",
                          hint="pick a domain with validation documents (pretrainlab cluster --eval-domains keeps them)")
    domains, sizes = search_domains(data.path, cfg.data.seq_len)
    objective = ProxyObjective(ctx, base, targets, name=name, seed=int(options.get("seed", 0)), quiet=quiet)
    extra = {"targets": list(targets), "proxy_sweep": str(Path(ctx.out) / "sweeps" / name)}

    def log(result: SearchResult) -> None:
        write_search(Path(ctx.out), result, str(data.path), {**extra, "runs": {k: str(v) for k, v in objective.runs.items()}})

    return climb_search(domains, sizes, objective, on_iteration=log, **options)


__all__ = ["Candidate", "DEFAULT_BUDGET", "Mixture", "Objective", "ProxyObjective", "SearchResult", "climb_search",
           "mixture_fragment", "sample_mixtures", "search_domains", "search_mixture", "size_prior", "write_search"]
