"""The oracle E[RV target | latent state at t] of l2vol.data.oracle.

Mincer-Zarnowitz regressions ``RV = a + b * oracle + e`` must give a = 0 and b = 1 within 95% confidence.
Standard errors are clustered by trading date: forecast errors of one date overlap (windows of the same
day share returns, and all symbols share the market factor), while errors of different dates are
martingale differences (a target of date d is known before the oracle of date d + 1 is formed, except
next-day targets, whose errors d and d + 1 are also uncorrelated since the oracle at d + 1 conditions on
day d + 1's information). Critical values are Student-t with G - 1 degrees of freedom (G dates).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from l2vol.config import SimulationConfig
from l2vol.data.calibration import DEFAULT
from l2vol.data.oracle import (
    HORIZONS,
    inputs_from_latent,
    oracle_day,
    oracle_for_store,
    realized_day,
    realized_for_store,
    window_sums,
)
from l2vol.data.sim.latent import dithered_round
from l2vol.data.simulator import simulate_latent, simulate_market
from l2vol.storage import DatasetStore


def _t975(df: int) -> float:
    """Student-t 97.5% quantile (Cornish-Fisher expansion; within 0.1% for df >= 10)."""
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def mincer_zarnowitz(y: np.ndarray, x: np.ndarray, cluster: np.ndarray) -> dict:
    """OLS of y on [1, x] with cluster-robust (CR1) standard errors; 95% half-widths with t(G-1)."""
    X = np.column_stack([np.ones_like(x), x])
    xtx_inv = np.linalg.inv(X.T @ X)
    beta = xtx_inv @ X.T @ y
    e = y - X @ beta
    groups = np.unique(cluster, return_inverse=True)[1]
    g = groups.max() + 1
    scores = np.zeros((g, 2))
    np.add.at(scores, groups, X * e[:, None])
    n, k = X.shape
    adj = g / (g - 1) * (n - 1) / (n - k)
    cov = adj * xtx_inv @ (scores.T @ scores) @ xtx_inv
    half = _t975(g - 1) * np.sqrt(np.diag(cov))
    return {"a": beta[0], "b": beta[1], "ha": half[0], "hb": half[1], "n": n, "g": g}


def _collect(cfg: SimulationConfig, step_s: int, *, control_variate: bool = False) -> dict:
    """Realized targets and oracle forecasts of a latent-mode simulation, per horizon (y, x, cluster).

    With ``control_variate`` the same-day targets are ``RV - sum J^2 + E[sum J^2]`` (the realized jump
    contribution, known from the latent path, replaced by its conditional mean): the conditional mean
    given the latent state is unchanged, the variance from rare market-wide jumps is removed."""
    days = list(simulate_latent(cfg, step_s=step_s))
    out = {h: ([], [], [], []) for h in HORIZONS}
    prev = None
    for j, (lat, uni) in enumerate(days):
        nxt = days[j + 1][0].day if j + 1 < len(days) else None
        inp = inputs_from_latent(lat, uni.symbols, uni.exchange, nxt, 300)
        orc = oracle_day(inp, DEFAULT, components=control_variate)
        real, full = realized_day(lat.mid(), lat.day, inp.exchange, lat.step_s)
        if control_variate:
            jumps, _ = window_sums(lat.jump**2, lat.day, inp.exchange, lat.step_s)
        ok = ~inp.limit_bound
        for h in HORIZONS[:3]:
            y = real[f"rv_{h}"]
            if control_variate:
                y = y - jumps[f"rv_{h}"] + orc[f"jump_{h}"]
            x = orc[f"rv_{h}"]
            m = ok[:, None] & ~np.isnan(x) & ~np.isnan(y)
            out[h][0].append(y[m])
            out[h][1].append(x[m])
            out[h][2].append(np.full(m.sum(), j))
            if control_variate:
                out[h][3].append(orc[f"noise_{h}"][m])
        if prev is not None:  # next-day targets of the previous date
            p_inp, p_orc = prev
            full_of = {s: (full[i] if ok[i] else np.nan) for i, s in enumerate(inp.symbols)}
            y = np.array([full_of.get(s, np.nan) for s in p_inp.symbols])[:, None] * np.ones_like(p_orc["rv_next_day"])
            x = p_orc["rv_next_day"]
            m = ~np.isnan(x) & ~np.isnan(y)
            out["next_day"][0].append(y[m])
            out["next_day"][1].append(x[m])
            out["next_day"][2].append(np.full(m.sum(), j - 1))
        prev = (inp, orc)
    return {h: tuple(np.concatenate(v) if v else None for v in vals) for h, vals in out.items()}


@pytest.fixture(scope="module")
def fast_mode():
    """16 symbols x 220 dates on a 1-minute grid (the same model, a coarser snapshot grid)."""
    return _collect(SimulationConfig(symbols=16, days=220, seed=0, start=dt.date(2021, 1, 4)), 60)


@pytest.mark.parametrize("horizon", HORIZONS)
def test_mincer_zarnowitz_intercept_0_slope_1(fast_mode, horizon):
    y, x, cl, _ = fast_mode[horizon]
    assert len(y) > 10_000
    mz = mincer_zarnowitz(y, x, cl)
    assert abs(mz["a"]) <= mz["ha"], mz
    assert abs(mz["b"] - 1) <= mz["hb"], mz
    # the test has power: a forecast 25% too high is rejected
    bad = mincer_zarnowitz(y, 1.25 * x, cl)
    assert abs(bad["b"] - 1) > bad["hb"], bad


def test_mincer_zarnowitz_on_the_3_second_grid_with_noise():
    """On the real 3-second grid the rounding noise is ~half of RV: the oracle's noise term is needed."""
    data = _collect(SimulationConfig(symbols=10, days=25, seed=1), 3, control_variate=True)
    for h in HORIZONS[:3]:
        y, x, cl, noise = data[h]
        mz = mincer_zarnowitz(y, x, cl)
        assert abs(mz["a"]) <= mz["ha"] and abs(mz["b"] - 1) <= mz["hb"], (h, mz)
        share = noise.sum() / x.sum()
        assert 0.2 < share < 0.8, share
        no_noise = mincer_zarnowitz(y, x - noise, cl)
        assert abs(no_noise["b"] - 1) > no_noise["hb"] or abs(no_noise["a"]) > no_noise["ha"], (h, no_noise)


