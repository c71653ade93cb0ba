"""Order-book factors from the Level2 snapshots.

Computed over the bucket's *valid* snapshots (phase TRADE, inside a continuous session, both best
quotes present, ``ask_px_1 > bid_px_1``; see :mod:`l2vol.factors.realized`) with ``ts`` in
``[t - bucket, t)``. State factors (spread, depth, imbalance, slope) are equal-weighted means over those
snapshots, i.e. time averages on the regular snapshot grid; flow factors (OFI, WAP returns) sum the
changes between consecutive valid snapshots of the same session whose later snapshot is in the bucket.
An empty level (null/NaN/non-positive price) counts as no price and quantity 0. A bucket without a valid snapshot has null state
factors and zero flows.
"""

from __future__ import annotations

import polars as pl

from l2vol.data.schema import N_LEVELS
from l2vol.factors.realized import MID_INPUTS
from l2vol.factors.registry import SAME_SESSION, factor, previous

LEVELS = range(1, N_LEVELS + 1)


def _inputs(levels: int, *kinds: str) -> tuple[str, ...]:
    cols = [f"snapshots.{side}_{kind}_{i}" for kind in kinds for side in ("bid", "ask") for i in range(1, levels + 1)]
    return tuple(dict.fromkeys((*MID_INPUTS, *cols)))


def _px(side: str, i: int) -> pl.Expr:
    """Price of a level (null when the level is empty; the engine normalises the book)."""
    return pl.col(f"{side}_px_{i}")


def _qty(side: str, i: int) -> pl.Expr:
    """Resting quantity of a level (0.0 when the level is empty)."""
    return pl.col(f"{side}_qty_{i}")


def _depth(side: str, levels: int) -> pl.Expr:
    return pl.sum_horizontal([_qty(side, i) for i in range(1, levels + 1)])


def _wap() -> pl.Expr:
    bq, aq = _qty("bid", 1), _qty("ask", 1)
    return pl.when(bq + aq > 0).then((pl.col("bid_px_1") * aq + pl.col("ask_px_1") * bq) / (bq + aq))


def _imbalance(levels: int) -> pl.Expr:
    b, a = _depth("bid", levels), _depth("ask", levels)
    return pl.when(b + a > 0).then((b - a) / (b + a))


def _row(name: str, expr: pl.Expr):
    def prepare() -> dict[str, pl.Expr]:
        return {name: expr}

    return prepare


@factor("spread", family="book", stage="snapshots", unit="CNY", inputs=_inputs(1, "px"))
def quoted_spread() -> pl.Expr:
    """Quoted spread ask_px_1 - bid_px_1, mean over the bucket's valid snapshots."""
    return (pl.col("ask_px_1") - pl.col("bid_px_1")).mean()


@factor("relative_spread", family="book", stage="snapshots", unit="fraction of mid", inputs=_inputs(1, "px"))
def relative_spread() -> pl.Expr:
    """Relative spread (ask_px_1 - bid_px_1) / mid, mean over the bucket's valid snapshots."""
    return ((pl.col("ask_px_1") - pl.col("bid_px_1")) / pl.col("mid")).mean()


@factor(
    "depth_l1",
    family="book",
    stage="snapshots",
    unit="shares",
    inputs=_inputs(1, "px", "qty"),
    prepare=_row("_depth_l1", _depth("bid", 1) + _depth("ask", 1)),
)
def depth_l1() -> pl.Expr:
    """Depth at the best level, bid_qty_1 + ask_qty_1, mean over the bucket's valid snapshots."""
    return pl.col("_depth_l1").mean()


@factor(
    "depth_l5",
    family="book",
    stage="snapshots",
    unit="shares",
    inputs=_inputs(5, "px", "qty"),
    prepare=_row("_depth_l5", _depth("bid", 5) + _depth("ask", 5)),
)
def depth_l5() -> pl.Expr:
    """Depth of the best 5 levels of both sides, mean over the bucket's valid snapshots."""
    return pl.col("_depth_l5").mean()


@factor(
    "depth_l10",
    family="book",
    stage="snapshots",
    unit="shares",
    inputs=_inputs(10, "px", "qty"),
    prepare=_row("_depth_l10", _depth("bid", 10) + _depth("ask", 10)),
)
def depth_l10() -> pl.Expr:
    """Depth of all 10 levels of both sides, mean over the bucket's valid snapshots."""
    return pl.col("_depth_l10").mean()


@factor(
    "depth_imbalance_l1",
    family="book",
    stage="snapshots",
    unit="fraction in [-1, 1]",
    inputs=_inputs(1, "px", "qty"),
    prepare=_row("_imbalance_l1", _imbalance(1)),
)
def depth_imbalance_l1() -> pl.Expr:
    """Best-level depth imbalance (B1 - A1)/(B1 + A1), mean over the bucket's valid snapshots
    (positive: more resting bids)."""
    return pl.col("_imbalance_l1").mean()


@factor(
    "depth_imbalance_l5",
    family="book",
    stage="snapshots",
    unit="fraction in [-1, 1]",
    inputs=_inputs(5, "px", "qty"),
    prepare=_row("_imbalance_l5", _imbalance(5)),
)
def depth_imbalance_l5() -> pl.Expr:
    """Five-level depth imbalance (B5 - A5)/(B5 + A5) with B5, A5 the summed quantities of the best 5
    levels, mean over the bucket's valid snapshots."""
    return pl.col("_imbalance_l5").mean()


