"""Scaling-law fits: L(x) = E + A / x^alpha and L(N, D) = E + A / N^alpha + B / D^beta.

The fitting follows the Chinchilla paper (Hoffmann et al. 2022, Appendix D.2) and its replication (Besiroglu et
al. 2024, "Chinchilla Scaling: A replication attempt"): the coefficients are fitted in log space, E = exp(e),
A = exp(a), B = exp(b), the prediction is log L = logsumexp(e, a - alpha log N, b - beta log D), and the
objective is the Huber loss (delta 1e-3) of the log-residuals log L_pred - log L, minimised with L-BFGS-B from
the best of a grid of initial points. The Huber loss makes one bad run (a diverged seed, a mislabelled point)
move the fit little where least squares would follow it.

Uncertainty comes from the bootstrap: resample the points with replacement, refit (starting from the full fit
and the best grid points of the resample), and take percentile intervals of every parameter and of the
prediction. The asymptote E is what *Pre-training under infinite compute* (Kim et al. 2025) ranks recipes by,
so its interval is the headline figure.

Also here: extrapolation to a named size, the tokens a fitted recipe needs to reach a loss, the data-efficiency
ratio between two recipes ("B reaches A's loss at D tokens with D/k tokens", Kim et al. 2025), and plots.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pretrainlab.errors import ConfigError

HUBER_DELTA = 1e-3
_POWER_NAMES = ("E", "A", "alpha")
_CHINCHILLA_NAMES = ("E", "A", "alpha", "B", "beta")
_ALPHA_BOUNDS = (0.0, 10.0)
_LOG_COEF_BOUNDS = (-50.0, 200.0)
_TOP_STARTS = 12  # L-BFGS-B runs from this many of the best grid points on the full data
_BOOT_STARTS = 1  # a resample that does not converge from the full fit retries from this many grid points
_MAXITER = 1000  # L-BFGS-B iterations per start on the full data
_BOOT_MAXITER = 400  # ... and per start on a resample (an unidentified resample stops here, left out)


class FitError(ConfigError):
    """Input a scaling law cannot be fitted to: too few points, non-finite or non-positive values, all x equal,
    mismatched lengths; or a fit that did not converge."""


@dataclass
class FitResult:
    """A fitted law with its bootstrap uncertainty.

    `samples` holds the bootstrap draws of the natural parameters, columns in the order of `params`
    (E, A, alpha[, B, beta]); it is None when the fit was made with `bootstrap=0` (then `ci` is empty and
    `band` refuses).
    """

    law: str
    params: dict[str, float]
    ci: dict[str, tuple[float, float]]
    n_points: int
    x_name: str
    loss: float
    samples: np.ndarray | None
    x_range: tuple[float, float] = (1.0, 1.0)
    d_range: tuple[float, float] | None = None
    n_bootstrap: int = 0
    delta: float = HUBER_DELTA

    def predict(self, x: Any, d: Any = None) -> np.ndarray:
        """The fitted loss at `x` (and, for the Chinchilla law, `d` tokens; arrays broadcast)."""
        theta = _to_theta(self.law, np.array([self.params[k] for k in _names(self.law)]))
        return np.exp(_log_predict(self.law, theta, *self._log_inputs(x, d))[0])

    def band(self, x: Any, d: Any = None, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """Percentile band of the prediction over the bootstrap draws (`level` 0.95: the 2.5th and 97.5th)."""
        if self.samples is None or len(self.samples) == 0:
            raise FitError(
                f"the {self.law} fit over {self.x_name} has no bootstrap samples, so it has no prediction band",
                hint="fit with bootstrap > 0 (e.g. --bootstrap 200)",
            )
        if not 0.0 < level < 1.0:
            raise FitError(f"band level must lie in (0, 1), got {level}")
        thetas = _to_theta(self.law, self.samples)
        preds = np.exp(_log_predict(self.law, thetas, *self._log_inputs(x, d)))
        tail = (1.0 - level) / 2.0 * 100.0
        lo, hi = np.percentile(preds, [tail, 100.0 - tail], axis=0)
        return lo, hi

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary with a 50-point curve {"x", "y", "lo", "hi"} on a log grid over the fitted x range.

        For the Chinchilla law the curve runs over N at the largest fitted D (`curve["d"]`). `lo`/`hi` are None
        when the fit has no bootstrap samples.
        """
        grid = np.geomspace(self.x_range[0], self.x_range[1], 50) if self.x_range[1] > self.x_range[0] else None
        curve: dict[str, Any] = {"x": [], "y": [], "lo": None, "hi": None}
        if grid is not None:
            d = None if self.d_range is None else self.d_range[1]
            curve = {"x": _floats(grid), "y": _floats(self.predict(grid, d)), "lo": None, "hi": None}
            if d is not None:
                curve["d"] = float(d)
            if self.samples is not None and len(self.samples):
                lo, hi = self.band(grid, d)
                curve["lo"], curve["hi"] = _floats(lo), _floats(hi)
        out: dict[str, Any] = {
            "law": self.law,
            "x_name": self.x_name,
            "params": {k: float(v) for k, v in self.params.items()},
            "ci": {k: [float(lo), float(hi)] for k, (lo, hi) in self.ci.items()},
            "n_points": self.n_points,
            "loss": float(self.loss),
            "huber_delta": self.delta if math.isfinite(self.delta) else None,  # None: least squares
            "n_bootstrap": self.n_bootstrap,
            "x_range": [float(v) for v in self.x_range],
            "curve": curve,
        }
        if self.d_range is not None:
            out["d_range"] = [float(v) for v in self.d_range]
        return out

    def _log_inputs(self, x: Any, d: Any) -> tuple[np.ndarray, np.ndarray | None]:
        lx = np.log(_positive_array(x, f"{self.x_name} to predict at"))
        if self.law == "power":
            if d is not None:
                raise FitError(f"a power-law fit over {self.x_name} takes no d (tokens) to predict at")
            return lx, None
        if d is None:
            raise FitError("a Chinchilla fit needs both N and D (tokens) to predict: pass d=")
        ld = np.log(_positive_array(d, "tokens to predict at"))
        lx, ld = np.broadcast_arrays(lx, ld)
        return lx, ld


