"""Forecast comparison and calibration tests: Diebold-Mariano (with the HLN correction) and Mincer-Zarnowitz.

Both use Newey-West (Bartlett kernel) long-run covariances. In a panel (symbols x periods) the moment
conditions are first summed within each period and the Newey-West estimator is applied to that time
series (Driscoll-Kraay): robust to correlation across symbols within a period and to serial correlation
up to the lag. Overlapping targets (a horizon of ``h`` periods) make loss differentials MA(h-1), so the
lag is at least ``h``.

p-values come from scipy (Student-t and chi-square survival functions).
"""

from __future__ import annotations

import math

import numpy as np


def default_nw_lag(n_periods: int, horizon_periods: int = 1) -> int:
    """Newey-West truncation lag: ``max(h, floor(4 * (T / 100) ** (2/9)))``.

    The second term is the Newey-West (1994) rule of thumb for the Bartlett kernel; the first keeps
    the lag at least the forecast horizon ``h`` (in periods), since ``h``-step loss differentials are
    serially correlated up to lag ``h - 1``.
    """
    if n_periods < 1:
        raise ValueError(f"n_periods={n_periods}: need at least one period")
    return max(int(horizon_periods), int(math.floor(4.0 * (n_periods / 100.0) ** (2.0 / 9.0))))


def newey_west_variance(x: np.ndarray, lag: int) -> float:
    """Bartlett-kernel long-run variance of a series ``x_1..x_T`` (not divided by ``T``).

    ``S = g_0 + 2 * sum_{k=1..L} (1 - k/(L+1)) g_k`` with ``g_k = (1/T) sum_{t=k+1..T} (x_t - xbar)(x_{t-k} - xbar)``.
    ``S / T`` is the HAC variance of the mean ``xbar``. Non-negative for any data (Bartlett weights).
    """
    x = np.asarray(x, dtype=float)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"expected a non-empty 1-d series, got shape {x.shape}")
    return float(newey_west_covariance(x[:, None], lag)[0, 0])


def newey_west_covariance(scores: np.ndarray, lag: int) -> np.ndarray:
    """Bartlett-kernel long-run covariance of the rows of ``scores`` (T x k), demeaned, divided by ``T``.

    ``S = G_0 + sum_{j=1..L} w_j (G_j + G_j')``, ``G_j = (1/T) sum_{t=j+1..T} u_t u_{t-j}'``,
    ``w_j = 1 - j/(L+1)``.
    """
    u = np.asarray(scores, dtype=float)
    if lag < 0:
        raise ValueError(f"lag={lag}: must be >= 0")
    u = u - u.mean(axis=0)
    t = u.shape[0]
    s = u.T @ u / t
    for j in range(1, min(lag, t - 1) + 1):
        g = u[j:].T @ u[:-j] / t
        s += (1.0 - j / (lag + 1.0)) * (g + g.T)
    return s


def hln_correction(n_periods: int, horizon_periods: int) -> float:
    """Harvey-Leybourne-Newbold (1997) small-sample factor ``sqrt((T + 1 - 2h + h(h-1)/T) / T)``.

    The corrected statistic ``DM * factor`` is compared with Student-t(T-1).
    """
    t, h = float(n_periods), float(horizon_periods)
    inner = (t + 1.0 - 2.0 * h + h * (h - 1.0) / t) / t
    if inner <= 0:
        raise ValueError(f"T={n_periods} periods is too short for horizon h={horizon_periods} (HLN factor undefined)")
    return math.sqrt(inner)


def diebold_mariano(
    loss_model: np.ndarray,
    loss_benchmark: np.ndarray,
    *,
    periods: np.ndarray | None = None,
    horizon_periods: int = 1,
    lag: int | None = None,
) -> dict:
    """Diebold-Mariano test of equal expected loss, model vs benchmark, with the HLN correction.

    ``d_i = loss_model_i - loss_benchmark_i``. With ``periods`` (one label per row, e.g. the bucket end
    ``ts``), the differentials are first averaged across the rows (symbols) of each period, giving a
    time series ``dbar_t`` of ``T`` periods in sorted period order; without, rows are already periods
    in time order. Then::

        DM    = mean(dbar) / sqrt(S / T)        S: newey_west_variance(dbar, lag), lag >= horizon
        DM*   = DM * hln_correction(T, h)
        p     = 2 * (1 - F_t(|DM*|; T - 1))     two-sided
        p_model_better = F_t(DM*; T - 1)         one-sided, H1: model loss < benchmark loss

    Negative statistics favour the model. Returns ``stat`` (DM*), ``stat_raw`` (DM), ``p_value``,
    ``p_value_model_better``, ``mean_diff``, ``lag``, ``n_periods``, ``horizon_periods``, ``hln_factor``.
    When the long-run variance is zero: identical losses give ``stat = 0, p = 1``; a constant non-zero
    differential gives ``stat = -/+inf, p = 0``.
    """
    lm = np.asarray(loss_model, dtype=float)
    lb = np.asarray(loss_benchmark, dtype=float)
    if lm.shape != lb.shape or lm.ndim != 1:
        raise ValueError(f"loss arrays must be 1-d and of equal length, got {lm.shape} and {lb.shape}")
    d = lm - lb
    if not np.all(np.isfinite(d)):
        raise ValueError(f"{int((~np.isfinite(d)).sum())} loss differentials are not finite")
    if periods is not None:
        d = period_means(d, periods)
    t = d.size
    h = int(horizon_periods)
    if h < 1:
        raise ValueError(f"horizon_periods={horizon_periods}: must be >= 1")
    if t < 2:
        raise ValueError(f"Diebold-Mariano needs at least 2 periods, got {t}")
    if lag is None:
        lag = default_nw_lag(t, h)
    elif lag < h:
        raise ValueError(f"lag={lag} is below the horizon h={h}: h-step loss differentials are serially correlated")
    mean_diff = float(d.mean())
    var = newey_west_variance(d, lag) / t
    factor = hln_correction(t, h)
    scale = max(float(np.abs(d).max()), 1e-300)
    if var <= (1e-14 * scale) ** 2:
        raw = 0.0 if abs(mean_diff) <= 1e-14 * scale else math.copysign(math.inf, mean_diff)
    else:
        raw = mean_diff / math.sqrt(var)
    stat = raw * factor
    p_two, p_less = _t_pvalues(stat, t - 1)
    return {
        "stat": stat,
        "stat_raw": raw,
        "p_value": p_two,
        "p_value_model_better": p_less,
        "mean_diff": mean_diff,
        "lag": int(lag),
        "n_periods": int(t),
        "horizon_periods": h,
        "hln_factor": factor,
    }


