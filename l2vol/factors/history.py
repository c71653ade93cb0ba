"""History factors and the compact daily summary they are computed from.

Multi-day factors never re-read old partitions: the engine carries a :class:`DailyState` from one
trading date to the next, holding for the last :data:`HISTORY_DAYS` store dates each symbol's bucket RVs
(the only input of HAR lags, seasonal RV and cross-day intraday lags) and, for VPIN, the previous day's
volume and the last volume-bucket imbalances. The state of each date is also written to the
``factor_state`` table so an incremental run (``start`` = today) resumes without replaying history.

"Previous dates" are the store's trading dates (the dates of the ``snapshots`` table), not the symbol's
own: a symbol absent on one of them has no value for it, and a window that misses a date is null.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import pyarrow as pa

from l2vol.factors.realized import MID_INPUTS
from l2vol.factors.registry import Warmup, factor

if TYPE_CHECKING:
    from l2vol.factors.engine import DayFrames

#: Longest look-back of the history factors, in trading dates (the HAR monthly window).
HISTORY_DAYS = 22
HAR_WINDOWS = {"har_rv_d": 1, "har_rv_w": 5, "har_rv_m": 22}
SEASONAL_DAYS = 22
#: Schema of the persisted state: one long table per date.
STATE_SCHEMA = pa.schema(
    [
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("idx", pa.int32(), nullable=False),
        pa.field("value", pa.float64()),
    ]
)


def ordered_sums(df: pl.DataFrame, keys: list[str], order: list[str], values: list[str]) -> pl.DataFrame:
    """``keys``, ``n`` and the sum of each of ``values`` over every group of ``keys``, added up in the
    order of ``order`` with numpy: bit-identical results on every run (a parallel hash aggregation may
    combine partial sums in a different order from one run to the next)."""
    df = df.sort([*keys, *order], maintain_order=True)
    if df.height == 0:
        return df.select(keys).with_columns(
            pl.lit(0, pl.Int64).alias("n"), *(pl.col(v).cast(pl.Float64) for v in values)
        )
    change = pl.any_horizontal([pl.col(k) != pl.col(k).shift(1) for k in keys]).fill_null(True)
    starts = np.flatnonzero(df.select(change).to_series().to_numpy())
    sums = [pl.Series(v, np.add.reduceat(df[v].cast(pl.Float64).to_numpy(), starts)) for v in values]
    return df.select(keys)[starts].with_columns(
        pl.Series("n", np.diff(np.r_[starts, df.height]), dtype=pl.Int64), *sums
    )


_BUCKET_RV = {"symbol": pl.String, "date": pl.Date, "bucket": pl.Int16, "rv": pl.Float64}
_VOLUME = {"symbol": pl.String, "date": pl.Date, "volume": pl.Float64}
_TAIL = {"symbol": pl.String, "pos": pl.Int32, "imbalance": pl.Float64}


@dataclass(frozen=True)
class DailyState:
    """Per-symbol summary of the last ``HISTORY_DAYS`` store dates, oldest first.

    ``bucket_rv``: symbol, date, bucket, rv (every bucket of every symbol present that date);
    ``volume``: symbol, date, continuous-session volume (shares; only when trade factors are built);
    ``vpin_tail``: symbol, pos, imbalance (last VPIN volume buckets after the latest date).
    """

    dates: tuple[dt.date, ...] = ()
    bucket_rv: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=_BUCKET_RV))
    volume: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=_VOLUME))
    vpin_tail: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=_TAIL))

    def advance(
        self,
        date: dt.date,
        bucket_rv: pl.DataFrame,
        volume: pl.DataFrame | None,
        vpin_tail: pl.DataFrame | None,
    ) -> DailyState:
        """The state after ``date``: append its summary, drop dates beyond the look-back."""
        if self.dates and date <= self.dates[-1]:
            raise ValueError(f"daily state: {date} is not after the last summarised date {self.dates[-1]}")
        dates = (*self.dates, date)[-HISTORY_DAYS:]
        keep = pl.col("date").is_in(list(dates))
        brv = pl.concat([self.bucket_rv, _with_date(bucket_rv, date, _BUCKET_RV)]).filter(keep)
        vol = self.volume if volume is None else pl.concat([self.volume, _with_date(volume, date, _VOLUME)])
        tail = self.vpin_tail if vpin_tail is None else vpin_tail.select(list(_TAIL)).cast(_TAIL)
        return DailyState(dates, brv, vol.filter(keep), tail)

    def encoded(self, symbol_type: pl.DataType) -> DailyState:
        """A read-only view with ``symbol`` cast to ``symbol_type`` (the day's Enum); symbols absent from
        it are dropped (they have no rows that day)."""

        def enc(df: pl.DataFrame) -> pl.DataFrame:
            return df.with_columns(pl.col("symbol").cast(symbol_type, strict=False)).filter(
                pl.col("symbol").is_not_null()
            )

        return DailyState(self.dates, enc(self.bucket_rv), enc(self.volume), enc(self.vpin_tail))

    @property
    def last_date(self) -> dt.date | None:
        return self.dates[-1] if self.dates else None

    def daily_rv(self) -> pl.DataFrame:
        """symbol, date, rv: the continuous-session RV of each symbol and date (sum of its bucket RVs)."""
        return ordered_sums(self.bucket_rv, ["symbol", "date"], ["bucket"], ["rv"]).drop("n")

    def previous_volume(self) -> pl.DataFrame:
        """symbol, volume of the latest date (empty before the first)."""
        if not self.dates:
            return self.volume.head(0).select("symbol", "volume")
        return self.volume.filter(pl.col("date") == self.dates[-1]).select("symbol", "volume")

    # ----------------------------------------------------------- persistence
    def partition(self) -> pa.Table:
        """The latest date's summary (bucket RVs, volume) and the VPIN tail after it, as a long table."""
        d = self.dates[-1]
        parts = [
            self.bucket_rv.filter(pl.col("date") == d).select(
                "symbol",
                pl.lit("bucket_rv").alias("kind"),
                pl.col("bucket").cast(pl.Int32).alias("idx"),
                pl.col("rv").alias("value"),
            ),
            self.volume.filter(pl.col("date") == d).select(
                "symbol",
                pl.lit("volume").alias("kind"),
                pl.lit(0, pl.Int32).alias("idx"),
                pl.col("volume").alias("value"),
            ),
            self.vpin_tail.select(
                "symbol",
                pl.lit("vpin_tail").alias("kind"),
                pl.col("pos").alias("idx"),
                pl.col("imbalance").alias("value"),
            ),
        ]
        return pl.concat(parts).sort("kind", "symbol", "idx").to_arrow().cast(STATE_SCHEMA)

    @classmethod
    def from_partitions(cls, parts: list[tuple[dt.date, pa.Table]]) -> DailyState:
        """Rebuild the state from the persisted partitions of consecutive store dates (oldest first)."""
        state = cls()
        for d, tbl in parts:
            df = pl.from_arrow(tbl)
            brv = df.filter(pl.col("kind") == "bucket_rv").select(
                "symbol", pl.col("idx").cast(pl.Int16).alias("bucket"), pl.col("value").alias("rv")
            )
            vol = df.filter(pl.col("kind") == "volume").select("symbol", pl.col("value").alias("volume"))
            tail = df.filter(pl.col("kind") == "vpin_tail").select(
                "symbol", pl.col("idx").alias("pos"), pl.col("value").alias("imbalance")
            )
            state = state.advance(d, brv, vol, tail)
        return state


def _with_date(df: pl.DataFrame, date: dt.date, schema: dict) -> pl.DataFrame:
    return df.with_columns(pl.lit(date).alias("date")).select(list(schema)).cast(schema)


# ------------------------------------------------------------------ factors


def _per_symbol(panel: pl.DataFrame, values: pl.DataFrame, name: str) -> pl.DataFrame:
    return panel.select("symbol", "bucket").join(values.rename({"value": name}), on="symbol", how="left")


def _har(day: DayFrames, panel: pl.DataFrame, name: str) -> pl.DataFrame:
    window = HAR_WINDOWS[name]
    dates = list(day.state.dates[-window:])
    if len(dates) < window:
        return panel.select("symbol", "bucket", pl.lit(None, pl.Float64).alias(name))
    daily = day.state.daily_rv().filter(pl.col("date").is_in(dates))
    vals = (
        ordered_sums(daily, ["symbol"], ["date"], ["rv"])
        .filter(pl.col("n") == window)
        .select("symbol", (pl.col("rv") / window).alias("value"))
    )
    return _per_symbol(panel, vals, name)


@factor(
    "har_rv_d",
    family="history",
    stage="frame",
    unit="log-return^2 per day",
    inputs=MID_INPUTS,
    warmup=Warmup(days=1),
)
def har_rv_daily(day: DayFrames, panel: pl.DataFrame) -> pl.DataFrame:
    """HAR daily lag: the previous store date's continuous-session RV of the symbol (sum of its bucket
    RVs, overnight and lunch returns excluded); constant through the day; null if the symbol was absent."""
    return _har(day, panel, "har_rv_d")


@factor(
    "har_rv_w",
    family="history",
    stage="frame",
    unit="log-return^2 per day",
    inputs=MID_INPUTS,
    warmup=Warmup(days=5),
)
def har_rv_weekly(day: DayFrames, panel: pl.DataFrame) -> pl.DataFrame:
    """HAR weekly lag: the mean daily continuous-session RV over the previous 5 store dates; constant
    through the day; null unless the symbol has all 5 dates."""
    return _har(day, panel, "har_rv_w")


@factor(
    "har_rv_m",
    family="history",
    stage="frame",
    unit="log-return^2 per day",
    inputs=MID_INPUTS,
    warmup=Warmup(days=22),
)
def har_rv_monthly(day: DayFrames, panel: pl.DataFrame) -> pl.DataFrame:
    """HAR monthly lag: the mean daily continuous-session RV over the previous 22 store dates; constant
    through the day; null unless the symbol has all 22 dates."""
    return _har(day, panel, "har_rv_m")


def _seasonal(day: DayFrames) -> pl.DataFrame:
    dates = list(day.state.dates[-SEASONAL_DAYS:])
    if len(dates) < SEASONAL_DAYS:
        return day.state.bucket_rv.head(0).select("symbol", "bucket", pl.col("rv").alias("value"))
    recent = day.state.bucket_rv.filter(pl.col("date").is_in(dates))
    return (
        ordered_sums(recent, ["symbol", "bucket"], ["date"], ["rv"])
        .filter(pl.col("n") == SEASONAL_DAYS)
        .select("symbol", "bucket", (pl.col("rv") / SEASONAL_DAYS).alias("value"))
    )


@factor(
    "rv_seasonal",
    family="history",
    stage="frame",
    unit="log-return^2 per bucket",
    inputs=MID_INPUTS,
    warmup=Warmup(days=22),
)
def rv_seasonal(day: DayFrames, panel: pl.DataFrame) -> pl.DataFrame:
    """Time-of-day seasonal RV: mean RV of the same bucket (same time of day) over the previous 22 store
    dates; null unless the symbol has all 22."""
    s = _seasonal(day).rename({"value": "rv_seasonal"})
    return panel.select("symbol", "bucket").join(s, on=["symbol", "bucket"], how="left")


@factor(
    "rv_seasonal_next",
    family="history",
    stage="frame",
    unit="log-return^2 per bucket",
    inputs=MID_INPUTS,
    warmup=Warmup(days=22),
)
def rv_seasonal_next(day: DayFrames, panel: pl.DataFrame) -> pl.DataFrame:
    """Seasonal RV of the NEXT bucket (the one the next-bucket target covers; after the last bucket, the
    first of the day): mean RV of that time-of-day bucket over the previous 22 store dates."""
    s = _seasonal(day).rename({"value": "rv_seasonal_next", "bucket": "next_bucket"})
    keys = panel.select("symbol", "bucket", ((pl.col("bucket") + 1) % day.grid.n).cast(pl.Int16).alias("next_bucket"))
    return keys.join(s, on=["symbol", "next_bucket"], how="left").select("symbol", "bucket", "rv_seasonal_next")


def _clock_series(day: DayFrames, panel: pl.DataFrame) -> pl.DataFrame:
    """The previous store date's bucket RVs followed by today's, in trading-clock order per symbol."""
    last = day.state.dates[-1] if day.state.dates else None
    prev = day.state.bucket_rv.filter(pl.col("date") == last if last is not None else pl.lit(False)).select(
        "symbol", (pl.col("bucket").cast(pl.Int32) - 100_000).alias("seq"), "rv", pl.lit(None, pl.Int16).alias("bucket")
    )
    today = panel.select("symbol", pl.col("bucket").cast(pl.Int32).alias("seq"), "rv", "bucket")
    return pl.concat([prev, today]).sort("symbol", "seq")


def _clock_factor(day: DayFrames, panel: pl.DataFrame, name: str, expr: pl.Expr) -> pl.DataFrame:
    s = _clock_series(day, panel).with_columns(expr.over("symbol").alias(name))
    return s.filter(pl.col("bucket").is_not_null()).select("symbol", "bucket", name)


@factor(
    "rv_lag_1",
    family="history",
    stage="frame",
    unit="log-return^2 per bucket",
    inputs=MID_INPUTS,
    depends=("rv",),
    warmup=Warmup(buckets=1),
)
def rv_lag_1(day: DayFrames, panel: pl.DataFrame) -> pl.DataFrame:
    """RV of the previous bucket on the trading clock (the bucket ending at t - bucket; for the day's first
    bucket, the previous store date's last bucket)."""
    return _clock_factor(day, panel, "rv_lag_1", pl.col("rv").shift(1))


@factor(
    "rv_lag_2",
    family="history",
    stage="frame",
    unit="log-return^2 per bucket",
    inputs=MID_INPUTS,
    depends=("rv",),
    warmup=Warmup(buckets=2),
)
def rv_lag_2(day: DayFrames, panel: pl.DataFrame) -> pl.DataFrame:
    """RV of the bucket two buckets back on the trading clock (crossing into the previous store date)."""
    return _clock_factor(day, panel, "rv_lag_2", pl.col("rv").shift(2))


@factor(
    "rv_last_hour",
    family="history",
    stage="frame",
    unit="log-return^2 per hour",
    inputs=MID_INPUTS,
    depends=("rv",),
    warmup=Warmup(buckets=11),
)
def rv_last_hour(day: DayFrames, panel: pl.DataFrame) -> pl.DataFrame:
    """Intraday HAR term: sum of the RVs of the last hour of buckets on the trading clock (this bucket and
    the 3600 s / bucket - 1 before it, crossing the lunch break and into the previous store date)."""
    m = max(1, 3600 // day.grid.spec.seconds)
    return _clock_factor(day, panel, "rv_last_hour", pl.col("rv").rolling_sum(m))


@factor(
    "overnight_return",
    family="history",
    stage="frame",
    unit="log-return",
    inputs=("snapshots.symbol", "snapshots.ts", "snapshots.open_px", "snapshots.pre_close"),
)
def overnight_return(day: DayFrames, panel: pl.DataFrame) -> pl.DataFrame:
    """Overnight return ln(open_px / pre_close): the day's opening price over the exchange's previous
    close, which the exchange adjusts on ex-dividend dates so corporate actions do not show up as jumps.
    Taken from the first snapshot of the day that carries an opening price; null at bucket ends at or
    before that snapshot (e.g. a late open after a halt)."""
    o = day.opening.select("symbol", "open_ns", (pl.col("open_px") / pl.col("pre_close")).log().alias("value"))
    x = panel.select("symbol", "bucket", pl.col("ts").cast(pl.Int64).alias("end_ns")).join(o, on="symbol", how="left")
    return x.select(
        "symbol",
        "bucket",
        pl.when(pl.col("open_ns") < pl.col("end_ns")).then(pl.col("value")).alias("overnight_return"),
    )


@factor(
    "market_rv",
    family="history",
    stage="frame",
    unit="log-return^2 per bucket",
    inputs=MID_INPUTS,
    depends=("rv", "n_returns"),
)
def market_rv(day: DayFrames, panel: pl.DataFrame) -> pl.DataFrame:
    """Cross-sectional market RV: the mean bucket RV over all symbols of the day that have at least one
    return in the same bucket (halted and locked symbols excluded)."""
    live = panel.filter(pl.col("n_returns") > 0).select("symbol", "bucket", "rv")
    mean = ordered_sums(live, ["bucket"], ["symbol"], ["rv"]).select(
        "bucket", (pl.col("rv") / pl.col("n")).alias("market_rv")
    )
    return panel.select("symbol", "bucket").join(mean, on="bucket", how="left")
