"""Tick-by-tick trades (and optionally orders) of one day, and the cumulative fields they give the
snapshots.

* Continuous trading: during step k (wall time ``[ts_{k-1}, ts_{k-1} + step)``) the number of fills is
  Poisson with an intensity that rises with the spot volatility (elasticity ``trades_vol_elasticity``)
  and follows the seasonality; it drops while the book is limit-locked. Each fill hits the level-1
  quote standing at snapshot k-1: a buyer-initiated fill (side B) trades at the ask, a seller-initiated
  one (S) at the bid. The aggressor side leans towards the direction of the next mid move (order flow
  moves prices). Fill times are uniform on the millisecond grid strictly inside the step, so a fill is
  reflected in snapshot k and only there.
* Opening call: fills at 09:25:00.000 at the opening price (side N); closing call: fills at
  15:00:00.000 at the closing price. Their volumes are shares of the expected daily volume.
* ``qty``: main board and ChiNext multiples of 100 shares; STAR at least 200 shares, any integer above.
* ``amount = price * qty`` exactly (the float64 product, no rounding).
* ``seq``: 1, 2, ... per symbol and day in time order (trades have their own sequence; the optional
  orders table numbers its events separately). Order numbers: every fill has a resting order submitted
  earlier and an aggressor order submitted at the fill time; order numbers rank submissions per
  symbol-day, so they are the same whether or not the orders table is written.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from l2vol.data import schema
from l2vol.data.calibration import Calibration
from l2vol.data.sim import grid as G
from l2vol.data.sim.latent import TICK, LatentDay, ar1_paths
from l2vol.data.sim.universe import AUCTION, ORDERS, TRADES, Universe, stream

SIDE_N, SIDE_B, SIDE_S = 0, 1, 2
SIDE_ARROW = pa.array(["N", "B", "S"], type=pa.string())
TYPE_ARROW = pa.array(["limit", "market", "cancel"], type=pa.string())
NS = 1_000_000_000


@dataclass
class DayTrades:
    """Trades of one day (sorted by symbol, seq) and the per-snapshot aggregates of the tau grid.

    Per trade: ``row`` (index of the symbol in the day's traded symbols), ``ts_ns``, ``price``, ``qty``,
    ``amount``, ``side`` (0 N, 1 B, 2 S), ``buy_no``, ``sell_no``, ``seq``. Per tau-grid point
    (``[n, K+1]``): cumulative volume/amount/count and last/high/low *including* the opening call (and
    the closing call at K). ``open_t``: opening price in ticks. Opening-call snapshots: indicative price
    ``oc_px_t`` (ticks, -1 before the first indicative), matched quantity and imbalance per OCALL point.
    """

    row: np.ndarray
    ts_ns: np.ndarray
    price: np.ndarray
    qty: np.ndarray
    amount: np.ndarray
    side: np.ndarray
    buy_no: np.ndarray
    sell_no: np.ndarray
    seq: np.ndarray
    cum_vol: np.ndarray
    cum_amt: np.ndarray
    cum_cnt: np.ndarray
    last_px: np.ndarray
    high: np.ndarray
    low: np.ndarray
    open_t: np.ndarray
    close_vol: np.ndarray
    oc_px_t: np.ndarray
    oc_match: np.ndarray
    oc_imb: np.ndarray
    orders: pa.Table | None

    def __len__(self) -> int:
        return len(self.ts_ns)


def _lot_qty(lots: np.ndarray, star: np.ndarray) -> np.ndarray:
    """Shares from a continuous lot count: 100-share multiples (>= 100), STAR any integer >= 200."""
    main = 100 * np.maximum(np.floor(lots + 0.5), 1)
    st = np.maximum(np.floor(100 * lots + 0.5), 200)
    return np.where(star, st, main).astype(np.int64)


def _split_fills(rng, total: np.ndarray, n_fills: np.ndarray, star: np.ndarray):
    """Split each symbol's auction volume into fills (row index, qty)."""
    rows = np.repeat(np.arange(len(total)), n_fills)
    w = np.exp(rng.standard_normal(len(rows)))
    tot_w = np.bincount(rows, weights=w, minlength=len(total))
    lots = total[rows] / 100.0 * w / tot_w[rows]
    return rows, _lot_qty(lots, star[rows])


def _wall_ns(lat: LatentDay, tau_ms: np.ndarray) -> np.ndarray:
    """UTC ns of trading-clock milliseconds (lunch skipped)."""
    g = lat.grids[0]
    open_ns = int(g.tau_ts_ns[0])
    aft_ns = int(g.tau_ts_ns[G.TAU_LUNCH // g.step_s])
    t = tau_ms.astype(np.int64)
    return np.where(t < G.TAU_LUNCH * 1000, open_ns + t * 1_000_000, aft_ns + (t - G.TAU_LUNCH * 1000) * 1_000_000)


def simulate_trades(lat: LatentDay, uni: Universe, cal: Calibration, seed: int, with_orders: bool) -> DayTrades:
    mp, ip = cal.micro, cal.intraday
    n, k_steps = lat.x.shape[0], lat.K
    step = lat.step_s
    step_ms = step * 1000
    sym = lat.sym
    star = uni.board[sym] == "star"
    phase = lat.phase()
    g0 = lat.grids[0]
    tau_ts = g0.tau_ts_ns
    seas = G.seasonality(cal, step)

    # ---- continuous trading
    rng = stream(seed, TRADES, lat.d)
    cont = phase[:, :-1] == G.TRADE
    w = seas.step_mean**mp.trades_seasonal_exponent
    w = w / w[cont[0]].mean() if cont[0].any() else w
    k_c = np.maximum(cont.sum(axis=1), 1)
    volr = np.sqrt(lat.sigma2 / uni.sigma_bar[sym] ** 2)[:, None] * np.exp((lat.z[:, :-1] - ip.z_var / 2) / 2)
    lam = (uni.trades_per_day[sym] / k_c)[:, None] * w[None, :] * volr**mp.trades_vol_elasticity
    locked = lat.locked_up | lat.locked_down
    lam = np.where(locked[:, :-1], lam * mp.trades_locked_factor, lam)
    lam[~cont] = 0.0
    counts = rng.poisson(lam)
    del lam, volr
    grp = np.repeat(np.arange(n * k_steps, dtype=np.int64), counts.ravel())
    m = len(grp)
    off = rng.integers(1, step_ms, size=m)
    key = np.sort(grp * step_ms + off)
    off = key % step_ms
    del key
    row = (grp // k_steps).astype(np.int64)
    kprev = grp % k_steps  # snapshot k-1 (the step is k)
    dm = (lat.mid_ht[row, kprev + 1] - lat.mid_ht[row, kprev]).astype(np.float64)
    p_buy = 0.5 + mp.side_tilt * np.tanh(dm / 2.0)
    buy = rng.random(m) < p_buy
    buy = np.where(lat.locked_up[row, kprev], False, np.where(lat.locked_down[row, kprev], True, buy))
    price_t = np.where(buy, lat.ask_t[row, kprev], lat.bid_t[row, kprev])
    lots = np.exp(mp.trade_size_log_mean + mp.trade_size_log_sd * rng.standard_normal(m))
    qty = _lot_qty(lots, star[row])
    c_ts = tau_ts[kprev] + off * 1_000_000
    c_price = price_t / 100.0
    c_side = np.where(buy, SIDE_B, SIDE_S).astype(np.int8)
    c_tau_ms = g0.tau_s[kprev] * 1000 + off
    del dm, p_buy, lots, off

    # ---- auctions
    arng = stream(seed, AUCTION, lat.d)
    up_t = np.where(np.isnan(lat.upper), 1 << 40, np.round(np.nan_to_num(lat.upper) / TICK)).astype(np.int64)
    lo_t = np.where(np.isnan(lat.lower), 1, np.round(np.nan_to_num(lat.lower) / TICK)).astype(np.int64)
    p0 = np.exp(lat.x[:, 0])
    open_t = np.floor(p0 / TICK + arng.random(n) - arng.random(n) + 0.5).astype(np.int64)
    open_t = np.clip(open_t, lo_t, up_t)
    mean_lots = np.exp(mp.trade_size_log_mean + mp.trade_size_log_sd**2 / 2)
    exp_vol = uni.trades_per_day[sym] * 100 * mean_lots
    open_total = mp.open_auction_share * exp_vol * np.exp(0.5 * arng.standard_normal(n) - 0.125)
    o_rows, o_qty = _split_fills(arng, open_total, 1 + arng.poisson(mp.open_auction_fills, size=n), star)
    open_ns = int(lat.grids[0].ts_ns[lat.grids[0].phase == G.PREOPEN][0])  # 09:25:00
    has_cc = phase[:, -1] == G.CCALL
    close_t = lat.bid_t[:, -1]
    close_total = np.where(has_cc, mp.close_auction_share * exp_vol * np.exp(0.5 * arng.standard_normal(n) - 0.125), 0)
    n_cf = np.where(has_cc, 1 + arng.poisson(mp.close_auction_fills, size=n), 0)
    cl_rows, cl_qty = _split_fills(arng, close_total, n_cf, star)
    close_ns = int(tau_ts[-1])
    # Opening-call indicative path: converges to the opening price; no indicative at 09:15:00.
    n_oc = int((lat.grids[0].phase == G.OCALL).sum())
    frac = np.arange(1, n_oc + 1) / n_oc
    xi = arng.standard_normal((n, n_oc))
    phi = 0.9  # the indicative price's noise is a stationary AR(1) that vanishes at 09:25
    ar = ar1_paths(xi[:, 0], np.sqrt(1 - phi * phi) * xi[:, 1:], phi)
    pre_sd = np.sqrt(cal.daily.overnight_var_share * lat.sigma2)
    ind = open_t[:, None] * np.exp((1 - frac)[None, :] * pre_sd[:, None] * ar)
    oc_px_t = np.clip(np.floor(ind + 0.5).astype(np.int64), lo_t[:, None], up_t[:, None])
    oc_px_t[:, -1] = open_t
    oc_px_t[:, 0] = -1
    o_vol = np.bincount(o_rows, weights=o_qty, minlength=n)
    oc_match = _round_lots(o_vol[:, None] * frac[None, :] ** 1.5 * np.exp(0.2 * arng.standard_normal((n, n_oc))), star)
    oc_match[:, -1] = o_vol.astype(np.int64)
    oc_match[:, 0] = 0
    oc_imb = _round_lots(o_vol[:, None] * 0.3 * arng.standard_normal((n, n_oc)), star, signed=True)
    oc_imb[:, 0] = 0

    # ---- merge: opening fills, continuous, closing fills; sorted by symbol then time
    rows_all = np.concatenate([o_rows, row, cl_rows])
    kind = np.concatenate([np.zeros(len(o_rows), np.int8), np.ones(m, np.int8), np.full(len(cl_rows), 2, np.int8)])
    ts_all = np.concatenate([np.full(len(o_rows), open_ns), c_ts, np.full(len(cl_rows), close_ns)])
    px_all = np.concatenate([open_t[o_rows] / 100.0, c_price, close_t[cl_rows] / 100.0])
    qty_all = np.concatenate([o_qty, qty, cl_qty])
    side_all = np.concatenate([np.zeros(len(o_rows), np.int8), c_side, np.zeros(len(cl_rows), np.int8)])
    tau_ms_all = np.concatenate([np.full(len(o_rows), -1), c_tau_ms, np.full(len(cl_rows), G.T_DAY * 1000)])
    order = np.argsort(rows_all, kind="stable")
    rows_all, kind, ts_all, px_all, qty_all, side_all, tau_ms_all = (
        a[order] for a in (rows_all, kind, ts_all, px_all, qty_all, side_all, tau_ms_all)
    )
    del order
    first = np.searchsorted(rows_all, np.arange(n))
    seq = np.arange(len(rows_all), dtype=np.int64) - first[rows_all] + 1
    amount = px_all * qty_all

    buy_no, sell_no, orders = _order_numbers(
        lat,
        cal,
        seed,
        rows_all,
        kind,
        ts_all,
        tau_ms_all,
        px_all,
        qty_all,
        side_all,
        star,
        with_orders,
        pa.array(uni.symbols[sym].tolist(), type=pa.string()),
    )

    # ---- per-snapshot aggregates on the tau grid
    g_idx = row * k_steps + kprev
    vol_k = np.bincount(g_idx, weights=qty, minlength=n * k_steps).reshape(n, k_steps)
    amt_k = np.bincount(g_idx, weights=qty * c_price, minlength=n * k_steps).reshape(n, k_steps)
    cnt_k = counts
    cum_vol = np.zeros((n, k_steps + 1))
    cum_vol[:, 0] = o_vol
    np.cumsum(vol_k, axis=1, out=cum_vol[:, 1:])
    cum_vol[:, 1:] += o_vol[:, None]
    o_amt = np.bincount(o_rows, weights=o_qty * (open_t[o_rows] / 100.0), minlength=n)
    cum_amt = np.zeros((n, k_steps + 1))
    cum_amt[:, 0] = o_amt
    np.cumsum(amt_k, axis=1, out=cum_amt[:, 1:])
    cum_amt[:, 1:] += o_amt[:, None]
    o_cnt = np.bincount(o_rows, minlength=n)
    cum_cnt = np.zeros((n, k_steps + 1), dtype=np.int64)
    cum_cnt[:, 0] = o_cnt
    np.cumsum(cnt_k, axis=1, out=cum_cnt[:, 1:])
    cum_cnt[:, 1:] += o_cnt[:, None]
    # last/high/low: per step from the step's fills, forward-filled from the opening price.
    last_k = np.full(n * k_steps, np.nan)
    hi_k = np.full(n * k_steps, -np.inf)
    lo_k = np.full(n * k_steps, np.inf)
    if m:
        ends = np.flatnonzero(np.diff(np.append(g_idx, -1)) != 0)
        starts = np.concatenate([[0], ends[:-1] + 1])
        last_k[g_idx[ends]] = c_price[ends]
        hi_k[g_idx[ends]] = np.maximum.reduceat(c_price, starts)
        lo_k[g_idx[ends]] = np.minimum.reduceat(c_price, starts)
    open_px = open_t / 100.0
    last = np.concatenate([open_px[:, None], last_k.reshape(n, k_steps)], axis=1)
    idx = np.where(np.isnan(last), 0, np.arange(k_steps + 1)[None, :])
    np.maximum.accumulate(idx, axis=1, out=idx)
    last = np.take_along_axis(last, idx, axis=1)
    high = np.maximum.accumulate(np.concatenate([open_px[:, None], hi_k.reshape(n, k_steps)], axis=1), axis=1)
    low = np.minimum.accumulate(np.concatenate([open_px[:, None], lo_k.reshape(n, k_steps)], axis=1), axis=1)
    # Closing call at K.
    c_vol = np.bincount(cl_rows, weights=cl_qty, minlength=n)
    c_amt = np.bincount(cl_rows, weights=cl_qty * (close_t[cl_rows] / 100.0), minlength=n)
    c_cnt = np.bincount(cl_rows, minlength=n)
    cum_vol[:, -1] += c_vol
    cum_amt[:, -1] += c_amt
    cum_cnt[:, -1] += c_cnt
    closed = c_cnt > 0
    last[closed, -1] = close_t[closed] / 100.0
    high[closed, -1] = np.maximum(high[closed, -1], close_t[closed] / 100.0)
    low[closed, -1] = np.minimum(low[closed, -1], close_t[closed] / 100.0)

    return DayTrades(
        row=rows_all,
        ts_ns=ts_all,
        price=px_all,
        qty=qty_all,
        amount=amount,
        side=side_all,
        buy_no=buy_no,
        sell_no=sell_no,
        seq=seq,
        cum_vol=cum_vol.astype(np.int64),
        cum_amt=cum_amt,
        cum_cnt=cum_cnt,
        last_px=last,
        high=high,
        low=low,
        open_t=open_t,
        close_vol=c_vol.astype(np.int64),
        oc_px_t=oc_px_t,
        oc_match=oc_match,
        oc_imb=oc_imb,
        orders=orders,
    )


def _round_lots(shares: np.ndarray, star: np.ndarray, signed: bool = False) -> np.ndarray:
    s = np.sign(shares) if signed else 1.0
    a = np.abs(shares) if signed else np.maximum(shares, 0)
    main = 100 * np.floor(a / 100 + 0.5)
    st = np.floor(a + 0.5)
    return (s * np.where(star[:, None], st, main)).astype(np.int64)


def _order_numbers(lat, cal, seed, rows, kind, ts, tau_ms, price, qty, side, star, with_orders, names):
    """Order numbers of the buy and sell order of each fill, and (optionally) the orders table.

    Submissions: continuous fills have a resting order submitted ``lag`` earlier on the trading clock
    (exponential, before 09:30 it was placed in the opening call) and an aggressor order at the fill
    time; call-auction fills have a buy and a sell order submitted at random times in the call.
    """
    mp = cal.micro
    rng = stream(seed, ORDERS, lat.d)
    g = lat.grids[0]
    n_tr = len(rows)
    cont = kind == 1
    lag_ms = np.floor(rng.exponential(mp.resting_lag_mean_s * 1000, size=n_tr)).astype(np.int64) + 1
    oc_start = int(g.ts_ns[0])
    oc_len_ms = int((g.phase == G.OCALL).sum()) * g.step_s * 1000
    cc = g.ts_ns[g.phase == G.CCALL]
    cc_start = int(cc[0]) if len(cc) else int(g.tau_ts_ns[-1])
    cc_len_ms = max(1, len(cc) - 1) * g.step_s * 1000
    u_call1 = rng.integers(0, oc_len_ms, size=n_tr)
    u_call2 = rng.integers(0, oc_len_ms, size=n_tr)
    c_call1 = rng.integers(0, cc_len_ms, size=n_tr)
    c_call2 = rng.integers(0, cc_len_ms, size=n_tr)
    rest_tau = tau_ms - lag_ms
    rest_ns = np.where(rest_tau >= 0, _wall_ns(lat, np.maximum(rest_tau, 0)), oc_start + u_call1 * 1_000_000)
    # Event 0: resting order (continuous) / buy order (auction); event 1: aggressor / sell order.
    auc_ns1 = np.where(kind == 0, oc_start + u_call1 * 1_000_000, cc_start + c_call1 * 1_000_000)
    auc_ns2 = np.where(kind == 0, oc_start + u_call2 * 1_000_000, cc_start + c_call2 * 1_000_000)
    ev0 = np.where(cont, rest_ns, auc_ns1)
    ev1 = np.where(cont, ts, auc_ns2)
    ev_rows = np.concatenate([rows, rows])
    ev_ns = np.concatenate([ev0, ev1])
    ev_kind = np.concatenate([np.zeros(n_tr, np.int64), np.ones(n_tr, np.int64)])
    day0 = int(g.ts_ns[0]) - 3600 * 1_000_000_000
    key = (ev_rows.astype(np.int64) << 36) | (((ev_ns - day0) // 1_000_000) << 1) | ev_kind
    order = np.argsort(key, kind="stable")
    rank = np.empty(2 * n_tr, dtype=np.int64)
    first = np.searchsorted(ev_rows[order], np.arange(lat.x.shape[0]))
    rank[order] = np.arange(2 * n_tr) - first[ev_rows[order]] + 1
    no0, no1 = rank[:n_tr], rank[n_tr:]
    buy_no = np.where(cont & (side == SIDE_S), no0, np.where(cont, no1, no0))
    sell_no = np.where(cont & (side == SIDE_S), no1, np.where(cont, no0, no1))
    if not with_orders:
        return buy_no, sell_no, None

    # Orders table: submissions of both orders of every fill, and cancels of resting remainders.
    lot = np.where(star[rows], 1, 100)
    remainder = np.where(
        cont & (rng.random(n_tr) < mp.cancel_share), lot * (1 + rng.geometric(0.3, size=n_tr)), 0
    ).astype(np.int64)
    is_mkt = cont & (rng.random(n_tr) < 0.15)
    resting_side = np.where(side == SIDE_B, SIDE_S, SIDE_B)
    ev_side = np.concatenate([np.where(cont, resting_side, SIDE_B), np.where(cont, side, SIDE_S)])
    ev_type = np.concatenate([np.zeros(n_tr, np.int8), np.where(is_mkt, 1, 0).astype(np.int8)])
    ev_px = np.concatenate([price, np.where(is_mkt, np.nan, price)])
    ev_qty = np.concatenate([qty + remainder, qty])
    ev_no = np.concatenate([no0, no1])
    cancel = remainder > 0
    cancel_tau = tau_ms + np.floor(rng.exponential(30_000, size=n_tr)).astype(np.int64) + 1
    cancel &= cancel_tau < G.TAU_CLOSE_CALL * 1000
    c_ns = _wall_ns(lat, cancel_tau[cancel])
    all_rows = np.concatenate([ev_rows, rows[cancel]])
    all_ns = np.concatenate([ev_ns, c_ns])
    all_side = np.concatenate([ev_side, resting_side[cancel]])
    all_type = np.concatenate([ev_type, np.full(int(cancel.sum()), 2, np.int8)])
    all_px = np.concatenate([ev_px, price[cancel]])
    all_qty = np.concatenate([ev_qty, remainder[cancel]])
    all_no = np.concatenate([ev_no, no0[cancel]])
    okey = (all_rows.astype(np.int64) << 36) | (((all_ns - day0) // 1_000_000) << 1)
    o = np.lexsort((all_type, okey))
    all_rows, all_ns, all_side, all_type, all_px, all_qty, all_no = (
        a[o] for a in (all_rows, all_ns, all_side, all_type, all_px, all_qty, all_no)
    )
    first = np.searchsorted(all_rows, np.arange(lat.x.shape[0]))
    oseq = np.arange(len(all_rows), dtype=np.int64) - first[all_rows] + 1
    table = pa.Table.from_pydict(
        {
            "symbol": names.take(pa.array(all_rows)),
            "ts": pa.array(all_ns, type=schema.TS_TYPE),
            "order_no": pa.array(all_no, type=pa.int64()),
            "side": SIDE_ARROW.take(pa.array(all_side)),
            "price": pa.array(all_px, type=pa.float64(), mask=np.isnan(all_px)),
            "qty": pa.array(all_qty, type=pa.int64()),
            "type": TYPE_ARROW.take(pa.array(all_type)),
            "seq": pa.array(oseq, type=pa.int64()),
        },
        schema=schema.ORDERS,
    )
    return buy_no, sell_no, table
