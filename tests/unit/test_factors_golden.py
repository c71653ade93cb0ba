"""Golden values: every registered factor and every target on tiny hand-built markets.

Expected numbers are computed here from the fixture's own quote and trade lists with plain numpy and
loops, following each factor's documented definition, independently of the engine's polars code.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from l2vol.data.profiles import ASHARE
from l2vol.data.schema import N_LEVELS, conform, schema_for
from l2vol.factors import REGISTRY, build_factors
from l2vol.storage import DatasetStore

TZ = "Asia/Shanghai"
DAY = dt.date(2024, 1, 2)
A, B = "600000.SH", "000001.SZ"
CHECKED: set[str] = set()  # factors with a golden assertion (see test_every_factor_has_a_golden_value)


def _ts(day: dt.date, hms: str) -> pd.Timestamp:
    return pd.Timestamp(f"{day} {hms}", tz=TZ).tz_convert("UTC")


def _snapshot(sym, day, hms, phase, bids, asks, open_px=None, pre_close=None) -> dict:
    row = {"symbol": sym, "ts": _ts(day, hms), "phase": phase, "open_px": open_px, "pre_close": pre_close}
    for side, levels in (("bid", bids), ("ask", asks)):
        for i in range(1, N_LEVELS + 1):
            px, qty = levels[i - 1] if i <= len(levels) else (None, None)
            row[f"{side}_px_{i}"] = px
            row[f"{side}_qty_{i}"] = qty
    return row


def _write(store: DatasetStore, day: dt.date, snaps: list[dict], trades: list[dict]) -> None:
    s = pd.DataFrame(snaps)
    store.write_partition(
        "snapshots",
        day,
        conform(pa.Table.from_pandas(s, preserve_index=False), "snapshots"),
        schema=schema_for("snapshots"),
    )
    t = pd.DataFrame(trades, columns=["symbol", "ts", "price", "qty", "amount", "side", "seq"])
    if len(t):
        t["amount"] = t["price"] * t["qty"]
        t["seq"] = np.arange(1, len(t) + 1)
    store.write_partition(
        "trades", day, conform(pa.Table.from_pandas(t, preserve_index=False), "trades"), schema=schema_for("trades")
    )


# ------------------------------------------------------------------ day fixture
# Symbol A: 31 continuous snapshots every 20 s from 09:30:00 (j = 0..30); j = 22 is one-sided (ignored);
# j = 30 is exactly at 09:40:00 (bucket 2). Bucket 0 = j 0..14, bucket 1 = j 15..29.
WALK = [0, 1, 1, 2, 1, 0, 0, 1, 2, 3, 3, 2, 2, 1, 0, 0, 1, 2, 2, 3, 4, 3, 3, 2, 1, 1, 0, -1, 0, 0, 1]
SPREAD = [1, 1, 2, 1, 2, 2, 1, 1, 1, 2, 1, 2, 1, 1, 2, 1, 2, 1, 1, 1, 2, 1, 1, 2, 1, 2, 1, 1, 2, 1, 1]
ONE_SIDED = 22
THIN = 5  # levels 9-10 empty


def _a_book(j: int) -> tuple[list, list]:
    bid1 = round(10.00 + 0.01 * WALK[j], 2)
    ask1 = round(bid1 + 0.01 * SPREAD[j], 2)
    levels = N_LEVELS - 2 if j == THIN else N_LEVELS
    bids = [(round(bid1 - 0.01 * k, 2), 100 * (1 + (j + k) % 4)) for k in range(levels)]
    asks = [(round(ask1 + 0.01 * k, 2), 100 * (1 + (2 * j + k) % 5)) for k in range(levels)]
    if j == ONE_SIDED:
        asks = []
    return bids, asks


def _a_time(j: int) -> str:
    return (dt.datetime(2000, 1, 1, 9, 30) + dt.timedelta(seconds=20 * j)).strftime("%H:%M:%S")


A_TRADES = [  # (time, price, qty, side)
    ("09:25:00", 10.00, 10000, "N"),  # opening call: in no bucket
    ("09:30:05", 10.01, 200, "B"),
    ("09:30:40", 10.00, 300, "S"),  # exactly at snapshot j=2: belongs to the interval ending at j=3
    ("09:34:59.5", 10.01, 100, "B"),  # bucket 0, but its interval ends at j=15 (bucket 1)
    ("09:35:00", 10.00, 400, "S"),  # exactly at the bucket boundary: bucket 1
    ("09:35:10", 10.02, 500, "B"),
    ("09:36:00", 10.03, 100, "B"),
    ("09:37:25", 10.02, 200, "S"),
    ("09:39:59", 10.01, 300, "B"),  # bucket 1, but its interval ends at j=30 (bucket 2)
    ("09:40:00", 10.00, 100, "S"),  # bucket 2
]
B_MIDS = [20.00, 20.02, 20.01, 20.04, 20.03, 20.05, 20.02, 20.03, 20.06, 20.04]  # 09:30 .. 09:39 every minute


@pytest.fixture(scope="module")
def day_tables(tmp_path_factory):
    root = tmp_path_factory.mktemp("golden_day")
    src, dst = DatasetStore(str(root / "src")), DatasetStore(str(root / "dst"))
    snaps = [
        _snapshot(A, DAY, "09:20:00", "OCALL", [(10.00, 500)], [(10.00, 500)], None, 9.90),
        _snapshot(A, DAY, "09:29:57", "PREOPEN", [(9.99, 100)], [(10.01, 100)], 10.00, 9.90),
    ]
    for j in range(31):
        bids, asks = _a_book(j)
        snaps.append(_snapshot(A, DAY, _a_time(j), "TRADE", bids, asks, 10.00, 9.90))
    for m, mid in enumerate(B_MIDS):
        snaps.append(
            _snapshot(
                B, DAY, f"09:{30 + m}:00", "TRADE", [(round(mid - 0.01, 2), 1000)], [(round(mid + 0.01, 2), 1000)]
            )
        )
    trades = [{"symbol": A, "ts": _ts(DAY, t), "price": p, "qty": q, "side": s} for t, p, q, s in A_TRADES]
    _write(src, DAY, snaps, trades)
    summary = build_factors(src, dst)
    f = dst.read("factors").to_pandas().set_index(["symbol", "bucket"])
    t = dst.read("targets").to_pandas().set_index(["symbol", "bucket"])
    return f, t, summary


def _a_valid() -> list[int]:
    return [j for j in range(31) if j != ONE_SIDED]


def _mid(j: int) -> float:
    bids, asks = _a_book(j)
    return (bids[0][0] + asks[0][0]) / 2


def _check(frame: pd.DataFrame, key, name: str, expected, rel: float = 1e-9) -> None:
    got = frame.loc[key, name]
    if expected is None:
        assert pd.isna(got), f"{name} at {key}: expected null, got {got}"
    else:
        assert got == pytest.approx(expected, rel=rel, abs=1e-15), f"{name} at {key}"
    CHECKED.add(name)


def _realized(mids_with_prev: list[float]) -> dict:
    """Every realized measure of one bucket from its price path (previous-tick mid first)."""
    p = np.log(np.asarray(mids_with_prev))
    r = np.diff(p)
    n = len(r)
    a = np.abs(r)
    rv = float(np.sum(r**2))
    mu1 = math.sqrt(2 / math.pi)
    mu43 = 2 ** (2 / 3) * math.gamma(7 / 6) / math.gamma(1 / 2)
    bv = mu1**-2 * n / (n - 1) * sum(a[i] * a[i - 1] for i in range(1, n))
    med = (
        math.pi
        / (6 - 4 * math.sqrt(3) + math.pi)
        * n
        / (n - 2)
        * sum(sorted([a[i - 1], a[i], a[i + 1]])[1] ** 2 for i in range(1, n - 1))
    )
    tq = n * mu43**-3 * n / (n - 2) * sum((a[i] * a[i - 1] * a[i - 2]) ** (4 / 3) for i in range(2, n))
    k = 5
    rv_k = sum((p[i] - p[i - k]) ** 2 for i in range(k, n + 1)) / k
    nbar = (n - k + 1) / k
    tsrv = (rv_k - nbar / n * rv) / (1 - nbar / n)
    hi, lo, op, cl = p.max(), p.min(), p[0], p[-1]
    theta = (math.pi / 2) ** 2 + math.pi - 5
    return {
        "n_returns": n,
        "rv": rv,
        "realized_vol": math.sqrt(rv),
        "mid_return": float(p[-1] - p[0]),
        "rs_pos": float(np.sum(r[r > 0] ** 2)),
        "rs_neg": float(np.sum(r[r < 0] ** 2)),
        "bipower_variation": bv,
        "medrv": med,
        "tripower_quarticity": tq,
        "realized_quarticity": n / 3 * float(np.sum(r**4)),
        "realized_skewness": math.sqrt(n) * float(np.sum(r**3)) / rv**1.5,
        "realized_kurtosis": n * float(np.sum(r**4)) / rv**2,
        "tsrv": tsrv,
        "parkinson": (hi - lo) ** 2 / (4 * math.log(2)),
        "garman_klass": 0.5 * (hi - lo) ** 2 - (2 * math.log(2) - 1) * (cl - op) ** 2,
        "jump_variation": max(rv - bv, 0.0),
        "bns_jump_stat": ((rv - bv) / rv) / math.sqrt(theta / n * max(1.0, tq / bv**2)),
    }


def test_realized_measures_golden(day_tables):
    f, _, _ = day_tables
    bucket1 = [j for j in _a_valid() if 15 <= j <= 29]
    path = [_mid(14)] + [_mid(j) for j in bucket1]  # previous tick j=14 opens the path
    exp = _realized(path)
    assert exp["n_returns"] == 14
    for name, value in exp.items():
        _check(f, (A, 1), name, value)
    # Bucket 2 holds one return (j=29 -> j=30 at exactly 09:40:00): too few for BV/MedRV/TQ/TSRV.
    r = math.log(_mid(30) / _mid(29))
    _check(f, (A, 2), "rv", r * r)
    for name in ("bipower_variation", "medrv", "tripower_quarticity", "tsrv", "bns_jump_stat", "jump_variation"):
        _check(f, (A, 2), name, None)
    # A bucket without quotes: nothing happened (0) or undefined (null).
    _check(f, (A, 5), "rv", 0.0)
    _check(f, (A, 5), "n_returns", 0)
    _check(f, (A, 5), "realized_skewness", None)
    _check(f, (A, 5), "parkinson", None)


def _levels(j: int, side: str, k: int) -> tuple[float | None, float]:
    bids, asks = _a_book(j)
    lv = bids if side == "bid" else asks
    return lv[k - 1] if k <= len(lv) else (None, 0.0)


def test_order_book_golden(day_tables):
    f, _, _ = day_tables
    js = [j for j in _a_valid() if 15 <= j <= 29]
    chain = [14, *js]

    def depth(j, side, n):
        return sum(_levels(j, side, k)[1] for k in range(1, n + 1))

    def wap(j):
        (b, qb), (a, qa) = _levels(j, "bid", 1), _levels(j, "ask", 1)
        return (b * qa + a * qb) / (qa + qb)

    mean = lambda xs: float(np.mean(xs))  # noqa: E731
    _check(f, (A, 1), "spread", mean([_levels(j, "ask", 1)[0] - _levels(j, "bid", 1)[0] for j in js]))
    _check(
        f, (A, 1), "relative_spread", mean([(_levels(j, "ask", 1)[0] - _levels(j, "bid", 1)[0]) / _mid(j) for j in js])
    )
    for n in (1, 5, 10):
        _check(f, (A, 1), f"depth_l{n}", mean([depth(j, "bid", n) + depth(j, "ask", n) for j in js]))
    for n in (1, 5):
        imb = [(depth(j, "bid", n) - depth(j, "ask", n)) / (depth(j, "bid", n) + depth(j, "ask", n)) for j in js]
        _check(f, (A, 1), f"depth_imbalance_l{n}", mean(imb))
    _check(f, (A, 1), "wap", wap(29))
    _check(f, (A, 1), "wap_return", math.log(wap(29) / wap(14)))
    _check(f, (A, 1), "wap_rv", sum(math.log(wap(c) / wap(p)) ** 2 for p, c in zip(chain, chain[1:], strict=False)))
    slope = [
        (depth(j, "bid", 5) + depth(j, "ask", 5))
        / ((_levels(j, "ask", 5)[0] - _levels(j, "bid", 5)[0]) / _mid(j) * 1e4)
        for j in js
    ]
    _check(f, (A, 1), "book_slope", mean(slope))

    def ofi_level(p, c, k):
        bp, bq = _levels(c, "bid", k)
        pbp, pbq = _levels(p, "bid", k)
        ap, aq = _levels(c, "ask", k)
        pap, paq = _levels(p, "ask", k)
        bp, pbp = bp or 0.0, pbp or 0.0
        ap, pap = ap or math.inf, pap or math.inf
        return (
            (bq if bp >= pbp else 0) - (pbq if bp <= pbp else 0) - (aq if ap <= pap else 0) + (paq if ap >= pap else 0)
        )

    for n in (1, 5, 10):
        exp = sum(ofi_level(p, c, k) for p, c in zip(chain, chain[1:], strict=False) for k in range(1, n + 1))
        _check(f, (A, 1), f"ofi_l{n}", float(exp))
    # Bucket 0 contains the thin snapshot (j=5, levels 9-10 empty on both sides).
    js0 = list(range(0, 15))
    _check(f, (A, 0), "depth_l10", mean([depth(j, "bid", 10) + depth(j, "ask", 10) for j in js0]))
    exp0 = sum(ofi_level(p, c, k) for p, c in zip(js0, js0[1:], strict=False) for k in range(1, 11))
    _check(f, (A, 0), "ofi_l10", float(exp0))


def test_trade_factors_golden(day_tables):
    f, _, _ = day_tables
    in_b1 = [t for t in A_TRADES if "09:35:00" <= t[0] < "09:40:00"]
    vol = sum(q for _, _, q, _ in in_b1)
    amt = sum(p * q for _, p, q, _ in in_b1)
    buy = sum(q for _, _, q, s in in_b1 if s == "B")
    sell = sum(q for _, _, q, s in in_b1 if s == "S")
    _check(f, (A, 1), "volume", vol)
    _check(f, (A, 1), "turnover", amt)
    _check(f, (A, 1), "trade_count", len(in_b1))
    _check(f, (A, 1), "mean_trade_size", vol / len(in_b1))
    _check(f, (A, 1), "signed_volume_imbalance", (buy - sell) / (buy + sell))
    mid_ret = math.log(_mid(29) / _mid(14))
    _check(f, (A, 1), "amihud", abs(mid_ret) / (amt / 1e6))
    # Kyle: each fill joins the interval closed by the first valid snapshot strictly after it.
    valid = _a_valid()
    times = {j: _ts(DAY, _a_time(j)) for j in valid}
    flow = dict.fromkeys(valid, 0.0)
    for t, p, q, s in A_TRADES[1:]:
        ts = _ts(DAY, t)
        after = [j for j in valid if times[j] > ts]
        if after:
            flow[after[0]] += (p * q if s == "B" else -p * q) / 1e6
    ends = [j for j in valid if 15 <= j <= 29]
    prev = {c: p for p, c in zip(valid, valid[1:], strict=False)}
    r = np.array([math.log(_mid(j) / _mid(prev[j])) for j in ends])
    v = np.array([flow[j] for j in ends])
    assert v[0] != 0 and flow[30] != 0  # the fills at 09:34:59.5 and 09:39:59 moved across buckets
    _check(f, (A, 1), "kyle_lambda", float(np.polyfit(v, r, 1)[0]), rel=1e-7)
    # B has no fills: counts are 0, ratios null.
    _check(f, (B, 1), "volume", 0)
    _check(f, (B, 1), "signed_volume_imbalance", None)
    _check(f, (B, 1), "amihud", None)
    _check(f, (A, 1), "vpin", None)  # no previous day: no volume-bucket size


def test_intraday_history_golden(day_tables):
    f, _, _ = day_tables

    def rv_a(b):
        js = [j for j in _a_valid() if (15 * b <= j < 15 * (b + 1)) or (b == 2 and j == 30)]
        prevs = {c: p for p, c in zip(_a_valid(), _a_valid()[1:], strict=False)}
        return sum(math.log(_mid(j) / _mid(prevs[j])) ** 2 for j in js if j in prevs)

    rv0, rv1, rv2 = rv_a(0), rv_a(1), rv_a(2)
    _check(f, (A, 1), "rv_lag_1", rv0)
    _check(f, (A, 2), "rv_lag_2", rv0)
    _check(f, (A, 1), "rv_lag_2", None)  # would reach into the (absent) previous date
    _check(f, (A, 11), "rv_last_hour", rv0 + rv1 + rv2)  # the first 12 buckets
    _check(f, (A, 10), "rv_last_hour", None)
    _check(f, (A, 0), "overnight_return", math.log(10.00 / 9.90))
    _check(f, (B, 0), "overnight_return", None)  # B never shows an opening price
    b_r = np.diff(np.log(B_MIDS))
    rv_b1 = float(np.sum(b_r[4:9] ** 2))  # returns ending 09:35 .. 09:39
    _check(f, (A, 1), "market_rv", (rv1 + rv_b1) / 2)
    _check(f, (A, 3), "market_rv", None)  # no symbol has a return in bucket 3
    for name in ("har_rv_d", "har_rv_w", "har_rv_m", "rv_seasonal", "rv_seasonal_next"):
        _check(f, (A, 1), name, None)  # first store date: no history


def test_targets_golden(day_tables):
    _, t, summary = day_tables
    valid = _a_valid()
    prev = {c: p for p, c in zip(valid, valid[1:], strict=False)}
    times = {j: _ts(DAY, _a_time(j)) for j in valid}
    lo, hi = _ts(DAY, "09:35:00"), _ts(DAY, "09:40:00")
    # (t, t + 5 min] at t = 09:35: both ends of a return inside; the snapshot at 09:35:00 is excluded.
    exp = sum(
        math.log(_mid(j) / _mid(prev[j])) ** 2 for j in valid if j in prev and lo < times[prev[j]] and times[j] <= hi
    )
    assert t.loc[(A, 0), "rv_next_bucket"] == pytest.approx(exp, rel=1e-12)
    assert t.loc[(A, 0), "rv_next_30min"] == pytest.approx(exp, rel=1e-12)  # no quotes after 09:40
    assert t.loc[(A, 0), "rv_rest_of_day"] == pytest.approx(exp, rel=1e-12)
    b_r = np.diff(np.log(B_MIDS))
    assert t.loc[(B, 0), "rv_next_bucket"] == pytest.approx(float(np.sum(b_r[6:9] ** 2)), rel=1e-12)
    assert bool(t.loc[(A, 2), "zero_next_bucket"]) and t.loc[(A, 2), "rv_next_bucket"] == 0.0
    assert pd.isna(t.loc[(A, 47), "rv_next_bucket"]) and pd.isna(t.loc[(A, 47), "rv_rest_of_day"])
    assert pd.isna(t.loc[(A, 41), "rv_next_30min"]) and not pd.isna(t.loc[(A, 40), "rv_next_30min"])
    assert t["rv_next_day"].isna().all()  # the store has no later date
    assert summary["zero_rv_targets"]["next_bucket"] == int(t["zero_next_bucket"].sum())


# ------------------------------------------------------------------ history fixture
H = "600036.SH"
N_DAYS = 24


def _h_mids(d: int) -> list[float]:
    """Mid prices of H on day index d at 09:30..09:34 (bucket 0), 09:36 (bucket 1), 14:55:30, 14:56:30."""
    step = 0.01 * (1 + d % 3)
    return [10.0, 10.0 + step, 10.0, 10.0 + 2 * step, 10.0 + step, 10.0 + 3 * step, 10.2, 10.2 + step]


H_TIMES = ["09:30:00", "09:31:00", "09:32:00", "09:33:00", "09:34:00", "09:36:00", "14:55:30", "14:56:30"]


def _h_trades(d: int) -> list[tuple[str, int, str]]:
    """Fills of H on day index d: every 4 s from 09:30:01 with varying sizes and sides, and on even days a
    large buy exactly at 09:35:00 (a bucket end) that completes volume buckets at that instant."""
    out = []
    for i in range(60 + d % 7):
        sec = 1 + 4 * i
        out.append(
            (
                f"09:{30 + sec // 60:02d}:{sec % 60:02d}",
                100 * (1 + (i * 7 + d) % 5),
                "B" if (i * 3 + d) % 5 < 3 else "S",
            )
        )
    if d % 2 == 0:
        out.append(("09:35:00", 3000, "B"))
    return out


@pytest.fixture(scope="module")
def history_tables(tmp_path_factory):
    root = tmp_path_factory.mktemp("golden_history")
    src, dst = DatasetStore(str(root / "src")), DatasetStore(str(root / "dst"))
    days = ASHARE.next_trading_days(DAY, N_DAYS)
    for d, day in enumerate(days):
        mids = _h_mids(d)
        snaps = [
            _snapshot(H, day, hms, "TRADE", [(round(m - 0.005, 3), 300)], [(round(m + 0.005, 3), 300)], 10.0, 9.95)
            for hms, m in zip(H_TIMES, mids, strict=True)
        ]
        trades = [{"symbol": H, "ts": _ts(day, t), "price": 10.0, "qty": q, "side": s} for t, q, s in _h_trades(d)]
        _write(src, day, snaps, trades)
    build_factors(src, dst)
    f = dst.read("factors").to_pandas()
    f["date"] = f["ts"].dt.tz_convert(TZ).dt.date
    t = dst.read("targets").to_pandas()
    t["date"] = t["ts"].dt.tz_convert(TZ).dt.date
    return days, f.set_index(["date", "bucket"]), t.set_index(["date", "bucket"])


def _h_bucket_rv(d: int) -> dict[int, float]:
    p = np.log(_h_mids(d))
    r0 = np.diff(p[:5])
    return {0: float(np.sum(r0**2)), 1: float((p[5] - p[4]) ** 2), 47: float((p[7] - p[6]) ** 2)}


def test_har_and_seasonal_golden(history_tables):
    days, f, t = history_tables
    day_rv = [sum(_h_bucket_rv(d).values()) for d in range(N_DAYS)]
    last = days[22]  # 22 previous dates available
    _check(f, (last, 5), "har_rv_d", day_rv[21])
    _check(f, (last, 5), "har_rv_w", float(np.mean(day_rv[17:22])))
    _check(f, (last, 5), "har_rv_m", float(np.mean(day_rv[0:22])))
    _check(f, (days[21], 5), "har_rv_m", None)  # only 21 previous dates
    _check(f, (days[4], 5), "har_rv_w", None)
    _check(f, (days[5], 5), "har_rv_w", float(np.mean(day_rv[0:5])))
    _check(f, (last, 0), "rv_seasonal", float(np.mean([_h_bucket_rv(d)[0] for d in range(22)])))
    _check(f, (last, 0), "rv_seasonal_next", float(np.mean([_h_bucket_rv(d)[1] for d in range(22)])))
    _check(f, (last, 47), "rv_seasonal_next", float(np.mean([_h_bucket_rv(d)[0] for d in range(22)])))
    _check(f, (last, 3), "rv_seasonal", 0.0)
    # Trading-clock lags cross the night: the first bucket's previous bucket is yesterday's last.
    _check(f, (last, 0), "rv_lag_1", _h_bucket_rv(21)[47])
    _check(f, (last, 1), "rv_lag_2", _h_bucket_rv(21)[47])
    _check(f, (last, 0), "rv_last_hour", _h_bucket_rv(21)[47] + _h_bucket_rv(22)[0])
    # Next-day target: the next date's whole-session RV; null on the store's last date.
    assert t.loc[(days[21], 10), "rv_next_day"] == pytest.approx(day_rv[22], rel=1e-12)
    assert pd.isna(t.loc[(days[-1], 10), "rv_next_day"])


def _vpin_reference(days) -> dict[tuple[dt.date, int], float | None]:
    """VPIN by a plain sequential loop: buckets of V = yesterday's volume / 50 shares, fills split at
    boundaries, mean |buy - sell| / V of the last 50 buckets completed before each bucket end."""
    done: list[tuple[pd.Timestamp, float]] = []
    out = {}
    prev_volume = None
    for d, day in enumerate(days):
        fills = _h_trades(d)
        completed_today = []
        if prev_volume:
            V = prev_volume / 50
            filled = buy = sell = 0.0
            for tm, q, s in fills:
                left = float(q)
                while left > 0:
                    take = min(left, V - filled)
                    filled += take
                    left -= take
                    buy += take if s == "B" else 0.0
                    sell += take if s == "S" else 0.0
                    if filled >= V - 1e-9:
                        completed_today.append((_ts(day, tm), abs(buy - sell) / V))
                        filled = buy = sell = 0.0
        seq = done + completed_today
        for b, end in [(0, "09:35:00"), (1, "09:40:00"), (47, "14:57:00")]:
            before = [x for ts, x in seq if ts < _ts(day, end)]
            out[(day, b)] = float(np.mean(before[-50:])) if len(before) >= 50 else None
        done = seq
        prev_volume = sum(q for _, q, _ in fills)
    return out


def test_vpin_golden(history_tables):
    days, f, _ = history_tables
    ref = _vpin_reference(days)
    assert ref[(days[0], 0)] is None and ref[(days[3], 0)] is not None
    assert ref[(days[4], 0)] != ref[(days[4], 1)]  # the fills at exactly 09:35:00 count only after it
    for (day, b), value in ref.items():
        _check(f, (day, b), "vpin", value, rel=1e-9)


def test_every_factor_has_a_golden_value(day_tables, history_tables):
    CHECKED.clear()
    for check in (
        test_realized_measures_golden,
        test_order_book_golden,
        test_trade_factors_golden,
        test_intraday_history_golden,
    ):
        check(day_tables)
    test_har_and_seasonal_golden(history_tables)
    test_vpin_golden(history_tables)
    missing = set(REGISTRY.names()) - CHECKED
    assert not missing, f"factors without a golden-value assertion: {sorted(missing)}"