# --------------------------------------------------------------------------------------------------- fitting


def fit_power_law(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    *,
    bootstrap: int = 200,
    seed: int = 0,
    x_name: str = "x",
    names: Sequence[str] | None = None,
    delta: float = HUBER_DELTA,
) -> FitResult:
    """Fit L(x) = E + A / x^alpha robustly (Huber on log-residuals, L-BFGS-B from a grid; module docstring).

    `names` labels the points (run names) in error messages. `delta=math.inf` turns the Huber loss into
    least squares (for comparison). `bootstrap` resamples give 95% intervals; they are deterministic in `seed`.
    """
    (xs,), ys = _check_inputs({x_name: x}, y, n_params=3, names=names)
    return _fit("power", xs, None, ys, bootstrap=bootstrap, seed=seed, x_name=x_name, delta=delta)


def fit_chinchilla(
    n: Sequence[float] | np.ndarray,
    d: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    *,
    bootstrap: int = 200,
    seed: int = 0,
    names: Sequence[str] | None = None,
    delta: float = HUBER_DELTA,
    x_name: str = "params",
) -> FitResult:
    """Fit L(N, D) = E + A / N^alpha + B / D^beta (Hoffmann et al. 2022, approach 3) robustly.

    N is the parameter count (`x_name` says which count: final non-embedding, or the average over training as
    in *The Journey Matters*, Jin et al. 2025), D the training tokens. Both must vary across the points.
    """
    (ns, ds), ys = _check_inputs({x_name: n, "tokens": d}, y, n_params=5, names=names)
    return _fit("chinchilla", ns, ds, ys, bootstrap=bootstrap, seed=seed, x_name=x_name, delta=delta)


