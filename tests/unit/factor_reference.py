"""Test support for the factor engine: a synthetic canonical Level2 market and the pandas reference.

* :func:`synthetic_market` writes realistic canonical ``snapshots``/``trades``/``universe``/``truth``
  partitions (a stochastic-volatility random walk quoted by a 10-level book on the tick grid, auctions,
  a halt, a limit lock, an ex-dividend date, fills exactly on snapshot times and bucket boundaries).
* :func:`reference_factors` / :func:`reference_targets` re-implement every registered factor and the
  targets with vectorized pandas/numpy (grouped operations, no row-wise apply), written independently
  of the polars engine: the tests and ``benchmarks/bench_factors.py`` compare the two.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pyarrow as pa

from l2vol.data.profiles import ASHARE
from l2vol.data.schema import N_LEVELS, conform, schema_for

TICK = 0.01
LOT = 100
TZ = "Asia/Shanghai"

# =====================================================================================================
# Synthetic canonical market
# =====================================================================================================


def _day_times(day: dt.date, interval_s: int) -> tuple[np.ndarray, np.ndarray]:
    """UTC ns snapshot times of a day (09:15 .. 11:30 exclusive, 13:00 .. 15:00 inclusive) and phases."""
    base = pd.Timestamp(day).tz_localize(TZ)
    am = pd.date_range(
        base + pd.Timedelta("09:15:00"), base + pd.Timedelta("11:30:00"), freq=f"{interval_s}s", inclusive="left"
    )
    pm = pd.date_range(
        base + pd.Timedelta("13:00:00"), base + pd.Timedelta("15:00:00"), freq=f"{interval_s}s", inclusive="both"
    )
    local = am.append(pm)
    phase = ASHARE.phase_of(local.tz_localize(None), day)
    return local.tz_convert("UTC").asi8, phase.astype(object)


def synthetic_market(
    store,
    *,
    symbols: int = 4,
    days: int = 25,
    start: dt.date = dt.date(2024, 1, 2),
    interval_s: int = 15,
    trade_rate: float = 1.5,
    seed: int = 0,
    events: bool = True,
    truth: bool = True,
    sort_symbols: bool = False,
) -> dict:
    """Write a synthetic market to ``store``; returns {"dates", "symbols", "events"}.

    ``trade_rate``: mean fills per snapshot interval of continuous trading. ``events`` schedules, on
    early dates, a halt (symbol 1, 10:00-10:30 of date 2), an upper-limit lock (symbol 2, 13:30-14:00 of
    date 3) and an ex-dividend date (symbol 0, date 4: pre_close = previous close - 0.3 CNY). Rows are
    written symbol by symbol in time order; with ``sort_symbols`` the symbols are in lexicographic order
    (as canonical partitions are), otherwise not, so readers cannot rely on it.
    """
    rng = np.random.default_rng(seed)
    dates = ASHARE.next_trading_days(start, days)
    names = [f"{600000 + 3 * i:06d}.SH" if i % 2 == 0 else f"{1 + 2 * i:06d}.SZ" for i in range(symbols)]
    if sort_symbols:  # canonical partitions are sorted by symbol, then time
        names = sorted(names)
    S = symbols
    log_px = np.log(rng.uniform(8.0, 60.0, S))
    sigma_day = rng.uniform(0.012, 0.03, S)  # daily vol of the efficient log price
    close = np.exp(log_px)
    ev: dict[str, tuple[int, int]] = {}
    if events and S >= 3 and days >= 5:
        ev = {"halt": (1, 2), "lock": (2, 3), "exdiv": (0, 4)}
    for di, day in enumerate(dates):
        ts, phase = _day_times(day, interval_s)
        T = len(ts)
        local = pd.DatetimeIndex(ts, tz="UTC").tz_convert(TZ)
        secs = (local.hour * 3600 + local.minute * 60 + local.second).to_numpy()
        # U-shaped intraday volatility, persistent daily level, occasional jumps.
        u = (secs - 9.5 * 3600) / (5.5 * 3600)
        shape = 1.0 + 1.5 * (u - 0.5) ** 2 * 4
        sigma_day = np.exp(0.9 * np.log(sigma_day) + 0.1 * np.log(0.02) + rng.normal(0, 0.15, S))
        dt_frac = interval_s / (4 * 3600)
        vol = sigma_day[:, None] * np.sqrt(dt_frac * shape[None, :] / shape.mean())
        steps = vol * rng.standard_normal((S, T))
        jumps = (rng.random((S, T)) < 0.002) * rng.normal(0, 0.006, (S, T))
        pre_close = np.round(close, 2)
        if ev.get("exdiv", (-1, -1))[1] == di:
            s0 = ev["exdiv"][0]
            pre_close[s0] = round(close[s0] - 0.30, 2)
            log_px[s0] += math.log(pre_close[s0] / close[s0])
        start_px = log_px + rng.normal(0, 0.004, S)  # overnight move
        eff = start_px[:, None] + np.cumsum(steps + jumps, axis=1)
        px = np.exp(eff)
        upper = np.floor(pre_close * 1.1 * 100 + 0.5) / 100
        lower = np.floor(pre_close * 0.9 * 100 + 0.5) / 100
        px = np.clip(px, lower[:, None] + 0.05, upper[:, None] - 0.05)
        spread_ticks = rng.choice([1, 1, 1, 2, 2, 3], size=(S, T))
        bid1 = np.floor((px - spread_ticks * TICK / 2) / TICK + 1e-9) * TICK
        ask1 = bid1 + spread_ticks * TICK
        bid1, ask1 = np.round(bid1, 2), np.round(ask1, 2)
        gaps_b = np.cumsum(1 + (rng.random((S, T, N_LEVELS)) < 0.2), axis=2) - 1
        gaps_a = np.cumsum(1 + (rng.random((S, T, N_LEVELS)) < 0.2), axis=2) - 1
        bid_px = np.round(bid1[:, :, None] - gaps_b * TICK, 2)
        ask_px = np.round(ask1[:, :, None] + gaps_a * TICK, 2)
        bid_qty = (rng.geometric(0.15, (S, T, N_LEVELS)) * LOT).astype(np.float64)
        ask_qty = (rng.geometric(0.15, (S, T, N_LEVELS)) * LOT).astype(np.float64)
        bid_n = rng.integers(1, 30, (S, T, N_LEVELS)).astype(np.float64)
        ask_n = rng.integers(1, 30, (S, T, N_LEVELS)).astype(np.float64)
        # Thin books: deep levels sometimes empty.
        thin = rng.random((S, T)) < 0.05
        for arr in (bid_px, ask_px, bid_qty, ask_qty, bid_n, ask_n):
            arr[:, :, 8:][thin] = np.nan
        phases = np.tile(phase, (S, 1))
        auction = np.isin(phases, ["OCALL", "CCALL"])
        # Call auctions: indicative price on both sides (bid = ask), one level.
        ind = np.round(px, 2)
        for arr, lvl1 in ((bid_px, ind), (ask_px, ind)):
            arr[:, :, 0] = np.where(auction, lvl1, arr[:, :, 0])
            arr[:, :, 1:][auction] = np.nan
        for arr in (bid_qty, ask_qty, bid_n, ask_n):
            arr[:, :, 1:][auction] = np.nan
        if "halt" in ev and ev["halt"][1] == di:
            s = ev["halt"][0]
            h = (secs >= 10 * 3600) & (secs < 10.5 * 3600)
            phases[s, h] = "HALT"
        locked = np.zeros((S, T), dtype=bool)
        if "lock" in ev and ev["lock"][1] == di:
            s = ev["lock"][0]
            locked[s] = (secs >= 13.5 * 3600) & (secs < 14 * 3600)
            bid_px[s, locked[s], 0] = upper[s]
            bid_px[s, locked[s], 1:] = upper[s] - TICK * np.arange(1, N_LEVELS)
            ask_px[s, locked[s], :] = np.nan
            ask_qty[s, locked[s], :] = np.nan
            ask_n[s, locked[s], :] = np.nan

        # ---- trades: per snapshot interval [t_j, t_j+1) of continuous trading, priced off snapshot j
        tradable = (phases == "TRADE") & ~locked
        counts = rng.poisson(trade_rate, (S, T)) * tradable
        counts[:, -1] = 0
        sym_idx = np.repeat(np.repeat(np.arange(S), T), counts.ravel())
        j_idx = np.repeat(np.tile(np.arange(T), S), counts.ravel())
        n_tr = len(sym_idx)
        step_ns = np.diff(ts).min()
        offs = rng.integers(0, step_ns, n_tr)
        offs[rng.random(n_tr) < 0.05] = 0  # fills exactly at snapshot times (and bucket boundaries)
        t_ts = ts[j_idx] + offs
        bias = np.clip(0.5 + 0.2 * np.sin(secs[j_idx] / 1800.0 + sym_idx), 0.05, 0.95)
        is_buy = rng.random(n_tr) < bias
        t_px = np.where(is_buy, ask1[sym_idx, j_idx], bid1[sym_idx, j_idx])
        t_qty = rng.geometric(0.3, n_tr) * LOT
        t_side = np.where(is_buy, "B", "S").astype(object)
        # Locked symbol: a few fills at the limit, sellers hitting the queue.
        if locked.any():
            ls, lj = np.nonzero(locked & (rng.random((S, T)) < 0.3))
            sym_idx = np.concatenate([sym_idx, ls])
            t_ts = np.concatenate([t_ts, ts[lj] + rng.integers(0, step_ns, len(lj))])
            t_px = np.concatenate([t_px, upper[ls]])
            t_qty = np.concatenate([t_qty, rng.geometric(0.3, len(lj)) * LOT])
            t_side = np.concatenate([t_side, np.full(len(lj), "S", dtype=object)])
        # Auction fills: opening at 09:25:00, closing at 15:00:00 (aggressor N).
        open_j = int(np.argmax(phase == "PREOPEN"))
        open_px = np.round(px[:, open_j], 2)
        close_px = np.round(px[:, -1], 2)
        for j, apx in ((open_j, open_px), (T - 1, close_px)):
            sym_idx = np.concatenate([sym_idx, np.arange(S)])
            t_ts = np.concatenate([t_ts, np.full(S, ts[j])])
            t_px = np.concatenate([t_px, apx])
            t_qty = np.concatenate([t_qty, rng.integers(50, 500, S) * LOT])
            t_side = np.concatenate([t_side, np.full(S, "N", dtype=object)])
        trades = pd.DataFrame(
            {"sym": sym_idx, "ts": t_ts, "price": t_px, "qty": t_qty.astype(np.int64), "side": t_side}
        )
        trades = trades.sort_values(["sym", "ts"], kind="stable").reset_index(drop=True)
        trades["seq"] = trades.groupby("sym").cumcount() + 1
        trades["amount"] = trades["price"] * trades["qty"]

        # ---- cumulative trade statistics seen by each snapshot (fills strictly before it)
        last = np.full((S, T), np.nan)
        hi = np.full((S, T), np.nan)
        lo = np.full((S, T), np.nan)
        cvol = np.zeros((S, T), dtype=np.int64)
        camt = np.zeros((S, T))
        ntr = np.zeros((S, T), dtype=np.int64)
        for s in range(S):
            tr = trades[trades["sym"] == s]
            k = np.searchsorted(tr["ts"].to_numpy(), ts, side="left")
            cq = np.concatenate([[0], np.cumsum(tr["qty"].to_numpy())])
            ca = np.concatenate([[0.0], np.cumsum(tr["amount"].to_numpy())])
            p = tr["price"].to_numpy()
            cmax = np.concatenate([[np.nan], np.maximum.accumulate(p)]) if len(p) else np.array([np.nan])
            cmin = np.concatenate([[np.nan], np.minimum.accumulate(p)]) if len(p) else np.array([np.nan])
            lastp = np.concatenate([[np.nan], p])
            cvol[s], camt[s], ntr[s] = cq[k], ca[k], k
            last[s], hi[s], lo[s] = lastp[k], cmax[k], cmin[k]
        opened = ts[None, :] >= ts[open_j]
        snap = {
            "symbol": np.repeat(names, T),
            "ts": pd.to_datetime(np.tile(ts, S), utc=True),
            "phase": phases.ravel(),
            "last_px": last.ravel(),
            "open_px": np.where(opened, open_px[:, None], np.nan).ravel(),
            "high_px": hi.ravel(),
            "low_px": lo.ravel(),
            "pre_close": np.repeat(pre_close, T),
            "upper_limit_px": np.repeat(upper, T),
            "lower_limit_px": np.repeat(lower, T),
            "cum_volume": cvol.ravel(),
            "cum_amount": camt.ravel(),
            "num_trades": ntr.ravel(),
        }
        for side, pxa, qa, na in (("bid", bid_px, bid_qty, bid_n), ("ask", ask_px, ask_qty, ask_n)):
            for i in range(N_LEVELS):
                snap[f"{side}_px_{i + 1}"] = pxa[:, :, i].ravel()
            for i in range(N_LEVELS):
                snap[f"{side}_qty_{i + 1}"] = qa[:, :, i].ravel()
            for i in range(N_LEVELS):
                snap[f"{side}_n_{i + 1}"] = na[:, :, i].ravel()
        snap["total_bid_qty"] = np.nansum(bid_qty, axis=2).ravel()
        snap["total_ask_qty"] = np.nansum(ask_qty, axis=2).ravel()
        # from_pandas stores NaN (empty levels, no trade yet) as null, like a vendor file.
        sdf = pd.DataFrame(snap)
        tdf = pd.DataFrame(
            {
                "symbol": np.asarray(names, dtype=object)[trades["sym"].to_numpy()],
                "ts": pd.to_datetime(trades["ts"].to_numpy(), utc=True),
                "price": trades["price"].to_numpy(),
                "qty": trades["qty"].to_numpy(),
                "amount": trades["amount"].to_numpy(),
                "side": trades["side"].to_numpy(),
                "buy_order_no": np.arange(len(trades), dtype=np.int64) * 2 + 1,
                "sell_order_no": np.arange(len(trades), dtype=np.int64) * 2 + 2,
                "seq": trades["seq"].to_numpy(),
            }
        )
        store.write_partition(
            "snapshots",
            day,
            conform(pa.Table.from_pandas(sdf, preserve_index=False), "snapshots"),
            schema=schema_for("snapshots"),
        )
        store.write_partition(
            "trades",
            day,
            conform(pa.Table.from_pandas(tdf, preserve_index=False), "trades"),
            schema=schema_for("trades"),
        )
        uni = pd.DataFrame(
            {
                "symbol": names,
                "date": [day] * S,
                "board": "main",
                "exchange": ["SSE" if n.endswith(".SH") else "SZSE" for n in names],
                "industry": "I01",
                "is_st": False,
                "in_index": True,
                "listing_date": dt.date(2010, 1, 4),
                "suspended": False,
            }
        )
        store.write_partition(
            "universe",
            day,
            conform(pa.Table.from_pandas(uni, preserve_index=False), "universe"),
            schema=schema_for("universe"),
        )
        if truth:
            tru = pd.DataFrame(
                {
                    "symbol": np.repeat(names, T),
                    "ts": pd.to_datetime(np.tile(ts, S), utc=True),
                    "efficient_px": px.ravel(),
                    "spot_var": (vol**2 / interval_s).ravel(),
                    "integrated_var": (vol**2).ravel(),
                    "jump": jumps.ravel(),
                }
            )
            store.write_partition(
                "truth",
                day,
                conform(pa.Table.from_pandas(tru, preserve_index=False), "truth"),
                schema=schema_for("truth"),
            )
        log_px = np.log(px[:, -1])
        close = close_px
    return {"dates": dates, "symbols": names, "events": {k: (names[v[0]], dates[v[1]]) for k, v in ev.items()}}


# =====================================================================================================
# Vectorized pandas reference implementation of every registered factor and of the targets
# =====================================================================================================

MU1 = math.sqrt(2 / math.pi)
MU43 = 2 ** (2 / 3) * math.gamma(7 / 6) / math.gamma(1 / 2)
TSRV_K = 5
VPIN_N = 50
VPIN_PER_DAY = 50
SNAP_COLUMNS = ["symbol", "ts", "phase", "open_px", "pre_close"] + [
    f"{s}_{k}_{i}" for s in ("bid", "ask") for k in ("px", "qty") for i in range(1, N_LEVELS + 1)
]
TRADE_COLUMNS = ["symbol", "ts", "qty", "amount", "side", "seq"]


def reference_grid(dates, bucket_s: int = 300) -> pd.DataFrame:
    """date, bucket, session, start, end (UTC), tau_end (s of continuous trading at the bucket end)."""
    rows = []
    for d in dates:
        tau0 = 0
        b = 0
        for si, s in enumerate(ASHARE.continuous_sessions(d)):
            a = pd.Timestamp(dt.datetime.combine(d, s.start), tz=TZ)
            e = pd.Timestamp(dt.datetime.combine(d, s.end), tz=TZ)
            starts = pd.date_range(a, e, freq=f"{bucket_s}s", inclusive="left")
            for st in starts:
                en = min(st + pd.Timedelta(seconds=bucket_s), e)
                rows.append(
                    (d, b, si, st.tz_convert("UTC"), en.tz_convert("UTC"), tau0 + int((en - a).total_seconds()))
                )
                b += 1
            tau0 += int((e - a).total_seconds())
    g = pd.DataFrame(rows, columns=["date", "bucket", "session", "start", "end", "tau_end"])
    g["bucket"] = g["bucket"].astype(np.int16)
    return g


def _ns(ts: pd.Series) -> np.ndarray:
    return ts.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype(np.int64)


def _assign(ts: pd.Series, grid: pd.DataFrame) -> pd.DataFrame:
    """Feature bucket ([start, end)) of each time: columns date, bucket, session (NaN outside sessions)."""
    g = grid.sort_values("start", kind="stable").reset_index(drop=True)
    t, starts, ends = _ns(ts), _ns(g["start"]), _ns(g["end"])
    i = np.searchsorted(starts, t, side="right") - 1
    ok = (i >= 0) & (t < ends[np.clip(i, 0, None)])
    i = np.where(ok, i, 0)
    return pd.DataFrame(
        {
            "date": np.where(ok, g["date"].to_numpy()[i], None),
            "bucket": np.where(ok, g["bucket"].to_numpy()[i], np.nan),
            "session": np.where(ok, g["session"].to_numpy()[i], np.nan),
        }
    )


def _valid_snapshots(snaps: pd.DataFrame, grid: pd.DataFrame) -> pd.DataFrame:
    s = snaps.reset_index(drop=True)
    a = _assign(s["ts"], grid)
    s = pd.concat([s, a], axis=1)
    bid = s["bid_px_1"].astype(float)
    ask = s["ask_px_1"].astype(float)
    ok = (s["phase"] == "TRADE") & a["bucket"].notna() & (bid > 0) & (ask > bid)
    s = s[ok.to_numpy()].copy()
    s["bucket"] = s["bucket"].astype(np.int16)
    s["session"] = s["session"].astype(int)
    s = s.sort_values(["symbol", "ts"], kind="stable").reset_index(drop=True)
    s["mid"] = (s["bid_px_1"].astype(float) + s["ask_px_1"].astype(float)) / 2
    s["lm"] = np.log(s["mid"])
    g = s.groupby(["symbol", "date", "session"], sort=False)
    s["lm_prev"] = g["lm"].shift(1)
    s["ts_prev"] = g["ts"].shift(1)
    s["r"] = s["lm"] - s["lm_prev"]
    return s


def _levels(s: pd.DataFrame, side: str, kind: str, n: int) -> np.ndarray:
    return np.column_stack([s[f"{side}_{kind}_{i}"].astype(float).to_numpy() for i in range(1, n + 1)])


def _book_qty(s: pd.DataFrame, side: str, n: int) -> np.ndarray:
    px = _levels(s, side, "px", n)
    q = _levels(s, side, "qty", n)
    return np.where(px > 0, np.nan_to_num(q, nan=0.0), 0.0)


def _realized(ret: pd.DataFrame) -> pd.DataFrame:
    keys = ["symbol", "date", "bucket"]
    x = ret.copy()
    g = x.groupby(keys, sort=False)
    a = x["r"].abs()
    x["a"] = a
    x["a1"] = g["a"].shift(1)
    x["a2"] = g["a"].shift(2)
    x["an"] = g["a"].shift(-1)
    x["r2"] = x["r"] ** 2
    x["bvp"] = x["a"] * x["a1"]
    med = np.median(np.column_stack([x["a1"], x["a"], x["an"]]), axis=1)  # NaN where a neighbour is missing
    x["med2"] = med**2
    x["tqp"] = (x["a"] * x["a1"] * x["a2"]) ** (4 / 3)
    x["pos2"] = np.where(x["r"] > 0, x["r2"], 0.0)
    x["neg2"] = np.where(x["r"] < 0, x["r2"], 0.0)
    x["r3"] = x["r"] ** 3
    x["r4"] = x["r"] ** 4
    x["cum"] = g["r"].cumsum()
    x["i"] = g.cumcount()
    lagged = x.groupby(keys, sort=False)["cum"].shift(TSRV_K)
    diff = x["cum"] - lagged.fillna(0.0)
    x["sparse2"] = np.where(x["i"] >= TSRV_K - 1, diff**2, np.nan)
    g = x.groupby(keys, sort=False)
    out = g.agg(
        n=("r", "size"),
        rv=("r2", "sum"),
        mid_return=("r", "sum"),
        rs_pos=("pos2", "sum"),
        rs_neg=("neg2", "sum"),
        bvs=("bvp", "sum"),
        meds=("med2", "sum"),
        tqs=("tqp", "sum"),
        s3=("r3", "sum"),
        s4=("r4", "sum"),
        sparse=("sparse2", "sum"),
        o=("lm_prev", "first"),
        c=("lm", "last"),
        hmax=("lm", "max"),
        lmin=("lm", "min"),
    ).reset_index()
    n = out["n"].astype(float)
    out["n_returns"] = out["n"]
    out["realized_vol"] = np.sqrt(out["rv"])
    out["bipower_variation"] = np.where(n >= 2, (math.pi / 2) * n / (n - 1) * out["bvs"], np.nan)
    out["medrv"] = np.where(n >= 3, math.pi / (6 - 4 * math.sqrt(3) + math.pi) * n / (n - 2) * out["meds"], np.nan)
    out["tripower_quarticity"] = np.where(n >= 3, n * MU43**-3 * n / (n - 2) * out["tqs"], np.nan)
    out["realized_quarticity"] = n / 3 * out["s4"]
    with np.errstate(divide="ignore", invalid="ignore"):
        out["realized_skewness"] = np.where(out["rv"] > 0, np.sqrt(n) * out["s3"] / out["rv"] ** 1.5, np.nan)
        out["realized_kurtosis"] = np.where(out["rv"] > 0, n * out["s4"] / out["rv"] ** 2, np.nan)
        nbar = (n - TSRV_K + 1) / TSRV_K
        out["tsrv"] = np.where(
            n >= 2 * TSRV_K, (out["sparse"] / TSRV_K - nbar / n * out["rv"]) / (1 - nbar / n), np.nan
        )
    h = np.maximum(out["hmax"], out["o"])
    lo = np.minimum(out["lmin"], out["o"])
    out["parkinson"] = (h - lo) ** 2 / (4 * math.log(2))
    out["garman_klass"] = 0.5 * (h - lo) ** 2 - (2 * math.log(2) - 1) * (out["c"] - out["o"]) ** 2
    return out.drop(columns=["n", "bvs", "meds", "tqs", "s3", "s4", "sparse", "o", "c", "hmax", "lmin"])


def _book(s: pd.DataFrame) -> pd.DataFrame:
    keys = ["symbol", "date", "bucket"]
    bid1 = s["bid_px_1"].astype(float).to_numpy()
    ask1 = s["ask_px_1"].astype(float).to_numpy()
    mid = s["mid"].to_numpy()
    bq, aq = _book_qty(s, "bid", 10), _book_qty(s, "ask", 10)
    b1, a1 = bq[:, 0], aq[:, 0]
    b5, a5 = bq[:, :5].sum(1), aq[:, :5].sum(1)
    x = s[keys + ["session"]].copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        x["spread"] = ask1 - bid1
        x["relative_spread"] = (ask1 - bid1) / mid
        x["depth_l1"] = b1 + a1
        x["depth_l5"] = b5 + a5
        x["depth_l10"] = bq.sum(1) + aq.sum(1)
        x["imb1"] = np.where(b1 + a1 > 0, (b1 - a1) / (b1 + a1), np.nan)
        x["imb5"] = np.where(b5 + a5 > 0, (b5 - a5) / (b5 + a5), np.nan)
        wap = np.where(b1 + a1 > 0, (bid1 * a1 + ask1 * b1) / (b1 + a1), np.nan)
        width = (s["ask_px_5"].astype(float).to_numpy() - s["bid_px_5"].astype(float).to_numpy()) / mid * 1e4
        x["slope"] = np.where(width > 0, (b5 + a5) / width, np.nan)
    x["wap"] = wap
    x["lw"] = np.log(wap)
    gs = x.groupby(["symbol", "date", "session"], sort=False)
    x["wap_r"] = x["lw"] - gs["lw"].shift(1)
    x["wap_r2"] = x["wap_r"] ** 2
    # OFI per level, previous valid snapshot of the same session
    bpx = np.nan_to_num(_levels(s, "bid", "px", 10), nan=0.0)
    apx = np.where(np.isnan(_levels(s, "ask", "px", 10)), np.inf, _levels(s, "ask", "px", 10))
    prev = pd.DataFrame(np.column_stack([bpx, apx, bq, aq]), index=s.index)
    prev[["symbol", "date", "session"]] = s[["symbol", "date", "session"]]
    p = prev.groupby(["symbol", "date", "session"], sort=False)[list(range(40))].shift(1).to_numpy()
    pb, pa_, pqb, pqa = p[:, :10], p[:, 10:20], p[:, 20:30], p[:, 30:40]
    has_prev = ~np.isnan(pqb[:, 0])
    with np.errstate(invalid="ignore"):
        e = (
            np.where(bpx >= pb, bq, 0.0)
            - np.where(bpx <= pb, pqb, 0.0)
            - np.where(apx <= pa_, aq, 0.0)
            + np.where(apx >= pa_, pqa, 0.0)
        )
    e[~has_prev] = 0.0
    x["ofi_l1"] = e[:, 0]
    x["ofi_l5"] = e[:, :5].sum(1)
    x["ofi_l10"] = e.sum(1)
    g = x.groupby(keys, sort=False)
    out = g.agg(
        spread=("spread", "mean"),
        relative_spread=("relative_spread", "mean"),
        depth_l1=("depth_l1", "mean"),
        depth_l5=("depth_l5", "mean"),
        depth_l10=("depth_l10", "mean"),
        depth_imbalance_l1=("imb1", "mean"),
        depth_imbalance_l5=("imb5", "mean"),
        wap=("wap", "last"),
        wap_return=("wap_r", "sum"),
        wap_rv=("wap_r2", "sum"),
        book_slope=("slope", "mean"),
        ofi_l1=("ofi_l1", "sum"),
        ofi_l5=("ofi_l5", "sum"),
        ofi_l10=("ofi_l10", "sum"),
    ).reset_index()
    # "last" skips NaN in pandas; the factor is the WAP at the last valid snapshot, NaN included.
    last = x.drop_duplicates(keys, keep="last")[keys + ["wap"]]
    return out.drop(columns=["wap"]).merge(last, on=keys, how="left")


def _trades(tr: pd.DataFrame, grid: pd.DataFrame) -> pd.DataFrame:
    t = tr.reset_index(drop=True)
    a = _assign(t["ts"], grid)
    t = pd.concat([t, a], axis=1)
    t = t[t["bucket"].notna()].copy()
    t["bucket"] = t["bucket"].astype(np.int16)
    t["session"] = t["session"].astype(int)
    t = t.sort_values(["symbol", "ts", "seq"], kind="stable").reset_index(drop=True)
    return t


def _trade_factors(t: pd.DataFrame) -> pd.DataFrame:
    keys = ["symbol", "date", "bucket"]
    x = t.copy()
    q = x["qty"].astype(float)
    x["signed"] = np.select([x["side"] == "B", x["side"] == "S"], [q, -q], 0.0)
    x["gross"] = np.where(x["side"].isin(["B", "S"]), q, 0.0)
    out = x.groupby(keys, sort=False).agg(
        volume=("qty", "sum"),
        turnover=("amount", "sum"),
        trade_count=("qty", "size"),
        sg=("signed", "sum"),
        gr=("gross", "sum"),
    )
    out = out.reset_index()
    out["signed_volume_imbalance"] = np.where(out["gr"] > 0, out["sg"] / out["gr"].where(out["gr"] > 0), np.nan)
    return out.drop(columns=["sg", "gr"])


def _kyle(t: pd.DataFrame, s: pd.DataFrame) -> pd.DataFrame:
    fills = t[["symbol", "date", "session", "ts", "amount", "side"]].copy()
    fills["v"] = np.select([fills["side"] == "B", fills["side"] == "S"], [fills["amount"], -fills["amount"]], 0.0) / 1e6
    sn = s[["symbol", "date", "session", "ts"]].rename(columns={"ts": "ts_end"})
    m = pd.merge_asof(
        fills.sort_values("ts", kind="stable"),
        sn.sort_values("ts_end", kind="stable"),
        left_on="ts",
        right_on="ts_end",
        by=["symbol", "date", "session"],
        direction="forward",
        allow_exact_matches=False,
    )
    m = m[m["ts_end"].notna()]
    flow = m.groupby(["symbol", "ts_end"])["v"].sum().rename("v").reset_index()
    ret = s[s["r"].notna()][["symbol", "date", "bucket", "ts", "r"]]
    x = ret.merge(flow, left_on=["symbol", "ts"], right_on=["symbol", "ts_end"], how="left")
    x["v"] = x["v"].fillna(0.0)
    keys = ["symbol", "date", "bucket"]
    g = x.groupby(keys, sort=False)
    x["dv"] = x["v"] - g["v"].transform("mean")
    x["dr"] = x["r"] - g["r"].transform("mean")
    x["sxx"] = x["dv"] ** 2
    x["sxy"] = x["dv"] * x["dr"]
    o = x.groupby(keys, sort=False).agg(sxx=("sxx", "sum"), sxy=("sxy", "sum"), n=("r", "size")).reset_index()
    with np.errstate(divide="ignore", invalid="ignore"):
        o["kyle_lambda"] = np.where((o["n"] >= 2) & (o["sxx"] > 0), o["sxy"] / o["sxx"], np.nan)
    return o[keys + ["kyle_lambda"]]


def _vpin(t: pd.DataFrame, dates: list, panel: pd.DataFrame) -> pd.Series:
    """VPIN per panel row: V = previous store date's continuous volume / 50, one volume clock per day."""
    vol = t.groupby(["symbol", "date"])["qty"].sum().astype(float)
    prev_date = dict(zip(dates[1:], dates[:-1], strict=False))
    x = t[["symbol", "date", "ts", "qty", "side"]].copy()
    x["pdate"] = x["date"].map(prev_date)
    x["V"] = (
        pd.Series(vol.reindex(pd.MultiIndex.from_arrays([x["symbol"], x["pdate"]])).to_numpy(), index=x.index)
        / VPIN_PER_DAY
    )
    x = x[x["V"] > 0].copy()
    if x.empty:  # no previous date: no volume-bucket size, no VPIN
        return pd.Series(np.nan, index=panel.index)
    q = x["qty"].astype(float)
    gk = x.groupby(["symbol", "date"], sort=False)
    x["cv"] = q.groupby([x["symbol"], x["date"]]).cumsum()
    x["cb"] = np.where(x["side"] == "B", q, 0.0)
    x["cs"] = np.where(x["side"] == "S", q, 0.0)
    x["cb"] = x.groupby(["symbol", "date"], sort=False)["cb"].cumsum()
    x["cs"] = x.groupby(["symbol", "date"], sort=False)["cs"].cumsum()
    x["g"] = gk.ngroup()
    big = 2.0**40
    key = x["g"].to_numpy() * big + x["cv"].to_numpy()
    order = np.argsort(key, kind="stable")
    key_sorted = key[order]
    tot = x.groupby("g").agg(total=("cv", "max"), V=("V", "first"), symbol=("symbol", "first"), date=("date", "first"))
    nk = np.floor(tot["total"] / tot["V"]).astype(int)
    gidx = np.repeat(tot.index.to_numpy(), nk.to_numpy())
    starts = np.repeat(np.cumsum(nk.to_numpy()) - nk.to_numpy(), nk.to_numpy())
    k = np.arange(len(gidx)) - starts + 1
    V = np.repeat(tot["V"].to_numpy(), nk.to_numpy())
    xb = k * V
    j = order[np.searchsorted(key_sorted, gidx * big + xb, side="left")]
    over = x["cv"].to_numpy()[j] - xb
    side = x["side"].to_numpy()[j]
    cbx = x["cb"].to_numpy()[j] - np.where(side == "B", over, 0.0)
    csx = x["cs"].to_numpy()[j] - np.where(side == "S", over, 0.0)
    b = pd.DataFrame({"g": gidx, "k": k, "cbx": cbx, "csx": csx, "V": V, "ts": x["ts"].to_numpy()[j]})
    b["symbol"] = tot["symbol"].to_numpy()[np.searchsorted(tot.index.to_numpy(), gidx)]
    b["date"] = tot["date"].to_numpy()[np.searchsorted(tot.index.to_numpy(), gidx)]
    gb = b.groupby("g", sort=False)
    buy = b["cbx"] - gb["cbx"].shift(1).fillna(0.0)
    sell = b["csx"] - gb["csx"].shift(1).fillna(0.0)
    b["imb"] = (buy - sell).abs() / b["V"]
    b = b.sort_values(["symbol", "date", "k"], kind="stable")
    b["vpin"] = b.groupby("symbol", sort=False)["imb"].rolling(VPIN_N).mean().reset_index(level=0, drop=True)
    b = b.drop_duplicates(["symbol", "ts"], keep="last").sort_values("ts")
    left = panel[["symbol", "ts"]].reset_index().sort_values("ts")
    m = pd.merge_asof(
        left, b[["symbol", "ts", "vpin"]], on="ts", by="symbol", direction="backward", allow_exact_matches=False
    )
    return m.set_index("index")["vpin"].reindex(panel.index)