def test_dithered_rounding_error_is_unbiased_with_input_free_variance():
    rng = np.random.default_rng(0)
    m = 400_000
    for frac in (0.0, 0.1, 0.25, 0.5, 0.8):
        for q in (1, 2):
            y = np.full(m, 1000.0 + frac * q)
            err = dithered_round(y, q, rng.random(m), rng.random(m)) - y
            se = np.sqrt(q * q / 4 / m)
            assert abs(err.mean()) < 4 * se
            assert abs(err.var() - q * q / 4) < 0.02 * q * q / 4
    # errors of successive dithers are uncorrelated even when the input barely moves
    y = 500.0 + np.cumsum(rng.normal(0, 0.05, m))
    err = dithered_round(y, 1, rng.random(m), rng.random(m)) - y
    assert abs(np.corrcoef(err[1:], err[:-1])[0, 1]) < 0.01


def test_store_oracle_and_realized_targets_match_the_latent_mode(tmp_path):
    cfg = SimulationConfig(symbols=6, days=3, seed=5)
    store = DatasetStore(str(tmp_path))
    simulate_market(cfg, store)
    orc = oracle_for_store(store)
    real = realized_for_store(store)
    assert orc.column_names == real.column_names == ["symbol", "ts", *[f"rv_{h}" for h in HORIZONS]]
    days = list(simulate_latent(cfg))
    want_o, want_r = [], []
    for j, (lat, uni) in enumerate(days):
        nxt = days[j + 1][0].day if j + 1 < len(days) else None
        inp = inputs_from_latent(lat, uni.symbols, uni.exchange, nxt, 300)
        want_o.append(oracle_day(inp, DEFAULT))
        want_r.append(realized_day(lat.mid(), lat.day, inp.exchange, lat.step_s)[0])
    for h in HORIZONS[:3]:
        o = np.concatenate([w[f"rv_{h}"].ravel() for w in want_o])
        r = np.concatenate([w[f"rv_{h}"].ravel() for w in want_r])
        got_o = orc.column(f"rv_{h}").to_numpy(zero_copy_only=False)
        got_r = real.column(f"rv_{h}").to_numpy(zero_copy_only=False)
        ok = ~np.isnan(got_o)
        assert ok.sum() > 0.5 * len(ok)
        np.testing.assert_allclose(got_o[ok], o[ok], rtol=1e-9)
        np.testing.assert_allclose(got_r[ok], r[ok], rtol=1e-9)  # mids from stored prices vs ticks
    # nulls where the target is undefined: the last bucket end, 30 minutes past the close, last date
    nb = 48
    last = orc.column("rv_next_bucket").to_numpy(zero_copy_only=False).reshape(-1, nb)[:, -1]
    assert np.all(np.isnan(last))
    late = orc.column("rv_next_30min").to_numpy(zero_copy_only=False).reshape(-1, nb)[:, -6:]
    assert np.all(np.isnan(late))
    nd = orc.column("rv_next_day").to_numpy(zero_copy_only=False)
    last_date = np.array([t.date() for t in orc.column("ts").to_pylist()]) == days[-1][0].day
    assert np.all(np.isnan(nd[last_date])) and not np.all(np.isnan(nd[~last_date]))