def _fit(
    law: str,
    x: np.ndarray,
    d: np.ndarray | None,
    y: np.ndarray,
    *,
    bootstrap: int,
    seed: int,
    x_name: str,
    delta: float,
) -> FitResult:
    if bootstrap < 0:
        raise FitError(f"bootstrap must be >= 0, got {bootstrap}")
    if not delta > 0:
        raise FitError(f"the Huber delta must be > 0, got {delta}")
    lx, ly = np.log(x), np.log(y)
    ld = None if d is None else np.log(d)
    starts = _grid_starts(law, lx, ld, ly)
    best_theta, best_loss, ok, message = _minimise(law, lx, ld, ly, starts, _TOP_STARTS, delta)
    if not ok:
        raise FitError(
            f"the {law} fit over {x_name} did not converge from any of {_TOP_STARTS} starting points "
            f"(L-BFGS-B: {message})",
            hint="check the points for a wrong column or unit, or add points spanning a wider range",
        )
    exponents = {"alpha": best_theta[2]} if law == "power" else {"alpha": best_theta[2], "beta": best_theta[4]}
    flat = [k for k, v in exponents.items() if v <= _ALPHA_BOUNDS[0] + 1e-6]
    if flat:
        over = x_name if flat == ["alpha"] else "tokens" if flat == ["beta"] else f"{x_name} and tokens"
        raise FitError(
            f"the loss does not fall with {over} over these {len(y)} points: the fitted {' and '.join(flat)} "
            f"{'is' if len(flat) == 1 else 'are'} 0, so the asymptote E cannot be told apart from the coefficient",
            hint="a scaling law needs losses that decrease with x: check the --x/--y columns, or leave out the "
            "sizes past the point where the recipe overfits",
        )
    names = _names(law)
    samples: np.ndarray | None = None
    ci: dict[str, tuple[float, float]] = {}
    if bootstrap > 0:
        samples = _bootstrap(law, lx, ld, ly, best_theta, bootstrap, seed, delta)
        if len(samples):
            lo, hi = np.percentile(samples, [2.5, 97.5], axis=0)
            ci = {k: (float(lo[i]), float(hi[i])) for i, k in enumerate(names)}
    natural = _to_natural(law, best_theta[None, :])[0]
    return FitResult(
        law=law,
        params={k: float(natural[i]) for i, k in enumerate(names)},
        ci=ci,
        n_points=len(ly),
        x_name=x_name,
        loss=float(best_loss),
        samples=samples,
        x_range=(float(x.min()), float(x.max())),
        d_range=None if d is None else (float(d.min()), float(d.max())),
        n_bootstrap=0 if samples is None else len(samples),
        delta=delta,
    )


def _bootstrap(
    law: str,
    lx: np.ndarray,
    ld: np.ndarray | None,
    ly: np.ndarray,
    theta0: np.ndarray,
    rounds: int,
    seed: int,
    delta: float,
) -> np.ndarray:
    """Natural-parameter draws from `rounds` resamples (resamples that do not converge are left out)."""
    rng = np.random.default_rng(seed)
    n = len(ly)
    draws = []
    for _ in range(rounds):
        idx = _resample(rng, n, lx, ld)
        sub_d = None if ld is None else ld[idx]
        theta, _, ok, _ = _minimise(law, lx[idx], sub_d, ly[idx], theta0[None, :], 1, delta, maxiter=_BOOT_MAXITER)
        if not ok:  # rare: the resample's optimum is far from the full fit's; search from the grid too
            starts = _grid_starts(law, lx[idx], sub_d, ly[idx])
            theta, _, ok, _ = _minimise(
                law, lx[idx], sub_d, ly[idx], starts, _BOOT_STARTS, delta, maxiter=_BOOT_MAXITER
            )
        if ok:
            draws.append(theta)
    if not draws:
        return np.empty((0, len(_names(law))))
    return _to_natural(law, np.array(draws))


def _resample(rng: np.random.Generator, n: int, lx: np.ndarray, ld: np.ndarray | None) -> np.ndarray:
    """Indices drawn with replacement; redrawn (a few times) until x (and d) still take two values."""
    for _ in range(100):
        idx = rng.integers(0, n, n)
        if np.ptp(lx[idx]) > 0 and (ld is None or np.ptp(ld[idx]) > 0):
            return idx
    return idx


# ------------------------------------------------------------------------------------------- the objective


def _names(law: str) -> tuple[str, ...]:
    return _POWER_NAMES if law == "power" else _CHINCHILLA_NAMES


# theta (optimised) = [e, a, alpha] or [e, a, alpha, b, beta]; natural = [E, A, alpha(, B, beta)].
def _to_natural(law: str, theta: np.ndarray) -> np.ndarray:
    out = theta.copy()
    out[:, 0] = np.exp(theta[:, 0])
    out[:, 1] = np.exp(theta[:, 1])
    if law == "chinchilla":
        out[:, 3] = np.exp(theta[:, 3])
    return out


