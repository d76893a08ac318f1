"""Scaling-law fitting: recovery of planted laws, robustness, bootstrap, degenerate input, data efficiency, plots."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from pretrainlab.errors import ConfigError
from pretrainlab.science.fit import (
    FitError,
    FitResult,
    data_efficiency,
    data_efficiency_interval,
    extrapolate,
    fit_chinchilla,
    fit_power_law,
    plot_fits,
    tokens_to_reach,
)

# x in millions of parameters: A is then the excess loss at 1M parameters, inside the data, so 1% noise pins it.
PLANTED = {"E": 2.0, "A": 6.0, "alpha": 0.4}
X = np.geomspace(1.0, 1e4, 8)
CHINCHILLA = {"E": 1.69, "A": 406.4, "alpha": 0.34, "B": 410.7, "beta": 0.28}  # Hoffmann et al. 2022, eq. 10


def _power(x: np.ndarray, p: dict[str, float]) -> np.ndarray:
    return p["E"] + p["A"] * x ** -p["alpha"]


def _noisy(y: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    return y * np.exp(np.random.default_rng(seed).normal(0.0, sigma, len(y)))


def _grid() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n, d = (a.ravel() for a in np.meshgrid(np.geomspace(1e5, 1e8, 5), np.geomspace(1e7, 1e10, 5)))
    p = CHINCHILLA
    return n, d, p["E"] + p["A"] / n ** p["alpha"] + p["B"] / d ** p["beta"]


def _planted(
    law: str, params: dict[str, float], samples: np.ndarray | None = None, x_name: str = "tokens"
) -> FitResult:
    return FitResult(law=law, params=params, ci={}, n_points=8, x_name=x_name, loss=0.0, samples=samples,
                     x_range=(1e6, 1e9))


# ------------------------------------------------------------------------------------------------ recovery


def test_power_law_recovers_planted_parameters_with_one_percent_noise():
    fit = fit_power_law(X, _noisy(_power(X, PLANTED), 0.01, seed=0), bootstrap=200, seed=0, x_name="params")
    for k, v in PLANTED.items():
        assert fit.params[k] == pytest.approx(v, rel=0.05), k
        lo, hi = fit.ci[k]
        assert lo <= v <= hi, f"{k}={v} outside its 95% interval [{lo}, {hi}]"
        assert lo < fit.params[k] < hi
    assert fit.law == "power" and fit.n_points == 8 and fit.x_name == "params"
    assert fit.samples is not None and fit.samples.shape == (200, 3) and fit.n_bootstrap == 200


def test_noiseless_power_law_is_recovered_exactly():
    fit = fit_power_law(X, _power(X, PLANTED), bootstrap=0)
    for k, v in PLANTED.items():
        assert fit.params[k] == pytest.approx(v, rel=1e-3), k
    assert fit.ci == {} and fit.samples is None
    assert fit.loss < 1e-9


def test_chinchilla_recovers_planted_parameters_on_an_n_d_grid():
    n, d, y = _grid()
    exact = fit_chinchilla(n, d, y, bootstrap=0)
    for k, v in CHINCHILLA.items():
        assert exact.params[k] == pytest.approx(v, rel=0.01), k
    noisy = fit_chinchilla(n, d, _noisy(y, 0.003, seed=1), bootstrap=100, seed=0)
    for k, v in CHINCHILLA.items():
        assert noisy.params[k] == pytest.approx(v, rel=0.05), k
        assert noisy.ci[k][0] <= v <= noisy.ci[k][1], k
    assert noisy.law == "chinchilla" and noisy.d_range == (1e7, 1e10)
    assert noisy.predict(1e6, 1e9) == pytest.approx(CHINCHILLA["E"] + 406.4 / 1e6**0.34 + 410.7 / 1e9**0.28, rel=0.01)


def test_huber_resists_one_outlier_where_least_squares_does_not():
    x = np.geomspace(1.0, 1e4, 10)
    y = _noisy(_power(x, PLANTED), 0.003, seed=0)
    y[-1] *= 1.25  # one diverged run at the largest size
    huber = fit_power_law(x, y, bootstrap=0)
    squares = fit_power_law(x, y, bootstrap=0, delta=math.inf)
    assert huber.params["E"] == pytest.approx(PLANTED["E"], rel=0.02)
    assert huber.params["alpha"] == pytest.approx(PLANTED["alpha"], rel=0.03)
    assert abs(squares.params["E"] / PLANTED["E"] - 1) > 0.08, "least squares should follow the outlier"
    assert abs(squares.params["alpha"] / PLANTED["alpha"] - 1) > 0.1
    assert json.loads(json.dumps(squares.to_dict()))["huber_delta"] is None


def test_several_seeds_per_x_are_all_fitted():
    x = np.repeat(X, 3)
    fit = fit_power_law(x, _noisy(_power(x, PLANTED), 0.01, seed=2), bootstrap=20)
    assert fit.n_points == 24
    assert fit.params["E"] == pytest.approx(PLANTED["E"], rel=0.05)


def test_bootstrap_is_deterministic_in_its_seed():
    y = _noisy(_power(X, PLANTED), 0.01, seed=3)
    a = fit_power_law(X, y, bootstrap=30, seed=7)
    b = fit_power_law(X, y, bootstrap=30, seed=7)
    c = fit_power_law(X, y, bootstrap=30, seed=8)
    assert np.array_equal(a.samples, b.samples)
    assert not np.array_equal(a.samples, c.samples)
    assert a.params == c.params  # the point estimate does not depend on the bootstrap


# ----------------------------------------------------------------------------------- prediction and bands


def test_band_extrapolate_and_to_dict():
    fit = fit_power_law(X, _noisy(_power(X, PLANTED), 0.01, seed=0), bootstrap=100, x_name="params")
    grid = np.geomspace(1.0, 1e6, 7)
    lo, hi = fit.band(grid)
    pred = fit.predict(grid)
    assert np.all(lo <= pred) and np.all(pred <= hi)
    assert np.all(hi - lo > 0)
    assert (hi - lo)[-1] > (hi - lo)[3], "the band widens when extrapolating"
    e = extrapolate(fit, 1e6)
    assert e["lo"] <= e["y"] <= e["hi"] and e["d"] is None
    assert e["lo"] <= _power(np.array(1e6), PLANTED) <= e["hi"]
    d = json.loads(json.dumps(fit.to_dict(), allow_nan=False))
    assert d["law"] == "power" and d["x_name"] == "params" and set(d["ci"]) == {"E", "A", "alpha"}
    assert len(d["curve"]["x"]) == len(d["curve"]["y"]) == len(d["curve"]["lo"]) == 50
    assert d["curve"]["x"][0] == pytest.approx(1.0) and d["curve"]["x"][-1] == pytest.approx(1e4)


def test_without_bootstrap_there_is_no_band():
    fit = fit_power_law(X, _power(X, PLANTED), bootstrap=0)
    with pytest.raises(FitError, match="no bootstrap samples"):
        fit.band(X)
    assert extrapolate(fit, 1e5)["lo"] is None
    d = fit.to_dict()
    assert d["ci"] == {} and d["curve"]["lo"] is None and len(d["curve"]["y"]) == 50


def test_predict_needs_d_exactly_for_chinchilla():
    n, d, y = _grid()
    fit = fit_chinchilla(n, d, y, bootstrap=0)
    with pytest.raises(FitError, match="needs both N and D"):
        fit.predict(1e6)
    power = fit_power_law(X, _power(X, PLANTED), bootstrap=0)
    with pytest.raises(FitError, match="takes no d"):
        power.predict(10.0, 1e9)


# ------------------------------------------------------------------------------------------ degenerate input


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        ([1.0, 2.0], [3.0, 2.5], "2 points but the power law has 3 parameters"),
        ([1.0, 2.0, 4.0, 8.0], [3.0, float("nan"), 2.4, 2.3], r"non-finite loss nan at point 1 \(run-1\)"),
        ([1.0, 2.0, 4.0, 8.0], [3.0, float("inf"), 2.4, 2.3], "non-finite loss inf at point 1"),
        ([1.0, 2.0, 4.0, 8.0], [3.0, 0.0, 2.4, 2.3], r"non-positive loss 0.0 at point 1 \(run-1\)"),
        ([1.0, -2.0, 4.0, 8.0], [3.0, 2.5, 2.4, 2.3], "non-positive params -2.0 at point 1"),
        ([4.0, 4.0, 4.0, 4.0], [3.0, 2.5, 2.4, 2.3], "all 4 points have the same params"),
        ([1.0, 2.0, 4.0], [3.0, 2.5, 2.4, 2.3], "3 values of params but 4 losses"),
        ([1.0, "big", 4.0], [3.0, 2.5, 2.4], "params must be numbers"),
    ],
)
def test_degenerate_power_law_input_fails_loudly(x, y, message):
    names = [f"run-{i}" for i in range(len(y))]
    with pytest.raises(FitError, match=message) as e:
        fit_power_law(x, y, x_name="params", names=names if len(x) == len(y) else None)
    assert isinstance(e.value, ConfigError) and e.value.exit_code == 2


def test_degenerate_chinchilla_input_fails_loudly():
    n, d, y = _grid()
    with pytest.raises(FitError, match="4 points but the Chinchilla law has 5 parameters"):
        fit_chinchilla(n[:4], d[:4], y[:4])
    with pytest.raises(FitError, match="all 25 points have the same tokens"):
        fit_chinchilla(n, np.full_like(d, 1e9), y)
    with pytest.raises(FitError, match="non-finite tokens nan at point 3"):
        fit_chinchilla(n, np.where(np.arange(25) == 3, np.nan, d), y)


def test_losses_that_do_not_fall_with_x_fail_loudly():
    """Flat (identical ensemble members) or rising losses: alpha = 0 and E is arbitrary, so no fit is returned."""
    with pytest.raises(FitError, match="the loss does not fall with K over these 4 points: the fitted alpha is 0"):
        fit_power_law([1, 2, 3, 4], [3.1, 3.1, 3.1, 3.1], x_name="K")
    with pytest.raises(FitError, match="does not fall with params"):
        fit_power_law(X, 2.0 + 0.01 * np.log(X), x_name="params", bootstrap=0)
    n, d, y = _grid()
    with pytest.raises(FitError, match="does not fall with tokens .* the fitted beta is 0"):
        fit_chinchilla(n, d, CHINCHILLA["E"] + CHINCHILLA["A"] / n ** CHINCHILLA["alpha"] + 0.01 * np.log(d))


def test_bad_options_fail_loudly():
    with pytest.raises(FitError, match="bootstrap must be >= 0"):
        fit_power_law(X, _power(X, PLANTED), bootstrap=-1)
    with pytest.raises(FitError, match="Huber delta must be > 0"):
        fit_power_law(X, _power(X, PLANTED), delta=0.0)


def test_a_fit_that_does_not_converge_says_so(monkeypatch):
    import scipy.optimize

    def stalled(fun, x0, args=(), **kwargs):
        value, grad = fun(np.asarray(x0, dtype=float), *args)
        return scipy.optimize.OptimizeResult(x=np.asarray(x0, dtype=float), fun=value, jac=grad + 1.0,
                                             success=False, message="STOP: TOTAL NO. OF ITERATIONS REACHED LIMIT")

    monkeypatch.setattr(scipy.optimize, "minimize", stalled)
    with pytest.raises(FitError, match="did not converge from any of 12 starting points"):
        fit_power_law(X, _power(X, PLANTED), bootstrap=0, x_name="params")


# ------------------------------------------------------------------------------------- comparing recipes


def test_data_efficiency_matches_the_analytic_ratio():
    # Same E and alpha, B's coefficient halved: B reaches A's loss with D * (A_B/A_A)^(1/alpha) tokens, k = 4.
    a = _planted("power", {"E": 2.0, "A": 10.0, "alpha": 0.5})
    b = _planted("power", {"E": 2.0, "A": 5.0, "alpha": 0.5})
    for d in (1e6, 1e8, 1e10):
        assert data_efficiency(a, b, d) == pytest.approx(4.0, rel=1e-9)
        assert data_efficiency(b, a, d) == pytest.approx(0.25, rel=1e-9)
    # Different asymptotes: k depends on D; check against the closed form.
    c = _planted("power", {"E": 1.8, "A": 12.0, "alpha": 0.3})
    d = 1e8
    loss_a = 2.0 + 10.0 * d**-0.5
    assert data_efficiency(a, c, d) == pytest.approx(d / (12.0 / (loss_a - 1.8)) ** (1 / 0.3), rel=1e-9)


def test_data_efficiency_of_fitted_laws():
    x = np.geomspace(1e6, 1e9, 8)
    a = fit_power_law(x, 2.0 + 10.0 * x**-0.5, bootstrap=20, x_name="tokens")
    b = fit_power_law(x, 2.0 + 5.0 * x**-0.5, bootstrap=20, x_name="tokens")
    assert data_efficiency(a, b, 1e9) == pytest.approx(4.0, rel=0.01)
    lo, hi = data_efficiency_interval(a, b, 1e9)
    assert lo <= 4.0 <= hi


def test_unreachable_loss_gives_zero_efficiency_and_infinite_tokens():
    a = _planted("power", {"E": 2.0, "A": 10.0, "alpha": 0.5})
    b = _planted("power", {"E": 2.5, "A": 10.0, "alpha": 0.5})  # B's asymptote above A's loss at 1e8
    assert data_efficiency(a, b, 1e8) == 0.0
    assert tokens_to_reach(b, 2.4) == math.inf
    assert tokens_to_reach(b, 2.5) == math.inf
    samples = np.array([[2.0, 10.0, 0.5]] * 4)
    b_samples = samples * [1.25, 1.0, 1.0]  # every draw of B has E = 2.5
    lo, hi = data_efficiency_interval(_planted("power", a.params, samples), _planted("power", b.params, b_samples), 1e8)
    assert lo == hi == 0.0


def test_tokens_to_reach_inverts_predict():
    fit = _planted("power", {"E": 2.0, "A": 10.0, "alpha": 0.5})
    assert tokens_to_reach(fit, float(fit.predict(3e7))) == pytest.approx(3e7, rel=1e-9)
    n, d, y = _grid()
    chin = fit_chinchilla(n, d, y, bootstrap=0)
    target = float(chin.predict(1e7, 5e8))
    assert tokens_to_reach(chin, target, n=1e7) == pytest.approx(5e8, rel=1e-6)
    with pytest.raises(FitError, match="needs n"):
        tokens_to_reach(chin, target)


def test_data_efficiency_refuses_mismatched_fits():
    a = _planted("power", {"E": 2.0, "A": 10.0, "alpha": 0.5})
    with pytest.raises(FitError, match="same x"):
        data_efficiency(a, _planted("power", a.params, x_name="params"), 1e8)
    with pytest.raises(FitError, match="two power-law fits"):
        data_efficiency(a, _planted("chinchilla", {**a.params, "B": 1.0, "beta": 0.3}), 1e8)


# ------------------------------------------------------------------------------------------------ plotting


def test_plot_fits_writes_a_png_atomically(tmp_path):
    y_a = _noisy(_power(X, PLANTED), 0.01, seed=0)
    y_b = _noisy(_power(X, {**PLANTED, "E": 1.8}), 0.01, seed=1)
    fits = {"wd=0.1": fit_power_law(X, y_a, bootstrap=20), "wd=1.0": fit_power_law(X, y_b, bootstrap=0)}
    out = plot_fits(fits, {"wd=0.1": (X, y_a), "wd=1.0": (X, y_b)}, tmp_path / "plots" / "fit.png",
                    x_label="params (M)", y_label="val_loss", extend_to=1e6)
    assert out == tmp_path / "plots" / "fit.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in out.parent.iterdir()] == ["fit.png"]
    n, d, y = _grid()
    chin = {"all": fit_chinchilla(n, d, y, bootstrap=10)}
    out2 = plot_fits(chin, {"all": (n, y, d)}, tmp_path / "chin.png", x_label="N", y_label="loss")
    assert out2.stat().st_size > 1000