@factor(
    "wap",
    family="book",
    stage="snapshots",
    unit="CNY",
    inputs=_inputs(1, "px", "qty"),
    prepare=_row("_wap", _wap()),
)
def weighted_average_price() -> pl.Expr:
    """Weighted average price WAP = (bid_px_1 ask_qty_1 + ask_px_1 bid_qty_1)/(bid_qty_1 + ask_qty_1) at
    the last valid snapshot before t."""
    return pl.col("_wap").last()


def _wap_return_columns() -> dict[str, pl.Expr]:
    lw = _wap().log()
    return {"_wap_r": lw - previous(lw)}


@factor(
    "wap_return",
    family="book",
    stage="snapshots",
    unit="log-return",
    inputs=_inputs(1, "px", "qty"),
    prepare=_wap_return_columns,
    empty=0.0,
)
def wap_return() -> pl.Expr:
    """WAP log return over the bucket: ln(WAP at the last valid snapshot before t / WAP at the last valid
    snapshot before the bucket start), the session's first WAP when the bucket opens the session."""
    return pl.col("_wap_r").sum()


@factor(
    "wap_rv",
    family="book",
    stage="snapshots",
    unit="log-return^2 per bucket",
    inputs=_inputs(1, "px", "qty"),
    prepare=_wap_return_columns,
    empty=0.0,
)
def wap_realized_variance() -> pl.Expr:
    """Realized variance of the WAP: sum of squared WAP log returns between consecutive valid snapshots
    of the session whose later snapshot is in the bucket."""
    return pl.col("_wap_r").pow(2).sum()


def _slope() -> pl.Expr:
    width = (_px("ask", 5) - _px("bid", 5)) / pl.col("mid") * 1e4
    return pl.when(width > 0).then((_depth("bid", 5) + _depth("ask", 5)) / width)


@factor(
    "book_slope",
    family="book",
    stage="snapshots",
    unit="shares per bp",
    inputs=_inputs(5, "px", "qty"),
    prepare=_row("_book_slope", _slope()),
)
def book_slope() -> pl.Expr:
    """Book slope: depth of the best 5 levels of both sides divided by the relative width of those
    levels, (B5 + A5) / ((ask_px_5 - bid_px_5) / mid * 1e4), mean over the bucket's valid snapshots that
    have both 5th levels (null if none). A steep book holds much depth close to the mid."""
    return pl.col("_book_slope").mean()


def _ofi_level(i: int) -> pl.Expr:
    """Per-level order-flow imbalance e_i between consecutive rows (Cont, Kukanov and Stoikov 2014, per
    level as in Xu, Gould and Howison 2019). An empty bid level counts as price 0, an empty ask level as
    +inf, both with quantity 0. Rows whose predecessor is not the previous valid snapshot of the same
    session are masked out in the aggregation (one mask instead of one per level)."""
    b = _px("bid", i).fill_null(0.0)
    a = _px("ask", i).fill_null(float("inf"))
    qb, qa = _qty("bid", i), _qty("ask", i)
    pb, pa, pqb, pqa = b.shift(1), a.shift(1), qb.shift(1), qa.shift(1)
    return (
        pl.when(b >= pb).then(qb).otherwise(0)
        - pl.when(b <= pb).then(pqb).otherwise(0)
        - pl.when(a <= pa).then(qa).otherwise(0)
        + pl.when(a >= pa).then(pqa).otherwise(0)
    )


def _ofi_total(levels: int) -> pl.Expr:
    """e_1 + ... + e_levels per row, added in level order (the multi-level totals share their prefix)."""
    total = _ofi_level(1)
    for i in range(2, levels + 1):
        total = total + _ofi_level(i)
    return total


def _ofi(levels: int) -> pl.Expr:
    return (pl.col(f"_ofi_total_{levels}") * pl.col(SAME_SESSION).cast(pl.Float64)).sum()


def _ofi_prepare(levels: int):
    def prepare() -> dict[str, pl.Expr]:
        return {f"_ofi_total_{levels}": _ofi_total(levels)}

    return prepare


@factor(
    "ofi_l1",
    family="book",
    stage="snapshots",
    unit="shares",
    inputs=_inputs(1, "px", "qty"),
    prepare=_ofi_prepare(1),
    empty=0.0,
)
def order_flow_imbalance_l1() -> pl.Expr:
    """Best-level order-flow imbalance: sum over consecutive valid snapshots ending in the bucket of
    e_1 = 1{b >= b'} q_b - 1{b <= b'} q_b' - 1{a <= a'} q_a + 1{a >= a'} q_a' (' = previous snapshot);
    positive when demand is added or supply removed."""
    return _ofi(1)


@factor(
    "ofi_l5",
    family="book",
    stage="snapshots",
    unit="shares",
    inputs=_inputs(5, "px", "qty"),
    prepare=_ofi_prepare(5),
    empty=0.0,
)
def order_flow_imbalance_l5() -> pl.Expr:
    """Multi-level order-flow imbalance of the best 5 levels: the per-level OFI e_k of ofi_l1 summed over
    k = 1..5 and over the snapshot changes ending in the bucket."""
    return _ofi(5)


@factor(
    "ofi_l10",
    family="book",
    stage="snapshots",
    unit="shares",
    inputs=_inputs(10, "px", "qty"),
    prepare=_ofi_prepare(10),
    empty=0.0,
)
def order_flow_imbalance_l10() -> pl.Expr:
    """Multi-level order-flow imbalance of all 10 levels (per-level e_k summed over k = 1..10 and over the
    snapshot changes ending in the bucket)."""
    return _ofi(10)