def _to_theta(law: str, natural: np.ndarray) -> np.ndarray:
    nat = np.atleast_2d(np.asarray(natural, dtype=np.float64))
    out = nat.copy()
    with np.errstate(divide="ignore"):
        out[:, 0] = np.log(nat[:, 0])
        out[:, 1] = np.log(nat[:, 1])
        if law == "chinchilla":
            out[:, 3] = np.log(nat[:, 3])
    return out


def _terms(law: str, theta: np.ndarray, lx: np.ndarray, ld: np.ndarray | None) -> np.ndarray:
    """Log of each additive term, shape (S, n, K): e; a - alpha log x; (b - beta log d)."""
    e, a, alpha = theta[:, 0:1], theta[:, 1:2], theta[:, 2:3]
    cols = [np.broadcast_to(e, (theta.shape[0], lx.shape[-1])), a - alpha * lx[None, :]]
    if law == "chinchilla":
        b, beta = theta[:, 3:4], theta[:, 4:5]
        cols.append(b - beta * ld[None, :])
    return np.stack(cols, axis=-1)


def _log_predict(law: str, theta: np.ndarray, lx: np.ndarray, ld: np.ndarray | None) -> np.ndarray:
    """log L for each parameter row of `theta` (S, P) at the points: (S, *lx.shape)."""
    shape = lx.shape
    flat_x = lx.reshape(-1)
    flat_d = None if ld is None else ld.reshape(-1)
    t = _terms(law, theta, flat_x, flat_d)
    m = t.max(axis=-1, keepdims=True)
    lse = (m + np.log(np.exp(t - m).sum(axis=-1, keepdims=True)))[..., 0]
    return lse.reshape((theta.shape[0], *shape))


def _huber(r: np.ndarray, delta: float) -> np.ndarray:
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def _objective(
    theta: np.ndarray, law: str, lx: np.ndarray, ld: np.ndarray | None, ly: np.ndarray, delta: float, scale: float
) -> tuple[float, np.ndarray]:
    """Scaled Huber loss of the log-residuals and its analytic gradient.

    With terms t_k (e, a - alpha log x, b - beta log d), log L = logsumexp_k t_k, and d log L / d t_k is the
    softmax weight w_k; the chain rule through Huber' = clip(r, -delta, delta) gives the gradient.
    """
    t1 = theta[1] - theta[2] * lx
    if law == "power":
        lse = np.logaddexp(theta[0], t1)
        w1 = np.exp(t1 - lse)
        w0 = 1.0 - w1
    else:
        t2 = theta[3] - theta[4] * ld
        m = np.maximum(np.maximum(t1, t2), theta[0])
        lse = m + np.log(np.exp(theta[0] - m) + np.exp(t1 - m) + np.exp(t2 - m))
        w0, w1, w2 = np.exp(theta[0] - lse), np.exp(t1 - lse), np.exp(t2 - lse)
    r = lse - ly
    h = float(_huber(r, delta).sum())
    dr = np.clip(r, -delta, delta)
    dr_w1 = dr * w1
    g = np.empty_like(theta)
    g[0] = (dr * w0).sum()  # elementwise, not `@`: a BLAS call per evaluation would spawn threads
    g[1] = dr_w1.sum()
    g[2] = -(dr_w1 * lx).sum()
    if law == "chinchilla":
        dr_w2 = dr * w2
        g[3] = dr_w2.sum()
        g[4] = -(dr_w2 * ld).sum()
    return h * scale, g * scale


def _bounds(law: str, ly: np.ndarray) -> list[tuple[float, float]]:
    e_bounds = (-30.0, float(ly.max()) + 5.0)
    out = [e_bounds, _LOG_COEF_BOUNDS, _ALPHA_BOUNDS]
    if law == "chinchilla":
        out += [_LOG_COEF_BOUNDS, _ALPHA_BOUNDS]
    return out


