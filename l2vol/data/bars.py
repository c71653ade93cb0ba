"""Daily bars (``bars_1d``) derived from the canonical Level2 tables, one date at a time.

For each date with ``snapshots`` or ``trades`` partitions, and each symbol in them:

* open / high / low / close / volume / amount: from the day's trades (first, max, min and last fill by
  ``ts`` then ``seq``; sums of qty and amount). A symbol without trades that date takes them from its
  last snapshot instead (open_px, high_px, low_px, last_px, cum_volume, cum_amount). The last fill is the
  closing-auction fill on SZSE and on SSE since its closing call (2018-08-20), so close is the exchange
  close there;
* vwap = amount / volume (null when volume is 0);
* pre_close, upper/lower limit: the last non-null values in the day's snapshots. When snapshots carry no
  limits, A-share limits come from the dated rule table (:func:`l2vol.data.profiles.price_limits`) using
  the universe's board, ST flag and listing date;
* suspended: no volume the whole day, or the universe says so. Universe symbols with
  ``suspended=True`` and no Level2 rows get a bar with volume 0 and null prices; other universe symbols
  without Level2 rows are counted in the summary, never invented;
* limit_up / limit_down: close at the upper / lower limit (within 1e-9). False on suspended days and for
  symbols without limits (non-A-share sources; new listings in their no-limit days), null when a limit
  is unknown;
* days_since_listing: XSHG trading days from the universe's listing_date (0 on the listing day); null
  without a universe row;
* adj_factor: null (Level2 data do not carry adjustment factors; ``bars-csv`` files may).

Bars are written through the same per-symbol merge as ingest (:mod:`l2vol.data.loaders.partitions`):
derived bars replace stored bars of the same symbols and date, other symbols' bars (e.g. from a
``bars-csv`` ingest) are kept, and re-running gives identical partitions.
"""

from __future__ import annotations

import datetime as dt
import functools
import re

import numpy as np
import polars as pl
import pyarrow as pa

from l2vol.data import schema
from l2vol.data.loaders.partitions import Source, commit_partition
from l2vol.data.profiles import ASHARE, price_limits
from l2vol.progress import Progress, ensure
from l2vol.storage import DatasetStore

SOURCE = Source("derived", "snapshots+trades+universe", "l2vol.data.bars")
_ASHARE_SYMBOL = re.compile(r"\d{6}\.(SH|SZ)")
_SSE_FIRST_SESSION = dt.date(1990, 12, 19)
_SNAP_COLS = ["symbol", "ts", "last_px", "open_px", "high_px", "low_px", "pre_close", "upper_limit_px",
              "lower_limit_px", "cum_volume", "cum_amount"]  # fmt: skip
_TRADE_COLS = ["symbol", "ts", "seq", "price", "qty", "amount"]
_UNIVERSE_COLS = ["symbol", "board", "is_st", "listing_date", "suspended"]


def derive_bars(
    store: DatasetStore,
    *,
    start: dt.date | str | None = None,
    end: dt.date | str | None = None,
    progress: Progress | None = None,
) -> dict:
    """Write ``bars_1d`` for every date in [start, end] that has snapshots or trades (see the module
    docstring for each field). Returns a JSON-able summary: dates, rows, and symbols skipped."""
    snap_dates = set(store.list_dates("snapshots", start, end))
    trade_dates = set(store.list_dates("trades", start, end))
    dates = sorted(snap_dates | trade_dates)
    if not dates:
        raise ValueError(
            f"{store.location()}: no snapshots or trades partitions between {start or 'the start'} and {end or 'the end'}"
        )
    uni_dates = set(store.list_dates("universe", dates[0], dates[-1]))
    progress = ensure(progress)
    progress.task("derive bars_1d", len(dates))
    rows = 0
    universe_without_l2 = 0
    for d in dates:
        snaps = store.read_partition("snapshots", d, columns=_SNAP_COLS) if d in snap_dates else None
        trades = store.read_partition("trades", d, columns=_TRADE_COLS) if d in trade_dates else None
        uni = store.read_partition("universe", d, columns=_UNIVERSE_COLS) if d in uni_dates else None
        bars, skipped = bars_for_date(d, snaps, trades, uni)
        universe_without_l2 += skipped
        batch = pa.RecordBatch.from_arrays(
            [bars.get_column(f.name).to_arrow().cast(f.type) for f in schema.BARS_1D], schema=schema.BARS_1D
        )
        commit_partition(
            store,
            "bars_1d",
            d,
            schema=schema.BARS_1D,
            runs=[(SOURCE, batch.num_rows)] if batch.num_rows else [],
            symbols=set(bars["symbol"].to_list()),
            batches=iter([batch]),
            metadata={"derived_from": _inputs(store, d, snap_dates, trade_dates, uni_dates)},
        )
        rows += batch.num_rows
        progress.advance("derive bars_1d", 1, d.isoformat())
    return {
        "table": "bars_1d",
        "dates": [d.isoformat() for d in dates],
        "rows": {"bars_1d": rows},
        "universe_symbols_without_level2": universe_without_l2,
    }


