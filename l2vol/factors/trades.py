"""Trade factors from the tick-by-tick trades table.

A fill belongs to the bucket of its time under the ``[start, end)`` rule; only fills inside a continuous
session count (the opening call at 09:25 and the closing call at 15:00 fall in no bucket). The aggressor
side comes from the ``side`` column (B buyer-, S seller-initiated; N, auction/unknown, counts in volume
but in neither side).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from l2vol.factors.realized import MID_INPUTS
from l2vol.factors.registry import BUCKET_ID, Warmup, factor

if TYPE_CHECKING:
    from l2vol.factors.engine import DayFrames

TRADE_INPUTS = ("trades.symbol", "trades.ts", "trades.qty", "trades.amount")
SIDE_INPUTS = (*TRADE_INPUTS, "trades.side")

#: VPIN: volume-bucket size = previous day's continuous-session volume / VPIN_BUCKETS_PER_DAY ...
VPIN_BUCKETS_PER_DAY = 50
#: ... averaged over the last VPIN_WINDOW completed volume buckets (carried across days).
VPIN_WINDOW = 50
#: Kyle's lambda and Amihud are per CNY million traded.
CNY_MILLION = 1e6

_qty = pl.col("qty").cast(pl.Float64)


def _signed(expr: pl.Expr) -> pl.Expr:
    side = pl.col("side")
    return pl.when(side == "B").then(expr).when(side == "S").then(-expr).otherwise(0.0)


@factor("volume", family="trades", stage="trades", unit="shares", inputs=TRADE_INPUTS, dtype="int64", empty=0)
def traded_volume() -> pl.Expr:
    """Shares traded in continuous trading with fill time in [t - bucket, t)."""
    return pl.col("qty").sum().cast(pl.Int64)


@factor("turnover", family="trades", stage="trades", unit="CNY", inputs=TRADE_INPUTS, empty=0.0)
def turnover() -> pl.Expr:
    """Traded amount (price x quantity) of the bucket's continuous-session fills."""
    return pl.col("amount").sum()


@factor("trade_count", family="trades", stage="trades", unit="trades", inputs=TRADE_INPUTS, dtype="int64", empty=0)
def trade_count() -> pl.Expr:
    """Number of continuous-session fills in the bucket."""
    return pl.len().cast(pl.Int64)


@factor(
    "mean_trade_size",
    family="trades",
    stage="panel",
    unit="shares per trade",
    inputs=TRADE_INPUTS,
    depends=("volume", "trade_count"),
)
def mean_trade_size() -> pl.Expr:
    """Mean fill size volume / trade_count of the bucket; null without fills."""
    return pl.when(pl.col("trade_count") > 0).then(pl.col("volume") / pl.col("trade_count"))


@factor("signed_volume_imbalance", family="trades", stage="trades", unit="fraction in [-1, 1]", inputs=SIDE_INPUTS)
def signed_volume_imbalance() -> pl.Expr:
    """(buyer-initiated - seller-initiated volume) / (buyer- + seller-initiated volume) of the bucket's
    fills; null when the bucket has no B or S fill."""
    signed = _signed(_qty).sum()
    gross = pl.when(pl.col("side").is_in(["B", "S"])).then(_qty).otherwise(0.0).sum()
    return pl.when(gross > 0).then(signed / gross)


@factor(
    "amihud",
    family="trades",
    stage="panel",
    unit="log-return per CNY million",
    inputs=(*MID_INPUTS, *TRADE_INPUTS),
    depends=("mid_return", "turnover"),
)
def amihud_illiquidity() -> pl.Expr:
    """Amihud (2002) illiquidity of the bucket: |mid_return| / (turnover in CNY million); null without
    turnover."""
    return pl.when(pl.col("turnover") > 0).then(pl.col("mid_return").abs() / (pl.col("turnover") / CNY_MILLION))