def _minimise(
    law: str,
    lx: np.ndarray,
    ld: np.ndarray | None,
    ly: np.ndarray,
    starts: np.ndarray,
    top: int,
    delta: float,
    *,
    maxiter: int = _MAXITER,
) -> tuple[np.ndarray, float, bool, str]:
    """L-BFGS-B from the `top` best starts by objective value; the best end (converged ends first).

    Returns (theta, unscaled Huber loss, converged, optimiser message of the best run).
    """
    from scipy.optimize import minimize

    scale = 1.0 / delta**2 if math.isfinite(delta) else 1e6
    starts = _screen(law, starts, lx, ld, ly, delta, top)
    bounds = _bounds(law, ly)
    best: tuple[np.ndarray, float, bool, str] | None = None
    for x0 in starts:
        x0 = np.clip(x0, [b[0] for b in bounds], [b[1] for b in bounds])
        res = minimize(
            _objective,
            x0,
            args=(law, lx, ld, ly, delta, scale),
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={"maxiter": maxiter, "ftol": 1e-12, "gtol": 1e-8},
        )
        ok = bool(res.success) or _stationary(res, bounds)
        value = float(res.fun) / scale
        if not np.isfinite(value):
            continue
        if best is None or (ok, -value) > (best[2], -best[1]):
            best = (np.asarray(res.x, dtype=np.float64), value, ok, str(res.message))
    if best is None:
        return starts[0], math.inf, False, "the objective was not finite at any starting point"
    return best


def _screen(
    law: str, starts: np.ndarray, lx: np.ndarray, ld: np.ndarray | None, ly: np.ndarray, delta: float, top: int
) -> np.ndarray:
    """The `top` starting points with the lowest objective (one vectorised evaluation of all of them)."""
    if top <= 0 or len(starts) == 0:
        return starts[:0]
    values = _huber(_log_predict(law, starts, lx, ld) - ly[None, :], delta).sum(axis=1)
    return starts[np.argsort(values, kind="stable")[:top]]


def _stationary(res: Any, bounds: list[tuple[float, float]]) -> bool:
    """A line-search stop at a point whose projected gradient is small counts as converged.

    L-BFGS-B often ends with ABNORMAL_TERMINATION_IN_LNSRCH on the kinked Huber objective once it can make
    no further progress; the projected gradient tells a true optimum from a stall.
    """
    g = np.asarray(res.jac, dtype=np.float64)
    x = np.asarray(res.x, dtype=np.float64)
    lo = np.array([b[0] for b in bounds])
    hi = np.array([b[1] for b in bounds])
    g = np.where((x <= lo) & (g > 0), 0.0, g)
    g = np.where((x >= hi) & (g < 0), 0.0, g)
    return bool(np.all(np.isfinite(g))) and float(np.abs(g).max()) < 1e-3


def _grid_starts(law: str, lx: np.ndarray, ld: np.ndarray | None, ly: np.ndarray) -> np.ndarray:
    """Initial points: E over fractions of the smallest loss, exponents over a coarse grid, and the
    coefficient(s) that put the curve through the points' median excess over E (Hoffmann et al. grid idea,
    scaled to the data so it works at any unit of x)."""
    y = np.exp(ly)
    y_min = float(y.min())
    e_grid = np.log(y_min * np.array([0.02, 0.2, 0.4, 0.6, 0.75, 0.85, 0.93, 0.98]))
    exp_grid = np.array([0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 0.8, 1.0, 1.5])
    rows = []
    for e in e_grid:
        excess = np.maximum(y - math.exp(e), y_min * 1e-4)
        log_excess = np.log(excess)
        if law == "power":
            for alpha in exp_grid:
                rows.append([e, float(np.median(log_excess + alpha * lx)), alpha])
            continue
        for alpha in exp_grid[::2]:
            for beta in exp_grid[::2]:
                for share in (0.25, 0.5, 0.75):
                    a = float(np.median(np.log(share) + log_excess + alpha * lx))
                    b = float(np.median(np.log(1.0 - share) + log_excess + beta * ld))
                    rows.append([e, a, alpha, b, beta])
    return np.array(rows, dtype=np.float64)


# -------------------------------------------------------------------------------------------------- checks