def mincer_zarnowitz(
    y: np.ndarray,
    f: np.ndarray,
    *,
    periods: np.ndarray | None = None,
    lag: int | None = None,
    horizon_periods: int = 1,
) -> dict:
    """Mincer-Zarnowitz regression ``y = a + b f + e`` (OLS) with HAC standard errors.

    An unbiased, efficient forecast has ``(a, b) = (0, 1)``; the Wald statistic
    ``W = (theta - (0,1))' V^-1 (theta - (0,1))`` is chi-square(2) under that null. ``V`` is the
    sandwich ``(X'X)^-1 S (X'X)^-1`` with ``S`` the Newey-West long-run covariance of the scores
    ``x_i e_i`` (Driscoll-Kraay: scores summed within each of ``periods`` first, when given; rows are
    then periods in sorted order). Default lag: :func:`default_nw_lag` of the number of periods.

    Returns ``intercept``, ``slope``, ``se_intercept``, ``se_slope``, ``wald``, ``p_value``, ``r2``,
    ``n``, ``lag``. A fit with zero residuals has ``W = 0`` (p = 1) when ``(a, b) = (0, 1)``, else inf.
    """
    y = np.asarray(y, dtype=float)
    f = np.asarray(f, dtype=float)
    if y.shape != f.shape or y.ndim != 1:
        raise ValueError(f"y and f must be 1-d and of equal length, got {y.shape} and {f.shape}")
    n = y.size
    if n < 3:
        raise ValueError(f"Mincer-Zarnowitz needs at least 3 rows, got {n}")
    x = np.column_stack([np.ones(n), f])
    xtx = x.T @ x
    if np.linalg.cond(xtx) > 1e14:
        raise ValueError("Mincer-Zarnowitz: the forecast is (nearly) constant; the slope is not identified")
    xtx_inv = np.linalg.inv(xtx)
    theta = xtx_inv @ (x.T @ y)
    e = y - x @ theta
    scores = x * e[:, None]
    if periods is not None:
        codes, n_groups = _period_codes(periods)
        scores = np.column_stack([np.bincount(codes, weights=scores[:, j], minlength=n_groups) for j in range(2)])
    t = scores.shape[0]
    if lag is None:
        lag = default_nw_lag(t, horizon_periods)
    # newey_west_covariance divides by the number of periods; the sandwich wants the plain sum.
    s = newey_west_covariance(scores, lag) * t
    v = xtx_inv @ s @ xtx_inv
    delta = theta - np.array([0.0, 1.0])
    sst = float(((y - y.mean()) ** 2).sum())
    ssr = float((e**2).sum())
    if ssr <= 1e-24 * max(float((y**2).sum()), 1e-300):
        wald = 0.0 if np.allclose(delta, 0.0, atol=1e-9 * max(1.0, abs(theta[1]))) else math.inf
    else:
        wald = float(delta @ np.linalg.solve(v, delta))
    return {
        "intercept": float(theta[0]),
        "slope": float(theta[1]),
        "se_intercept": float(math.sqrt(max(v[0, 0], 0.0))),
        "se_slope": float(math.sqrt(max(v[1, 1], 0.0))),
        "wald": wald,
        "p_value": _chi2_sf(wald, 2),
        "r2": 1.0 - ssr / sst if sst > 0 else math.nan,
        "n": int(n),
        "lag": int(lag),
    }


def period_means(values: np.ndarray, periods: np.ndarray) -> np.ndarray:
    """Mean of ``values`` within each period label, in sorted period order (the cross-sectional mean)."""
    codes, n_groups = _period_codes(periods)
    sums = np.bincount(codes, weights=np.asarray(values, dtype=float), minlength=n_groups)
    counts = np.bincount(codes, minlength=n_groups)
    return sums / counts


def _period_codes(periods: np.ndarray) -> tuple[np.ndarray, int]:
    uniq, codes = np.unique(np.asarray(periods), return_inverse=True)
    return codes.ravel(), uniq.size


def _t_pvalues(stat: float, df: int) -> tuple[float, float]:
    from scipy import stats

    if math.isnan(stat):
        return math.nan, math.nan
    return float(2.0 * stats.t.sf(abs(stat), df)), float(stats.t.cdf(stat, df))


def _chi2_sf(x: float, df: int) -> float:
    from scipy import stats

    return float(stats.chi2.sf(x, df))