def _inputs(store: DatasetStore, d: dt.date, *date_sets: set) -> dict:
    """The input partitions' manifest content hashes, so a bar partition names what it was made from."""
    out = {}
    for table, dates in zip(("snapshots", "trades", "universe"), date_sets, strict=True):
        if d in dates:
            man = store.read_manifest(table, d) or {}
            out[table] = [f.get("sha256", "") for f in man.get("files", [])]
    return out


def bars_for_date(
    day: dt.date, snaps: pa.Table | None, trades: pa.Table | None, universe: pa.Table | None
) -> tuple[pl.DataFrame, int]:
    """The bars of one date (a polars frame in the bars_1d column order) and the number of universe
    symbols left out because they have neither Level2 rows nor a suspension."""
    frames = []
    if trades is not None and trades.num_rows:
        t = pl.from_arrow(trades).sort(["symbol", "ts", "seq"], nulls_last=True)
        frames.append(
            t.group_by("symbol", maintain_order=True).agg(
                t_open=pl.col("price").first(),
                t_high=pl.col("price").max(),
                t_low=pl.col("price").min(),
                t_close=pl.col("price").last(),
                t_volume=pl.col("qty").sum(),
                t_amount=pl.col("amount").fill_null(pl.col("price") * pl.col("qty")).sum(),
            )
        )
    if snaps is not None and snaps.num_rows:
        s = pl.from_arrow(snaps).sort(["symbol", "ts"])
        frames.append(
            s.group_by("symbol", maintain_order=True).agg(
                s_open=pl.col("open_px").drop_nulls().last(),
                s_high=pl.col("high_px").drop_nulls().last(),
                s_low=pl.col("low_px").drop_nulls().last(),
                s_close=pl.col("last_px").drop_nulls().last(),
                s_volume=pl.col("cum_volume").drop_nulls().last(),
                s_amount=pl.col("cum_amount").drop_nulls().last(),
                pre_close=pl.col("pre_close").drop_nulls().last(),
                upper_limit_px=pl.col("upper_limit_px").drop_nulls().last(),
                lower_limit_px=pl.col("lower_limit_px").drop_nulls().last(),
            )
        )
    l2 = frames[0] if frames else pl.DataFrame({"symbol": pl.Series([], dtype=pl.String)})
    for f in frames[1:]:
        l2 = l2.join(f, on="symbol", how="full", coalesce=True)
    for c in ("t_open", "t_high", "t_low", "t_close", "s_open", "s_high", "s_low", "s_close", "s_amount",
              "pre_close", "upper_limit_px", "lower_limit_px", "t_amount"):  # fmt: skip
        if c not in l2.columns:
            l2 = l2.with_columns(pl.lit(None, dtype=pl.Float64).alias(c))
    for c in ("t_volume", "s_volume"):
        if c not in l2.columns:
            l2 = l2.with_columns(pl.lit(None, dtype=pl.Int64).alias(c))
    has_trades = pl.col("t_volume").fill_null(0) > 0
    pick = lambda a, b: pl.when(has_trades).then(pl.col(a)).otherwise(pl.col(b))  # noqa: E731
    bars = l2.select(
        "symbol",
        open=pick("t_open", "s_open"),
        high=pick("t_high", "s_high"),
        low=pick("t_low", "s_low"),
        close=pick("t_close", "s_close"),
        volume=pick("t_volume", "s_volume").fill_null(0).cast(pl.Int64),
        amount=pick("t_amount", "s_amount").fill_null(0.0).cast(pl.Float64),
        pre_close=pl.col("pre_close"),
        upper_limit_px=pl.col("upper_limit_px"),
        lower_limit_px=pl.col("lower_limit_px"),
    )
    skipped = 0
    uni = None
    if universe is not None and universe.num_rows:
        uni = pl.from_arrow(universe).unique("symbol", keep="last", maintain_order=True)
        only_uni = uni.filter(~pl.col("symbol").is_in(bars["symbol"].to_list()))
        suspended_only = only_uni.filter(pl.col("suspended").fill_null(False))
        skipped = only_uni.height - suspended_only.height
        if suspended_only.height:
            bars = pl.concat(
                [bars, suspended_only.select("symbol", volume=pl.lit(0, pl.Int64), amount=pl.lit(0.0))],
                how="diagonal_relaxed",
            )
        bars = bars.join(uni, on="symbol", how="left")
    else:
        bars = bars.with_columns(
            board=pl.lit(None, pl.String),
            is_st=pl.lit(None, pl.Boolean),
            listing_date=pl.lit(None, pl.Date),
            suspended=pl.lit(None, pl.Boolean),
        )
    bars = _limits_and_listing(day, bars)
    bars = bars.with_columns(
        date=pl.lit(day, pl.Date),
        vwap=pl.when(pl.col("volume") > 0).then(pl.col("amount") / pl.col("volume")).otherwise(None),
        adj_factor=pl.lit(None, pl.Float64),
        suspended=(pl.col("volume") == 0) | pl.col("suspended").fill_null(False),
    )
    unlimited = ~pl.col("symbol").str.contains(_ASHARE_SYMBOL.pattern) | pl.col("no_limit") | pl.col("suspended")
    bars = bars.with_columns(
        limit_up=pl.when(unlimited).then(False).otherwise(pl.col("close") >= pl.col("upper_limit_px") - 1e-9),
        limit_down=pl.when(unlimited).then(False).otherwise(pl.col("close") <= pl.col("lower_limit_px") + 1e-9),
    )
    return bars.select(schema.BARS_1D.names).sort("symbol"), skipped