def _check_inputs(
    xs: dict[str, Any], y: Any, *, n_params: int, names: Sequence[str] | None
) -> tuple[list[np.ndarray], np.ndarray]:
    """Validate: same lengths, finite, positive, >= n_params points, each x taking >= 2 values."""
    y_arr = _as_1d(y, "y (the loss)")
    n = len(y_arr)
    if names is not None and len(names) != n:
        raise FitError(f"{len(names)} point names for {n} losses: the lengths must match")
    arrays = []
    for label, values in xs.items():
        arr = _as_1d(values, label)
        if len(arr) != n:
            raise FitError(f"{len(arr)} values of {label} but {n} losses: every point needs both")
        arrays.append((label, arr))
    if n < n_params:
        law = "power law" if n_params == 3 else "Chinchilla law"
        raise FitError(
            f"{n} point{'s' if n != 1 else ''} but the {law} has {n_params} parameters: too few points to fit",
            hint=f"give at least {n_params} points (finished runs), better twice as many",
        )
    for label, arr in [*arrays, ("loss", y_arr)]:
        for i, v in enumerate(arr):
            if not math.isfinite(v) or v <= 0:
                what = "non-finite" if not math.isfinite(v) else "non-positive"
                point = f"point {i}" + (f" ({names[i]})" if names is not None else "")
                raise FitError(
                    f"{what} {label} {float(v)!r} at {point}: a scaling law needs finite, positive values",
                    hint="drop the point (a diverged or unfinished run) or fix the column",
                )
    for label, arr in arrays:
        if np.ptp(arr) == 0:
            raise FitError(
                f"all {n} points have the same {label} ({arr[0]:g}): the law's exponent cannot be fitted",
                hint=f"fit over points that differ in {label}",
            )
    return [a for _, a in arrays], y_arr


