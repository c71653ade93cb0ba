"""The oracle forecast of the RV targets on simulated data: ``E[target | latent state at t]``.

**Targets** (DESIGN §3, the same estimator as :mod:`l2vol.factors.targets`): at a bucket end ``t`` the
realized variance of the *observed* mid price ``m = (bid_px_1 + ask_px_1) / 2`` over a window
``(t, u]``,

    RV(t, u] = sum of r_k^2 over the returns r_k = ln m_k - ln m_{k-1} between consecutive snapshots
               that both lie in (t, u] (wall time), both in continuous trading (phase TRADE), never
               across the lunch break (see :class:`RVConvention`).

Horizons: ``next_bucket`` (t, next bucket end] (null at the last bucket end), ``next_30min``
(t, t + 30 min of trading clock] (null when it would pass the close of continuous trading, 14:57),
``rest_of_day`` (t, 14:57] (null at the last bucket end) and ``next_day`` (the whole continuous session
of the next trading date; null on the last simulated date or when the symbol does not trade then).
Units: squared log return over the window.

**Latent state at t**: the day's variance level ``sigma_d^2``, the intraday log-variance ``z_t`` and the
efficient price ``p*_t`` at trading-clock time tau(t) (over the lunch break nothing moves, so the state at
11:30 is the one stamped 13:00:00 in ``truth``), the daily log-variance components (through their
conditional mean for the next day), the open-to-now efficient return (leverage) and the announced event
schedule (tomorrow's suspension or dividend). From the model of :mod:`l2vol.data.sim.latent`, for a
counted return k (step ``(tau_{k-1}, tau_k]``, ``n = k - 1 - k_t`` steps after t):

    E[r_k^2] = b S_k dt exp(a^n z_t - a^{2n} V_z / 2)        diffusion (z is Gaussian AR(1), a = e^{-kappa dt})
             + sigma_d^2 pi_J S_k dt / T                        jumps (intensity proportional to s)
             + w_{k-1} + w_k                                    rounding noise at both ends

with ``b = sigma_d^2 (1 - pi_J) / T`` and ``w_j = (q_j tick / 2)^2 / 4 * E[1 / p*_j^2]``: the triangular
dither makes the rounding error of each mid exactly mean-zero with variance ``(q tick / 2)^2 / 4``
(``q`` = 1 on the half-tick grid of continuous trading) and independent of the price path and across
snapshots, so the cross terms vanish. ``E[1/p*_j^2] = p*_t^{-2} exp(2 Q_j)`` with ``Q_j`` the expected
quadratic variation from t to snapshot j (log-normal approximation; the correction is O(1e-3)).

Next day: ``E[RV_{d+1}] = E[sigma_{d+1}^2 | F_t] * sum_{k counted} S_k dt / T + noise`` (z starts afresh
from its stationary law, so its factor is 1) with

    E[sigma_{d+1}^2 | F_t] = exp(L + V_innov / 2 - c R_t + c^2 Q_rest / 2)

where ``L`` is the conditional mean of h_{d+1} without innovations and leverage, ``V_innov`` the
variance of its innovations, ``c = sum(psi) / sigma_d`` the leverage coefficient, ``R_t`` the efficient
log return from the open to t and ``Q_rest`` the expected quadratic variation from t to the close (the
leverage term uses E[exp(-c R_rest)] = exp(c^2 Q_rest / 2), exact for Gaussian returns, error O(c^4)).

Exclusions: where a price limit bound the quotes (limit-locked or clipped books) the observed mid is not
the dithered efficient price and the oracle is undefined: such symbol-days get null (both for the same
day and as the "next day" of the day before). News gaps happen overnight and do not enter any target.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from l2vol.data.calibration import Calibration, get_calibration
from l2vol.data.profiles import ASHARE, SSE_CLOSING_CALL_SINCE
from l2vol.data.sim import grid as G
from l2vol.data.sim.latent import TICK, LatentDay
from l2vol.storage import DatasetStore

HORIZONS = ("next_bucket", "next_30min", "rest_of_day", "next_day")
WINDOW_30MIN_S = 1800


@dataclass(frozen=True)
class RVConvention:
    """Which mid-price returns an RV target sums: returns between consecutive tau-grid snapshots both
    in ``phases`` (default continuous trading only) and, unless ``cross_lunch``, not the one from the last
    morning snapshot to 13:00:00."""

    phases: tuple[str, ...] = ("TRADE",)
    cross_lunch: bool = False

    def counted(self, grid: G.DayGrid) -> np.ndarray:
        """Bool per step k = 1..K (index k-1)."""
        codes = [G.PHASE_NAMES.index(p) for p in self.phases]
        ph = np.isin(grid.tau_phase, codes)
        ok = ph[:-1] & ph[1:]
        if not self.cross_lunch:
            ok &= grid.tau_s[1:] != G.TAU_LUNCH
        return ok


@dataclass(frozen=True)
class BucketEnds:
    """Bucket ends of a date: wall time (UTC ns), trading-clock tau (s) and the tau-grid index."""

    ts_ns: np.ndarray
    tau_s: np.ndarray
    k: np.ndarray


def bucket_ends(day: dt.date, bucket_s: int, step_s: int) -> BucketEnds:
    """Ends of the trading-clock buckets of ``bucket_s`` seconds, each continuous session cut from its
    start (5 minutes: 09:35 ... 11:30, 13:05 ... 14:55, 14:57).

    Dates before the SSE closing call (2018-08-20) are refused: continuous trading then ended at 15:00
    on SSE but not on SZSE, which the targets' bucket grid does not distinguish."""
    if day < SSE_CLOSING_CALL_SINCE:
        raise ValueError(
            f"{day}: the oracle covers dates from {SSE_CLOSING_CALL_SINCE} (both exchanges with a closing call)"
        )
    ts, tau = [], []
    elapsed = 0
    for s in ASHARE.continuous_sessions(day):
        a = pd.Timestamp(dt.datetime.combine(day, s.start), tz=ASHARE.timezone).tz_convert("UTC").value
        length = (dt.datetime.combine(day, s.end) - dt.datetime.combine(day, s.start)).seconds
        ends = np.minimum(np.arange(bucket_s, length + bucket_s, bucket_s), length)
        ends = np.unique(ends)
        ts.append(a + ends * 1_000_000_000)
        tau.append(elapsed + ends)
        elapsed += length
    tau_a = np.concatenate(tau)
    return BucketEnds(np.concatenate(ts), tau_a, (tau_a // step_s).astype(np.int64))


@dataclass
class OracleInputs:
    """The latent state of one day for the traded symbols (arrays over symbols ``n``; ``z_at``/``px_at``
    at each bucket end ``[n, B]``) and what is announced about the next trading date."""

    day: dt.date
    next_day: dt.date | None
    step_s: int
    symbols: list[str]
    exchange: list[str]
    sigma2: np.ndarray
    x_open: np.ndarray
    log_sigma2_next_mean: np.ndarray
    innov_var_next: np.ndarray
    lev_coef: np.ndarray
    trades_next: np.ndarray
    dividend_yield_next: np.ndarray
    limit_bound: np.ndarray
    z_at: np.ndarray
    px_at: np.ndarray


def inputs_from_latent(
    lat: LatentDay, symbols: np.ndarray, exchange: np.ndarray, next_day, bucket_s: int
) -> OracleInputs:
    """Oracle inputs from an in-memory latent day (the fast mode or the simulator)."""
    be = bucket_ends(lat.day, bucket_s, lat.step_s)
    o = lat.oracle
    return OracleInputs(
        day=lat.day,
        next_day=next_day,
        step_s=lat.step_s,
        symbols=list(symbols[lat.sym]),
        exchange=list(exchange[lat.sym]),
        sigma2=lat.sigma2,
        x_open=o["x_open"],
        log_sigma2_next_mean=o["log_sigma2_next_mean"],
        innov_var_next=o["innov_var_next"],
        lev_coef=o["lev_coef"],
        trades_next=o["trades_next"],
        dividend_yield_next=o["dividend_yield_next"],
        limit_bound=lat.distorted.any(axis=1),
        z_at=lat.z[:, be.k],
        px_at=np.exp(lat.x[:, be.k]),
    )


def oracle_day(
    inp: OracleInputs,
    cal: Calibration,
    bucket_s: int = 300,
    convention: RVConvention | None = None,
    *,
    components: bool = False,
) -> dict:
    """Oracle E[RV | latent state at t] for every traded symbol and bucket end of ``inp.day``.

    Returns ``{"ts": [B] UTC ns, "rv_<horizon>": [n, B]}`` (NaN where the target is undefined or the
    oracle excluded, see the module docstring). With ``components``, also the same-day parts
    ``iv_<h>`` (diffusion), ``jump_<h>`` and ``noise_<h>`` that add up to ``rv_<h>`` (diagnostics)."""
    conv = convention or RVConvention()
    ip = cal.intraday
    step = inp.step_s
    be = bucket_ends(inp.day, bucket_s, step)
    seas = G.seasonality(cal, step)
    n, nb = len(inp.symbols), len(be.ts_ns)
    out = {"ts": be.ts_ns, **{f"rv_{h}": np.full((n, nb), np.nan) for h in HORIZONS}}
    for part in ("iv", "jump", "noise") if components else ():
        out.update({f"{part}_{h}": np.full((n, nb), np.nan) for h in HORIZONS[:3]})
    pi_j = ip.jump_idio_share + ip.jump_mkt_share
    a = np.exp(-np.log(2) * step / ip.z_half_life_s)
    close_tau = G.TAU_CLOSE_CALL
    for ex in sorted(set(inp.exchange)):
        rows = np.array([i for i, e in enumerate(inp.exchange) if e == ex])
        grid = G.day_grid(inp.day, ex, step)
        k_steps = grid.K
        counted = conv.counted(grid)
        ts = grid.tau_ts_ns
        noise_unit = np.where(grid.tau_phase == G.CCALL, 2.0, 1.0) ** 2 * (TICK / 2) ** 2 / 4  # per grid point, x 1/p^2
        kk = np.arange(1, k_steps + 1)
        # [B, K]: step k counted for a window starting at bucket end b (start snapshot strictly after t)
        after = ts[kk - 1][None, :] > be.ts_ns[:, None]
        nsteps = kk[None, :] - 1 - be.k[:, None]
        live = nsteps >= 0
        nn = np.maximum(nsteps, 0)
        apow, a2pow = a**nn, a ** (2 * nn)
        # window ends (last tau-grid index whose snapshot is inside (t, u]) per horizon, -1 = undefined
        end_next = np.append(be.ts_ns[1:], -1)
        u30_tau = be.tau_s + WINDOW_30MIN_S
        end_30 = np.where(u30_tau <= close_tau, _tau_to_ts(grid, u30_tau), -1)
        end_rest = np.where(be.tau_s < close_tau, _tau_to_ts(grid, np.full(nb, close_tau)), -1)
        for i in rows:
            if inp.limit_bound[i]:
                continue
            s2 = inp.sigma2[i]
            base = s2 * (1 - pi_j) / G.T_DAY
            diff = base * seas.step_mean[None, :] * step * np.exp(apow * inp.z_at[i][:, None] - a2pow * ip.z_var / 2)
            jmp = s2 * pi_j * seas.step_mean * step / G.T_DAY
            qv = np.where(live, diff + jmp[None, :], 0.0)
            q_to = np.concatenate([np.zeros((nb, 1)), np.cumsum(qv, axis=1)], axis=1)  # [B, K+1] to point j
            inv_p2 = np.exp(2 * q_to) / inp.px_at[i][:, None] ** 2
            w = noise_unit[None, :] * inv_p2
            use = live & after & counted[None, :]
            terms = {"rv": qv + w[:, :-1] + w[:, 1:]}
            if components:
                terms.update(
                    iv=np.where(live, diff, 0.0), jump=np.where(live, jmp[None, :], 0.0), noise=w[:, :-1] + w[:, 1:]
                )
            for part, r2 in terms.items():
                cum = np.concatenate([np.zeros((nb, 1)), np.cumsum(np.where(use, r2, 0.0), axis=1)], axis=1)
                for h, end_ts in (("next_bucket", end_next), ("next_30min", end_30), ("rest_of_day", end_rest)):
                    kend = np.searchsorted(ts, end_ts, side="right") - 1  # last grid point with ts <= u
                    val = cum[np.arange(nb), np.maximum(kend, 0)]
                    out[f"{part}_{h}"][i] = np.where(end_ts >= 0, val, np.nan)
            q_rest = q_to[:, -1]
            if inp.next_day is not None and inp.trades_next[i]:
                out["rv_next_day"][i] = _next_day(inp, i, cal, conv, q_rest, seas)
    return out


def _tau_to_ts(grid: G.DayGrid, tau: np.ndarray) -> np.ndarray:
    """Wall time (UTC ns) of trading-clock ``tau`` as a window end: the morning side at the lunch."""
    k = np.clip(tau // grid.step_s, 0, grid.K)
    ts = grid.tau_ts_ns[k].copy()
    lunch = tau == G.TAU_LUNCH
    ts[lunch] = grid.tau_ts_ns[k[lunch] - 1] + grid.step_s * 1_000_000_000
    return ts


def _next_day(inp: OracleInputs, i: int, cal: Calibration, conv: RVConvention, q_rest: np.ndarray, seas) -> np.ndarray:
    """E[RV of the next day | state at each bucket end] for symbol ``i`` ([B])."""
    grid = G.day_grid(inp.next_day, inp.exchange[i], inp.step_s)
    counted = conv.counted(grid)
    step = inp.step_s
    r_sofar = np.log(inp.px_at[i]) - inp.x_open[i]
    c = inp.lev_coef[i]
    es2 = np.exp(inp.log_sigma2_next_mean[i] + inp.innov_var_next[i] / 2 - c * r_sofar + c * c * q_rest / 2)  # [B]
    share = seas.step_mean * step / G.T_DAY  # [K]
    qv_next = es2[:, None] * share[None, :]
    q_on = q_rest + cal.daily.overnight_var_share * es2
    q_to = q_on[:, None] + np.concatenate([np.zeros((len(es2), 1)), np.cumsum(qv_next, axis=1)], axis=1)
    px_next = inp.px_at[i] * (1 - inp.dividend_yield_next[i])
    noise_unit = np.where(grid.tau_phase == G.CCALL, 2.0, 1.0) ** 2 * (TICK / 2) ** 2 / 4
    w = noise_unit[None, :] * np.exp(2 * q_to) / px_next[:, None] ** 2
    r2 = qv_next + w[:, :-1] + w[:, 1:]
    return (r2 * counted[None, :]).sum(axis=1)


def window_sums(
    r2: np.ndarray, day: dt.date, exchange: list[str], step_s: int, bucket_s: int = 300, convention=None
) -> tuple[dict, np.ndarray]:
    """Sums of per-step quantities ``r2`` ``[n, K]`` (index k-1 = step k) over the target windows of
    every bucket end, counting the steps the convention counts (see :func:`realized_day`).

    Returns ``({"rv_next_bucket"|"rv_next_30min"|"rv_rest_of_day": [n, B]}, whole-day sum [n])``."""
    conv = convention or RVConvention()
    be = bucket_ends(day, bucket_s, step_s)
    n, nb = r2.shape[0], len(be.ts_ns)
    out = {f"rv_{h}": np.full((n, nb), np.nan) for h in HORIZONS[:3]}
    full = np.full(n, np.nan)
    for ex in sorted(set(exchange)):
        rows = np.array([i for i, e in enumerate(exchange) if e == ex])
        grid = G.day_grid(day, ex, step_s)
        counted = conv.counted(grid)
        ts = grid.tau_ts_ns
        x = np.where(counted[None, :], r2[rows], 0.0)
        full[rows] = x.sum(axis=1)
        cum = np.concatenate([np.zeros((len(rows), 1)), np.cumsum(x, axis=1)], axis=1)
        # steps k with ts[k-1] > t and ts[k] <= u: cum[kend] - cum[kstart], kstart = first point after t
        kstart = np.searchsorted(ts, be.ts_ns, side="right")
        end_next = np.append(be.ts_ns[1:], -1)
        u30_tau = be.tau_s + WINDOW_30MIN_S
        end_30 = np.where(u30_tau <= G.TAU_CLOSE_CALL, _tau_to_ts(grid, u30_tau), -1)
        end_rest = np.where(be.tau_s < G.TAU_CLOSE_CALL, _tau_to_ts(grid, np.full(nb, G.TAU_CLOSE_CALL)), -1)
        for h, end_ts in (("next_bucket", end_next), ("next_30min", end_30), ("rest_of_day", end_rest)):
            kend = np.searchsorted(ts, end_ts, side="right") - 1
            v = cum[:, np.maximum(kend, 0)] - cum[:, np.minimum(kstart, len(ts) - 1)]
            out[f"rv_{h}"][rows] = np.where((end_ts >= 0)[None, :], np.maximum(v, 0.0), np.nan)
    return out, full


def realized_day(mid: np.ndarray, day: dt.date, exchange: list[str], step_s: int, bucket_s: int = 300, convention=None):
    """Realized targets of one day from observed mids ``[n, K+1]`` on the tau grid.

    Returns ``({"rv_next_bucket"|"rv_next_30min"|"rv_rest_of_day": [n, B]}, full-day RV [n])`` with the
    same windows and conventions as :func:`oracle_day` (the day's full RV is the ``next_day`` target of
    the previous date)."""
    return window_sums(np.diff(np.log(mid), axis=1) ** 2, day, exchange, step_s, bucket_s, convention)


# ----------------------------------------------------------------------------------- stored simulations
def _read_latent(store: DatasetStore, day: dt.date) -> dict:
    return store.read_json(f"simulation/latent/date={day.isoformat()}.json")


def inputs_from_store(store: DatasetStore, day: dt.date, next_day, cal: Calibration, bucket_s: int) -> OracleInputs:
    """Oracle inputs of ``day`` from a simulated store: the daily latent JSON and the ``truth`` rows at
    the bucket ends (z_t is recovered exactly from ``spot_var`` = b s(tau_t) exp(z_t - V_z / 2))."""
    lat = _read_latent(store, day)
    step = int(lat["step_s"])
    be = bucket_ends(day, bucket_s, step)
    grid = G.day_grid(day, "SSE", step)
    want_ts = grid.tau_ts_ns[be.k]
    truth = store.read_partition("truth", day, columns=["symbol", "ts", "efficient_px", "spot_var"])
    truth = truth.filter(pc.is_in(truth.column("ts").cast(pa.int64()), pa.array(want_ts)))
    symbols = lat["symbols"]
    n, nb = len(symbols), len(want_ts)
    pos = {s: i for i, s in enumerate(symbols)}
    srow = np.array([pos[s] for s in truth.column("symbol").to_pylist()])
    bcol = np.searchsorted(want_ts, truth.column("ts").cast(pa.int64()).to_numpy())
    spot = np.full((n, nb), np.nan)
    px = np.full((n, nb), np.nan)
    spot[srow, bcol] = truth.column("spot_var").to_numpy()
    px[srow, bcol] = truth.column("efficient_px").to_numpy()
    ip = cal.intraday
    sigma2 = np.asarray(lat["sigma2"])
    base = sigma2 * (1 - ip.jump_idio_share - ip.jump_mkt_share) / G.T_DAY
    seas = G.seasonality(cal, step)
    z = np.log(spot / (base[:, None] * seas.point[be.k][None, :])) + ip.z_var / 2
    arr = {
        k: np.asarray(lat[k])
        for k in ("x_open", "log_sigma2_next_mean", "innov_var_next", "lev_coef", "dividend_yield_next")
    }
    return OracleInputs(
        day=day,
        next_day=next_day,
        step_s=step,
        symbols=symbols,
        exchange=lat["exchange"],
        sigma2=sigma2,
        trades_next=np.asarray(lat["trades_next"], dtype=bool),
        limit_bound=np.asarray(lat["limit_bound"], dtype=bool),
        z_at=z,
        px_at=px,
        **arr,
    )


def oracle_for_store(store: DatasetStore, *, bucket_s: int = 300, convention: RVConvention | None = None) -> pa.Table:
    """Oracle forecasts for every (symbol, bucket end) of a simulated store, one date at a time.

    Columns: ``symbol``, ``ts`` (bucket end, UTC), ``rv_next_bucket``, ``rv_next_30min``,
    ``rv_rest_of_day``, ``rv_next_day`` (squared log return; null where undefined or excluded).
    The next-day oracle of a symbol is also null when the next date's quotes were bound by a limit."""
    cfg = store.read_json("simulation/config.json")
    cal = get_calibration(cfg["calibration"]["name"])
    if cal.version != cfg["calibration"]["version"]:
        raise ValueError(
            f"{store.location('simulation/config.json')}: simulated with calibration "
            f"{cfg['calibration']['name']}@{cfg['calibration']['version']}, this code has {cal.label}"
        )
    days = [dt.date.fromisoformat(d) for d in cfg["dates"]]
    parts = []
    for j, day in enumerate(days):
        nxt = days[j + 1] if j + 1 < len(days) else None
        inp = inputs_from_store(store, day, nxt, cal, bucket_s)
        res = oracle_day(inp, cal, bucket_s, convention)
        if nxt is not None:
            nl = _read_latent(store, nxt)
            bound = {s for s, b in zip(nl["symbols"], nl["limit_bound"], strict=True) if b}
            for i, s in enumerate(inp.symbols):
                if s in bound:
                    res["rv_next_day"][i] = np.nan
        parts.append(_table(inp.symbols, res))
    return pa.concat_tables(parts)


def _table(symbols: list[str], res: dict) -> pa.Table:
    n, nb = len(symbols), len(res["ts"])
    cols = {
        "symbol": pa.array(np.repeat(np.array(symbols, dtype=object), nb).tolist(), type=pa.string()),
        "ts": pa.array(np.tile(res["ts"], n), type=pa.timestamp("ns", tz="UTC")),
    }
    for h in HORIZONS:
        v = res[f"rv_{h}"].ravel()
        cols[f"rv_{h}"] = pa.array(v, type=pa.float64(), mask=np.isnan(v))
    return pa.table(cols)


def realized_for_store(store: DatasetStore, *, bucket_s: int = 300, convention: RVConvention | None = None) -> pa.Table:
    """Realized targets of a simulated store with the windows and conventions of :func:`oracle_for_store`
    (same columns), from the ``snapshots`` mids on the tau grid. Symbol-days whose quotes a price limit
    bound are null, as in the oracle; ``rv_next_day`` is the next date's full continuous-session RV."""
    cfg = store.read_json("simulation/config.json")
    days = [dt.date.fromisoformat(d) for d in cfg["dates"]]
    step = int(cfg["config"]["snapshot_interval_s"])
    per_day = []
    for day in days:
        lat = _read_latent(store, day)
        symbols = lat["symbols"]
        grid = G.day_grid(day, "SSE", step)
        snap = store.read_partition("snapshots", day, columns=["symbol", "ts", "bid_px_1", "ask_px_1"], symbols=symbols)
        ts = snap.column("ts").cast(pa.int64()).to_numpy()
        k = np.searchsorted(grid.tau_ts_ns, ts)
        on_grid = (k < len(grid.tau_ts_ns)) & (grid.tau_ts_ns[np.minimum(k, grid.K)] == ts)
        pos = {s: i for i, s in enumerate(symbols)}
        row = np.array([pos[s] for s in snap.column("symbol").to_pylist()])
        mid = np.full((len(symbols), grid.K + 1), np.nan)
        bid = snap.column("bid_px_1").to_numpy(zero_copy_only=False)
        ask = snap.column("ask_px_1").to_numpy(zero_copy_only=False)
        mid[row[on_grid], k[on_grid]] = ((bid + ask) / 2)[on_grid]
        res, full = realized_day(mid, day, lat["exchange"], step, bucket_s, convention)
        bound = np.asarray(lat["limit_bound"], dtype=bool)
        for h in HORIZONS[:3]:
            res[f"rv_{h}"][bound] = np.nan
        full[bound] = np.nan
        res["ts"] = bucket_ends(day, bucket_s, step).ts_ns
        per_day.append((symbols, res, dict(zip(symbols, full, strict=True))))
    parts = []
    for j, (symbols, res, _) in enumerate(per_day):
        nxt = per_day[j + 1][2] if j + 1 < len(per_day) else {}
        nd = np.array([nxt.get(s, np.nan) for s in symbols])
        res["rv_next_day"] = np.repeat(nd[:, None], len(res["ts"]), axis=1)
        parts.append(_table(symbols, res))
    return pa.concat_tables(parts)
