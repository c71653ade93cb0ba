"""Stylized facts of the simulated volatility, on 1-minute mid returns.

Fast mode: the latent process and the observed level-1 quotes (no depth, no trades) of 10 symbols over
1,000 trading dates on a 1-minute grid — the model of :mod:`l2vol.data.sim.latent` sampled where the
facts are measured. Returns are those the RV targets use (continuous trading, not across the lunch
break: 237 a day); symbol-days whose quotes a price limit bound are left out.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from l2vol.config import SimulationConfig
from l2vol.data.oracle import RVConvention
from l2vol.data.simulator import simulate_latent

N_SYMBOLS, N_DAYS = 10, 1000


@pytest.fixture(scope="module")
def facts():
    cfg = SimulationConfig(symbols=N_SYMBOLS, days=N_DAYS, seed=0, start=dt.date(2019, 1, 2))
    ret: dict[int, list] = {}
    spread: dict[int, list] = {}
    day_ret: dict[int, list] = {}
    day_index: dict[int, list] = {}
    for d, (lat, _) in enumerate(simulate_latent(cfg, step_s=60)):
        counted = RVConvention().counted(lat.grids[0])
        r = np.diff(np.log(lat.mid()), axis=1)[:, counted]
        rel = ((lat.ask_t - lat.bid_t) / ((lat.ask_t + lat.bid_t) / 2))[:, 1:][:, counted]
        bound = lat.distorted.any(axis=1)
        for i, s in enumerate(lat.sym):
            ret.setdefault(s, []).append(np.full(r.shape[1], np.nan) if bound[i] else r[i])
            spread.setdefault(s, []).append(np.full(r.shape[1], np.nan) if bound[i] else rel[i])
            day_ret.setdefault(s, []).append(np.nan if bound[i] else lat.x[i, -1] - lat.x[i, 0])
            day_index.setdefault(s, []).append(d)
    return {
        s: {
            "r": np.array(ret[s]),
            "spread": np.array(spread[s]),
            "R": np.array(day_ret[s]),
            "d": np.array(day_index[s]),
        }
        for s in ret
    }


def _acf(x: np.ndarray, lag: int) -> float:
    mu, var = np.nanmean(x), np.nanvar(x)
    a, b = x[:-lag] - mu, x[lag:] - mu
    ok = ~np.isnan(a) & ~np.isnan(b)
    return float((a[ok] * b[ok]).mean() / var)


def test_absolute_returns_are_persistent(facts):
    acf = {lag: np.mean([_acf(np.abs(v["r"]).ravel(), lag) for v in facts.values()]) for lag in (1, 2, 3, 4, 5, 30)}
    assert np.mean([acf[k] for k in (1, 2, 3, 4, 5)]) >= 0.1, acf
    assert acf[30] > 0, acf


def test_intraday_u_shape(facts):
    prof = np.nanmean(np.concatenate([np.abs(v["r"]) for v in facts.values()]), axis=0)
    # 237 returns: 0..118 end 09:31..11:29, 119..236 end 13:01..14:56 (14:57 ends the session)
    first, last = prof[:30].mean(), prof[-30:].mean()
    midday = np.r_[prof[60:119], prof[149:179]].mean()  # 10:30-11:30 and 13:30-14:00
    assert first >= 1.3 * midday and last >= 1.3 * midday, (first / midday, last / midday)


def test_standardized_returns_are_fat_tailed(facts):
    z = []
    for v in facts.values():
        r = v["r"]
        sd = np.sqrt(np.nansum(r**2, axis=1) / r.shape[1])[:, None]  # the day's realized volatility
        z.append((r / sd).ravel())
    z = np.concatenate(z)
    z = z[np.isfinite(z)]
    kurt = (z**4).mean() / (z**2).mean() ** 2
    assert kurt >= 5, kurt


def test_spread_moves_with_absolute_returns(facts):
    corr = []
    for v in facts.values():
        nb = v["r"].shape[1] // 5  # 5-minute buckets
        ar = np.abs(v["r"][:, : nb * 5]).reshape(-1, nb, 5).mean(axis=2).ravel()
        sp = v["spread"][:, : nb * 5].reshape(-1, nb, 5).mean(axis=2).ravel()
        ok = ~np.isnan(ar) & ~np.isnan(sp)
        corr.append(np.corrcoef(ar[ok], sp[ok])[0, 1])
    assert np.mean(corr) > 0.2, corr


def test_daily_realized_variance_has_long_memory(facts):
    lag1, lag10 = [], []
    for v in facts.values():
        rv = np.nansum(v["r"] ** 2, axis=1)
        rv[np.isnan(v["r"]).all(axis=1)] = np.nan
        series = np.full(N_DAYS, np.nan)
        series[v["d"]] = rv
        lag1.append(_acf(series, 1))
        lag10.append(_acf(series, 10))
    assert np.mean(lag1) >= 0.4, lag1
    assert np.mean(lag10) >= 0.15, lag10


def test_leverage_negative_returns_raise_volatility(facts):
    daily, intraday = [], []
    for v in facts.values():
        rv = np.nansum(v["r"] ** 2, axis=1)
        rv[np.isnan(v["r"]).all(axis=1)] = np.nan
        nxt = np.full(len(rv), np.nan)
        consecutive = np.diff(v["d"]) == 1
        nxt[:-1][consecutive] = rv[1:][consecutive]
        ok = ~np.isnan(v["R"]) & ~np.isnan(nxt)
        daily.append(np.corrcoef(v["R"][ok], np.log(nxt[ok]))[0, 1])
        # intraday: this minute's return against the next 30 minutes' mean |r|
        r = v["r"]
        fut = np.stack([np.abs(r[:, j + 1 : j + 31]).mean(axis=1) for j in range(0, 90)], axis=1)
        now = r[:, :90]
        ok = ~np.isnan(now) & ~np.isnan(fut)
        intraday.append(np.corrcoef(now[ok], fut[ok])[0, 1])
    assert np.mean(daily) < -0.02, daily
    assert np.mean(intraday) < 0, intraday


def test_volatility_has_a_market_wide_common_factor(facts):
    logrv = np.full((len(facts), N_DAYS), np.nan)
    for i, v in enumerate(facts.values()):
        rv = np.nansum(v["r"] ** 2, axis=1)
        rv[np.isnan(v["r"]).all(axis=1)] = np.nan
        logrv[i, v["d"]] = np.log(rv)
    c = np.ma.corrcoef(np.ma.masked_invalid(logrv)).filled(np.nan)
    off = c[~np.eye(len(c), dtype=bool)]
    assert np.nanmean(off) > 0.2, np.nanmean(off)