def _as_1d(values: Any, label: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise FitError(f"{label} must be numbers: {e}") from None
    if arr.ndim != 1:
        raise FitError(f"{label} must be a 1-D sequence, got shape {arr.shape}")
    return arr


def _positive_array(values: Any, label: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise FitError(f"{label} must be finite and positive")
    return arr


def _floats(arr: np.ndarray) -> list[float]:
    return [float(v) for v in np.asarray(arr).reshape(-1)]


# -------------------------------------------------------------------------------------- using a fitted law


def extrapolate(fit: FitResult, x: float, d: float | None = None, level: float = 0.95) -> dict[str, Any]:
    """The prediction at a named size `x` (and `d` tokens for the Chinchilla law) with its bootstrap band.

    Returns {"x", "d", "y", "lo", "hi"}; `lo`/`hi` are None when the fit has no bootstrap samples.
    """
    y = float(fit.predict(x, d))
    lo = hi = None
    if fit.samples is not None and len(fit.samples):
        band = fit.band(x, d, level)
        lo, hi = float(band[0]), float(band[1])
    return {"x": float(x), "d": None if d is None else float(d), "y": y, "lo": lo, "hi": hi}


def tokens_to_reach(fit: FitResult, loss: float, n: float | None = None) -> float:
    """The x (tokens, for a fit over tokens) at which the fitted law reaches `loss`; +inf when it never does.

    Power law: x = (A / (loss - E))^(1/alpha). Chinchilla: D = (B / (loss - E - A/N^alpha))^(1/beta) at `n`
    parameters. A loss at or below the asymptote (E, or E + A/N^alpha) is never reached: +inf.
    """
    p = fit.params
    if fit.law == "power":
        if n is not None:
            raise FitError("a power-law fit takes no n: its x is the only variable")
        gap, coef, expo = loss - p["E"], p["A"], p["alpha"]
    else:
        if n is None:
            raise FitError("tokens_to_reach on a Chinchilla fit needs n (the parameter count)")
        gap, coef, expo = loss - p["E"] - p["A"] / float(n) ** p["alpha"], p["B"], p["beta"]
    if gap <= 0 or coef <= 0 or expo <= 0:
        return math.inf
    return float((coef / gap) ** (1.0 / expo))


def data_efficiency(fit_a: FitResult, fit_b: FitResult, d: float) -> float:
    """k such that recipe B reaches A's loss at `d` tokens with d/k tokens (both power laws over tokens).

    k > 1: B needs k times less data than A for that loss (Kim et al. 2025: their best recipe's asymptote at
    200M tokens matches the baseline's with 5.17x less data). When A's loss at `d` is at or below B's
    asymptote E, B never reaches it with any amount of data: d/k is infinite, so k = 0.0.
    """
    _check_pair(fit_a, fit_b)
    target = float(fit_a.predict(d))
    d_b = tokens_to_reach(fit_b, target)
    return 0.0 if not math.isfinite(d_b) else float(d) / d_b


def data_efficiency_interval(
    fit_a: FitResult, fit_b: FitResult, d: float, level: float = 0.95
) -> tuple[float, float] | None:
    """Percentile interval of `data_efficiency` over paired bootstrap draws (independent resamples of A and B).

    None when either fit has no samples. Draws where B never reaches A's loss count as k = 0.
    """
    _check_pair(fit_a, fit_b)
    if fit_a.samples is None or fit_b.samples is None or not len(fit_a.samples) or not len(fit_b.samples):
        return None
    m = min(len(fit_a.samples), len(fit_b.samples))
    sa, sb = fit_a.samples[:m], fit_b.samples[:m]
    target = sa[:, 0] + sa[:, 1] / float(d) ** sa[:, 2]
    gap = target - sb[:, 0]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        d_b = np.where(gap > 0, (sb[:, 1] / np.where(gap > 0, gap, 1.0)) ** (1.0 / sb[:, 2]), np.inf)
        k = np.where(np.isfinite(d_b) & (d_b > 0), float(d) / d_b, 0.0)
    tail = (1.0 - level) / 2.0
    lo = float(np.quantile(k, tail, method="lower"))
    hi = float(np.quantile(k, 1.0 - tail, method="higher"))
    return lo, hi


def _check_pair(fit_a: FitResult, fit_b: FitResult) -> None:
    if fit_a.law != "power" or fit_b.law != "power":
        raise FitError("data efficiency compares two power-law fits over tokens (fit with --law power --x tokens)")
    if fit_a.x_name != fit_b.x_name:
        raise FitError(f"data efficiency needs two fits over the same x, got {fit_a.x_name!r} and {fit_b.x_name!r}")


# ------------------------------------------------------------------------------------------------ plotting


def plot_fits(
    fits: dict[str, FitResult],
    points: dict[str, tuple[Any, ...]],
    path: str | Path,
    *,
    x_label: str,
    y_label: str,
    extend_to: float | None = None,
    title: str | None = None,
) -> Path:
    """One PNG: each group's points, fitted curve, bootstrap band and asymptote E (dotted), one colour per
    group, log x axis. Written atomically (a temporary name, renamed at the end).

    `points[group]` is (x, y) or, for Chinchilla fits, (n, y, d): then one curve per distinct D (line styles
    cycle). `extend_to` carries the curves out to an extrapolation target.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(7.0, 4.5))
    styles = ["-", "--", "-.", ":"]
    for i, (group, fit) in enumerate(fits.items()):
        colour = f"C{i % 10}"
        pts = points.get(group)
        xs_all = [fit.x_range[0], fit.x_range[1]]
        if pts is not None:
            px, py = np.asarray(pts[0], dtype=float), np.asarray(pts[1], dtype=float)
            ax.scatter(px, py, color=colour, s=18, zorder=3, label=f"{group} (n={fit.n_points})")
            xs_all += list(px)
        lo_x, hi_x = min(xs_all), max(xs_all + ([extend_to] if extend_to else []))
        grid = np.geomspace(lo_x, hi_x, 100) if hi_x > lo_x else np.array([lo_x])
        if fit.law == "power":
            d_values: list[float | None] = [None]
        elif pts is not None and len(pts) > 2:
            d_values = sorted({float(v) for v in pts[2]})[-len(styles):]
        else:
            d_values = [fit.d_range[1]] if fit.d_range else [None]
        for j, d in enumerate(d_values):
            label = _curve_label(fit, group) if j == len(d_values) - 1 else None
            curve = fit.predict(grid, d)
            ax.plot(grid, curve, color=colour, ls=styles[j % len(styles)], lw=1.5, label=label)
            if d is not None and i == 0:
                ax.annotate(f"D={d:.2g}", (grid[-1], curve[-1]), xytext=(3, 0), textcoords="offset points",
                            fontsize=7, va="center", color="0.3")
            if fit.samples is not None and len(fit.samples):
                lo, hi = fit.band(grid, d)
                ax.fill_between(grid, lo, hi, color=colour, alpha=0.15, lw=0)
        ax.axhline(fit.params["E"], color=colour, ls=":", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    if title:
        ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.png")
    try:
        fig.savefig(tmp, dpi=120, format="png")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path


def _curve_label(fit: FitResult, group: str) -> str:
    p = fit.params
    if fit.law == "power":
        return f"{group}: E={p['E']:.3g}, A={p['A']:.3g}, alpha={p['alpha']:.3g}"
    return f"{group}: E={p['E']:.3g}, alpha={p['alpha']:.3g}, beta={p['beta']:.3g}"