def _limits_and_listing(day: dt.date, bars: pl.DataFrame) -> pl.DataFrame:
    """Fill missing A-share limits from the rule table, and compute days_since_listing, from the
    universe columns (board, is_st, listing_date)."""
    listing = bars["listing_date"].to_list()
    dsl = [None if d is None else _days_since_listing(d, day) for d in listing]
    upper, lower, no_limit = [], [], []
    rows = zip(
        bars["symbol"].to_list(), bars["board"].to_list(), bars["is_st"].to_list(), bars["pre_close"].to_list(),
        bars["upper_limit_px"].to_list(), bars["lower_limit_px"].to_list(), dsl, strict=True,
    )  # fmt: skip
    for sym, board, st, pre, up, lo, days in rows:
        free = False
        if _ASHARE_SYMBOL.fullmatch(sym) and board is not None and days is not None and st is not None:
            lo_rule, up_rule = (None, None) if pre is None else price_limits(pre, board, st, day, days)
            free = pre is not None and up_rule is None
            if up is None and lo is None and pre is not None:
                up, lo = up_rule, lo_rule
        upper.append(up)
        lower.append(lo)
        no_limit.append(free)
    return bars.with_columns(
        upper_limit_px=pl.Series(upper, dtype=pl.Float64),
        lower_limit_px=pl.Series(lower, dtype=pl.Float64),
        days_since_listing=pl.Series(dsl, dtype=pl.Int32),
        no_limit=pl.Series(no_limit, dtype=pl.Boolean),
    )


@functools.lru_cache(maxsize=1)
def _sessions() -> np.ndarray:
    import exchange_calendars as xc  # slow import: only when a universe gives listing dates

    cal = xc.get_calendar(ASHARE.calendar, start=_SSE_FIRST_SESSION.isoformat())
    return np.array([d.date() for d in cal.sessions], dtype="datetime64[D]")


def _days_since_listing(listing: dt.date, day: dt.date) -> int | None:
    """XSHG sessions in (listing, day]; 0 on the listing day; None before listing or beyond the calendar."""
    s = _sessions()
    if day < listing or np.datetime64(day, "D") > s[-1]:
        return None
    lo = np.searchsorted(s, np.datetime64(max(listing, _SSE_FIRST_SESSION), "D"), side="left")
    hi = np.searchsorted(s, np.datetime64(day, "D"), side="right")
    return max(int(hi - lo) - 1, 0)
