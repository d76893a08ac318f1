"""A regressor from a data mixture (weights over domains) to a proxy run's objective, for CLIMB's search.

CLIMB (Diao et al. 2025) fits LightGBM (depth <= 4, >= 5 samples per leaf, L1/L2 penalties) on 64 proxies,
then 96, then 112. Our CPU searches have 16, then 24, then 28: too few for boosted trees alone, whose
piecewise-constant predictions tie most of a candidate pool. So the predictor is chosen per fit by
cross-validation among three well-kept scikit-learn models, the one whose held-out predictions rank the
proxies best (Spearman; ties go to the earlier in this order):

- `gp`: a Gaussian process (constant x RBF + white noise, normalised targets): smooth in the mixture,
  exact at few points, falls back to the mean far from them (so its argmin stays near the data);
- `ridge`: a linear model of the weights (cross-validated penalty), RegMix's baseline shape;
- `hgb`: HistGradientBoostingRegressor with the paper's LightGBM limits (depth 4, 5 samples per leaf,
  L2 penalty), the paper's choice, which wins once there are enough proxies.

Every model is deterministic for a seed, so a search is too.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pretrainlab.errors import ConfigError

PREDICTORS = ("gp", "ridge", "hgb")
CV_FOLDS = 5


@dataclass
class MixturePredictor:
    """A fitted predictor: `predict(weights) -> objective`, which model it is, and the cross-validated
    Spearman of every model tried (NaN where it could not be computed)."""

    kind: str
    model: Any
    cv_spearman: dict[str, float] = field(default_factory=dict)
    cv_predictions: np.ndarray | None = None  # the chosen model's held-out prediction of each training point

    def predict(self, weights: np.ndarray) -> np.ndarray:
        with _one_thread():
            return np.asarray(self.model.predict(np.asarray(weights, dtype=np.float64)), dtype=np.float64)


def make_model(kind: str, seed: int, n_features: int) -> Any:
    """An unfitted scikit-learn regressor of `kind` (see the module docstring)."""
    if kind == "gp":
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

        kernel = ConstantKernel(1.0, (1e-3, 1e3)) * RBF(length_scale=np.full(n_features, 0.5), length_scale_bounds=(1e-2, 1e2)) \
            + WhiteKernel(1e-2, (1e-6, 1.0))
        return GaussianProcessRegressor(kernel=kernel, normalize_y=True, n_restarts_optimizer=1, random_state=seed)
    if kind == "ridge":
        from sklearn.linear_model import RidgeCV

        return RidgeCV(alphas=np.logspace(-4, 2, 13))
    if kind == "hgb":
        from sklearn.ensemble import HistGradientBoostingRegressor

        return HistGradientBoostingRegressor(max_depth=4, min_samples_leaf=5, l2_regularization=1.0, learning_rate=0.1,
                                             max_iter=100, early_stopping=False, random_state=seed)
    raise ConfigError(f"unknown mixture predictor {kind!r}", hint=f"use one of: auto, {', '.join(PREDICTORS)}")


def fit_predictor(x: np.ndarray, y: np.ndarray, *, kind: str = "auto", seed: int = 0) -> MixturePredictor:
    """Fit a predictor of `y` (n objectives) from `x` (n x d mixtures); `kind` 'auto' picks by cross-validated
    Spearman among PREDICTORS, else the named one (its cross-validated Spearman is still reported)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != y.size:
        raise ValueError("x must be n x d and y of length n")
    if y.size < 2 or not np.all(np.isfinite(y)):
        raise ConfigError(f"a mixture predictor needs >= 2 finite objectives (got {y.size}, "
                          f"{int(np.sum(~np.isfinite(y)))} non-finite)")
    kinds = PREDICTORS if kind == "auto" else (kind,)
    for k in kinds:
        if k not in PREDICTORS:
            make_model(k, seed, x.shape[1])  # raises the ConfigError naming the choices
    held = {k: cross_val_predictions(x, y, k, seed) for k in kinds}
    scores = {k: spearman(held[k], y) for k in kinds}
    best = max(kinds, key=lambda k: (scores[k] if math.isfinite(scores[k]) else -math.inf, -kinds.index(k)))
    model = make_model(best, seed, x.shape[1])
    _fit_quietly(model, x, y)
    return MixturePredictor(kind=best, model=model, cv_spearman=scores, cv_predictions=held[best])


def cross_val_predictions(x: np.ndarray, y: np.ndarray, kind: str, seed: int, folds: int = CV_FOLDS) -> np.ndarray:
    """Each point's prediction by a model of `kind` fitted without it (`folds`-fold, shuffled with `seed`;
    leave-one-out when there are fewer points than folds)."""
    n = y.size
    order = np.random.default_rng(seed).permutation(n)
    groups = np.array_split(order, min(folds, n))
    out = np.empty(n, dtype=np.float64)
    for held in groups:
        keep = np.setdiff1d(np.arange(n), held)
        if keep.size == 0:
            out[held] = np.nan
            continue
        model = make_model(kind, seed, x.shape[1])
        _fit_quietly(model, x[keep], y[keep])
        out[held] = MixturePredictor(kind, model).predict(x[held])
    return out


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two vectors; NaN when either is constant or shorter than 3."""
    from scipy.stats import spearmanr

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return math.nan
    return float(spearmanr(a[ok], b[ok]).statistic)


def _fit_quietly(model: Any, x: np.ndarray, y: np.ndarray) -> None:
    """Fit on one thread (a few dozen points: threads only add OpenMP start-up and contention), silencing the
    convergence warnings a GP gives at a kernel bound with few points (expected here)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings(), _one_thread():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)


def _one_thread() -> Any:
    """A context limiting BLAS/OpenMP to one thread (the controller is built once: building it scans every
    loaded library, ~10 ms)."""
    return _controller().limit(limits=1)


@functools.lru_cache(maxsize=1)
def _controller() -> Any:
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


__all__ = ["MixturePredictor", "PREDICTORS", "cross_val_predictions", "fit_predictor", "make_model", "spearman"]
