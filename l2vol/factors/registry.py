"""The factor registry: named, documented, pure factor functions.

A factor is a pure function (no I/O, no state, no clock) that the engine evaluates for every
(symbol, bucket) of a trading date. Its ``stage`` says what it is a function of:

``returns``
    ``fn() -> pl.Expr``: an aggregation over the bucket's mid-price log returns (columns of
    :data:`RETURNS_COLUMNS`, rows in time order), evaluated in ``group_by(symbol, bucket).agg``.
``snapshots``
    ``fn() -> pl.Expr``: an aggregation over the bucket's valid continuous-session snapshots (columns of
    :data:`SNAPSHOT_COLUMNS`).
``trades``
    ``fn() -> pl.Expr``: an aggregation over the bucket's continuous-session trades
    (:data:`TRADE_COLUMNS`).
``panel``
    ``fn() -> pl.Expr``: a column expression over the day panel (one row per symbol and bucket, sorted
    by symbol then bucket) whose columns are the factors named in ``depends``.
``frame``
    ``fn(day, panel) -> pl.DataFrame`` with columns ``symbol, bucket, <name>``: for factors that need a
    join or the carried daily summary (VPIN, Kyle's lambda, HAR lags, seasonal RV). ``day`` is an
    :class:`l2vol.factors.engine.DayFrames`. A frame factor declared with ``rows=True`` reads the row
    frames (``day.snapshots``, ``day.returns``, ``day.trades``) and must be a function of each symbol's
    own records: the engine calls it once per block of symbols, with those symbols' rows and panel (the
    aggregation-stage columns only). Other frame factors run once on the whole day's panel (they may be
    cross-sectional, e.g. market RV) and see no snapshot or return rows (``day.snapshots`` and
    ``day.returns`` are None).

``prepare`` (returns and snapshots stages) returns row-level helper columns, computed on the frame (a
block of whole symbols, sorted by symbol and time) before grouping so that the aggregation stays a plain
sum or mean; a helper value must depend only on its own symbol's rows (shifts, not running totals):
:func:`previous` is the previous valid snapshot of the same symbol and session, which may lie in the
previous bucket (e.g. order-flow imbalance); :func:`in_bucket` shifts within the bucket (e.g. the
neighbouring returns of bipower variation). Helper columns start with ``_``; two factors may share one
only with the same expression.

``empty`` is the value of an aggregation factor in a bucket with no rows in its frame (0 for sums and
counts such as RV or volume: nothing happened; ``None`` leaves it null, e.g. a spread with no valid
quote).

Every factor value stamped ``t`` (the bucket end) is a function of records with ``ts < t`` only; the
engine guarantees it for the frames above and the causality tests check it for every registered factor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import polars as pl

FAMILIES = {
    "realized": "realized measures of the mid-price path inside the bucket",
    "book": "order-book state and order flow from the Level2 snapshots",
    "trades": "tick-by-tick trade activity, liquidity and toxicity",
    "history": "lags, seasonality and cross-section: the bucket in its multi-day and market context",
}
STAGES = ("returns", "snapshots", "trades", "panel", "frame")
DTYPES = {"float64": pl.Float64, "int64": pl.Int64}

#: Columns of the frame the ``returns`` stage aggregates (one row per mid-price return).
RETURNS_COLUMNS = {
    "symbol": "instrument",
    "bucket": "feature bucket of the return's END snapshot ([start, end) rule)",
    "ts": "time of the return's end snapshot (UTC)",
    "ts_prev": "time of the return's start snapshot: the previous valid snapshot of the same session",
    "p": "log mid price at the end snapshot",
    "p_prev": "log mid price at the start snapshot",
    "r": "mid-price log return p - p_prev",
}
#: Columns of the frame the ``snapshots`` stage aggregates (one row per valid continuous snapshot).
SNAPSHOT_COLUMNS = {
    "symbol": "instrument",
    "bucket": "feature bucket ([start, end) rule)",
    "session": "continuous session (0 = morning, 1 = afternoon)",
    "ts": "snapshot time (UTC)",
    "mid": "(bid_px_1 + ask_px_1) / 2, CNY",
    "bid_px_k, ask_px_k, bid_qty_k, ask_qty_k": "book levels k = 1..10, normalised: an empty level (null, NaN or "
    "non-positive price) has a null price and quantity 0; quantities float64",
}
#: Columns of the frame the ``trades`` stage aggregates (one row per continuous-session fill).
TRADE_COLUMNS = {
    "symbol": "instrument",
    "bucket": "feature bucket of the fill time ([start, end) rule)",
    "ts": "fill time (UTC)",
    "price": "CNY",
    "qty": "shares",
    "amount": "CNY",
    "side": "aggressor side B/S/N",
}

#: Row-level column, set by the engine, that is True when the previous row is the previous valid
#: snapshot of the same symbol and session.
SAME_SESSION = "_same_session"
#: Row-level column, set by the engine: an integer identifying the row's (symbol, bucket).
BUCKET_ID = "_bucket_id"


def previous(expr: pl.Expr) -> pl.Expr:
    """``expr`` at the previous valid snapshot of the same symbol and session (null at a session's first)."""
    return pl.when(pl.col(SAME_SESSION)).then(expr.shift(1))


def in_bucket(expr: pl.Expr, k: int) -> pl.Expr:
    """``expr`` ``k`` rows earlier (``k > 0``) or ``-k`` rows later (``k < 0``) in the same bucket of the same
    symbol; null where that row lies outside the bucket."""
    b = pl.col(BUCKET_ID)
    return pl.when(b == b.shift(k)).then(expr.shift(k))


@dataclass(frozen=True)
class Warmup:
    """How much history a factor needs before it can be non-null.

    ``days``: previous trading dates (store dates) of the symbol; ``buckets``: earlier buckets on the
    trading clock (crossing into the previous date). ``note`` says anything else (e.g. volume buckets).
    """

    days: int = 0
    buckets: int = 0
    note: str = ""


@dataclass(frozen=True)
class Factor:
    name: str
    family: str
    stage: str
    unit: str
    description: str
    inputs: tuple[str, ...]
    fn: Callable = field(repr=False, compare=False)
    warmup: Warmup = Warmup()
    depends: tuple[str, ...] = ()
    prepare: Callable[[], dict[str, pl.Expr]] | None = field(default=None, repr=False, compare=False)
    dtype: str = "float64"
    empty: float | None = None
    rows: bool = False

    @property
    def tables(self) -> set[str]:
        return {i.split(".", 1)[0] for i in self.inputs}

    def columns(self, table: str) -> list[str]:
        """Canonical columns of ``table`` this factor reads."""
        return [i.split(".", 1)[1] for i in self.inputs if i.split(".", 1)[0] == table]

    def describe(self) -> dict:
        return {
            "name": self.name,
            "family": self.family,
            "unit": self.unit,
            "description": self.description,
            "inputs": list(self.inputs),
            "warmup_days": self.warmup.days,
            "warmup_buckets": self.warmup.buckets,
            "warmup_note": self.warmup.note,
            "depends": list(self.depends),
            "dtype": self.dtype,
            "empty": self.empty,
            "rows": self.rows,
        }


class FactorRegistry:
    """Named factors; registering a name twice is refused."""

    def __init__(self) -> None:
        self._factors: dict[str, Factor] = {}

    def register(self, f: Factor) -> Factor:
        if f.name in self._factors:
            old = self._factors[f.name]
            raise ValueError(
                f"factor {f.name!r} is already registered (by {_origin(old.fn)}); refusing {_origin(f.fn)}"
            )
        if f.family not in FAMILIES:
            raise ValueError(f"factor {f.name!r}: unknown family {f.family!r}; known: {', '.join(FAMILIES)}")
        if f.stage not in STAGES:
            raise ValueError(f"factor {f.name!r}: unknown stage {f.stage!r}; known: {', '.join(STAGES)}")
        if f.dtype not in DTYPES:
            raise ValueError(f"factor {f.name!r}: unsupported dtype {f.dtype!r}")
        if f.rows and f.stage != "frame":
            raise ValueError(f"factor {f.name!r}: rows=True is for frame factors (the others never see the rows)")
        if f.prepare is not None and f.stage not in ("returns", "snapshots"):
            raise ValueError(f"factor {f.name!r}: prepare columns exist only for the returns and snapshots stages")
        if not f.description.strip() or not f.unit.strip():
            raise ValueError(f"factor {f.name!r}: description and unit are required")
        for i in f.inputs:
            if "." not in i:
                raise ValueError(f"factor {f.name!r}: input {i!r} must be 'table.column'")
        self._factors[f.name] = f
        return f

    def factor(
        self,
        name: str,
        *,
        family: str,
        stage: str,
        unit: str,
        inputs: Iterable[str],
        warmup: Warmup = Warmup(),
        depends: Iterable[str] = (),
        prepare: Callable[[], dict[str, pl.Expr]] | None = None,
        dtype: str = "float64",
        empty: float | None = None,
        rows: bool = False,
    ) -> Callable[[Callable], Callable]:
        """Decorator: register the decorated function; its docstring is the factor's description."""

        def wrap(fn: Callable) -> Callable:
            self.register(
                Factor(
                    name=name,
                    family=family,
                    stage=stage,
                    unit=unit,
                    description=" ".join((fn.__doc__ or "").split()),
                    inputs=tuple(inputs),
                    fn=fn,
                    warmup=warmup,
                    depends=tuple(depends),
                    prepare=prepare,
                    dtype=dtype,
                    empty=empty,
                    rows=rows,
                )
            )
            return fn

        return wrap

    def __getitem__(self, name: str) -> Factor:
        try:
            return self._factors[name]
        except KeyError:
            raise KeyError(f"unknown factor {name!r}; known: {', '.join(sorted(self._factors))}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._factors

    def __iter__(self) -> Iterator[Factor]:
        return iter(self._factors.values())

    def __len__(self) -> int:
        return len(self._factors)

    def names(self, family: str | None = None) -> list[str]:
        """Factor names, grouped by family in the order of :data:`FAMILIES`, then in registration order."""
        order = {fam: i for i, fam in enumerate(FAMILIES)}
        ranked = sorted(self._factors.values(), key=lambda f: order[f.family])
        return [f.name for f in ranked if family is None or f.family == family]

    def resolve(self, names: Iterable[str] | None = None) -> list[Factor]:
        """The named factors (all when None) plus their dependencies, in dependency order."""
        wanted = list(self._factors) if names is None else list(dict.fromkeys(names))
        order: list[Factor] = []
        seen: set[str] = set()
        visiting: set[str] = set()

        def visit(n: str) -> None:
            if n in seen:
                return
            if n in visiting:
                raise ValueError(f"factor dependency cycle through {n!r}")
            visiting.add(n)
            f = self[n]
            for d in f.depends:
                visit(d)
            visiting.discard(n)
            seen.add(n)
            order.append(f)

        for n in wanted:
            visit(n)
        return order

    def describe(self) -> list[dict]:
        return [f.describe() for f in self]


def _origin(fn: Callable) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', '?')}"


#: The platform's registry; the factor modules register into it on import.
REGISTRY = FactorRegistry()
factor = REGISTRY.factor
