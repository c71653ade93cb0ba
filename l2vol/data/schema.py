"""Canonical Level2 tables as explicit Arrow schemas.

Every table is stored as Parquet under ``table=<name>/date=YYYY-MM-DD/part-*.parquet`` (see
:mod:`l2vol.storage`). The ``date`` partition is the trading date in the market's own time zone.

Conventions (all tables):

* ``ts`` is a tz-aware timestamp stored in UTC (``timestamp[ns, tz=UTC]``); shown in the market zone.
* Prices are ``float64`` in the quote currency (CNY for A-shares), already de-scaled from vendor
  integer formats. Quantities are ``int64`` in shares (never lots). Amounts are ``float64`` CNY.
* ``symbol`` is ``<code>.<exchange>``, e.g. ``600519.SH``, ``000001.SZ``; foreign sources keep their
  own tickers.

Each field carries ``unit`` and ``doc`` metadata so reports and the feature repo can show them.
"""

from __future__ import annotations

import pyarrow as pa

N_LEVELS = 10
TS_TYPE = pa.timestamp("ns", tz="UTC")


def _f(name: str, type_: pa.DataType, unit: str, doc: str, nullable: bool = True) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={"unit": unit, "doc": doc})


def _levels(side: str, side_doc: str) -> list[pa.Field]:
    fields: list[pa.Field] = []
    for kind, type_, unit, doc in (
        (
            "px",
            pa.float64(),
            "CNY",
            "price at level {i} of the {side} book (NaN/null when the level is empty)",
        ),
        ("qty", pa.int64(), "shares", "resting quantity at level {i} of the {side} book"),
        ("n", pa.int64(), "orders", "number of resting orders at level {i} of the {side} book"),
    ):
        for i in range(1, N_LEVELS + 1):
            fields.append(_f(f"{side}_{kind}_{i}", type_, unit, doc.format(i=i, side=side_doc)))
    return fields


#: Trading phases written in ``snapshots.phase``.
PHASES = {
    "OCALL": "opening call auction (09:15-09:25 on SSE/SZSE)",
    "PREOPEN": "between the opening call and continuous trading (09:25-09:30); book frozen",
    "TRADE": "continuous trading",
    "BREAK": "lunch break",
    "CCALL": "closing call auction (14:57-15:00)",
    "CLOSED": "after the close",
    "HALT": "trading halted or suspended",
}

SNAPSHOTS = pa.schema(
    [
        _f("symbol", pa.string(), "-", "instrument, e.g. 600519.SH", nullable=False),
        _f("ts", TS_TYPE, "UTC", "exchange time of the snapshot", nullable=False),
        _f("phase", pa.string(), "-", "trading phase, one of " + ", ".join(PHASES)),
        _f("last_px", pa.float64(), "CNY", "last traded price (null before the first trade of the day)"),
        _f("open_px", pa.float64(), "CNY", "opening price of the day (null before the open)"),
        _f("high_px", pa.float64(), "CNY", "highest traded price so far today"),
        _f("low_px", pa.float64(), "CNY", "lowest traded price so far today"),
        _f("pre_close", pa.float64(), "CNY", "exchange previous close (adjusted on ex-dividend days)"),
        _f("upper_limit_px", pa.float64(), "CNY", "upper price limit of the day (null when no limit)"),
        _f("lower_limit_px", pa.float64(), "CNY", "lower price limit of the day (null when no limit)"),
        _f("cum_volume", pa.int64(), "shares", "cumulative traded volume since the open"),
        _f("cum_amount", pa.float64(), "CNY", "cumulative traded amount since the open"),
        _f("num_trades", pa.int64(), "trades", "cumulative number of trades since the open"),
        *_levels("bid", "bid"),
        *_levels("ask", "ask"),
        _f("total_bid_qty", pa.int64(), "shares", "total resting bid quantity over the whole book"),
        _f("total_ask_qty", pa.int64(), "shares", "total resting ask quantity over the whole book"),
    ]
)

TRADES = pa.schema(
    [
        _f("symbol", pa.string(), "-", "instrument", nullable=False),
        _f("ts", TS_TYPE, "UTC", "exchange time of the fill", nullable=False),
        _f("price", pa.float64(), "CNY", "fill price"),
        _f("qty", pa.int64(), "shares", "fill quantity"),
        _f("amount", pa.float64(), "CNY", "fill amount (price x qty)"),
        _f(
            "side",
            pa.string(),
            "-",
            "aggressor side: B (buyer-initiated), S (seller-initiated), N (auction/unknown)",
        ),
        _f("buy_order_no", pa.int64(), "-", "exchange order number of the buy order"),
        _f("sell_order_no", pa.int64(), "-", "exchange order number of the sell order"),
        _f("seq", pa.int64(), "-", "exchange sequence number (unique per symbol and day)"),
    ]
)

ORDERS = pa.schema(
    [
        _f("symbol", pa.string(), "-", "instrument", nullable=False),
        _f("ts", TS_TYPE, "UTC", "exchange time of the order event", nullable=False),
        _f("order_no", pa.int64(), "-", "exchange order number"),
        _f("side", pa.string(), "-", "B or S"),
        _f("price", pa.float64(), "CNY", "limit price (null for market orders and cancels without price)"),
        _f("qty", pa.int64(), "shares", "order or cancelled quantity"),
        _f("type", pa.string(), "-", "limit, market or cancel"),
        _f("seq", pa.int64(), "-", "exchange sequence number"),
    ]
)

