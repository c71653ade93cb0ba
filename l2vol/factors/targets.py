"""Forecast targets: future realized variance, in a table no feature reads.

A target row is keyed like a feature row, (symbol, ts = t = a bucket end), and measures the *future*
RV of the same observed mid price and estimator as the ``rv`` factor (:mod:`l2vol.factors.realized`):
the sum of squared log returns between consecutive valid snapshots of the same continuous session. A
target over the window ``(t, u]`` uses only snapshots with ``t < ts <= u``: a return counts when both its
start and its end snapshot lie in the window, so the return from the last snapshot at or before ``t`` to
the first after it is left out, and a snapshot exactly at ``t`` (which no feature stamped ``t`` sees
either) is used by neither. Windows are on the trading clock: from the last morning bucket end (11:30)
the next 5 minutes are (11:30, 13:05] in wall time.

Horizons (``rv_<horizon>``, squared log return over the window, not annualised):

``next_bucket``  the next bucket, ``(t, t_next]``; null at the day's last bucket end.
``next_30min``   the next 30 minutes of trading clock; null when fewer remain before the close.
``rest_of_day``  ``(t, close]``; null at the day's last bucket end.
``next_day``     the whole continuous session of the next store date (its full-day RV); null for the
                 last date of the store or a symbol absent that date.

``zero_<horizon>`` is True when the target is exactly 0 (no price change observed in the window: a halt
or a limit lock); such rows are excluded from losses and counted by :func:`l2vol.factors.build_factors`.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from l2vol.factors.buckets import TARGET_WINDOW_SECONDS, BucketGrid
from l2vol.factors.history import ordered_sums

HORIZONS = ("next_bucket", "next_30min", "rest_of_day", "next_day")
TARGET_COLUMNS = [f"rv_{h}" for h in HORIZONS] + [f"zero_{h}" for h in HORIZONS]


def _cells(returns: pl.DataFrame, grid: BucketGrid) -> pl.DataFrame:
    """Per symbol and target cell (previous end, end]: the squared returns that start inside the cell
    (``inside``) and the one that starts at or before its left edge (``straddle``)."""
    end_ns = returns["ts"].cast(pl.Int64).to_numpy()
    cell = grid.target_cell(end_ns)
    left = grid.start_ns[0] if grid.n else 0
    edges = pl.Series("edge", [left, *grid.end_ns[:-1].tolist()], dtype=pl.Int64)
    x = returns.select("symbol", pl.col("ts_prev").cast(pl.Int64).alias("start_ns"), (pl.col("r") ** 2).alias("r2"))
    x = x.with_columns(pl.Series("cell", cell, dtype=pl.Int16)).filter(pl.col("cell") >= 0)
    x = x.with_columns(edge=edges.gather(x["cell"].cast(pl.Int64)))
    straddle = pl.col("start_ns") <= pl.col("edge")
    x = x.with_columns(
        pl.when(~straddle).then(pl.col("r2")).otherwise(0.0).alias("inside"),
        pl.when(straddle).then(pl.col("r2")).otherwise(0.0).alias("straddle"),
        pl.int_range(pl.len()).alias("row"),
    )
    return ordered_sums(x, ["symbol", "cell"], ["row"], ["inside", "straddle"]).drop("n")


def intraday_targets(returns: pl.DataFrame, grid: BucketGrid, keys: pl.DataFrame) -> pl.DataFrame:
    """Intraday targets for every (symbol, bucket) row of ``keys`` (columns symbol, bucket, ts, sorted).

    ``returns``: the day's mid-price returns (symbol, ts, ts_prev, r) of valid continuous snapshots.
    """
    n = grid.n
    m = grid.buckets_in(TARGET_WINDOW_SECONDS)
    b = np.arange(n)
    last = np.minimum(b + m, n - 1)
    per_bucket = pl.DataFrame(
        {
            "bucket": b.astype(np.int16),
            "has_next": b < n - 1,
            # a whole 30 minutes of trading clock must remain before the close
            "has_30min": (b + m <= n - 1) & (grid.tau_end[last] - grid.tau_end[b] == TARGET_WINDOW_SECONDS),
        }
    )
    cells = _cells(returns, grid).rename({"cell": "bucket"})
    x = (
        keys.select("symbol", "ts", "bucket")
        .join(cells, on=["symbol", "bucket"], how="left")
        .join(per_bucket, on="bucket", how="left")
        .sort("symbol", "bucket")
        .with_columns(pl.col("inside").fill_null(0.0), pl.col("straddle").fill_null(0.0))
        .with_columns(total=pl.col("inside") + pl.col("straddle"))
        .with_columns(
            # the window starts at t: the first cell's straddling return (start <= t) is left out
            first=pl.col("inside").shift(-1).over("symbol"),
            # whole cells b+2 .. b+m, summed directly (not as a difference of cumulative sums) so that an
            # all-zero window stays exactly zero
            later=pl.sum_horizontal([pl.col("total").shift(-j).over("symbol").fill_null(0.0) for j in range(2, m + 1)])
            if m >= 2
            else pl.lit(0.0),
            tail=pl.col("total").reverse().cum_sum().reverse().over("symbol"),
        )
        .with_columns(rest=pl.col("tail").shift(-2).over("symbol").fill_null(0.0))
    )
    return x.select(
        "symbol",
        "ts",
        "bucket",
        pl.when("has_next").then(pl.col("first")).alias("rv_next_bucket"),
        pl.when("has_30min").then(pl.col("first") + pl.col("later")).alias("rv_next_30min"),
        pl.when("has_next").then(pl.col("first") + pl.col("rest")).alias("rv_rest_of_day"),
    )


def day_rv(panel: pl.DataFrame) -> pl.DataFrame:
    """symbol (string), rv_day: each symbol's whole continuous-session RV of the date, the sum of its
    bucket RVs in the day ``panel`` (0 for a symbol present without returns)."""
    day = ordered_sums(panel, ["symbol"], ["bucket"], ["rv"])
    return day.select(pl.col("symbol").cast(pl.String), pl.col("rv").alias("rv_day"))


def finish_targets(intraday: pl.DataFrame, next_day: pl.DataFrame | None) -> pl.DataFrame:
    """Attach the next-day target (``next_day``: symbol, rv_day of the next store date, or None when the
    store has no later date) and the zero flags."""
    if next_day is None:
        x = intraday.with_columns(pl.lit(None, pl.Float64).alias("rv_next_day"))
    else:
        x = intraday.join(next_day.rename({"rv_day": "rv_next_day"}), on="symbol", how="left")
    x = x.with_columns([(pl.col(f"rv_{h}") == 0.0).alias(f"zero_{h}") for h in HORIZONS])
    return x.select("symbol", "ts", "bucket", *TARGET_COLUMNS).sort("symbol", "bucket")
