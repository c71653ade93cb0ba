"""Diebold-Mariano (HLN-corrected, Newey-West) and Mincer-Zarnowitz against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from l2vol.evaluation import (
    default_nw_lag,
    diebold_mariano,
    hln_correction,
    mincer_zarnowitz,
    newey_west_variance,
)


def _nw_loop(x: np.ndarray, lag: int) -> float:
    t = len(x)
    m = sum(x) / t
    gam = []
    for k in range(lag + 1):
        gam.append(sum((x[i] - m) * (x[i - k] - m) for i in range(k, t)) / t)
    return gam[0] + 2 * sum((1 - k / (lag + 1)) * gam[k] for k in range(1, lag + 1))


def test_newey_west_variance_equals_a_direct_loop():
    x = np.random.default_rng(4).normal(size=37).cumsum()
    for lag in (0, 1, 3, 8):
        assert newey_west_variance(x, lag) == pytest.approx(_nw_loop(list(x), lag), rel=1e-12)


def test_hln_factor_known_values():
    assert hln_correction(10, 2) == pytest.approx(math.sqrt(0.72))  # (10 + 1 - 4 + 2/10) / 10
    assert hln_correction(100, 1) == pytest.approx(math.sqrt(0.99))
    with pytest.raises(ValueError, match="too short"):
        hln_correction(2, 3)


def test_default_lag_is_at_least_the_horizon():
    assert default_nw_lag(100, 1) == 4 and default_nw_lag(100, 6) == 6 and default_nw_lag(1000, 1) == 6


def test_dm_matches_an_independent_computation():
    rng = np.random.default_rng(5)
    lm, lb = rng.gamma(2.0, size=25), rng.gamma(2.2, size=25)
    d = list(lm - lb)
    t, h, lag = 25, 2, 3
    raw = (sum(d) / t) / math.sqrt(_nw_loop(d, lag) / t)
    stat = raw * math.sqrt((t + 1 - 2 * h + h * (h - 1) / t) / t)
    res = diebold_mariano(lm, lb, horizon_periods=h, lag=lag)
    assert res["stat_raw"] == pytest.approx(raw) and res["stat"] == pytest.approx(stat)
    assert res["p_value"] == pytest.approx(2 * stats.t.sf(abs(stat), t - 1))
    assert res["p_value_model_better"] == pytest.approx(stats.t.cdf(stat, t - 1))
    with pytest.raises(ValueError, match="below the horizon"):
        diebold_mariano(lm, lb, horizon_periods=2, lag=1)


def test_dm_panel_uses_the_per_period_cross_sectional_mean():
    rng = np.random.default_rng(6)
    periods = np.repeat(np.arange(40), 5)[rng.permutation(200)]  # unordered rows, 5 symbols a period
    lm, lb = rng.gamma(2.0, size=200), rng.gamma(2.0, size=200)
    dbar = np.array([(lm - lb)[periods == p].mean() for p in range(40)])
    a = diebold_mariano(lm, lb, periods=periods)
    b = diebold_mariano(dbar, np.zeros(40))
    assert a["n_periods"] == 40 and a["stat"] == pytest.approx(b["stat"])


def test_dm_degenerate_differentials():
    x = np.arange(1.0, 11.0)
    assert diebold_mariano(x, x)["p_value"] == pytest.approx(1.0)
    res = diebold_mariano(x, x + 1.0)
    assert res["stat"] == -math.inf and res["p_value"] == 0.0 and res["p_value_model_better"] == 0.0


def _dm_pvalues(rng, reps: int, t: int, n_sym: int, h: int, better: float) -> np.ndarray:
    out = np.empty(reps)
    periods = np.repeat(np.arange(t), n_sym)
    for r in range(reps):
        # common shock per period (cross-sectional correlation) + MA(h-1) overlap in the errors
        u = rng.normal(size=(t + h - 1, 2))
        common = np.convolve(u[:, 0], np.ones(h), "valid")[:, None]
        e1 = common + rng.normal(size=(t, n_sym))
        e2 = common + rng.normal(size=(t, n_sym)) * better
        out[r] = diebold_mariano((e2**2).ravel(), (e1**2).ravel(), periods=periods, horizon_periods=h)[
            "p_value_model_better" if better < 1 else "p_value"
        ]
    return out


def test_dm_size_under_the_null_is_close_to_nominal():
    """Two forecasts with identically distributed errors: p-values roughly uniform, 5% size in a loose band."""
    rng = np.random.default_rng(7)
    p = _dm_pvalues(rng, reps=800, t=120, n_sym=5, h=1, better=1.0)
    assert 0.025 <= (p < 0.05).mean() <= 0.085
    assert 0.15 <= (p < 0.2).mean() <= 0.25 and abs(p.mean() - 0.5) < 0.04
    p2 = _dm_pvalues(rng, reps=400, t=120, n_sym=5, h=3, better=1.0)
    assert 0.01 <= (p2 < 0.05).mean() <= 0.11


def test_dm_has_power_against_a_clearly_better_forecast():
    rng = np.random.default_rng(8)
    p = _dm_pvalues(rng, reps=200, t=120, n_sym=5, h=1, better=0.7)
    assert (p < 0.05).mean() > 0.9


def test_mz_perfect_forecast_and_biased_forecast():
    rng = np.random.default_rng(9)
    y = rng.gamma(2.0, 1e-4, size=400)
    perfect = mincer_zarnowitz(y, y)
    assert perfect["intercept"] == pytest.approx(0.0, abs=1e-12) and perfect["slope"] == pytest.approx(1.0)
    assert perfect["p_value"] == pytest.approx(1.0)
    noisy = y * rng.lognormal(-0.045, 0.3, size=400)  # mean-one noise
    f_unbiased = mincer_zarnowitz(noisy, y)  # y = E[noisy | y]: unbiased forecast of the noisy target
    assert f_unbiased["p_value"] > 0.01
    biased = mincer_zarnowitz(noisy, 1.6 * y + 5e-5)
    assert biased["p_value"] < 1e-6 and biased["slope"] < 1.0


def test_mz_hac_errors_match_white_at_lag_zero():
    """At lag 0 the sandwich is White's HC0; check it against a direct formula."""
    rng = np.random.default_rng(10)
    f = rng.gamma(2.0, size=60)
    y = 0.3 + 0.9 * f + rng.normal(size=60) * f
    x = np.column_stack([np.ones(60), f])
    theta = np.linalg.lstsq(x, y, rcond=None)[0]
    e = y - x @ theta
    bread = np.linalg.inv(x.T @ x)
    meat = sum(np.outer(x[i], x[i]) * e[i] ** 2 for i in range(60))
    v = bread @ meat @ bread
    res = mincer_zarnowitz(y, f, lag=0)
    assert res["intercept"] == pytest.approx(theta[0]) and res["slope"] == pytest.approx(theta[1])
    assert res["se_intercept"] == pytest.approx(math.sqrt(v[0, 0])) and res["se_slope"] == pytest.approx(
        math.sqrt(v[1, 1])
    )
    d = theta - np.array([0.0, 1.0])
    assert res["wald"] == pytest.approx(float(d @ np.linalg.solve(v, d)))
    assert res["p_value"] == pytest.approx(stats.chi2.sf(res["wald"], 2))