BARS_1D = pa.schema(
    [
        _f("symbol", pa.string(), "-", "instrument", nullable=False),
        _f("date", pa.date32(), "-", "trading date (market time zone)", nullable=False),
        _f("open", pa.float64(), "CNY", "opening price (unadjusted)"),
        _f("high", pa.float64(), "CNY", "high"),
        _f("low", pa.float64(), "CNY", "low"),
        _f("close", pa.float64(), "CNY", "close"),
        _f("vwap", pa.float64(), "CNY", "volume-weighted average price of the day"),
        _f("volume", pa.int64(), "shares", "volume"),
        _f("amount", pa.float64(), "CNY", "amount"),
        _f("pre_close", pa.float64(), "CNY", "exchange previous close (ex-dividend adjusted)"),
        _f("upper_limit_px", pa.float64(), "CNY", "upper limit (null when unlimited)"),
        _f("lower_limit_px", pa.float64(), "CNY", "lower limit (null when unlimited)"),
        _f("adj_factor", pa.float64(), "-", "cumulative backward adjustment factor"),
        _f("suspended", pa.bool_(), "-", "no trading the whole day"),
        _f("limit_up", pa.bool_(), "-", "closed at the upper limit"),
        _f("limit_down", pa.bool_(), "-", "closed at the lower limit"),
        _f("days_since_listing", pa.int32(), "days", "trading days since listing (0 on the listing day)"),
    ]
)

UNIVERSE = pa.schema(
    [
        _f("symbol", pa.string(), "-", "instrument", nullable=False),
        _f("date", pa.date32(), "-", "date the row is valid for (point in time)", nullable=False),
        _f("board", pa.string(), "-", "main, chinext or star"),
        _f("exchange", pa.string(), "-", "SSE or SZSE"),
        _f("industry", pa.string(), "-", "industry code valid on this date"),
        _f("is_st", pa.bool_(), "-", "under risk warning (ST/*ST) on this date"),
        _f("in_index", pa.bool_(), "-", "member of the benchmark index (CSI 300) on this date"),
        _f("listing_date", pa.date32(), "-", "first trading date"),
        _f("suspended", pa.bool_(), "-", "suspended for the whole day"),
    ]
)

TRUTH = pa.schema(
    [
        _f("symbol", pa.string(), "-", "instrument", nullable=False),
        _f("ts", TS_TYPE, "UTC", "snapshot time the latent state refers to", nullable=False),
        _f("efficient_px", pa.float64(), "CNY", "latent efficient price (no microstructure noise)"),
        _f("spot_var", pa.float64(), "1/s", "latent spot variance of log efficient price, per second"),
        _f(
            "integrated_var",
            pa.float64(),
            "-",
            "integrated variance of the log efficient price over (previous snapshot, ts]; jumps excluded",
        ),
        _f("jump", pa.float64(), "-", "sum of log-price jumps over (previous snapshot, ts]"),
    ]
)

QUARANTINE = pa.schema(
    [
        _f("table", pa.string(), "-", "canonical table the row was headed for", nullable=False),
        _f("source", pa.string(), "-", "source file or partition the row came from", nullable=False),
        _f(
            "row",
            pa.int64(),
            "-",
            "0-based row number in the source (data rows, header excluded)",
            nullable=False,
        ),
        _f(
            "rule",
            pa.string(),
            "-",
            "cleaning rule that rejected the row (first in the fixed order)",
            nullable=False,
        ),
        _f("detail", pa.string(), "-", "human-readable reason, with the offending values"),
        _f("symbol", pa.string(), "-", "instrument, when known"),
        _f("ts", TS_TYPE, "UTC", "record time, when known"),
        _f("record", pa.string(), "-", "the rejected row as JSON, so nothing is lost"),
    ]
)

TABLES: dict[str, pa.Schema] = {
    "snapshots": SNAPSHOTS,
    "trades": TRADES,
    "orders": ORDERS,
    "bars_1d": BARS_1D,
    "universe": UNIVERSE,
    "truth": TRUTH,
    "quarantine": QUARANTINE,
}


def schema_for(table: str) -> pa.Schema:
    """Return the canonical schema of ``table`` or raise ``KeyError`` naming the known tables."""
    try:
        return TABLES[table]
    except KeyError:
        raise KeyError(f"unknown table {table!r}; known tables: {', '.join(TABLES)}") from None


def conform(table: pa.Table, name: str) -> pa.Table:
    """Select and cast ``table`` to the canonical column order and types of ``name``.

    Missing nullable columns are added as nulls; a missing non-nullable column or an impossible cast
    raises ``ValueError`` naming the column.
    """
    schema = schema_for(name)
    cols = []
    for field in schema:
        if field.name in table.column_names:
            col = table.column(field.name)
            try:
                col = col.cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise ValueError(f"table {name}: column {field.name!r} cannot be cast to {field.type}: {exc}") from exc
        elif field.nullable:
            col = pa.nulls(table.num_rows, type=field.type)
        else:
            raise ValueError(f"table {name}: required column {field.name!r} is missing")
        cols.append(col)
    return pa.Table.from_arrays(cols, schema=schema)