@factor(
    "kyle_lambda",
    family="trades",
    stage="frame",
    unit="log-return per CNY million",
    inputs=(*MID_INPUTS, *SIDE_INPUTS),
    rows=True,
)
def kyle_lambda(day: DayFrames, panel: pl.DataFrame) -> pl.DataFrame:
    """Kyle's lambda: OLS slope (with intercept) of the mid log return r_i on the signed traded amount
    v_i (CNY million, + buyer- / - seller-initiated) over the snapshot intervals of the bucket. Interval i
    runs from the previous valid snapshot (inclusive) to snapshot i (exclusive) in the same session and
    belongs to the bucket of snapshot i, like r_i; intervals without fills have v_i = 0. Null when fewer
    than 2 intervals or all v_i equal."""
    snaps, fills = day.snapshots, day.trades
    if snaps.height == 0:
        return pl.DataFrame(
            {"symbol": snaps["symbol"], "bucket": snaps["bucket"], "kyle_lambda": pl.Series([], dtype=pl.Float64)}
        )
    base = int(day.grid.start_ns[0])

    def keys(df: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        code = df["symbol"].to_physical().cast(pl.Int64).to_numpy()
        # (symbol, time) packed in one sortable int64; continuous-session offsets are < 2^45 ns (9.7 h)
        return (code << 45) | (df["ts"].cast(pl.Int64).to_numpy() - base), code, df["session"].to_numpy()

    snap_key, snap_code, snap_session = keys(snaps)
    fill_key, fill_code, fill_session = keys(fills)
    # The first valid snapshot strictly after the fill closes its interval (same symbol and session).
    idx = np.searchsorted(snap_key, fill_key, side="right")
    at = np.minimum(idx, len(snap_key) - 1)
    ok = (idx < len(snap_key)) & (snap_code[at] == fill_code) & (snap_session[at] == fill_session)
    v = fills.select(_signed(pl.col("amount")) / CNY_MILLION).to_series().to_numpy()
    flow = np.bincount(idx[ok], weights=v[ok], minlength=len(snap_key)) if len(snap_key) else np.zeros(0)
    x = snaps.select("symbol", "bucket", "r", BUCKET_ID).with_columns(pl.Series("v", flow, dtype=pl.Float64))
    x = x.filter(pl.col("r").is_not_null())
    # OLS slope per bucket from centred sums (rows are sorted by bucket, so buckets are runs)
    bid = x[BUCKET_ID].to_numpy()
    r, v = x["r"].to_numpy(), x["v"].to_numpy()
    starts = np.flatnonzero(np.r_[True, bid[1:] != bid[:-1]]) if len(bid) else np.zeros(0, dtype=np.int64)
    g = np.cumsum(np.r_[False, bid[1:] != bid[:-1]]) if len(bid) else np.zeros(0, dtype=np.int64)
    n = np.bincount(g)
    dv = v - (np.bincount(g, v) / n)[g]
    dr = r - (np.bincount(g, r) / n)[g]
    sxx, sxy = np.bincount(g, dv * dv), np.bincount(g, dv * dr)
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = np.where((n >= 2) & (sxx > 0), sxy / sxx, np.nan)
    return x[starts].select("symbol", "bucket").with_columns(pl.Series("kyle_lambda", lam).fill_nan(None))


def _codes(symbol: pl.Series) -> np.ndarray:
    return symbol.to_physical().cast(pl.Int64).to_numpy()


def _decode(codes: np.ndarray, like: pl.Series) -> pl.Series:
    """Enum symbols from physical codes, with the categories of ``like``."""
    cats = pl.Series("symbol", like.dtype.categories).cast(like.dtype)
    return cats.gather(pl.Series(codes, dtype=pl.Int64))


def volume_buckets(trades: pl.DataFrame, bucket_volume: pl.DataFrame) -> pl.DataFrame:
    """The day's completed VPIN volume buckets: ``symbol, completed_ts, imbalance``.

    ``trades``: the day's continuous-session fills sorted by symbol (an Enum) and time;
    ``bucket_volume``: each symbol's volume-bucket size ``V`` (shares). The fills, in time order, fill
    consecutive buckets of exactly V shares (a fill straddling a boundary is split pro rata); bucket k
    completes at the time of the fill that reaches k*V, and its order imbalance is
    |V_buy - V_sell| / V. The partial bucket left at the close is dropped.
    """
    sym = trades["symbol"]
    code = _codes(sym)
    size = np.full(len(sym.dtype.categories), np.nan)
    size[_codes(bucket_volume["symbol"])] = bucket_volume["V"].to_numpy()
    V = size[code]
    keep = V > 0
    code, V = code[keep], V[keep]
    flags = trades.select(
        pl.col("qty").cast(pl.Float64).fill_null(0.0),
        (pl.col("side") == "B").fill_null(False).alias("buy"),
        (pl.col("side") == "S").fill_null(False).alias("sell"),
        pl.col("ts").cast(pl.Int64),
    )
    qty = flags["qty"].to_numpy()[keep]
    is_buy = flags["buy"].to_numpy()[keep]
    is_sell = flags["sell"].to_numpy()[keep]
    ts = flags["ts"].to_numpy()[keep]
    empty = pl.DataFrame(
        {"symbol": sym.head(0), "completed_ts": trades["ts"].head(0), "imbalance": pl.Series([], dtype=pl.Float64)}
    )
    if len(code) == 0:
        return empty
    # Global running volume G (exact in float64 below 2^53 shares); symbol runs are contiguous.
    buy = np.where(is_buy, qty, 0.0)
    sell = np.where(is_sell, qty, 0.0)
    G, GB, GS = np.cumsum(qty), np.cumsum(buy), np.cumsum(sell)
    starts = np.flatnonzero(np.r_[True, code[1:] != code[:-1]])
    ends = np.r_[starts[1:], len(code)] - 1
    base = np.where(starts > 0, G[starts - 1], 0.0)  # running volume before each symbol's first fill
    base_b = np.where(starts > 0, GB[starts - 1], 0.0)
    base_s = np.where(starts > 0, GS[starts - 1], 0.0)
    run_v = V[starts]
    nk = np.floor((G[ends] - base) / run_v).astype(np.int64)
    if nk.sum() == 0:
        return empty
    run = np.repeat(np.arange(len(starts)), nk)
    k = np.arange(len(run)) - np.repeat(np.cumsum(nk) - nk, nk) + 1
    x = k * run_v[run]  # boundary, in the symbol's own cumulative volume
    j = np.searchsorted(G, base[run] + x, side="left")  # first fill reaching it
    over = (G[j] - base[run]) - x  # part of that fill beyond the boundary
    cb = GB[j] - base_b[run] - np.where(is_buy[j], over, 0.0)
    cs = GS[j] - base_s[run] - np.where(is_sell[j], over, 0.0)
    first = k == 1
    vb = cb - np.where(first, 0.0, np.r_[0.0, cb[:-1]])
    vs = cs - np.where(first, 0.0, np.r_[0.0, cs[:-1]])
    return pl.DataFrame(
        {
            "symbol": _decode(code[starts][run], sym),
            "completed_ts": pl.Series(ts[j], dtype=pl.Int64).cast(trades["ts"].dtype),
            "imbalance": np.abs(vb - vs) / run_v[run],
        }
    )


@factor(
    "vpin",
    family="trades",
    stage="frame",
    unit="fraction in [0, 1]",
    inputs=SIDE_INPUTS,
    warmup=Warmup(days=2, note="VPIN_WINDOW completed volume buckets, carried across days"),
)
def vpin(day: DayFrames, panel: pl.DataFrame) -> pl.DataFrame:
    """Volume-synchronised probability of informed trading (Easley, Lopez de Prado and O'Hara 2012) with
    the exchange's aggressor side instead of bulk classification: the mean of |V_buy - V_sell| / V over
    the last 50 volume buckets completed before t. V = the symbol's continuous-session volume of the
    previous trading date / 50 (never today's volume, which is not known before the close); volume buckets
    restart at each open and the window carries over from earlier days. Null until 50 buckets exist."""
    seq = pl.concat(
        [
            day.state.vpin_tail.select(
                "symbol",
                pl.lit(0, dtype=pl.Int64).alias("completed_ns"),
                "imbalance",
            ),
            day.volume_buckets.select(
                "symbol", pl.col("completed_ts").cast(pl.Int64).alias("completed_ns"), "imbalance"
            ),
        ]
    )
    # Stable order: carried buckets first (oldest first), then today's in completion order.
    seq = seq.with_columns(pl.col("imbalance").rolling_mean(VPIN_WINDOW).over("symbol").alias("vpin"))
    last = seq.group_by("symbol", "completed_ns", maintain_order=True).agg(pl.col("vpin").last())
    keys = panel.select("symbol", "bucket", pl.col("ts").cast(pl.Int64).alias("end_ns")).sort("symbol", "end_ns")
    out = keys.join_asof(
        last.sort("symbol", "completed_ns"),
        left_on="end_ns",
        right_on="completed_ns",
        by="symbol",
        strategy="backward",
        allow_exact_matches=False,
        check_sortedness=False,
    )
    return out.select("symbol", "bucket", "vpin")


def vpin_tail(previous_tail: pl.DataFrame, buckets: pl.DataFrame) -> pl.DataFrame:
    """The last ``VPIN_WINDOW`` volume-bucket imbalances of each symbol after the day (``symbol, pos,
    imbalance``; pos 0 = oldest): the carried VPIN state."""
    seq = pl.concat(
        [previous_tail.select("symbol", "imbalance"), buckets.select("symbol", "imbalance")], how="vertical"
    )
    seq = seq.with_columns(pos=pl.int_range(pl.len()).over("symbol"), n=pl.len().over("symbol").cast(pl.Int64))
    seq = seq.filter(pl.col("pos") >= pl.col("n") - VPIN_WINDOW)
    return seq.select(
        "symbol", (pl.col("pos") - pl.col("pos").min().over("symbol")).cast(pl.Int32).alias("pos"), "imbalance"
    ).sort("symbol", "pos")
