"""Canonical tables of one simulated day: snapshots (10-level books), trades, truth and universe.

Snapshots are written in arrival order **sorted by (ts, symbol)**: at every snapshot time, one row per
listed symbol (suspended ones in phase HALT). They are produced in chunks of snapshot times so that a
day's book is never materialized whole as numpy arrays (Arrow holds what the store buffers).

Book model (continuous trading): level 1 comes from :mod:`l2vol.data.sim.latent`. Levels 2-10 step
away from it by one tick, or by 2-3 ticks with a probability that grows with the spread (thin books
have gaps). No level lies beyond a price limit. Level quantities: ``depth_lots x profile_j x
(spot vol / typical vol)^elasticity x exp(slow + fresh)`` (depth thins when volatility rises; ``slow``
is a persistent AR(1) factor per side, ``fresh`` is new each snapshot and level), in board lots (STAR:
any integer >= 200 shares); order counts are 1 + floor(qty / mean order size x U(0.5, 1.5)). A limit-locked
book has a large queue at the limit and nothing on the other side. Call auctions (OCALL, CCALL) show
the indicative price as bid = ask at level 1 with the matched quantity (plus the imbalance on one side)
and no deeper levels; PREOPEN (09:25-09:30) repeats the book of 09:30:00.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from l2vol.data import schema
from l2vol.data.calibration import Calibration
from l2vol.data.sim import grid as G
from l2vol.data.sim.latent import NO_LIMIT_TICKS, TICK, LatentDay, MarketState, ar1_paths
from l2vol.data.sim.trades import SIDE_ARROW, DayTrades
from l2vol.data.sim.universe import BOOK, Universe, stream

PHASE_ARROW = pa.array(list(G.PHASE_NAMES), type=pa.string())
N_LEV = schema.N_LEVELS
#: Target number of snapshot rows per generated chunk (bounds the numpy working set).
CHUNK_ROWS = 120_000


def _depth(rng, bid1, ask1, spread, vol_ratio, slow, lock_up, lock_dn, up_t, lo_t, depth_lots, star, cal: Calibration):
    """Ten levels per side for cells of shape ``s`` (``bid1``/``ask1`` in ticks, -1 = empty side).

    ``slow`` [2, *s]: the persistent log-depth factor of each side. Returns px [2, 10, *s] (ticks, -1
    empty), qty [2, 10, *s] (shares), cnt [2, 10, *s] (orders), total [2, *s] (shares)."""
    mp = cal.micro
    shape = bid1.shape
    g = np.minimum(0.6, mp.gap_prob_per_tick_spread * np.maximum(spread, 1)).astype(np.float32)
    u = rng.random((2, N_LEV - 1, *shape), dtype=np.float32)
    gaps = 1 + (u < g).astype(np.int64) + (u < g * g / 2)
    del u
    px = np.empty((2, N_LEV, *shape), dtype=np.int64)
    px[0, 0], px[1, 0] = bid1, ask1
    px[0, 1:] = bid1 - np.cumsum(gaps[0], axis=0)
    px[1, 1:] = ask1 + np.cumsum(gaps[1], axis=0)
    del gaps
    valid = np.empty(px.shape, dtype=bool)
    valid[0] = (bid1 >= 0) & (px[0] >= np.maximum(lo_t, 1))
    valid[1] = (ask1 >= 0) & (px[1] <= up_t)
    sd = mp.depth_snapshot_log_sd
    lots = rng.standard_normal(px.shape, dtype=np.float32)
    lots *= sd
    lots += (slow - sd * sd / 2).astype(np.float32)[:, None]
    np.exp(lots, out=lots)
    lots *= (depth_lots * vol_ratio**mp.depth_vol_elasticity).astype(np.float32)
    lots *= np.asarray(mp.depth_profile, dtype=np.float32)[None, :, None, None]
    lots[0, 0] = np.where(lock_up, lots[0, 0] * mp.limit_wall_mult, lots[0, 0])
    lots[1, 0] = np.where(lock_dn, lots[1, 0] * mp.limit_wall_mult, lots[1, 0])
    # shares: board lots of 100 (at least one), STAR any integer >= 200
    hundredths = np.floor(lots * 100 + 0.5).astype(np.int64)
    qty = np.where(star, np.maximum(hundredths, 200), 100 * np.maximum((hundredths + 50) // 100, 1))
    qty[~valid] = 0
    # orders per level: 1 + qty / (mean order size), jittered
    jitter = rng.random(px.shape, dtype=np.float32) + np.float32(0.5)
    cnt = 1 + np.floor(lots * jitter / mp.order_size_lots).astype(np.int64)
    cnt = np.minimum(cnt, np.maximum(qty // np.where(star, 200, 100), 1))
    cnt[~valid] = 0
    ten = qty.sum(axis=1)
    deep = ten * (mp.depth_beyond_10 - 1) * np.exp(0.3 * rng.standard_normal((2, *shape), dtype=np.float32) - 0.045)
    total = ten + (100 * np.floor(deep / 100)).astype(np.int64)
    px[~valid] = -1
    return px, qty, cnt, total


def _arrow_px(ticks: np.ndarray) -> pa.Array:
    t = ticks.ravel()
    return pa.array(t / 100.0, type=pa.float64(), mask=t < 0)


def snapshot_batches(
    lat: LatentDay, trd: DayTrades, uni: Universe, st: MarketState, cal: Calibration, seed: int
) -> Iterator[pa.Table]:
    """Yield the day's snapshots as tables of whole snapshot times, sorted by (ts, symbol)."""
    g = lat.grids[0]
    listed = np.flatnonzero(st.listed)
    n_l = len(listed)
    if n_l == 0:
        return
    col_of = np.full(uni.n, -1)
    col_of[listed] = np.arange(n_l)
    tcol = col_of[lat.sym]  # column of each traded symbol
    n = len(lat.sym)
    star = (uni.board[lat.sym] == "star")[None, :]
    names = pa.array(uni.symbols[listed].tolist(), type=pa.string())
    k0, n_oc = g.k0, int((g.phase == G.OCALL).sum())
    phases = np.stack([lat.grids[0].phase, lat.grids[1].phase])[lat.exch_idx]  # [n, n_grid]
    up_t = np.where(np.isnan(lat.upper), NO_LIMIT_TICKS, np.round(np.nan_to_num(lat.upper) / TICK)).astype(np.int64)
    lo_t = np.where(np.isnan(lat.lower), 1, np.round(np.nan_to_num(lat.lower) / TICK)).astype(np.int64)
    pi_j = cal.intraday.jump_idio_share + cal.intraday.jump_mkt_share
    typ = (uni.sigma_bar[lat.sym] ** 2 * (1 - pi_j) / G.T_DAY)[None, :]
    depth_lots = uni.depth_lots[lat.sym][None, :]
    # Suspended symbols: pre_close is their last close.
    pre_close_l = np.full(n_l, np.nan)
    pre_close_l[:] = st.last_close[listed]
    pre_close_l[tcol] = lat.pre_close
    upper_l = np.full(n_l, np.nan)
    lower_l = np.full(n_l, np.nan)
    upper_l[tcol], lower_l[tcol] = lat.upper, lat.lower

    # Persistent log-depth factor per side and symbol (queues do not renew every snapshot).
    mp = cal.micro
    srng = stream(seed, BOOK, lat.d, 1 << 20)
    phi = 0.5 ** (lat.step_s / mp.depth_slow_half_life_s)
    sn = srng.standard_normal((2 * n, lat.K + 1))
    slow = (mp.depth_slow_log_sd * ar1_paths(sn[:, 0], np.sqrt(1 - phi * phi) * sn[:, 1:], phi)).reshape(2, n, -1)
    del sn
    # The 09:30:00 book is also the frozen pre-open book: draw it once.
    rng0 = stream(seed, BOOK, lat.d, 0)
    book0 = _depth(
        rng0,
        lat.bid_t[None, :, 0],
        lat.ask_t[None, :, 0],
        lat.spread_t[None, :, 0],
        np.sqrt(lat.spot_var[None, :, 0] / typ),
        slow[:, None, :, 0],
        lat.locked_up[None, :, 0],
        lat.locked_down[None, :, 0],
        up_t[None, :],
        lo_t[None, :],
        depth_lots,
        star,
        cal,
    )

    cc_match_all = _close_match(trd, phases, k0)
    rows_per_time = n_l
    step_t = max(1, CHUNK_ROWS // rows_per_time)
    for c, a in enumerate(range(0, g.n, step_t)):
        b = min(g.n, a + step_t)
        nt = b - a
        gi = np.arange(a, b)
        ts = np.repeat(g.ts_ns[a:b], n_l)
        phase_c = np.full((nt, n_l), G.HALT, dtype=np.int8)
        phase_c[:, tcol] = phases[:, a:b].T
        bpx = np.full((2, N_LEV, nt, n), -1, dtype=np.int64)
        bqty = np.zeros((2, N_LEV, nt, n), dtype=np.int64)
        bcnt = np.zeros((2, N_LEV, nt, n), dtype=np.int64)
        btot = np.zeros((2, nt, n), dtype=np.int64)
        last = np.full((nt, n), np.nan)
        open_px = np.full((nt, n), np.nan)
        high = np.full((nt, n), np.nan)
        low = np.full((nt, n), np.nan)
        cvol = np.zeros((nt, n), dtype=np.int64)
        camt = np.zeros((nt, n))
        ccnt = np.zeros((nt, n), dtype=np.int64)
        op = (trd.open_t / 100.0)[None, :]

        oc = gi < n_oc
        if oc.any():  # opening call: indicative bid = ask, matched quantity, imbalance on one side
            j = gi[oc]
            px = trd.oc_px_t[:, j].T
            mt = trd.oc_match[:, j].T
            imb = trd.oc_imb[:, j].T
            has = px >= 0
            bpx[0, 0, oc] = px
            bpx[1, 0, oc] = px
            bqty[0, 0, oc] = np.where(has, mt + np.maximum(imb, 0), 0)
            bqty[1, 0, oc] = np.where(has, mt + np.maximum(-imb, 0), 0)
            lotq = np.where(star, 200, 100)
            bcnt[0, 0, oc] = np.where(has, np.maximum(bqty[0, 0, oc] // (lotq * 4), 1), 0)
            bcnt[1, 0, oc] = np.where(has, np.maximum(bqty[1, 0, oc] // (lotq * 4), 1), 0)
            btot[:, oc] = bqty[:, 0, oc]
        pre = (gi >= n_oc) & (gi < k0)
        if pre.any():  # pre-open: the 09:30:00 book, after the opening call
            bpx[:, :, pre] = book0[0]
            bqty[:, :, pre] = book0[1]
            bcnt[:, :, pre] = book0[2]
            btot[:, pre] = book0[3]
            last[pre] = op
            open_px[pre] = op
            high[pre] = op
            low[pre] = op
            cvol[pre] = trd.cum_vol[:, 0]
            camt[pre] = trd.cum_amt[:, 0]
            ccnt[pre] = trd.cum_cnt[:, 0]
        tg = gi >= k0
        if tg.any():
            k = gi[tg] - k0
            bid1, ask1 = lat.bid_t[:, k].T, lat.ask_t[:, k].T
            if k[0] == 0:
                rest = k > 0
                rng = stream(seed, BOOK, lat.d, c + 1)
                d = _depth(
                    rng,
                    bid1[rest],
                    ask1[rest],
                    lat.spread_t[:, k[rest]].T,
                    np.sqrt(lat.spot_var[:, k[rest]].T / typ),
                    slow[:, :, k[rest]].transpose(0, 2, 1),
                    lat.locked_up[:, k[rest]].T,
                    lat.locked_down[:, k[rest]].T,
                    up_t[None, :],
                    lo_t[None, :],
                    depth_lots,
                    star,
                    cal,
                )
                parts = [np.concatenate([b0, x], axis=-2) for b0, x in zip(book0, d, strict=True)]
            else:
                rng = stream(seed, BOOK, lat.d, c + 1)
                parts = _depth(
                    rng,
                    bid1,
                    ask1,
                    lat.spread_t[:, k].T,
                    np.sqrt(lat.spot_var[:, k].T / typ),
                    slow[:, :, k].transpose(0, 2, 1),
                    lat.locked_up[:, k].T,
                    lat.locked_down[:, k].T,
                    up_t[None, :],
                    lo_t[None, :],
                    depth_lots,
                    star,
                    cal,
                )
            bpx[:, :, tg], bqty[:, :, tg], bcnt[:, :, tg], btot[:, tg] = parts
            call = np.zeros((nt, n), dtype=bool)
            call[tg] = phases[:, gi[tg]].T == G.CCALL
            if call.any():  # closing call: indicative price at level 1 only
                cc_match = np.zeros((nt, n), dtype=np.int64)
                cc_match[tg] = cc_match_all[:, k].T
                for side in (0, 1):
                    bpx[side, 1:, call] = -1
                    bqty[side, 1:, call] = 0
                    bcnt[side, 1:, call] = 0
                    bqty[side, 0, call] = cc_match[call]
                    bcnt[side, 0, call] = np.maximum(cc_match[call] // 400, 1)
                    btot[side, call] = cc_match[call]
            last[tg] = trd.last_px[:, k].T
            open_px[tg] = op
            high[tg] = trd.high[:, k].T
            low[tg] = trd.low[:, k].T
            cvol[tg] = trd.cum_vol[:, k].T
            camt[tg] = trd.cum_amt[:, k].T
            ccnt[tg] = trd.cum_cnt[:, k].T

        def full(x, fill):
            out = np.full((*x.shape[:-1], n_l), fill, dtype=x.dtype)
            out[..., tcol] = x
            return out

        cols: dict[str, pa.Array] = {
            "symbol": names.take(pa.array(np.tile(np.arange(n_l), nt))),
            "ts": pa.array(ts, type=schema.TS_TYPE),
            "phase": PHASE_ARROW.take(pa.array(phase_c.ravel())),
        }
        for name, x in (("last_px", last), ("open_px", open_px), ("high_px", high), ("low_px", low)):
            v = full(x, np.nan).ravel()
            cols[name] = pa.array(v, type=pa.float64(), mask=np.isnan(v))
        for name, v in (("pre_close", pre_close_l), ("upper_limit_px", upper_l), ("lower_limit_px", lower_l)):
            vv = np.tile(v, nt)
            cols[name] = pa.array(vv, type=pa.float64(), mask=np.isnan(vv))
        cols["cum_volume"] = pa.array(full(cvol, 0).ravel(), type=pa.int64())
        cols["cum_amount"] = pa.array(full(camt, 0.0).ravel(), type=pa.float64())
        cols["num_trades"] = pa.array(full(ccnt, 0).ravel(), type=pa.int64())
        for side, sname in ((0, "bid"), (1, "ask")):
            for lev in range(N_LEV):
                cols[f"{sname}_px_{lev + 1}"] = _arrow_px(full(bpx[side, lev], -1))
            for lev in range(N_LEV):
                cols[f"{sname}_qty_{lev + 1}"] = pa.array(full(bqty[side, lev], 0).ravel(), type=pa.int64())
            for lev in range(N_LEV):
                cols[f"{sname}_n_{lev + 1}"] = pa.array(full(bcnt[side, lev], 0).ravel(), type=pa.int64())
        cols["total_bid_qty"] = pa.array(full(btot[0], 0).ravel(), type=pa.int64())
        cols["total_ask_qty"] = pa.array(full(btot[1], 0).ravel(), type=pa.int64())
        yield pa.Table.from_pydict(cols, schema=schema.SNAPSHOTS)


def _close_match(trd: DayTrades, phases: np.ndarray, k0: int) -> np.ndarray:
    """Matched quantity of the closing call at each tau-grid point (0 outside it), growing to the
    closing-call volume at 15:00:00."""
    call = phases[:, k0:] == G.CCALL
    pos = np.cumsum(call, axis=1)
    tot = np.maximum(call.sum(axis=1, keepdims=True), 1)
    frac = np.where(call, pos / tot, 0.0)
    out = np.floor(trd.close_vol[:, None] * frac**1.5 / 100) * 100
    out[:, -1] = np.where(call[:, -1], trd.close_vol, out[:, -1])
    return out.astype(np.int64)


def trades_table(lat: LatentDay, trd: DayTrades, uni: Universe) -> pa.Table:
    """The day's trades sorted by (symbol, seq)."""
    names = pa.array(uni.symbols[lat.sym].tolist(), type=pa.string())
    return pa.Table.from_pydict(
        {
            "symbol": names.take(pa.array(trd.row)),
            "ts": pa.array(trd.ts_ns, type=schema.TS_TYPE),
            "price": pa.array(trd.price, type=pa.float64()),
            "qty": pa.array(trd.qty, type=pa.int64()),
            "amount": pa.array(trd.amount, type=pa.float64()),
            "side": SIDE_ARROW.take(pa.array(trd.side)),
            "buy_order_no": pa.array(trd.buy_no, type=pa.int64()),
            "sell_order_no": pa.array(trd.sell_no, type=pa.int64()),
            "seq": pa.array(trd.seq, type=pa.int64()),
        },
        schema=schema.TRADES,
    )


def truth_table(lat: LatentDay, uni: Universe) -> pa.Table:
    """Latent state on the tau grid (09:30:00-15:00:00), sorted by (ts, symbol).

    ``spot_var`` at tau_k is the rate (per second) of the second starting at tau_k; ``integrated_var``
    and ``jump`` cover step k, ``(tau_{k-1}, tau_k]`` (0 at 09:30:00: nothing moves in the pre-open)."""
    n, kp1 = lat.x.shape
    names = pa.array(uni.symbols[lat.sym].tolist(), type=pa.string())
    iv = np.concatenate([np.zeros((n, 1)), lat.iv], axis=1)
    jump = np.concatenate([np.zeros((n, 1)), lat.jump], axis=1)
    return pa.Table.from_pydict(
        {
            "symbol": names.take(pa.array(np.tile(np.arange(n), kp1))),
            "ts": pa.array(np.repeat(lat.grids[0].tau_ts_ns, n), type=schema.TS_TYPE),
            "efficient_px": pa.array(np.exp(lat.x).T.ravel(), type=pa.float64()),
            "spot_var": pa.array(lat.spot_var.T.ravel(), type=pa.float64()),
            "integrated_var": pa.array(iv.T.ravel(), type=pa.float64()),
            "jump": pa.array(jump.T.ravel(), type=pa.float64()),
        },
        schema=schema.TRUTH,
    )


def universe_table(lat: LatentDay, uni: Universe, st: MarketState, cal: Calibration) -> pa.Table:
    """Point-in-time universe of the date: every listed symbol (suspended ones included)."""
    listed = np.flatnonzero(st.listed)
    suspended = np.ones(uni.n, dtype=bool)
    suspended[lat.sym] = False
    ind = np.array(cal.universe.industries, dtype=object)
    return pa.Table.from_pydict(
        {
            "symbol": pa.array(uni.symbols[listed].tolist(), type=pa.string()),
            "date": pa.array([lat.day] * len(listed), type=pa.date32()),
            "board": pa.array(uni.board[listed].tolist(), type=pa.string()),
            "exchange": pa.array(uni.exchange[listed].tolist(), type=pa.string()),
            "industry": pa.array(ind[st.industry[listed]].tolist(), type=pa.string()),
            "is_st": pa.array(st.is_st[listed], type=pa.bool_()),
            "in_index": pa.array(st.in_index[listed], type=pa.bool_()),
            "listing_date": pa.array(uni.listing_date[listed], type=pa.date32()),
            "suspended": pa.array(suspended[listed], type=pa.bool_()),
        },
        schema=schema.UNIVERSE,
    )
