"""The factor engine: clean Level2 tables in, bucket-level factor and target tables out.

:func:`build_factors` streams the source store one trading date at a time. For each date it reads only
the columns the selected factors need, computes every factor for all symbols at once with polars
(grouped aggregations, joins and window expressions; no per-row Python), writes the date's partitions
and carries a compact :class:`~l2vol.factors.history.DailyState` to the next date. Memory is bounded by
one date (plus the next date's mid quotes when it computes the previous date's next-day target).

Tables written to ``dst`` (one partition per trading date, see :mod:`l2vol.storage`):

``factors``       symbol, ts (bucket end, UTC), bucket (0-based index in the day), one column per factor
                  (float64, counts int64); field metadata carries each factor's unit, family and doc.
``targets``       symbol, ts, bucket, rv_<h> and zero_<h> per horizon (:mod:`l2vol.factors.targets`); no
                  feature view reads it.
``factor_state``  the carried daily summary after each date (long format), so that a later run starting
                  at the next date resumes without replaying history.

The ``truth`` table of the simulator is never read.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

from l2vol.data.profiles import ASHARE, MarketProfile
from l2vol.data.schema import N_LEVELS
from l2vol.factors import book as _book  # noqa: F401  (registers the order-book factors)
from l2vol.factors import history as _history  # noqa: F401
from l2vol.factors import realized as _realized  # noqa: F401
from l2vol.factors import trades as _trades
from l2vol.factors.buckets import BucketGrid, BucketSpec
from l2vol.factors.history import HISTORY_DAYS, STATE_SCHEMA, DailyState
from l2vol.factors.registry import BUCKET_ID, FAMILIES, REGISTRY, SAME_SESSION, Factor, previous
from l2vol.factors.targets import HORIZONS, day_rv, finish_targets, intraday_targets
from l2vol.progress import Progress, ensure
from l2vol.storage import DatasetStore

FACTORS_TABLE = "factors"
TARGETS_TABLE = "targets"
STATE_TABLE = "factor_state"
#: Bumped when a factor definition changes, so persisted state from an older engine is not reused.
ENGINE_VERSION = 1
#: Always computed: the state (bucket RVs) and the targets need them.
CORE_FACTORS = ("rv", "n_returns")
_KEY_COLUMNS = ["symbol", "ts", "bucket"]
_MID_COLUMNS = ["symbol", "ts", "phase", "bid_px_1", "ask_px_1"]


@dataclass(frozen=True)
class DayFrames:
    """Everything a factor function may look at for one trading date (all of it dated before the end
    of the day; each factor only uses rows before its bucket end).

    ``snapshots``: valid continuous-session snapshots sorted by symbol and time, with ``bucket``,
    ``session``, ``mid``, ``p`` (log mid), ``p_prev``, ``ts_prev``, ``r``, the prepare columns and those
    read columns that a snapshots-stage aggregation or a frame factor reads (book levels that only the
    prepare step reads are dropped after it);
    ``returns``: its rows that have a previous valid snapshot in the session (``r`` not null);
    ``trades``: continuous-session fills with ``bucket`` and ``session`` (None when no factor reads
    trades); ``opening``: symbol, open_ns, open_px, pre_close of the first snapshot showing an opening
    price; ``volume_buckets``: the day's completed VPIN volume buckets; ``state``: the daily summary of
    the previous store dates; ``symbol_type``: the date's symbol Enum (over all its symbols).

    The engine builds one per block of symbols for the row-level stages (``symbols``, ``snapshots``,
    ``returns`` and ``trades`` hold that block's) and one for the whole day for the panel and the frame
    factors that do not read rows (``snapshots`` and ``returns`` None, ``trades`` the whole day's fills).
    """

    date: dt.date
    grid: BucketGrid
    symbols: pl.Series
    snapshots: pl.DataFrame | None
    returns: pl.DataFrame | None
    trades: pl.DataFrame | None
    opening: pl.DataFrame | None
    volume_buckets: pl.DataFrame | None
    state: DailyState
    symbol_type: pl.DataType | None = None


@dataclass(frozen=True)
class FactorPlan:
    """The selected factors (plus dependencies, in evaluation order) and the columns they read."""

    factors: tuple[Factor, ...]
    output: tuple[str, ...]
    snapshot_columns: tuple[str, ...]
    trade_columns: tuple[str, ...]

    @classmethod
    def make(cls, names: Iterable[str] | None = None) -> FactorPlan:
        requested = list(REGISTRY.names()) if names is None else list(dict.fromkeys(names))
        if not requested:
            raise ValueError("no factors selected")
        factors = REGISTRY.resolve([*CORE_FACTORS, *requested])
        snap_cols = dict.fromkeys(_MID_COLUMNS)
        trade_cols: dict[str, None] = {}
        for f in factors:
            snap_cols.update(dict.fromkeys(f.columns("snapshots")))
            trade_cols.update(dict.fromkeys(f.columns("trades")))
        if trade_cols:
            trade_cols.update(dict.fromkeys(["symbol", "ts", "qty"]))
        output = [n for n in REGISTRY.names() if n in requested]
        return cls(tuple(factors), tuple(output), tuple(snap_cols), tuple(trade_cols))

    @property
    def names(self) -> set[str]:
        return {f.name for f in self.factors}

    @property
    def reads_trades(self) -> bool:
        return bool(self.trade_columns)

    @property
    def needs_vpin(self) -> bool:
        return "vpin" in self.names

    @property
    def needs_opening(self) -> bool:
        return "open_px" in self.snapshot_columns

    @property
    def state_kinds(self) -> set[str]:
        return {"bucket_rv", "volume", "vpin_tail"} if self.needs_vpin else {"bucket_rv"}

    def trade_read_columns(self, available: Iterable[str]) -> list[str]:
        """Trade columns to read; ``seq`` too when the store has it (the order of same-time fills)."""
        cols = list(self.trade_columns)
        if "seq" in set(available) and "seq" not in cols:
            cols.append("seq")
        return cols


# ---------------------------------------------------------------- day frames


def _prepare_columns(plan: FactorPlan, stage: str) -> dict[str, pl.Expr]:
    cols: dict[str, pl.Expr] = {}
    for f in plan.factors:
        if f.prepare is None or f.stage != stage:
            continue
        for name, expr in f.prepare().items():
            if not name.startswith("_"):
                raise ValueError(f"factor {f.name!r}: prepare column {name!r} must start with '_'")
            if name in cols and not cols[name].meta.eq(expr):
                raise ValueError(f"factor {f.name!r}: prepare column {name!r} conflicts with another factor's")
            cols[name] = expr
    return cols


def _sort_order(df: pl.DataFrame, tie: str | None = None) -> np.ndarray | None:
    """Row order that sorts ``df`` by (symbol code, ts[, tie]); None when it is sorted already
    (cleaned partitions are: they are grouped by symbol, each symbol's rows in time order)."""
    if df.height < 2:
        return None
    # the check: one pass of polars kernels over the key columns (no numpy copies of them)
    code, step = (pl.col("symbol").to_physical().cast(pl.Int64).diff(), pl.col("ts").cast(pl.Int64).diff())
    same_time = (code == 0) & (step == 0)
    if tie is not None:
        same_time = same_time & (pl.col(tie).fill_null(0).cast(pl.Int64).diff() >= 0)
    if df.select(((code > 0) | ((code == 0) & (step > 0)) | same_time).all()).item():
        return None
    ts = df["ts"].cast(pl.Int64).to_numpy()
    key = (df["symbol"].to_physical().cast(pl.Int64).to_numpy() << 45) | (ts - ts.min())  # a date spans < 2^45 ns
    if tie is None:
        return np.argsort(key, kind="stable")
    return np.lexsort((df[tie].fill_null(0).to_numpy(), key))


def _ensure_sorted(df: pl.DataFrame, tie: str | None = None) -> pl.DataFrame:
    order = _sort_order(df, tie)
    return df if order is None else df.rechunk()[order]


def _book_normalisation(raw: pl.DataFrame, columns: Iterable[str]) -> list[pl.Expr]:
    """Expressions that present the book levels as factor functions expect: an empty level (null, NaN or
    non-positive price) has a null price and quantity 0. One pass of cheap checks decides which columns
    need more than filling null quantities with 0 (clean canonical data needs nothing else)."""
    cols = set(columns)
    levels = [
        (f"{side}_px_{i}", f"{side}_qty_{i}")
        for side in ("bid", "ask")
        for i in range(1, N_LEVELS + 1)
        if f"{side}_px_{i}" in cols
    ]
    checks = []
    for px_col, qty_col in levels:
        px = pl.col(px_col)
        checks.append((px.is_nan() | (px <= 0)).any().alias(px_col))
        if qty_col in cols and raw[px_col].null_count():  # (no null price: no quantity to check)
            checks.append((px.is_null() & pl.col(qty_col).is_not_null() & (pl.col(qty_col) != 0)).any().alias(qty_col))
    dirty = raw.select(checks).row(0, named=True) if checks and raw.height else {}
    out = []
    for px_col, qty_col in levels:
        bad_px = bool(dirty.get(px_col))
        valid = pl.col(px_col).fill_nan(None) > 0
        if bad_px:
            out.append(pl.when(valid).then(pl.col(px_col)).alias(px_col))
        if qty_col in cols:
            if bad_px or dirty.get(qty_col):
                out.append(pl.when(valid).then(pl.col(qty_col)).otherwise(0).fill_null(0).alias(qty_col))
            else:
                out.append(pl.col(qty_col).fill_null(0))
    return out


#: Columns of the snapshot frame every stage may read (besides prepare columns and factor inputs).
_SNAPSHOT_BASE = ["symbol", "ts", "bucket", "session", "mid", "p", "p_prev", "ts_prev", "r", SAME_SESSION, BUCKET_ID]
#: The row-level work (normalised book, returns, helper columns, grouped aggregations, Kyle's interval
#: matching, intraday targets) runs on blocks of whole symbols of about this many valid snapshots. Every
#: row-level value is a function of one symbol's rows, so blocks give the same numbers as one whole-day
#: frame; but a block's columns (~2 MB each) stay in cache and are recycled by the allocator, where the
#: whole day's (~12 MB each) were fresh memory every time (a third of the CPU time went to page faults).
BLOCK_ROWS = 1 << 18
#: At most this many blocks are computed at once (each in a thread; bounded by polars' thread pool size).
BLOCK_WORKERS = 2


def _snapshot_columns_after_prepare(plan: FactorPlan, read: Iterable[str], prepared: Iterable[str]) -> list[str]:
    """Columns of ``DayFrames.snapshots``: the engine's row columns, the prepare columns, and the ``read``
    columns that a snapshots-stage aggregation or a rows frame factor reads (e.g. ``bid_px_1`` for the
    spread). Book levels only the prepare step reads are dropped once it ran (memory)."""
    wanted: set[str] = set()
    for f in plan.factors:
        if f.stage == "snapshots":
            wanted.update(f.fn().meta.root_names())
        elif f.stage == "frame" and f.rows:
            wanted.update(f.columns("snapshots"))
    return list(dict.fromkeys([*_SNAPSHOT_BASE, *prepared, *(c for c in read if c in wanted)]))


@dataclass
class _Day:
    """One date's inputs, prepared once for the symbol blocks: the raw snapshots (read columns, Enum
    symbol, the date's row order), the valid rows in (symbol, time) order and where each symbol's run of
    them starts, their bucket and session, and the trades branch (a future)."""

    date: dt.date
    grid: BucketGrid
    plan: FactorPlan
    state: DailyState
    symbols: pl.Series
    enum: pl.Enum
    raw: pl.DataFrame
    keep: list[str]
    rows: np.ndarray  # valid raw rows in (symbol, time) order
    valid: np.ndarray  # of every raw row
    sorted_input: bool  # raw is in (symbol, time) order already: a block is a slice of it
    symbol_start: np.ndarray  # index into rows of each symbol's first valid row (length symbols + 1)
    raw_start: np.ndarray | None  # sorted input: raw row of each symbol's first row (length symbols + 1)
    bucket: np.ndarray  # of every raw row
    session: np.ndarray
    normalise: list[pl.Expr]
    opening: pl.DataFrame | None
    trade_job: Future

    def blocks(self) -> list[tuple[int, int]]:
        """Symbol ranges [s0, s1) of about BLOCK_ROWS valid rows each (whole symbols)."""
        n = len(self.symbols)
        if n == 0:
            return [(0, 0)]
        total = int(self.symbol_start[-1])
        k = max(1, -(-total // BLOCK_ROWS))
        cuts = np.searchsorted(self.symbol_start, np.arange(1, k) * (total / k), side="left")
        bounds = np.unique(np.r_[0, cuts, n])
        return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def day_frames(
    date: dt.date,
    snapshots: pa.Table,
    trades: pa.Table | None,
    grid: BucketGrid,
    state: DailyState,
    plan: FactorPlan,
) -> DayFrames:
    """Turn one date's raw partitions into the frames factor functions read, for all symbols at once.

    Symbols become a polars Enum over the day's sorted symbols (fast grouping and joins); frames are
    sorted by symbol and time. (The engine itself works on blocks of symbols, see :func:`compute_day`.)
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="l2vol-trades") as pool:
        day = _prepare_day(date, [snapshots, trades], grid, state, plan, pool)
        return _block_frames(day, 0, len(day.symbols))


def _prepare_day(
    date: dt.date, tables: list, grid: BucketGrid, state: DailyState, plan: FactorPlan, pool: ThreadPoolExecutor
) -> _Day:
    """The date's :class:`_Day` from ``[snapshots, trades]`` in a list that it empties (so that each arrow
    table is freed as soon as polars holds its data); ``trades`` may also be a future of the table. The
    trades branch (read, when a future, then bucketing, sorting, VPIN volume buckets) needs only the
    symbols: it runs in ``pool`` beside the snapshot work (polars, numpy and arrow release the GIL)."""
    raw = pl.from_arrow(tables[0])
    tables[0] = None
    assert isinstance(raw, pl.DataFrame)
    symbols = raw["symbol"].unique().sort()
    enum = pl.Enum(symbols)
    raw = raw.with_columns(pl.col("symbol").cast(enum))
    day_state = state.encoded(enum)
    trade_job = pool.submit(_trade_frames, tables[1], enum, grid, plan, day_state)
    tables[1] = None
    bucket = grid.feature_bucket(raw["ts"].cast(pl.Int64).to_numpy())
    session = grid.session[bucket.clip(0)]
    opening = None
    if plan.needs_opening:
        opening = (
            raw.select("symbol", pl.col("ts").cast(pl.Int64).alias("open_ns"), "open_px", "pre_close")
            .filter((pl.col("open_px").fill_nan(None) > 0) & (pl.col("pre_close").fill_nan(None) > 0))
            .group_by("symbol")
            .agg(pl.all().sort_by("open_ns").first())
        )
    bid, ask = pl.col("bid_px_1").fill_nan(None), pl.col("ask_px_1").fill_nan(None)
    valid = raw.select(((pl.col("phase") == "TRADE") & (bid > 0) & (ask > bid)).fill_null(False)).to_series()
    valid = valid.to_numpy() & (bucket >= 0)
    keep = [c for c in plan.snapshot_columns if c not in ("phase", "open_px", "pre_close")]
    order = _sort_order(raw)
    raw = raw.select(keep)
    code = raw["symbol"].to_physical().cast(pl.Int64).to_numpy()
    rows = np.flatnonzero(valid) if order is None else order[valid[order]]
    symbol_start = np.searchsorted(code[rows], np.arange(len(symbols) + 1), side="left")
    raw_start = np.searchsorted(code, np.arange(len(symbols) + 1), side="left") if order is None else None
    return _Day(
        date=date,
        grid=grid,
        plan=plan,
        state=day_state,
        symbols=symbols,
        enum=enum,
        raw=raw,
        keep=keep,
        rows=rows,
        valid=valid,
        sorted_input=order is None,
        symbol_start=symbol_start,
        raw_start=raw_start,
        bucket=bucket,
        session=session,
        # which book columns need more than filling null quantities: decided once for the day
        normalise=_book_normalisation(raw, keep),
        opening=opening,
        trade_job=trade_job,
    )


def _block_frames(day: _Day, s0: int, s1: int) -> DayFrames:
    """The :class:`DayFrames` of the day's symbols with Enum codes in [s0, s1)."""
    rows = day.rows[day.symbol_start[s0] : day.symbol_start[s1]]
    # Valid rows of the block in (symbol, time) order, one contiguous chunk per column (later expressions
    # then never re-align chunks): a slice and a filter for sorted input, one gather otherwise.
    if day.sorted_input:
        assert day.raw_start is not None
        r0, r1 = int(day.raw_start[s0]), int(day.raw_start[s1])
        snaps = day.raw.slice(r0, r1 - r0).filter(pl.Series(day.valid[r0:r1])).rechunk()
    else:
        snaps = day.raw[rows]
    bucket, session = day.bucket[rows], day.session[rows]
    code = pl.col("symbol").to_physical().cast(pl.Int64)
    same = (code == code.shift(1)) & (pl.col("session") == pl.col("session").shift(1))
    prepared = _prepare_columns(day.plan, "snapshots")
    # One lazy query (common subexpressions computed once): normalised book, mid price, returns and the
    # factors' row-level helper columns; then only the columns later stages read.
    snaps = (
        snaps.lazy()
        .with_columns(
            pl.Series("bucket", bucket, dtype=pl.Int16),
            pl.Series("session", session, dtype=pl.Int8),
            *day.normalise,
        )
        .with_columns(
            same.fill_null(False).alias(SAME_SESSION),
            (code * 65536 + pl.col("bucket")).alias(BUCKET_ID),
            mid=(pl.col("bid_px_1") + pl.col("ask_px_1")) / 2.0,
        )
        .with_columns(p=pl.col("mid").log())
        .with_columns(p_prev=previous(pl.col("p")), ts_prev=previous(pl.col("ts")))
        .with_columns(r=pl.col("p") - pl.col("p_prev"), **prepared)
        .select(_snapshot_columns_after_prepare(day.plan, day.keep, prepared))
        .collect(engine="in-memory")  # whole-column kernels; the streaming engine leaves many small chunks
    )
    returns = (
        snaps.lazy()
        .select("symbol", "bucket", "session", "ts", "ts_prev", "p", "p_prev", "r", BUCKET_ID)
        .filter(pl.col("r").is_not_null())
        .with_columns(**_prepare_columns(day.plan, "returns"))
        .collect(engine="in-memory")
    )
    fills, vbuckets = day.trade_job.result()
    if fills is not None and (s0, s1) != (0, len(day.symbols)):
        fcode = fills["symbol"].to_physical().cast(pl.Int64).to_numpy()
        f0, f1 = np.searchsorted(fcode, [s0, s1], side="left")
        fills = fills.slice(int(f0), int(f1 - f0))
    return DayFrames(
        day.date, day.grid, day.symbols[s0:s1], snaps, returns, fills, day.opening, vbuckets, day.state, day.enum
    )


def _trade_frames(
    trades: pa.Table | Future | None, enum: pl.Enum, grid: BucketGrid, plan: FactorPlan, day_state: DailyState
) -> tuple[pl.DataFrame | None, pl.DataFrame | None]:
    """The day's continuous-session fills (sorted by symbol and time, with bucket, session and bucket id)
    and its VPIN volume buckets; ``trades`` may be a future of the read. Runs beside the snapshot work."""
    if isinstance(trades, Future):
        trades = trades.result()
    if trades is None:
        return None, None
    t = pl.from_arrow(trades)
    del trades
    assert isinstance(t, pl.DataFrame)
    tb = grid.feature_bucket(t["ts"].cast(pl.Int64).to_numpy())
    t = t.with_columns(pl.col("symbol").cast(enum, strict=False))  # null: no snapshot of that symbol today
    keep_fill = (tb >= 0) & t["symbol"].is_not_null().to_numpy()
    fills = (
        t.filter(pl.Series(keep_fill))
        .rechunk()
        .with_columns(
            pl.Series("bucket", tb[keep_fill], dtype=pl.Int16),
            pl.Series("session", grid.session[tb[keep_fill].clip(0)], dtype=pl.Int8),
        )
    )
    del t
    fills = _ensure_sorted(fills, "seq" if "seq" in fills.columns else None).with_columns(
        (pl.col("symbol").to_physical().cast(pl.Int64) * 65536 + pl.col("bucket")).alias(BUCKET_ID)
    )
    vbuckets = None
    if plan.needs_vpin:
        size = day_state.previous_volume().select(
            "symbol", (pl.col("volume") / _trades.VPIN_BUCKETS_PER_DAY).alias("V")
        )
        vbuckets = _trades.volume_buckets(fills, size)
    return fills, vbuckets


# --------------------------------------------------------------- day panel


def _keys(day: DayFrames) -> pl.DataFrame:
    grid = pl.DataFrame(
        {
            "bucket": pl.Series(range(day.grid.n), dtype=pl.Int16),
            "ts": pl.Series(day.grid.end_ns, dtype=pl.Int64).cast(pl.Datetime("ns", "UTC")),
        }
    )
    enum = day.symbol_type if day.symbol_type is not None else pl.Enum(day.symbols)
    return pl.DataFrame({"symbol": day.symbols.cast(enum)}).join(grid, how="cross")


_ROW_STAGES = ("returns", "snapshots", "trades")


def _row_panel(day: DayFrames, plan: FactorPlan) -> pl.DataFrame:
    """The aggregation-stage factors and the rows frame factors for the symbols of ``day``: symbol, ts,
    bucket, <factors> (sorted by symbol and bucket)."""
    panel = _keys(day)
    frames = {"returns": day.returns, "snapshots": day.snapshots, "trades": day.trades}
    for stage, frame in frames.items():
        aggs = [f.fn().alias(f.name) for f in plan.factors if f.stage == stage]
        if not aggs:
            continue
        if frame is None:
            raise ValueError(f"factors of stage {stage!r} selected but the {stage} frame was not read")
        # Frames are sorted by symbol and time, hence by bucket id: a sorted group-by (no hashing).
        out = (
            frame.lazy()
            .with_columns(pl.col(BUCKET_ID).set_sorted())
            .group_by(BUCKET_ID)
            .agg(pl.col("symbol").first(), pl.col("bucket").first(), *aggs)
            .drop(BUCKET_ID)
            .collect(engine="in-memory")  # deterministic: the same partial sums in every run
        )
        panel = panel.join(out, on=["symbol", "bucket"], how="left")
    fills = [pl.col(f.name).fill_null(f.empty) for f in plan.factors if f.stage in frames and f.empty is not None]
    if fills:
        panel = panel.with_columns(fills)
    for f in plan.factors:
        if f.stage == "frame" and f.rows:
            late = [d for d in f.depends if REGISTRY[d].stage not in _ROW_STAGES]
            if late:
                raise ValueError(f"factor {f.name!r} reads rows, so it may depend only on aggregations, not {late}")
            out = f.fn(day, panel)
            panel = panel.join(out.select("symbol", "bucket", f.name), on=["symbol", "bucket"], how="left")
    return panel


def _finish_panel(day: DayFrames, panel: pl.DataFrame, plan: FactorPlan) -> pl.DataFrame:
    """Add the panel factors and the whole-day frame factors to the day's row panel (all symbols), in
    dependency order, and cast every factor to its type."""
    for f in plan.factors:
        if f.stage == "panel":
            panel = panel.with_columns(f.fn().alias(f.name))
        elif f.stage == "frame" and not f.rows:
            out = f.fn(day, panel)
            panel = panel.join(out.select("symbol", "bucket", f.name), on=["symbol", "bucket"], how="left")
    return panel.with_columns(
        [pl.col(f.name).cast(pl.Float64 if f.dtype == "float64" else pl.Int64) for f in plan.factors]
    )


def compute_panel(day: DayFrames, plan: FactorPlan) -> pl.DataFrame:
    """All factors of ``plan`` for every symbol and bucket of ``day``: symbol, ts, bucket, <factors>."""
    return _finish_panel(day, _row_panel(day, plan), plan)


def compute_day(
    date: dt.date, tables: list, grid: BucketGrid, state: DailyState, plan: FactorPlan, *, targets: bool = True
) -> tuple[DayFrames, pl.DataFrame, pl.DataFrame | None]:
    """Every factor of ``plan`` for the date: ``(day, panel, intraday targets)``.

    ``tables`` is ``[snapshots, trades]`` (emptied, see :func:`_prepare_day`). The row-level work runs per
    block of whole symbols (:data:`BLOCK_ROWS`); the panel factors and the frame factors that do not read
    rows then run once on the whole day's panel. ``day`` holds the whole day's fills, opening prices,
    volume buckets and state but no snapshot or return rows. Intraday targets (None unless ``targets``)
    come from the same blocks' returns.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="l2vol-trades") as pool:
        prep = _prepare_day(date, tables, grid, state, plan, pool)

        def block_panel(bounds: tuple[int, int], prep: _Day = prep) -> tuple[pl.DataFrame, pl.DataFrame | None]:
            block = _block_frames(prep, *bounds)
            part = _row_panel(block, plan)
            return part, intraday_targets(block.returns, grid, part.select(_KEY_COLUMNS)) if targets else None

        # Blocks are independent: BLOCK_WORKERS of them run at once (much of a block's work is single-threaded
        # numpy or small polars kernels); results are put together in block order, so the output does not
        # depend on the number of workers.
        blocks = prep.blocks()
        workers = max(1, min(len(blocks), BLOCK_WORKERS, pl.thread_pool_size()))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="l2vol-block") as block_pool:
            parts = list(block_pool.map(block_panel, blocks))
        panels = [p for p, _ in parts]
        intraday = [t for _, t in parts if t is not None]
        del parts
        fills, vbuckets = prep.trade_job.result()
    day = DayFrames(date, grid, prep.symbols, None, None, fills, prep.opening, vbuckets, prep.state, prep.enum)
    del prep
    panel = _finish_panel(day, pl.concat(panels), plan)
    return day, panel, pl.concat(intraday) if targets else None


def next_state(day: DayFrames, panel: pl.DataFrame, state: DailyState) -> DailyState:
    """The daily state after ``day`` (``state``: the one before it)."""
    as_str = pl.col("symbol").cast(pl.String)
    volume = tail = None
    if day.trades is not None:
        vol = day.trades.group_by("symbol").agg(pl.col("qty").cast(pl.Float64).sum().alias("volume"))
        volume = (
            pl.DataFrame({"symbol": day.symbols})
            .join(vol.with_columns(as_str), on="symbol", how="left")
            .with_columns(pl.col("volume").fill_null(0.0))
        )
    if day.volume_buckets is not None:
        tail = _trades.vpin_tail(state.vpin_tail, day.volume_buckets.with_columns(as_str))
    return state.advance(day.date, panel.select(as_str, "bucket", "rv"), volume, tail)


# ------------------------------------------------------------- table layout


def factor_schema(plan: FactorPlan) -> pa.Schema:
    fields = [
        pa.field("symbol", pa.string(), nullable=False, metadata={"unit": "-", "doc": "instrument"}),
        pa.field(
            "ts",
            pa.timestamp("ns", tz="UTC"),
            nullable=False,
            metadata={"unit": "UTC", "doc": "bucket end t: every value uses only records with ts < t"},
        ),
        pa.field(
            "bucket", pa.int16(), nullable=False, metadata={"unit": "-", "doc": "0-based bucket index in the day"}
        ),
    ]
    for name in plan.output:
        f = REGISTRY[name]
        fields.append(
            pa.field(
                name,
                pa.float64() if f.dtype == "float64" else pa.int64(),
                metadata={"unit": f.unit, "doc": f.description, "family": f.family},
            )
        )
    return pa.schema(fields)


def target_schema() -> pa.Schema:
    fields = [
        pa.field("symbol", pa.string(), nullable=False),
        pa.field(
            "ts", pa.timestamp("ns", tz="UTC"), nullable=False, metadata={"doc": "forecast origin t (bucket end)"}
        ),
        pa.field("bucket", pa.int16(), nullable=False),
    ]
    for h in HORIZONS:
        fields.append(
            pa.field(
                f"rv_{h}", pa.float64(), metadata={"unit": "log-return^2", "doc": f"future RV over the {h} window"}
            )
        )
    for h in HORIZONS:
        fields.append(pa.field(f"zero_{h}", pa.bool_(), metadata={"doc": f"rv_{h} is exactly 0 (halt or lock)"}))
    return pa.schema(fields)


# ------------------------------------------------------------------ driver


def _read_day(
    src: DatasetStore, date: dt.date, plan: FactorPlan, trade_dates: set[dt.date]
) -> tuple[pa.Table, pa.Table | None]:
    return _read_snapshots(src, date, plan), _read_trades(src, date, plan, trade_dates)


def _read_snapshots(src: DatasetStore, date: dt.date, plan: FactorPlan) -> pa.Table:
    return src.read_partition("snapshots", date, columns=list(plan.snapshot_columns))


def _read_trades(
    src: DatasetStore, date: dt.date, plan: FactorPlan, trade_dates: set[dt.date], counts: dict | None = None
) -> pa.Table | None:
    """The date's trade columns (None when no selected factor reads trades); ``counts["trades"]`` gets the
    number of rows read."""
    trades = None
    if plan.reads_trades:
        if date in trade_dates:
            man = src.read_manifest("trades", date) or {}
            available = [c for c, _ in man.get("schema", [])]
            trades = src.read_partition("trades", date, columns=plan.trade_read_columns(available))
        else:  # a date without a trades partition: no fills
            trades = pa.table({c: pa.array([], type=_TRADE_TYPES[c]) for c in plan.trade_columns})
    if counts is not None:
        counts["trades"] = 0 if trades is None else trades.num_rows
    return trades


_TRADE_TYPES = {
    "symbol": pa.string(),
    "ts": pa.timestamp("ns", tz="UTC"),
    "price": pa.float64(),
    "qty": pa.int64(),
    "amount": pa.float64(),
    "side": pa.string(),
    "seq": pa.int64(),
}


def _state_metadata(plan: FactorPlan, spec: BucketSpec, profile: MarketProfile) -> dict:
    return {
        "engine_version": ENGINE_VERSION,
        "bucket": spec.label,
        "profile": profile.name,
        "kinds": sorted(plan.state_kinds),
    }


def _load_state(
    src: DatasetStore,
    dst: DatasetStore,
    before: list[dt.date],
    plan: FactorPlan,
    spec: BucketSpec,
    profile: MarketProfile,
    trade_dates: set[dt.date],
) -> tuple[DailyState, int]:
    """The state at the start of the run: from ``factor_state`` in ``dst`` when every one of the previous
    store dates has it (same bucket, engine version and kinds), else replayed from ``src``. Returns the
    state and the number of replayed dates."""
    if not before:
        return DailyState(), 0
    parts = []
    for d in before:
        man = dst.read_manifest(STATE_TABLE, d)
        meta = (man or {}).get("metadata", {})
        ok = (
            man is not None
            and meta.get("engine_version") == ENGINE_VERSION
            and meta.get("bucket") == spec.label
            and meta.get("profile") == profile.name
            and set(meta.get("kinds", [])) >= plan.state_kinds
        )
        if not ok:
            break
        parts.append((d, dst.read_partition(STATE_TABLE, d)))
    else:
        return DailyState.from_partitions(parts), 0
    replay = FactorPlan.make(["vpin"] if plan.needs_vpin else ["rv"])
    state = DailyState()
    for d in before:
        tables = list(_read_day(src, d, replay, trade_dates))
        day, panel, _ = compute_day(d, tables, BucketGrid.for_date(d, spec, profile), state, replay, targets=False)
        state = next_state(day, panel, state)
    return state, len(before)


def build_factors(
    src: DatasetStore,
    dst: DatasetStore,
    *,
    start: dt.date | str | None = None,
    end: dt.date | str | None = None,
    factors: list[str] | None = None,
    bucket: str | int = "5min",
    progress: Progress | None = None,
    profile: MarketProfile = ASHARE,
) -> dict:
    """Compute factor and target tables for the trading dates of ``src`` in [start, end].

    Reads the ``snapshots`` (and, for trade factors, ``trades``) partitions of ``src`` one date at a time
    and writes ``factors``, ``targets`` and ``factor_state`` partitions for the same dates to ``dst``
    (replacing existing ones). ``factors`` selects factor names (all registered factors when None; their
    dependencies are computed but only the named ones written). ``bucket`` is the trading-clock bucket
    length ("5min": 48 buckets a day). History before ``start`` comes from ``dst``'s ``factor_state`` or,
    where that is missing, is replayed from ``src`` (up to 22 dates). The next-day target of the last date
    reads the next store date's quotes when ``src`` has one.

    Returns a summary: dates, rows, factor names, snapshot/trade rows read, zero-RV counts, timings.
    """
    # polars' in-memory engine splits work the same way on every run, so identical inputs give
    # bit-identical factors (the streaming engine's dynamic morsels can reorder partial sums).
    with pl.Config(engine_affinity="in-memory"):
        return _build(
            src, dst, start=start, end=end, factors=factors, bucket=bucket, progress=progress, profile=profile
        )


def _build(
    src: DatasetStore,
    dst: DatasetStore,
    *,
    start: dt.date | str | None,
    end: dt.date | str | None,
    factors: list[str] | None,
    bucket: str | int,
    progress: Progress | None,
    profile: MarketProfile,
) -> dict:
    t0 = time.perf_counter()
    spec = BucketSpec.parse(bucket)
    plan = FactorPlan.make(factors)
    dates = src.list_dates("snapshots", start, end)
    if not dates:
        raise ValueError(f"{src.location()}: no committed snapshots partitions in [{start}, {end}]")
    all_dates = src.list_dates("snapshots")
    trade_dates = set(src.list_dates("trades")) if plan.reads_trades else set()
    first = all_dates.index(dates[0])
    before = all_dates[max(0, first - HISTORY_DAYS) : first]
    after = all_dates[all_dates.index(dates[-1]) + 1 :][:1]
    prog = ensure(progress)
    prog.task("factors", len(dates))

    state, replayed = _load_state(src, dst, before, plan, spec, profile, trade_dates)
    fschema, tschema = factor_schema(plan), target_schema()
    meta = {**_state_metadata(plan, spec, profile), "factors": list(plan.output)}
    summary = {
        "dates": 0,
        "rows": 0,
        "snapshot_rows": 0,
        "trade_rows": 0,
        "zero_rv_buckets": 0,
        "zero_rv_targets": dict.fromkeys(HORIZONS, 0),
        "null_targets": dict.fromkeys(HORIZONS, 0),
    }
    pending: tuple[dt.date, pl.DataFrame] | None = None
    # Partitions are written by two writer threads (Parquet encoding and the atomic commit release the GIL)
    # while this thread goes on; a date's writes are awaited before the next date's are queued (at most one
    # date of output is held) and all of them before returning. A failed write raises here.
    writes: list[Future] = []

    def write(table: str, d: dt.date, data: pa.Table, schema: pa.Schema) -> None:
        writes.append(writer.submit(dst.write_partition, table, d, data, schema=schema, metadata=meta))

    def drain() -> None:
        while writes:
            writes.pop(0).result()

    def flush(next_rv: pl.DataFrame | None) -> None:
        nonlocal pending
        if pending is None:
            return
        d, intraday = pending
        tg = finish_targets(intraday, next_rv)
        for h in HORIZONS:
            summary["zero_rv_targets"][h] += int(tg[f"zero_{h}"].sum() or 0)
            summary["null_targets"][h] += int(tg[f"rv_{h}"].null_count())
        write(TARGETS_TABLE, d, tg.to_arrow().cast(tschema), tschema)
        pending = None

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="l2vol-write") as writer:
        for d in dates:
            grid = BucketGrid.for_date(d, spec, profile)
            counts: dict[str, int] = {}
            # trades are read in a second thread while this one reads the snapshots; the tables are handed
            # over to compute_day (no reference kept here), which frees them once polars holds the data
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="l2vol-read") as reader:
                tables = [None, reader.submit(_read_trades, src, d, plan, trade_dates, counts)]
                tables[0] = _read_snapshots(src, d, plan)
                summary["snapshot_rows"] += tables[0].num_rows
                day, panel, intraday = compute_day(d, tables, grid, state, plan)
            summary["trade_rows"] += counts["trades"]
            drain()
            flush(day_rv(panel))
            out = panel.select(pl.col("symbol").cast(pl.String), "ts", "bucket", *plan.output)
            write(FACTORS_TABLE, d, out.to_arrow().cast(fschema), fschema)
            assert intraday is not None
            pending = (d, intraday.with_columns(pl.col("symbol").cast(pl.String)))
            state = next_state(day, panel, state)
            write(STATE_TABLE, d, state.partition(), STATE_SCHEMA)
            summary["dates"] += 1
            summary["rows"] += out.height
            summary["zero_rv_buckets"] += int((panel["n_returns"] == 0).sum())
            prog.advance("factors", 1, note=d.isoformat())

        next_rv = None
        if after:
            mid_plan = FactorPlan.make(["rv"])
            tables = list(_read_day(src, after[0], mid_plan, set()))
            grid = BucketGrid.for_date(after[0], spec, profile)
            next_rv = day_rv(compute_day(after[0], tables, grid, state, mid_plan, targets=False)[1])
        flush(next_rv)
        drain()

    summary.update(
        {
            "start": dates[0].isoformat(),
            "end": dates[-1].isoformat(),
            "bucket": spec.label,
            "buckets_per_day": BucketGrid.for_date(dates[0], spec, profile).n,
            "factors": list(plan.output),
            "families": {fam: [n for n in plan.output if REGISTRY[n].family == fam] for fam in FAMILIES},
            "history_dates_replayed": replayed,
            "tables": {
                "factors": dst.location(f"table={FACTORS_TABLE}"),
                "targets": dst.location(f"table={TARGETS_TABLE}"),
                "factor_state": dst.location(f"table={STATE_TABLE}"),
            },
            "seconds": round(time.perf_counter() - t0, 3),
        }
    )
    return summary