def reference_factors(
    snapshots: pd.DataFrame, trades: pd.DataFrame, bucket_s: int = 300
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every registered factor and every target for all dates of the data, as pandas frames keyed by
    (symbol, ts); returns (factors, targets)."""
    snapshots = snapshots.copy()
    trades = trades.copy()
    snapshots["ts"] = pd.to_datetime(snapshots["ts"], utc=True)
    trades["ts"] = pd.to_datetime(trades["ts"], utc=True)
    snapshots["tdate"] = snapshots["ts"].dt.tz_convert(TZ).dt.date
    dates = sorted(snapshots["tdate"].unique())
    grid = reference_grid(dates, bucket_s)
    nb = grid.groupby("date")["bucket"].size().to_dict()

    # ---- panel: every symbol present on a date x every bucket of that date
    present = snapshots[["tdate", "symbol"]].drop_duplicates().rename(columns={"tdate": "date"})
    panel = present.merge(grid[["date", "bucket", "end"]], on="date").rename(columns={"end": "ts"})
    panel = panel.sort_values(["date", "symbol", "bucket"], kind="stable").reset_index(drop=True)
    keys = ["symbol", "date", "bucket"]

    s = _valid_snapshots(snapshots, grid)
    ret = s[s["r"].notna()]
    panel = panel.merge(_realized(ret), on=keys, how="left")
    for c in ("n_returns", "rv", "mid_return", "rs_pos", "rs_neg"):
        panel[c] = panel[c].fillna(0)
    panel["realized_vol"] = np.sqrt(panel["rv"])
    panel["jump_variation"] = np.where(
        panel["bipower_variation"].notna(), np.maximum(panel["rv"] - panel["bipower_variation"], 0.0), np.nan
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        theta = (math.pi / 2) ** 2 + math.pi - 5
        scale = np.maximum(1.0, panel["tripower_quarticity"] / panel["bipower_variation"] ** 2)
        z = ((panel["rv"] - panel["bipower_variation"]) / panel["rv"]) / np.sqrt(theta / panel["n_returns"] * scale)
    ok = (panel["n_returns"] >= 3) & (panel["rv"] > 0) & (panel["bipower_variation"] > 0)
    panel["bns_jump_stat"] = np.where(ok, z, np.nan)

    panel = panel.merge(_book(s), on=keys, how="left")
    for c in ("wap_return", "wap_rv", "ofi_l1", "ofi_l5", "ofi_l10"):
        panel[c] = panel[c].fillna(0.0)

    t = _trades(trades, grid)
    panel = panel.merge(_trade_factors(t), on=keys, how="left")
    for c in ("volume", "turnover", "trade_count"):
        panel[c] = panel[c].fillna(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        panel["mean_trade_size"] = np.where(panel["trade_count"] > 0, panel["volume"] / panel["trade_count"], np.nan)
        panel["amihud"] = np.where(panel["turnover"] > 0, panel["mid_return"].abs() / (panel["turnover"] / 1e6), np.nan)
    panel = panel.merge(_kyle(t, s), on=keys, how="left")
    panel["vpin"] = _vpin(t, dates, panel)

    # ---- history: a full symbol x date x bucket cube so that shifts respect absent dates
    syms = sorted(panel["symbol"].unique())
    cube = pd.MultiIndex.from_product([syms, dates], names=["symbol", "date"]).to_frame(index=False)
    cube = cube.merge(grid[["date", "bucket"]], on="date")
    cube = cube.merge(panel[keys + ["rv"]], on=keys, how="left").sort_values(keys, kind="stable").reset_index(drop=True)
    gsym = cube.groupby("symbol", sort=False)["rv"]
    cube["rv_lag_1"] = gsym.shift(1)
    cube["rv_lag_2"] = gsym.shift(2)
    m = max(1, 3600 // bucket_s)
    cube["rv_last_hour"] = gsym.rolling(m, min_periods=m).sum().reset_index(level=0, drop=True)
    daily = cube.groupby(["symbol", "date"], sort=False)["rv"].sum(min_count=1).unstack("date")  # NaN when absent
    daily = daily.reindex(columns=dates)
    for name, w in (("har_rv_d", 1), ("har_rv_w", 5), ("har_rv_m", 22)):
        val = daily.T.rolling(w, min_periods=w).mean().shift(1).T
        cube = cube.merge(val.stack(future_stack=True).rename(name).reset_index(), on=["symbol", "date"], how="left")
    byb = cube.set_index(["symbol", "bucket", "date"])["rv"].unstack("date").reindex(columns=dates)
    seas = (
        byb.T.rolling(22, min_periods=22).mean().shift(1).T.stack(future_stack=True).rename("rv_seasonal").reset_index()
    )
    cube = cube.merge(seas, on=["symbol", "bucket", "date"], how="left")
    nxt = seas.rename(columns={"bucket": "nb", "rv_seasonal": "rv_seasonal_next"})
    cube["nb"] = ((cube["bucket"].astype(int) + 1) % cube["date"].map(nb)).astype(np.int16)
    cube = cube.merge(nxt, on=["symbol", "nb", "date"], how="left")
    hist = [
        "rv_lag_1",
        "rv_lag_2",
        "rv_last_hour",
        "har_rv_d",
        "har_rv_w",
        "har_rv_m",
        "rv_seasonal",
        "rv_seasonal_next",
    ]
    panel = panel.merge(cube[keys + hist], on=keys, how="left")

    op = snapshots[(snapshots["open_px"].astype(float) > 0) & (snapshots["pre_close"].astype(float) > 0)]
    op = op.sort_values("ts", kind="stable").groupby(["symbol", "tdate"]).first().reset_index()
    op = op.rename(columns={"tdate": "date", "ts": "open_ts"})[["symbol", "date", "open_ts", "open_px", "pre_close"]]
    panel = panel.merge(op, on=["symbol", "date"], how="left")
    panel["overnight_return"] = np.where(
        panel["open_ts"] < panel["ts"],
        np.log(panel["open_px"].astype(float) / panel["pre_close"].astype(float)),
        np.nan,
    )
    panel["market_rv"] = (
        panel["rv"].where(panel["n_returns"] > 0).groupby([panel["date"], panel["bucket"]]).transform("mean")
    )

    targets = _targets(ret, grid, panel, dates, bucket_s)
    return panel, targets


def _targets(ret: pd.DataFrame, grid: pd.DataFrame, panel: pd.DataFrame, dates: list, bucket_s: int) -> pd.DataFrame:
    """rv_next_bucket / next_30min / rest_of_day / next_day and exact zero flags (from counts)."""
    x = ret[["symbol", "date", "ts", "ts_prev", "r"]].copy()
    ends = grid[["date", "bucket", "end"]].copy()
    ends["edge"] = ends.groupby("date")["end"].shift(1)
    ends["edge"] = ends["edge"].fillna(grid.groupby("date")["start"].transform("first"))
    m = pd.merge_asof(
        x.sort_values("ts"), ends.sort_values("end"), left_on="ts", right_on="end", by="date", direction="forward"
    )
    m["inside"] = np.where(m["ts_prev"] > m["edge"], m["r"] ** 2, 0.0)
    m["total"] = m["r"] ** 2
    m["nz_in"] = (m["inside"] > 0).astype(int)
    m["nz"] = (m["total"] > 0).astype(int)
    cell = m.groupby(["symbol", "date", "bucket"]).agg(
        inside=("inside", "sum"), total=("total", "sum"), nz_in=("nz_in", "sum"), nz=("nz", "sum")
    )
    p = panel[["symbol", "date", "bucket", "ts"]].merge(cell.reset_index(), on=["symbol", "date", "bucket"], how="left")
    p[["inside", "total", "nz_in", "nz"]] = p[["inside", "total", "nz_in", "nz"]].fillna(0.0)
    p = p.sort_values(["symbol", "date", "bucket"], kind="stable").reset_index(drop=True)
    g = p.groupby(["symbol", "date"], sort=False)
    n = p["date"].map(grid.groupby("date")["bucket"].size())
    b = p["bucket"].astype(int)
    mwin = 1800 // bucket_s
    first, first_nz = g["inside"].shift(-1), g["nz_in"].shift(-1)
    later = sum(g["total"].shift(-j).fillna(0.0) for j in range(2, mwin + 1))
    later_nz = sum(g["nz"].shift(-j).fillna(0.0) for j in range(2, mwin + 1))
    # rest of day: total of cells b+2..end = day total - cumulative total up to b+1
    rest = (p.iloc[::-1].groupby(["symbol", "date"], sort=False)["total"].cumsum()).iloc[::-1]
    rest_nz = (p.iloc[::-1].groupby(["symbol", "date"], sort=False)["nz"].cumsum()).iloc[::-1]
    p["rest"] = rest
    p["rest_nz"] = rest_nz
    g = p.groupby(["symbol", "date"], sort=False)
    rest2, rest2_nz = g["rest"].shift(-2).fillna(0.0), g["rest_nz"].shift(-2).fillna(0.0)
    tau = grid.set_index(["date", "bucket"])["tau_end"]
    tau_b = tau.reindex(pd.MultiIndex.from_arrays([p["date"], p["bucket"]])).to_numpy()
    tgt = tau.reindex(pd.MultiIndex.from_arrays([p["date"], (b + mwin).clip(upper=n - 1).astype(np.int16)])).to_numpy()
    has_next = b < n - 1
    has_30 = (b + mwin <= n - 1) & (tgt - tau_b == 1800)
    out = p[["symbol", "date", "bucket", "ts"]].copy()
    out["rv_next_bucket"] = np.where(has_next, first, np.nan)
    out["nz_next_bucket"] = np.where(has_next, first_nz, np.nan)
    out["rv_next_30min"] = np.where(has_30, first + later, np.nan)
    out["nz_next_30min"] = np.where(has_30, first_nz + later_nz, np.nan)
    out["rv_rest_of_day"] = np.where(has_next, first + rest2, np.nan)
    out["nz_rest_of_day"] = np.where(has_next, first_nz + rest2_nz, np.nan)
    day = (ret["r"] ** 2).groupby([ret["symbol"], ret["date"]]).sum()
    pres = panel[["symbol", "date"]].drop_duplicates()
    day = pres.merge(day.rename("rv_day").reset_index(), on=["symbol", "date"], how="left").fillna({"rv_day": 0.0})
    day["nz_day"] = day["rv_day"] > 0
    nxt = dict(zip(dates[:-1], dates[1:], strict=False))
    out["ndate"] = out["date"].map(nxt)
    out = out.merge(
        day.rename(columns={"date": "ndate", "rv_day": "rv_next_day", "nz_day": "nz_next_day"}),
        on=["symbol", "ndate"],
        how="left",
    )
    return out.drop(columns=["ndate"])
