"""The canonical tables of DESIGN §2 as explicit Arrow schemas with units and docs, and conform()."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pyarrow as pa
import pytest

from l2vol.data.schema import N_LEVELS, PHASES, TABLES, TS_TYPE, conform, schema_for

DESIGN_TABLES = {"snapshots", "trades", "orders", "bars_1d", "universe", "truth", "quarantine"}


def test_the_canonical_tables_are_those_of_the_design():
    assert set(TABLES) == DESIGN_TABLES


@pytest.mark.parametrize("name", sorted(DESIGN_TABLES))
def test_every_field_has_unit_and_doc_metadata(name):
    schema = schema_for(name)
    assert len(set(schema.names)) == len(schema.names), "duplicate column names"
    for field in schema:
        meta = field.metadata or {}
        assert meta.get(b"unit", b"").strip(), f"{name}.{field.name} has no unit"
        assert len(meta.get(b"doc", b"").strip()) >= 3, f"{name}.{field.name} has no doc"


@pytest.mark.parametrize("name", sorted(DESIGN_TABLES))
def test_keys_are_required_and_times_are_utc(name):
    schema = schema_for(name)
    assert schema.field("symbol" if name != "quarantine" else "table").nullable is False
    if "ts" in schema.names:
        assert schema.field("ts").type == TS_TYPE == pa.timestamp("ns", tz="UTC")
    for field in schema:
        if pa.types.is_timestamp(field.type):
            assert field.type.tz == "UTC", f"{name}.{field.name} is not stored in UTC"


def test_snapshots_columns():
    s = schema_for("snapshots")
    expected = [
        "symbol", "ts", "phase", "last_px", "open_px", "high_px", "low_px", "pre_close",
        "upper_limit_px", "lower_limit_px", "cum_volume", "cum_amount", "num_trades",
    ]  # fmt: skip
    for side in ("bid", "ask"):
        for kind in ("px", "qty", "n"):
            expected += [f"{side}_{kind}_{i}" for i in range(1, N_LEVELS + 1)]
    expected += ["total_bid_qty", "total_ask_qty"]
    assert s.names == expected
    assert N_LEVELS == 10
    assert s.field("bid_px_3").type == pa.float64() and s.field("bid_px_3").metadata[b"unit"] == b"CNY"
    assert s.field("ask_qty_10").type == pa.int64() and s.field("ask_qty_10").metadata[b"unit"] == b"shares"
    assert s.field("ask_n_1").metadata[b"unit"] == b"orders"
    assert b"level 7 of the ask book" in s.field("ask_px_7").metadata[b"doc"]
    for phase in PHASES:  # the phase column documents its values
        assert phase.encode() in s.field("phase").metadata[b"doc"]


@pytest.mark.parametrize(
    ("name", "columns"),
    [
        ("trades", ["symbol", "ts", "price", "qty", "amount", "side", "buy_order_no", "sell_order_no", "seq"]),
        ("orders", ["symbol", "ts", "order_no", "side", "price", "qty", "type", "seq"]),
        (
            "bars_1d",
            ["symbol", "date", "open", "high", "low", "close", "vwap", "volume", "amount", "pre_close",
             "upper_limit_px", "lower_limit_px", "adj_factor", "suspended", "limit_up", "limit_down",
             "days_since_listing"],
        ),
        ("universe", ["symbol", "date", "board", "exchange", "industry", "is_st", "in_index", "listing_date", "suspended"]),
        ("truth", ["symbol", "ts", "efficient_px", "spot_var", "integrated_var", "jump"]),
        ("quarantine", ["table", "source", "row", "rule", "detail", "symbol", "ts", "record"]),
    ],
)  # fmt: skip
def test_table_columns_follow_the_design(name, columns):
    assert schema_for(name).names == columns


def test_units_of_quantities_and_prices():
    trades = schema_for("trades")
    assert trades.field("qty").metadata[b"unit"] == b"shares"  # never lots
    assert trades.field("price").metadata[b"unit"] == b"CNY"
    assert b"B (buyer-initiated)" in trades.field("side").metadata[b"doc"]
    assert schema_for("bars_1d").field("days_since_listing").metadata[b"unit"] == b"days"
    assert schema_for("truth").field("spot_var").metadata[b"unit"] == b"1/s"


def test_schema_for_unknown_table_names_the_known_ones():
    with pytest.raises(KeyError, match="unknown table 'ticks'; known tables: snapshots, trades"):
        schema_for("ticks")


# ------------------------------------------------------------------------------------- conform


def test_conform_orders_casts_and_fills_missing_nullable_columns():
    local = pd.to_datetime(["2024-01-02 09:30:00", "2024-01-02 09:30:03"]).tz_localize("Asia/Shanghai")
    raw = pa.table(
        {
            "qty": pa.array([100, 200], pa.int32()),
            "extra_vendor_col": ["x", "y"],
            "price": pa.array([1700, 1701], pa.int64()),
            "ts": local,
            "symbol": ["600519.SH", "600519.SH"],
        }
    )
    got = conform(raw, "trades")
    assert got.schema.equals(schema_for("trades"), check_metadata=True)
    assert got.column("qty").to_pylist() == [100, 200]
    assert got.column("price").to_pylist() == [1700.0, 1701.0]
    assert got.column("side").null_count == 2 and got.column("seq").null_count == 2
    # Same instants, now in UTC: 09:30 in Shanghai is 01:30 UTC.
    assert got.column("ts").to_pylist()[0] == dt.datetime(2024, 1, 2, 1, 30, tzinfo=dt.UTC)
    assert "extra_vendor_col" not in got.column_names


def test_conform_of_an_empty_table_keeps_the_schema():
    got = conform(pa.table({"symbol": pa.array([], pa.string()), "ts": pa.array([], TS_TYPE)}), "orders")
    assert got.num_rows == 0 and got.schema.equals(schema_for("orders"))


def test_conform_missing_required_column_names_it():
    with pytest.raises(ValueError, match="table trades: required column 'ts' is missing"):
        conform(pa.table({"symbol": ["600519.SH"], "price": [1.0]}), "trades")


def test_conform_impossible_cast_names_table_and_column():
    raw = pa.table({"symbol": ["600519.SH"], "ts": pa.array([0], TS_TYPE), "qty": ["one hundred"]})
    with pytest.raises(ValueError, match=r"table trades: column 'qty' cannot be cast to int64"):
        conform(raw, "trades")


def test_conform_unknown_table():
    with pytest.raises(KeyError, match="unknown table"):
        conform(pa.table({"symbol": ["a"]}), "ticks")
