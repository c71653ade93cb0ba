"""Cleaning and validation of the Level2 tables (snapshots, trades, orders) with the rules of
:mod:`l2vol.data.rules`, vectorized with polars.

How each rule is evaluated (``date`` = the partition's trading date, local = the market profile's zone):

* ``missing_key`` — ``symbol`` null or blank, or ``ts`` null.
* ``duplicate`` — snapshots: same ``symbol``, ``ts`` and every other column (NaN equals NaN, null equals
  null) as an earlier row; trades/orders: same ``symbol`` and ``seq`` as an earlier row. The first copy
  is kept. Rows without ``seq`` cannot be compared and are counted as *unchecked*.
* ``out_of_session`` — local date differs from ``date``, or local time falls in no session of
  ``profile.sessions_for(date)`` (sessions are [start, end); A-share sessions include the auctions).
* ``out_of_order`` — in arrival order (the row order of the raw partition, its part files in manifest
  order), among rows not removed by an earlier rule: the row's ``ts`` (trades: ``seq``) is below the
  running maximum already received for its symbol. Equal values are not out of order.
* ``non_positive_price`` — trades: price missing/NaN or <= 0, or quantity missing or <= 0; snapshots:
  ``last_px`` <= 0 (a null ``last_px`` before the first trade is fine).
* ``price_outside_limits`` — trades: price above the day's upper or below the day's lower limit; the
  limits are the first non-null ``upper_limit_px``/``lower_limit_px`` of the symbol's snapshots in the
  same date partition. Trades of symbols without known limits are *unchecked* (e.g. LOBSTER data).
* ``crossed_book`` — snapshots in phase TRADE (the ``phase`` column; from the profile's clock where
  null) with both best quotes present (> 0) and ``ask_px_1 <= bid_px_1``.
* ``amount_mismatch`` (repair) — trades kept so far whose ``amount`` is missing or differs from
  ``price * qty`` by more than 0.5: ``amount := price * qty`` (the float64 product, not rounded).
* ``limit_locked`` (flag) — one-sided book: bids only with ``bid_px_1 >= upper limit``, or asks only with
  ``ask_px_1 <= lower limit`` (the row's limits, else the day's).
* ``auction_bid_eq_ask`` (flag) — phase OCALL or CCALL, both sides present and ``bid_px_1 == ask_px_1``.
* ``halted`` (flag) — phase HALT.

Prices are compared with a tolerance of :data:`PRICE_EPS` (far below any tick) so binary floating-point
noise from vendor price scaling never decides a rule. Each row is counted under exactly one rule: the
first quarantine rule it breaks, else its first repair or flag rule. Quarantined rows go whole (as JSON)
to the ``quarantine`` table; :func:`restore_records` turns them back into canonical rows.

Row order of the cleaned tables: **grouped by symbol** (ascending), each symbol's rows in their arrival
order — which ``out_of_order`` has made time order (snapshots: ``ts``; trades/orders: ``seq``). This is
the order every reader wants (a symbol's day is one contiguous run: the factor engine slices it
instead of gathering 45 book columns per symbol out of a time-major feed, and Parquet statistics on
``symbol`` prune row groups), and it is paid once per date here instead of on every read. Quarantine
records keep naming the raw file and row.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from l2vol.data import schema as S
from l2vol.data.profiles import MarketProfile, get_profile
from l2vol.data.quality import (
    MAX_EXAMPLES,
    DateQuality,
    FileQuality,
    Mode,
    QualitySummary,
    TableQuality,
    rules_for,
    write_date_report,
    write_index_report,
)
from l2vol.data.rules import RULES_BY_NAME
from l2vol.progress import Progress, ensure
from l2vol.storage import DatasetStore

log = logging.getLogger(__name__)

#: Tables the rules apply to; every other table is copied through unchanged by :func:`clean_store`.
CLEANED_TABLES = ("snapshots", "trades", "orders")
#: Tolerance (quote currency) for price comparisons: limits, crossed books, bid = ask.
PRICE_EPS = 1e-6
#: ``amount_mismatch`` fires when |amount - price x qty| exceeds this (quote currency).
AMOUNT_TOLERANCE = 0.5
AUCTION_PHASES = ("OCALL", "CCALL")

# Columns the rules read (everything else is only carried).
_RULE_COLUMNS = {
    "snapshots": ["symbol", "ts", "phase", "last_px", "upper_limit_px", "lower_limit_px", "bid_px_1", "ask_px_1"],
    "trades": ["symbol", "ts", "price", "qty", "amount", "seq"],
    "orders": ["symbol", "ts", "seq"],
}
#: Quarantine rows are encoded and written in chunks of this many rows (bounded memory when a whole
#: partition is rejected, e.g. a loader that put a day under the wrong date).
QUARANTINE_CHUNK_ROWS = 100_000
# Above this many runs of selected rows, rows are copied by a filter instead of sliced (see _rows).
_MAX_RUNS = 2_000
_NONFINITE = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


@dataclass
class _Rejected:
    """The quarantined rows of one table partition, kept as Arrow until written (JSON is encoded per chunk)."""

    table: str
    raw: pa.Table  # the rejected rows exactly as read (all source columns)
    symbol: pa.ChunkedArray
    ts: pa.ChunkedArray
    source: pa.Array
    row: pa.Array
    rule: pa.Array
    detail: pa.Array

    def chunks(self, chunk_rows: int):
        for lo in range(0, self.raw.num_rows, chunk_rows):
            m = min(chunk_rows, self.raw.num_rows - lo)
            raw = pl.from_arrow(self.raw.slice(lo, m))
            assert isinstance(raw, pl.DataFrame)
            arrays = [
                pa.array([self.table] * m, pa.string()),
                self.source.slice(lo, m),
                self.row.slice(lo, m),
                self.rule.slice(lo, m),
                self.detail.slice(lo, m),
                self.symbol.slice(lo, m),
                self.ts.slice(lo, m),
                _records_json(raw).to_arrow().cast(pa.string()),
            ]
            yield pa.Table.from_arrays(arrays, schema=S.QUARANTINE)


@dataclass
class TableCleaning:
    """Result of :func:`clean_table` for one table partition.

    ``kept``: the kept rows (repairs applied) in the canonical schema, grouped by symbol with each
    symbol's rows in arrival order (see the module doc); built on first access, so validation never
    copies the data.
    ``quarantine``: the rejected rows in :data:`l2vol.data.schema.QUARANTINE` form, in arrival order
    (:meth:`iter_quarantine` yields the same in bounded chunks: a record is a few KB of JSON).
    ``day_limits`` (snapshots only): symbol, upper_limit_px, lower_limit_px — the first non-null limits
    of each symbol that day, to pass to :func:`clean_table` for the same date's trades.
    """

    table: str
    quality: TableQuality
    day_limits: pl.DataFrame | None
    _repaired: pa.Table  # every input row, canonical, repairs applied
    _keep: np.ndarray  # bool per input row
    _rejected: _Rejected

    @functools.cached_property
    def quarantine(self) -> pa.Table:
        parts = list(self.iter_quarantine())
        return pa.concat_tables(parts) if parts else S.QUARANTINE.empty_table()

    def iter_quarantine(self, chunk_rows: int = QUARANTINE_CHUNK_ROWS):
        """The quarantine rows in chunks of at most ``chunk_rows``; JSON records are encoded per chunk."""
        return self._rejected.chunks(chunk_rows)

    @functools.cached_property
    def kept(self) -> pa.Table:
        return _grouped_by_symbol(_rows(self._repaired, self._keep))


# ------------------------------------------------------------------------------------------ helpers
def _as_date(d: dt.date | str) -> dt.date:
    return d if isinstance(d, dt.date) else dt.date.fromisoformat(str(d))


def _rows(table: pa.Table, mask: np.ndarray) -> pa.Table:
    """The rows of ``table`` where ``mask`` is True, in order.

    Few runs of selected rows (the usual case: a handful of rejects, or a whole rejected partition) are
    zero-copy slices, so no second copy of a large partition is made; many runs are filtered column by
    column (much faster than ``Table.filter`` on wide chunked tables).
    """
    if mask.all():
        return table
    edges = np.flatnonzero(np.diff(np.concatenate([[False], mask, [False]]).astype(np.int8)))
    if len(edges) // 2 <= _MAX_RUNS:
        runs = [table.slice(a, b - a) for a, b in zip(edges[::2], edges[1::2], strict=True)]
        return pa.concat_tables(runs) if runs else table.slice(0, 0)
    arr = pa.array(mask)
    return pa.Table.from_arrays([pc.filter(c, arr) for c in table.columns], schema=table.schema)


def _grouped_by_symbol(table: pa.Table) -> pa.Table:
    """``table`` with its rows grouped by ascending symbol, each symbol's rows in their order in ``table``
    (a stable sort on ``symbol`` alone); ``table`` itself when it is grouped already."""
    if table.num_rows < 2 or pl.from_arrow(table.column("symbol")).is_sorted():
        return table
    order = pc.sort_indices(table.select(["symbol"]), sort_keys=[("symbol", "ascending")])  # stable
    return table.take(order)


def _s(expr: pl.Expr) -> pl.Expr:
    """A value as text for a detail message (shortest round-trip form for floats)."""
    return expr.cast(pl.String).fill_null("null")


def _ns_of_day(t: dt.time) -> int:
    return ((t.hour * 60 + t.minute) * 60 + t.second) * 1_000_000_000 + t.microsecond * 1000


def _records_json(frame: pl.DataFrame) -> pl.Series:
    """Each row of ``frame`` as a JSON object (keys in column order), vectorized.

    Floats are written in their shortest round-trip form; NaN and ±infinity (which JSON lacks) as the
    strings "NaN", "Infinity", "-Infinity" (the proto3 JSON convention); timestamps as ISO 8601 with
    nanoseconds and offset.
    """
    special = {
        name
        for name, dtype in frame.schema.items()
        if dtype.is_float() and frame.select(pl.col(name).is_nan().any() | pl.col(name).is_infinite().any()).item()
    }
    frags: list[pl.Expr] = []
    run: list[str] = []  # consecutive columns that plain JSON encoding handles: one struct for all of them

    def flush() -> None:
        if run:
            frags.append(pl.struct(run).struct.json_encode().str.strip_prefix("{").str.strip_suffix("}"))
            run.clear()

    for name in frame.columns:
        if name not in special:
            run.append(name)
            continue
        flush()
        col, key = pl.col(name), json.dumps(name)
        frags.append(
            pl.when(col.is_nan())
            .then(pl.lit(f'{key}:"NaN"'))
            .when(col == float("inf"))
            .then(pl.lit(f'{key}:"Infinity"'))
            .when(col == float("-inf"))
            .then(pl.lit(f'{key}:"-Infinity"'))
            .otherwise(pl.struct(col).struct.json_encode().str.strip_prefix("{").str.strip_suffix("}"))
        )
    flush()
    body = pl.concat_str(frags, separator=",")
    return frame.select(pl.concat_str([pl.lit("{"), body, pl.lit("}")]).alias("record")).to_series()


def restore_records(quarantine: pa.Table, table: str) -> pa.Table:
    """Decode the ``record`` JSON of the quarantine rows of ``table`` back into canonical rows.

    Values round-trip exactly (floats, NaN, nanosecond timestamps). Rows come back in the quarantine
    table's order; columns outside the canonical schema are not returned.
    """
    schema = S.schema_for(table)
    mask = pc.equal(quarantine.column("table"), table)
    records = quarantine.filter(mask).column("record").to_pylist()
    rows = [json.loads(r) for r in records]
    arrays = []
    for f in schema:
        vals = [row.get(f.name) for row in rows]
        if pa.types.is_timestamp(f.type):
            ts = pd.to_datetime(pd.Series(vals, dtype=object), utc=True, format="ISO8601")
            arrays.append(pa.array(ts, from_pandas=True).cast(f.type))
            continue
        if pa.types.is_floating(f.type):
            vals = [_NONFINITE[v] if isinstance(v, str) and v in _NONFINITE else v for v in vals]
        arrays.append(pa.array(vals, type=f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


# ------------------------------------------------------------------------------------- rule engine
# A rule evaluator returns (rows breaking the rule, rows it could not evaluate or None, detail builder).
# The detail builder maps the frame of the affected rows to one message per row.
_Eval = tuple[np.ndarray, np.ndarray | None, Callable[[pl.DataFrame], pl.Series]]


class _TableRules:
    """The rules of one table partition. ``df`` holds only the columns the rules read (NaN → null)."""

    def __init__(
        self,
        table: str,
        canon: pa.Table,
        profile: MarketProfile,
        date: dt.date,
        day_limits: pl.DataFrame | None,
        source_names: list[str],
        file_idx: np.ndarray,
        row_in_file: np.ndarray,
    ):
        self.table = table
        self.canon = canon
        self.profile = profile
        self.date = date
        self.tz = profile.timezone
        self.source_names = source_names
        self.file_idx = file_idx
        self.row_in_file = row_in_file
        n = canon.num_rows
        df = pl.from_arrow(canon.select(_RULE_COLUMNS[table]))
        assert isinstance(df, pl.DataFrame)
        df = df.with_columns(
            [pl.col(c).fill_nan(None) for c, t in df.schema.items() if t.is_float()]
            + [pl.Series("_i", np.arange(n, dtype=np.int64))]
        )
        local = pl.col("ts").dt.convert_time_zone(self.tz)
        df = df.with_columns(_ldate=local.dt.date(), _tod=local.dt.time().cast(pl.Int64))
        if table == "snapshots":
            clock = pl.lit(None, dtype=pl.String)
            for s in reversed(profile.sessions_for(date)):
                a, b = _ns_of_day(s.start), _ns_of_day(s.end)
                clock = pl.when((pl.col("_tod") >= a) & (pl.col("_tod") < b)).then(pl.lit(s.phase)).otherwise(clock)
            df = df.with_columns(
                _phase=pl.coalesce(pl.col("phase"), clock),
                _bid_ok=(pl.col("bid_px_1") > 0).fill_null(False),
                _ask_ok=(pl.col("ask_px_1") > 0).fill_null(False),
            )
            self.day_limits = (
                df.filter(pl.col("symbol").is_not_null())
                .group_by("symbol", maintain_order=True)
                .agg(
                    upper_limit_px=pl.col("upper_limit_px").drop_nulls().first(),
                    lower_limit_px=pl.col("lower_limit_px").drop_nulls().first(),
                )
            )
            day_limits = self.day_limits
        else:
            self.day_limits = None
        if table in ("snapshots", "trades"):
            if day_limits is None:
                df = df.with_columns(_day_upper=pl.lit(None, pl.Float64), _day_lower=pl.lit(None, pl.Float64))
            else:
                lim = day_limits.select(
                    "symbol",
                    _day_upper=pl.col("upper_limit_px").cast(pl.Float64).fill_nan(None),
                    _day_lower=pl.col("lower_limit_px").cast(pl.Float64).fill_nan(None),
                )
                df = df.join(lim, on="symbol", how="left", maintain_order="left")
        self.df = df

    # helpers
    def _mask(self, expr: pl.Expr) -> np.ndarray:
        return self.df.select(expr.fill_null(False)).to_series().to_numpy()

    def _local(self, col: str) -> pl.Expr:
        return pl.col(col).dt.convert_time_zone(self.tz).dt.to_string("%H:%M:%S%.3f")

    def _ref(self, idx: pl.Series) -> tuple[pl.Series, pl.Series]:
        """(row, source) of the rows with global indices ``idx``."""
        i = idx.to_numpy()
        return (
            pl.Series(self.row_in_file[i]),
            pl.Series(self.source_names, dtype=pl.String).gather(self.file_idx[i]),
        )

    # quarantine rules --------------------------------------------------------------------------
    def missing_key(self, reached: np.ndarray) -> _Eval:
        sym = pl.col("symbol")
        mask = self._mask(sym.is_null() | (sym.str.strip_chars() == "") | pl.col("ts").is_null())

        def detail(d: pl.DataFrame) -> pl.Series:
            return d.select(
                pl.concat_str(
                    [
                        pl.when(sym.is_null())
                        .then(pl.lit("symbol is null"))
                        .when(sym.str.strip_chars() == "")
                        .then(pl.format("symbol '{}' is blank", sym)),
                        pl.when(pl.col("ts").is_null()).then(pl.lit("ts is null")),
                    ],
                    separator="; ",
                    ignore_nulls=True,
                )
            ).to_series()

        return mask, None, detail

    def duplicate(self, reached: np.ndarray) -> _Eval:
        n = self.canon.num_rows
        dup_of = np.full(n, -1, dtype=np.int64)
        unchecked = None
        if self.table == "snapshots":
            key = pl.struct("symbol", "ts").is_duplicated() & pl.Series(reached)
            cand = np.flatnonzero(self._mask(key))
            if len(cand):
                full = pl.from_arrow(self.canon.take(pa.array(cand)))
                assert isinstance(full, pl.DataFrame)
                cols = full.columns
                first = full.with_columns(_i=pl.Series(cand)).select(pl.col("_i").min().over(cols)).to_series()
                dup_of[cand] = first.to_numpy()
        else:
            # Window expressions cannot hold row masks, so the mask is materialized as a column first.
            ok = reached & self._mask(pl.col("seq").is_not_null())
            first = (
                self.df.with_columns(_cand=pl.when(pl.Series(ok)).then(pl.col("_i")))
                .select(pl.col("_cand").min().over("symbol", "seq"))
                .to_series()
            )
            dup_of[ok] = first.to_numpy()[ok]
            unchecked = reached & ~ok
        mask = (dup_of >= 0) & (dup_of != np.arange(n))
        self.df = self.df.with_columns(_dup_of=pl.Series(dup_of))

        def detail(d: pl.DataFrame) -> pl.Series:
            row, src = self._ref(d["_dup_of"])
            d = d.with_columns(_ref_row=row, _ref_src=src)
            if self.table == "snapshots":
                msg = pl.format("same symbol, ts and content as row {} of {}", "_ref_row", "_ref_src")
            else:
                msg = pl.format(
                    "seq {} of {} already received in row {} of {}", "seq", "symbol", "_ref_row", "_ref_src"
                )
            return d.select(msg).to_series()

        return mask, unchecked, detail

    def out_of_session(self, reached: np.ndarray) -> _Eval:
        tod = pl.col("_tod")
        in_session = pl.lit(False)
        for s in self.profile.sessions_for(self.date):
            in_session = in_session | ((tod >= _ns_of_day(s.start)) & (tod < _ns_of_day(s.end)))
        wrong_day = pl.col("_ldate") != self.date
        mask = self._mask(pl.Series(reached) & (wrong_day | ~in_session))
        tz, name, day = self.tz, self.profile.name, self.date.isoformat()

        def detail(d: pl.DataFrame) -> pl.Series:
            return d.select(
                pl.when(wrong_day)
                .then(pl.format(f"local date {{}} ({tz}) is not the partition date {day}", _s(pl.col("_ldate"))))
                .otherwise(
                    pl.format(f"local time {{}} ({tz}) is outside every session of profile {name}", self._local("ts"))
                )
            ).to_series()

        return mask, None, detail

    def out_of_order(self, reached: np.ndarray) -> _Eval:
        key = "ts" if self.table == "snapshots" else "seq"
        eligible = pl.Series(reached) & pl.col(key).is_not_null()
        # Running max over earlier eligible rows of the symbol: rows removed by earlier rules are masked
        # to null (cum_max skips them, forward_fill carries the max over them), then shifted by one row.
        self.df = self.df.with_columns(_okey=pl.when(eligible).then(pl.col(key)))
        self.df = self.df.with_columns(_prev=pl.col("_okey").cum_max().forward_fill().shift(1).over("symbol"))
        mask = self._mask(eligible & (pl.col(key) < pl.col("_prev")))
        unchecked = reached & ~self._mask(pl.col(key).is_not_null()) if key == "seq" else None

        def detail(d: pl.DataFrame) -> pl.Series:
            if key == "ts":
                msg = pl.format(
                    "ts {} is earlier than {} already received for {}",
                    self._local("ts"),
                    self._local("_prev"),
                    "symbol",
                )
            else:
                msg = pl.format("seq {} is below seq {} already received for {}", "seq", "_prev", "symbol")
            return d.select(msg).to_series()

        return mask, unchecked, detail

    def non_positive_price(self, reached: np.ndarray) -> _Eval:
        if self.table == "snapshots":
            mask = self._mask(pl.col("last_px") <= 0)

            def detail(d: pl.DataFrame) -> pl.Series:
                return d.select(pl.format("last_px {} <= 0", _s(pl.col("last_px")))).to_series()

            return mask, None, detail
        price, qty = pl.col("price"), pl.col("qty")
        mask = self._mask(price.is_null() | (price <= 0) | qty.is_null() | (qty <= 0))

        def detail_trades(d: pl.DataFrame) -> pl.Series:
            return d.select(
                pl.concat_str(
                    [
                        pl.when(price.is_null())
                        .then(pl.lit("price is missing (null or NaN)"))
                        .when(price <= 0)
                        .then(pl.format("price {} <= 0", _s(price))),
                        pl.when(qty.is_null())
                        .then(pl.lit("qty is missing"))
                        .when(qty <= 0)
                        .then(pl.format("qty {} <= 0", _s(qty))),
                    ],
                    separator="; ",
                    ignore_nulls=True,
                )
            ).to_series()

        return mask, None, detail_trades

    def price_outside_limits(self, reached: np.ndarray) -> _Eval:
        price, up, lo = pl.col("price"), pl.col("_day_upper"), pl.col("_day_lower")
        above, below = price > up + PRICE_EPS, price < lo - PRICE_EPS
        mask = self._mask(above | below)
        unchecked = reached & self._mask(up.is_null() & lo.is_null())

        def detail(d: pl.DataFrame) -> pl.Series:
            return d.select(
                pl.when(above)
                .then(pl.format("price {} > upper_limit_px {} of the day", _s(price), _s(up)))
                .otherwise(pl.format("price {} < lower_limit_px {} of the day", _s(price), _s(lo)))
            ).to_series()

        return mask, unchecked, detail

    def crossed_book(self, reached: np.ndarray) -> _Eval:
        bid, ask = pl.col("bid_px_1"), pl.col("ask_px_1")
        crossed = (pl.col("_phase") == "TRADE") & pl.col("_bid_ok") & pl.col("_ask_ok") & (ask <= bid + PRICE_EPS)
        mask = self._mask(crossed)

        def detail(d: pl.DataFrame) -> pl.Series:
            return d.select(pl.format("ask_px_1 {} <= bid_px_1 {} (crossed book)", _s(ask), _s(bid))).to_series()

        return mask, None, detail

    # repair rules ------------------------------------------------------------------------------
    def amount_mismatch(self, reached: np.ndarray) -> _Eval:
        amount, product = pl.col("amount"), pl.col("price") * pl.col("qty").cast(pl.Float64)
        mask = reached & self._mask(amount.is_null() | ((amount - product).abs() > AMOUNT_TOLERANCE))

        def detail(d: pl.DataFrame) -> pl.Series:
            return d.select(
                pl.format(
                    "amount {} recomputed as price {} x qty {} = {}",
                    _s(amount),
                    _s(pl.col("price")),
                    _s(pl.col("qty")),
                    _s(product),
                )
            ).to_series()

        return mask, None, detail

    # flag rules --------------------------------------------------------------------------------
    def limit_locked(self, reached: np.ndarray) -> _Eval:
        bid, ask = pl.col("bid_px_1"), pl.col("ask_px_1")
        up = pl.coalesce(pl.col("upper_limit_px"), pl.col("_day_upper"))
        lo = pl.coalesce(pl.col("lower_limit_px"), pl.col("_day_lower"))
        bids_only = pl.col("_bid_ok") & ~pl.col("_ask_ok") & (bid >= up - PRICE_EPS)
        asks_only = pl.col("_ask_ok") & ~pl.col("_bid_ok") & (ask <= lo + PRICE_EPS)
        mask = reached & self._mask(bids_only.fill_null(False) | asks_only.fill_null(False))

        def detail(d: pl.DataFrame) -> pl.Series:
            return d.select(
                pl.when(bids_only.fill_null(False))
                .then(pl.format("bids only, bid_px_1 {} at upper limit {}", _s(bid), _s(up)))
                .otherwise(pl.format("asks only, ask_px_1 {} at lower limit {}", _s(ask), _s(lo)))
            ).to_series()

        return mask, None, detail

    def auction_bid_eq_ask(self, reached: np.ndarray) -> _Eval:
        bid, ask = pl.col("bid_px_1"), pl.col("ask_px_1")
        cond = (
            pl.col("_phase").is_in(AUCTION_PHASES)
            & pl.col("_bid_ok")
            & pl.col("_ask_ok")
            & ((bid - ask).abs() <= PRICE_EPS)
        )
        mask = reached & self._mask(cond)

        def detail(d: pl.DataFrame) -> pl.Series:
            return d.select(pl.format("{}: bid_px_1 = ask_px_1 = {}", "_phase", _s(bid))).to_series()

        return mask, None, detail

    def halted(self, reached: np.ndarray) -> _Eval:
        mask = reached & self._mask(pl.col("phase") == "HALT")

        def detail(d: pl.DataFrame) -> pl.Series:
            return pl.Series("detail", ["phase HALT"] * d.height, dtype=pl.String)

        return mask, None, detail


# --------------------------------------------------------------------------------------- one table
def clean_table(
    table: str,
    data: pa.Table,
    *,
    date: dt.date | str,
    profile: str | MarketProfile = "ashare",
    day_limits: pl.DataFrame | pa.Table | None = None,
    sources: Sequence[tuple[str, int]] | None = None,
) -> TableCleaning:
    """Apply the cleaning rules to one date partition of ``table`` (snapshots, trades or orders).

    ``data`` holds the raw rows in arrival order. ``sources`` names the part files they came from, as
    (path, rows) in order (default: one in-memory source), so quarantine rows and the report can name
    the file and the 0-based row in it. ``day_limits`` (trades) are the day's limits per symbol, from
    :attr:`TableCleaning.day_limits` of the same date's snapshots; without them ``price_outside_limits``
    is unchecked. Pure: reads and writes nothing.
    """
    if table not in CLEANED_TABLES:
        raise ValueError(f"cleaning rules apply to {', '.join(CLEANED_TABLES)}, not to table {table!r}")
    prof = profile if isinstance(profile, MarketProfile) else get_profile(profile)
    date = _as_date(date)
    n = data.num_rows
    if not sources:
        sources = [(f"table={table}/date={date.isoformat()}/<in-memory>", n)]
    names = [s for s, _ in sources]
    counts = np.array([r for _, r in sources], dtype=np.int64)
    if int(counts.sum()) != n:
        raise ValueError(f"table={table}/date={date}: sources list {int(counts.sum())} rows but the data has {n}")
    where = names[0] if len(names) == 1 else f"table={table}/date={date.isoformat()}"

    canonical = S.schema_for(table)
    notes = []
    extra = [c for c in data.column_names if c not in canonical.names]
    missing = [f.name for f in canonical if f.name not in data.column_names]
    if extra:
        notes.append(
            f"columns outside the canonical {table} schema are not carried into the cleaned table "
            f"(quarantine records keep them): {', '.join(extra)}"
        )
    if missing:
        notes.append(f"columns missing from the source, filled with null: {', '.join(missing)}")
    try:
        canon = S.conform(data, table)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from exc
    limits = pl.DataFrame(pl.from_arrow(day_limits)) if isinstance(day_limits, pa.Table) else day_limits
    if table == "trades" and limits is None:
        notes.append("no snapshots on this date: price limits unknown, price_outside_limits unchecked")

    file_idx = np.repeat(np.arange(len(sources), dtype=np.int64), counts)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    row_in_file = np.arange(n, dtype=np.int64) - np.repeat(starts, counts)
    ev = _TableRules(table, canon, prof, date, limits, names, file_idx, row_in_file)

    rule_names = rules_for(table)
    code = np.full(n, -1, dtype=np.int64)  # index into rule_names of the rule counting the row
    removed = np.zeros(n, dtype=bool)
    done = np.zeros(n, dtype=bool)  # counted under some rule
    unchecked: dict[str, int] = {}
    detail_of: dict[str, Callable[[pl.DataFrame], pl.Series]] = {}
    for k, rule in enumerate(rule_names):
        action = RULES_BY_NAME[rule].action
        mask, unk, detail = getattr(ev, rule)(~removed if action == "quarantine" else ~done)
        hit = mask & ~done
        code[hit] = k
        done |= hit
        if action == "quarantine":
            removed |= hit
        if unk is not None:
            unchecked[rule] = int(unk.sum())
        detail_of[rule] = detail

    # Quarantine rows (all of them get a detail) and examples (first few per rule get one).
    q_idx = np.flatnonzero(removed)
    q_details = np.empty(len(q_idx), dtype=object)
    examples: dict[str, list[dict]] = {}
    q_codes = code[q_idx]
    for k, rule in enumerate(rule_names):
        idx = np.flatnonzero(code == k)
        if not len(idx):
            continue
        quarantine_rule = RULES_BY_NAME[rule].action == "quarantine"
        shown = idx if quarantine_rule else idx[:MAX_EXAMPLES]
        sub = ev.df[shown]
        msgs = detail_of[rule](sub).to_list()
        if quarantine_rule:
            q_details[q_codes == k] = msgs
        times = sub.select(pl.col("ts").dt.convert_time_zone(ev.tz).dt.to_string("%Y-%m-%d %H:%M:%S%.3f"))
        examples[rule] = [
            {"source": names[file_idx[i]], "row": int(row_in_file[i]), "symbol": s, "time": t, "detail": m}
            for i, s, t, m in zip(
                shown[:MAX_EXAMPLES],
                sub["symbol"].to_list()[:MAX_EXAMPLES],
                times.to_series().to_list()[:MAX_EXAMPLES],
                msgs[:MAX_EXAMPLES],
                strict=True,
            )
        ]

    keyed = _rows(canon.select(["symbol", "ts"]), removed)
    rejected = _Rejected(
        table=table,
        raw=_rows(data, removed),
        symbol=keyed.column("symbol"),
        ts=keyed.column("ts"),
        source=pa.array(names, pa.string()).take(pa.array(file_idx[q_idx])),
        row=pa.array(row_in_file[q_idx], pa.int64()),
        rule=pa.array(rule_names, pa.string()).take(pa.array(q_codes)),
        detail=pa.array(q_details.tolist(), pa.string()),
    )

    repaired_input = canon
    if table == "trades" and (code == rule_names.index("amount_mismatch")).any():
        fix = pa.array(code == rule_names.index("amount_mismatch"))
        product = pc.multiply(canon.column("price"), pc.cast(canon.column("qty"), pa.float64()))
        amount = pc.if_else(fix, product, canon.column("amount"))
        repaired_input = canon.set_column(canon.schema.get_field_index("amount"), canonical.field("amount"), amount)

    # Per-file counts: one bincount over (file, rule).
    width = len(rule_names) + 1
    grid = np.bincount(file_idx * width + (code + 1), minlength=len(sources) * width).reshape(len(sources), width)
    actions = [RULES_BY_NAME[r].action for r in rule_names]

    def by_action(row: np.ndarray, action: str) -> int:
        return int(sum(row[k + 1] for k, a in enumerate(actions) if a == action))

    files = [
        FileQuality(
            source=names[f],
            rows_in=int(counts[f]),
            kept=int(counts[f]) - by_action(grid[f], "quarantine"),
            quarantined=by_action(grid[f], "quarantine"),
            repaired=by_action(grid[f], "repair"),
            flagged=by_action(grid[f], "flag"),
            by_rule={r: int(grid[f][k + 1]) for k, r in enumerate(rule_names)},
        )
        for f in range(len(sources))
    ]
    totals = grid.sum(axis=0)
    quality = TableQuality(
        table=table,
        rows_in=n,
        kept=n - int(removed.sum()),
        quarantined=len(q_idx),
        repaired=by_action(totals, "repair"),
        flagged=by_action(totals, "flag"),
        counts={r: int(totals[k + 1]) for k, r in enumerate(rule_names)},
        unchecked=unchecked,
        files=files,
        examples=examples,
        notes=notes,
    )
    quality.check_invariant()
    return TableCleaning(table, quality, ev.day_limits, repaired_input, ~removed, rejected)


# ------------------------------------------------------------------------------------------ stores
def clean_store(
    src: DatasetStore,
    dst: DatasetStore,
    *,
    profile: str = "ashare",
    start: dt.date | str | None = None,
    end: dt.date | str | None = None,
    progress: Progress | None = None,
) -> QualitySummary:
    """Clean every date in [start, end] of ``src`` into ``dst``, one date at a time.

    For snapshots, trades and orders: the kept (and repaired) rows are written to ``dst`` under the same
    table and date in the canonical schema; the rejected rows go to ``dst``'s ``quarantine`` table (a
    ``quarantine`` partition already in ``src`` is carried over first). Every other table (universe,
    truth, bars_1d, ...) is copied unchanged. The data-quality report (per date and the index) is written
    under ``dst``'s ``reports/quality/``. Re-running on the same input rewrites identical partitions.
    """
    if (type(src.fs), src.root) == (type(dst.fs), dst.root):
        raise ValueError(f"{src.location()}: cleaning in place would overwrite the raw data; write to another store")
    return _run(src, dst, dst, "clean", profile, start, end, progress)


def validate_store(
    src: DatasetStore,
    *,
    profile: str = "ashare",
    start: dt.date | str | None = None,
    end: dt.date | str | None = None,
    report_store: DatasetStore | None = None,
    progress: Progress | None = None,
) -> QualitySummary:
    """Evaluate the cleaning rules on ``src`` without writing data; write the report to ``report_store``
    (default: ``src``) under ``reports/quality/``. Counts are exactly what :func:`clean_store` would do."""
    rs = src if report_store is None else report_store
    return _run(src, None, rs, "validate", profile, start, end, progress)


def _run(
    src: DatasetStore,
    dst: DatasetStore | None,
    report_store: DatasetStore,
    mode: Mode,
    profile: str,
    start: dt.date | str | None,
    end: dt.date | str | None,
    progress: Progress | None,
) -> QualitySummary:
    prof = get_profile(profile)
    prog = ensure(progress)
    tables = src.list_tables()
    cleaned = [t for t in CLEANED_TABLES if t in tables]
    carried = [t for t in tables if t not in CLEANED_TABLES] if dst is not None else []
    dates_of = {t: set(src.list_dates(t, start, end)) for t in cleaned + carried}
    clean_dates = set().union(*(dates_of[t] for t in cleaned)) if cleaned else set()
    if not clean_dates:
        span = f"between {start or 'the first'} and {end or 'the last'} date"
        raise ValueError(f"{src.location()}: no committed snapshots, trades or orders partitions {span}")
    dates = sorted(set().union(*dates_of.values()))

    summary = QualitySummary(
        mode=mode,
        profile=prof.name,
        source=src.location(),
        destination=dst.location() if dst is not None else None,
        report_store=report_store.location(),
    )
    prog.task(mode, len(dates))
    for d in dates:
        dq = DateQuality(date=d, mode=mode, profile=prof.name)
        limits = None
        q_parts: list[_Rejected] = []
        for t in cleaned:
            if d not in dates_of[t]:
                continue
            res, man = _clean_partition(src, t, d, prof, limits)
            if t == "snapshots":
                limits = res.day_limits
            if dst is not None:
                info = dst.write_partition(
                    t, d, res.kept, schema=S.schema_for(t), metadata=_lineage(src, man, prof, res.quality)
                )
                if info.rows != res.quality.kept:
                    raise RuntimeError(
                        f"cleaning invariant violated: table={t}/date={d} wrote {info.rows} rows, "
                        f"the report counts {res.quality.kept} kept"
                    )
            q_parts.append(res._rejected)
            dq.tables[t] = res.quality
            del res  # bounded memory: one table partition in memory at a time
        if dst is not None:
            prior = None
            if "quarantine" in carried and d in dates_of["quarantine"]:
                prior = S.conform(src.read_partition("quarantine", d), "quarantine")
                dq.notes.append(f"quarantine rows already in the source, carried over unchanged: {prior.num_rows:,}")
            if q_parts or prior is not None:
                q_rows = sum(r.raw.num_rows for r in q_parts) + (prior.num_rows if prior is not None else 0)
                chunks = itertools.chain(
                    [prior] if prior is not None else [], *(r.chunks(QUARANTINE_CHUNK_ROWS) for r in q_parts)
                )
                info = dst.write_partition(
                    "quarantine",
                    d,
                    chunks,
                    schema=S.QUARANTINE,
                    metadata={"written_by": "l2vol.data.cleaning", "profile": prof.name, "rows": q_rows},
                    max_rows_per_file=QUARANTINE_CHUNK_ROWS,
                )
                if info.rows != q_rows:
                    raise RuntimeError(
                        f"cleaning invariant violated: quarantine/date={d} wrote {info.rows} of {q_rows} rows"
                    )
            for t in carried:
                if t == "quarantine" or d not in dates_of[t]:
                    continue
                tbl = src.read_partition(t, d)
                man = src.read_manifest(t, d) or {}
                dst.write_partition(t, d, tbl, schema=tbl.schema, metadata=man.get("metadata") or {})
                dq.copied[t] = tbl.num_rows
        write_date_report(report_store, dq)
        summary.dates.append(dq)
        q = sum(tq.quarantined for tq in dq.tables.values())
        log.info("%s %s: %d rows in, %d quarantined", mode, d, sum(tq.rows_in for tq in dq.tables.values()), q)
        prog.advance(mode, 1, f"{d.isoformat()}: {q:,} rows quarantined")
    return write_index_report(report_store, summary)


def _clean_partition(
    src: DatasetStore, table: str, date: dt.date, prof: MarketProfile, limits: pl.DataFrame | None
) -> tuple[TableCleaning, dict]:
    """Clean one committed partition; returns the result and the source manifest it was read under."""
    man = src.read_manifest(table, date)
    if man is None:  # listed a moment ago: another writer removed it
        raise ValueError(f"{src.location()}: table={table}/date={date} vanished while cleaning")
    data = src.read_partition(table, date)
    sources = [(f"table={table}/date={date.isoformat()}/{f['name']}", int(f["rows"])) for f in man["files"]]
    listed = sum(r for _, r in sources)
    if data.num_rows != listed:
        raise ValueError(
            f"{src.display(src.partition_path(table, date))}: the manifest lists {listed} rows "
            f"but its files hold {data.num_rows}"
        )
    return clean_table(table, data, date=date, profile=prof, day_limits=limits, sources=sources), man


def _lineage(src: DatasetStore, man: dict, prof: MarketProfile, q: TableQuality) -> dict:
    """Manifest metadata of a cleaned partition: where it came from and what cleaning did (deterministic)."""
    return {
        "cleaned_by": "l2vol.data.cleaning",
        "profile": prof.name,
        "source": {
            "store": src.location(),
            "files": [{"name": f["name"], "rows": f["rows"], "sha256": f.get("sha256")} for f in man["files"]],
        },
        "rules": rules_for(q.table),
        "rows_in": q.rows_in,
        "rows_kept": q.kept,
        "rows_quarantined": q.quarantined,
        "rows_repaired": q.repaired,
        "rows_flagged": q.flagged,
        "counts": {r: n for r, n in q.counts.items() if n},
    }
