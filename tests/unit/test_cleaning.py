"""Cleaning rules on hand-built partitions: each rule fires on its defect and not on a near miss."""

from __future__ import annotations

import datetime as dt
import json
import math
from zoneinfo import ZoneInfo

import polars as pl
import pyarrow as pa
import pytest

from l2vol.data import schema as S
from l2vol.data.cleaning import clean_table, restore_records
from l2vol.data.rules import RULES

DAY = dt.date(2024, 1, 2)
SH = ZoneInfo("Asia/Shanghai")
NY = ZoneInfo("America/New_York")
NAN = float("nan")


def at(hms: str, day: dt.date = DAY, tz: ZoneInfo = SH) -> dt.datetime:
    """Market-local wall-clock time on ``day`` as a UTC datetime."""
    return dt.datetime.combine(day, dt.time.fromisoformat(hms), tz).astimezone(dt.UTC)


BOOK = {
    "symbol": "600519.SH",
    "ts": at("10:00:00"),
    "phase": "TRADE",
    "last_px": 10.0,
    "pre_close": 10.0,
    "upper_limit_px": 11.0,
    "lower_limit_px": 9.0,
    "cum_volume": 1000,
    "bid_px_1": 10.0,
    "bid_qty_1": 500,
    "bid_px_2": 9.99,
    "ask_px_1": 10.01,
    "ask_qty_1": 300,
    "ask_px_2": NAN,  # an empty level
}
FILL = {
    "symbol": "600519.SH",
    "ts": at("10:00:00"),
    "price": 10.0,
    "qty": 100,
    "amount": 1000.0,
    "side": "B",
    "buy_order_no": 11,
    "sell_order_no": 12,
    "seq": 1,
}
ORDER = {"symbol": "600519.SH", "ts": at("10:00:00"), "order_no": 1, "side": "B", "price": 10.0, "qty": 100}


def snaps(*rows: dict) -> pa.Table:
    return S.conform(pa.Table.from_pylist([{**BOOK, **r} for r in rows]), "snapshots")


def fills(*rows: dict) -> pa.Table:
    return S.conform(pa.Table.from_pylist([{**FILL, **r} for r in rows]), "trades")


def orders(*rows: dict) -> pa.Table:
    return S.conform(pa.Table.from_pylist([{**ORDER, "type": "limit", "seq": 1, **r} for r in rows]), "orders")


def same(a: pa.Table, b: pa.Table) -> bool:
    """Tables equal in schema and values, NaN equal to NaN (pyarrow's ``equals`` says NaN != NaN)."""
    return a.schema.equals(b.schema) and pl.from_arrow(a).equals(pl.from_arrow(b))


def quarantined(res) -> dict[int, str]:
    """row -> rule of the quarantined rows."""
    q = res.quarantine
    return dict(zip(q.column("row").to_pylist(), q.column("rule").to_pylist(), strict=True))


def details(res) -> dict[int, str]:
    q = res.quarantine
    return dict(zip(q.column("row").to_pylist(), q.column("detail").to_pylist(), strict=True))


def counted(res, rule: str) -> list[int]:
    """Rows counted under ``rule`` (from the report examples; fixtures stay below the example cap)."""
    return [e["row"] for e in res.quality.examples.get(rule, [])]


# ------------------------------------------------------------------------------------------ rules
def test_missing_key_quarantines_null_or_blank_symbol_and_null_ts():
    data = snaps({"symbol": None}, {"symbol": "  "}, {"ts": None}, {"symbol": None, "ts": None}, {})
    res = clean_table("snapshots", data, date=DAY)
    assert quarantined(res) == {0: "missing_key", 1: "missing_key", 2: "missing_key", 3: "missing_key"}
    d = details(res)
    assert d[0] == "symbol is null" and d[1] == "symbol '  ' is blank" and d[2] == "ts is null"
    assert d[3] == "symbol is null; ts is null"
    assert res.kept.num_rows == 1  # near miss: the complete row stays


def test_duplicate_snapshot_needs_identical_content():
    data = snaps(
        {},
        {},  # exact copy (NaN in ask_px_2 equals NaN) -> duplicate
        {"bid_qty_1": 501},  # same symbol and ts, different content -> kept
        {"symbol": "000001.SZ"},  # same content, other symbol -> kept
    )
    res = clean_table("snapshots", data, date=DAY)
    assert quarantined(res) == {1: "duplicate"}
    assert details(res)[1] == "same symbol, ts and content as row 0 of table=snapshots/date=2024-01-02/<in-memory>"
    assert res.kept.num_rows == 3


def test_duplicate_trade_is_same_symbol_and_seq_first_copy_kept():
    data = fills(
        {"seq": 1},
        {"seq": 1, "price": 10.01, "amount": 1001.0},  # same key, other content -> duplicate
        {"seq": 2},
        {"seq": 1, "symbol": "000001.SZ"},  # other symbol -> kept
        {"seq": None},
        {"seq": None},  # no seq: cannot be compared -> kept, unchecked
    )
    res = clean_table("trades", data, date=DAY)
    assert quarantined(res) == {1: "duplicate"}
    assert "seq 1 of 600519.SH already received in row 0" in details(res)[1]
    assert res.kept.column("price").to_pylist()[0] == 10.0  # the first copy is the one kept
    assert res.quality.unchecked["duplicate"] == 2


def test_duplicate_orders():
    res = clean_table("orders", orders({"seq": 5}, {"seq": 5, "qty": 200}, {"seq": 6}), date=DAY)
    assert quarantined(res) == {1: "duplicate"}
    assert set(res.quality.counts) == {"missing_key", "duplicate", "out_of_session"}


@pytest.mark.parametrize(
    ("local", "inside"),
    [
        ("09:14:59.999", False),
        ("09:15:00", True),  # opening call
        ("09:27:00", True),  # between the call and continuous trading
        ("11:29:59.999", True),
        ("11:30:00", False),  # lunch break
        ("12:59:59.999", False),
        ("13:00:00", True),
        ("14:58:00", True),  # closing call
        ("15:00:00.999", True),
        ("15:00:01", False),
    ],
)
def test_out_of_session_ashare(local, inside):
    for table, data in (("snapshots", snaps({"ts": at(local)})), ("trades", fills({"ts": at(local)}))):
        res = clean_table(table, data, date=DAY)
        assert quarantined(res) == ({} if inside else {0: "out_of_session"}), (table, local)
    if not inside:
        assert (
            details(res)[0]
            == f"local time {local[:8]}{local[8:] or '.000'} (Asia/Shanghai) is outside every session of profile ashare"
        )


def test_out_of_session_other_local_date():
    next_day = dt.date(2024, 1, 3)
    res = clean_table("orders", orders({"ts": at("10:00:00", next_day)}, {"seq": 2}), date=DAY)
    assert quarantined(res) == {0: "out_of_session"}
    assert details(res)[0] == "local date 2024-01-03 (Asia/Shanghai) is not the partition date 2024-01-02"
    # 00:30 UTC on the 2nd is 08:30 local: same date, but before the open.
    res = clean_table("orders", orders({"ts": dt.datetime(2024, 1, 2, 0, 30, tzinfo=dt.UTC)}), date=DAY)
    assert "local time 08:30:00.000" in details(res)[0]


def test_out_of_order_snapshots_by_ts_per_symbol():
    data = snaps(
        {"ts": at("10:00:00")},
        {"ts": at("10:00:06")},
        {"ts": at("10:00:03")},  # late -> out_of_order
        {"ts": at("10:00:06"), "bid_qty_1": 7},  # equal to the max: not late
        {"ts": at("10:00:01"), "symbol": "000001.SZ"},  # other symbol has its own clock
        {"ts": at("10:00:09")},
    )
    res = clean_table("snapshots", data, date=DAY)
    assert quarantined(res) == {2: "out_of_order"}
    assert details(res)[2] == "ts 10:00:03.000 is earlier than 10:00:06.000 already received for 600519.SH"


def test_kept_rows_are_grouped_by_symbol_in_arrival_order_and_quarantine_names_raw_rows():
    data = snaps(  # time-major, as a live feed arrives
        {"ts": at("10:00:00"), "symbol": "600519.SH"},
        {"ts": at("10:00:00"), "symbol": "000001.SZ"},
        {"ts": at("10:00:03"), "symbol": "600519.SH", "bid_qty_1": 1},
        {"ts": at("10:00:03"), "symbol": "000001.SZ"},
        {"ts": at("10:00:02"), "symbol": "600519.SH"},  # late -> out_of_order (raw row 4)
        {"ts": at("10:00:03"), "symbol": "600519.SH", "bid_qty_1": 2},  # same ts, later arrival: stays after
        {"ts": at("10:00:06"), "symbol": "000001.SZ"},
    )
    res = clean_table("snapshots", data, date=DAY)
    assert quarantined(res) == {4: "out_of_order"}
    kept = pl.from_arrow(res.kept)
    assert kept["symbol"].to_list() == ["000001.SZ"] * 3 + ["600519.SH"] * 3
    expected = pl.from_arrow(data).with_row_index("raw").filter(pl.col("raw") != 4)
    expected = expected.sort("symbol", maintain_order=True)
    assert kept.equals(expected.drop("raw"), null_equal=True)
    assert expected["raw"].to_list() == [1, 3, 6, 0, 2, 5]  # each symbol's rows in arrival order
    again = clean_table("snapshots", res.kept, date=DAY)
    assert again.quality.quarantined == 0 and same(again.kept, res.kept)  # cleaning it again changes nothing


def test_out_of_order_ignores_rows_removed_by_earlier_rules():
    data = snaps(
        {"ts": at("10:00:00")},
        {"ts": at("10:00:09", dt.date(2024, 1, 3))},  # other date: out_of_session, not part of the clock
        {"ts": at("10:00:03")},  # would be late after the removed row; is not
        {"ts": at("10:00:03")},  # duplicate of the previous row, not out_of_order
        {"ts": at("10:00:02")},  # late
    )
    res = clean_table("snapshots", data, date=DAY)
    assert quarantined(res) == {1: "out_of_session", 3: "duplicate", 4: "out_of_order"}


def test_out_of_order_trades_by_seq_not_ts():
    data = fills(
        {"seq": 1, "ts": at("10:00:00")},
        {"seq": 3, "ts": at("10:00:01")},
        {"seq": 2, "ts": at("10:00:02")},  # late by seq -> out_of_order
        {"seq": 4, "ts": at("09:59:00")},  # earlier ts but later seq -> kept
        {"seq": None},  # unchecked
    )
    res = clean_table("trades", data, date=DAY)
    assert quarantined(res) == {2: "out_of_order"}
    assert details(res)[2] == "seq 2 is below seq 3 already received for 600519.SH"
    assert res.quality.unchecked["out_of_order"] == 1


def test_non_positive_price_trades():
    data = fills(
        {"seq": 1, "price": 0.0, "amount": 0.0},
        {"seq": 2, "price": -1.0, "amount": -100.0},
        {"seq": 3, "price": NAN},
        {"seq": 4, "qty": 0, "amount": 0.0},
        {"seq": 5, "price": 0.01, "amount": 1.0},  # near miss: smallest tick
    )
    res = clean_table("trades", data, date=DAY)
    assert quarantined(res) == {i: "non_positive_price" for i in range(4)}
    d = details(res)
    assert d[0] == "price 0.0 <= 0" and d[1] == "price -1.0 <= 0"
    assert d[2] == "price is missing (null or NaN)" and d[3] == "qty 0 <= 0"
    assert res.kept.column("seq").to_pylist() == [5]


def test_non_positive_price_snapshot_last_px():
    data = snaps(
        {"ts": at("10:00:00"), "last_px": 0.0},
        {"ts": at("10:00:03"), "last_px": None},  # no trade yet today: fine
        {"ts": at("10:00:06"), "last_px": 0.01},
    )
    res = clean_table("snapshots", data, date=DAY)
    assert quarantined(res) == {0: "non_positive_price"}
    assert details(res)[0] == "last_px 0.0 <= 0"


def test_price_outside_limits_uses_the_days_snapshot_limits():
    book = clean_table(
        "snapshots",
        snaps(
            {"ts": at("09:15:00"), "upper_limit_px": None, "lower_limit_px": None, "phase": "OCALL"},
            {"ts": at("10:00:00")},  # first non-null limits: 9.00 / 11.00
            {"ts": at("10:00:03"), "upper_limit_px": 12.0, "lower_limit_px": 8.0},
        ),
        date=DAY,
    )
    data = fills(
        {"seq": 1, "price": 11.01, "amount": 1101.0},
        {"seq": 2, "price": 11.0, "amount": 1100.0},  # at the limit: fine
        {"seq": 3, "price": 8.99, "amount": 899.0},
        {"seq": 4, "price": 9.0, "amount": 900.0},
        {"seq": 1, "symbol": "000001.SZ", "price": 50.0, "amount": 5000.0},  # no snapshots: unchecked
    )
    res = clean_table("trades", data, date=DAY, day_limits=book.day_limits)
    assert quarantined(res) == {0: "price_outside_limits", 2: "price_outside_limits"}
    assert details(res)[0] == "price 11.01 > upper_limit_px 11.0 of the day"
    assert details(res)[2] == "price 8.99 < lower_limit_px 9.0 of the day"
    assert res.quality.unchecked["price_outside_limits"] == 1
    # Without snapshots nothing is checked, and the report says why.
    res = clean_table("trades", data, date=DAY)
    assert quarantined(res) == {}
    assert res.quality.unchecked["price_outside_limits"] == 5
    assert any("price limits unknown" in n for n in res.quality.notes)


def test_crossed_book_only_in_continuous_trading_with_both_sides():
    data = snaps(
        {"ts": at("10:00:00"), "ask_px_1": 9.98, "bid_px_1": 10.01},
        {"ts": at("10:00:03"), "ask_px_1": 10.0, "bid_px_1": 10.0},  # locked book counts as crossed
        {"ts": at("10:00:06"), "ask_px_1": 10.01, "bid_px_1": 10.0},  # near miss: one tick apart
        {"ts": at("10:00:09"), "ask_px_1": None, "bid_px_1": 10.0},  # one side only
        {"ts": at("10:00:12"), "ask_px_1": 0.0, "bid_px_1": 10.0},  # empty ask level written as 0
        {"ts": at("10:00:15"), "ask_px_1": 9.98, "bid_px_1": 10.01, "phase": None},  # phase from the clock
        {"ts": at("14:58:00"), "ask_px_1": 9.98, "bid_px_1": 10.01, "phase": "CCALL"},  # auction: not crossed
    )
    res = clean_table("snapshots", data, date=DAY)
    assert quarantined(res) == {0: "crossed_book", 1: "crossed_book", 5: "crossed_book"}
    assert details(res)[0] == "ask_px_1 9.98 <= bid_px_1 10.01 (crossed book)"


def test_amount_mismatch_is_repaired_exactly_and_kept():
    price, qty = 10.01, 300
    exact = price * qty  # 3002.9999999999995: the float64 product, not rounded
    data = fills(
        {"seq": 1, "price": price, "qty": qty, "amount": exact + 0.6},
        {"seq": 2, "price": price, "qty": qty, "amount": exact + 0.4},  # within 0.5: untouched
        {"seq": 3, "price": price, "qty": qty, "amount": None},
        {"seq": 4, "price": price, "qty": qty, "amount": NAN},
    )
    res = clean_table("trades", data, date=DAY)
    assert quarantined(res) == {}
    amounts = res.kept.column("amount").to_pylist()
    assert amounts[0] == exact and amounts[2] == exact and amounts[3] == exact
    assert amounts[1] == exact + 0.4
    assert res.quality.counts["amount_mismatch"] == 3 and res.quality.repaired == 3
    assert counted(res, "amount_mismatch") == [0, 2, 3]
    ex = res.quality.examples["amount_mismatch"][0]["detail"]
    assert ex == f"amount {exact + 0.6!r} recomputed as price 10.01 x qty 300 = {exact!r}"
    # Everything except the repaired amounts is unchanged.
    assert same(res.kept.drop_columns(["amount"]), data.drop_columns(["amount"]))


def test_flags_are_counted_and_rows_kept_unchanged():
    data = snaps(
        {"ts": at("09:20:00"), "phase": "OCALL", "bid_px_1": 10.0, "ask_px_1": 10.0},  # auction bid = ask
        {"ts": at("09:21:00"), "phase": "OCALL", "bid_px_1": 10.0, "ask_px_1": 10.02},  # near miss
        {"ts": at("10:00:00"), "bid_px_1": 11.0, "ask_px_1": None},  # limit-locked up
        {"ts": at("10:00:03"), "bid_px_1": 10.99, "ask_px_1": None},  # one tick below: no flag
        {"ts": at("10:00:06"), "bid_px_1": None, "ask_px_1": 9.0},  # limit-locked down
        {"ts": at("10:00:09"), "bid_px_1": 11.0, "ask_px_1": None, "upper_limit_px": None},  # day's limit
        {"ts": at("10:00:12"), "phase": "HALT", "bid_px_1": None, "ask_px_1": None},
        {"ts": at("10:00:15"), "phase": "HALT", "bid_px_1": None, "ask_px_1": None},  # several halted rows
    )
    res = clean_table("snapshots", data, date=DAY)
    assert quarantined(res) == {}
    assert counted(res, "auction_bid_eq_ask") == [0]
    assert counted(res, "limit_locked") == [2, 4, 5]
    assert counted(res, "halted") == [6, 7]
    assert [e["detail"] for e in res.quality.examples["halted"]] == ["phase HALT", "phase HALT"]
    assert res.quality.flagged == 6 and res.quality.kept == 8
    assert same(res.kept, data)


def test_first_rule_wins():
    data = snaps(
        {"ts": at("12:00:00")},  # out_of_session
        {"ts": at("12:00:00")},  # copy of it: duplicate comes first in the order
        {"ts": at("10:00:00"), "last_px": 0.0, "ask_px_1": 9.98, "bid_px_1": 10.01},  # non_positive before crossed
        {"ts": at("10:00:03"), "symbol": None, "last_px": 0.0},  # missing_key before everything
        {"ts": at("10:00:06"), "phase": "HALT", "last_px": -1.0},  # quarantine beats a flag
    )
    res = clean_table("snapshots", data, date=DAY)
    assert quarantined(res) == {
        0: "out_of_session",
        1: "duplicate",
        2: "non_positive_price",
        3: "missing_key",
        4: "non_positive_price",
    }
    assert res.quality.counts["halted"] == 0
    trades = fills(
        {"seq": 1, "price": -12.0, "amount": 5.0},  # non_positive before outside limits and the repair
        {"seq": 1, "price": 10.0, "amount": 5.0},  # duplicate: removed, not repaired
        {"seq": 2, "price": 12.0, "amount": 5.0},  # outside limits: removed, not repaired
    )
    limits = pa.table({"symbol": ["600519.SH"], "upper_limit_px": [11.0], "lower_limit_px": [9.0]})
    res = clean_table("trades", trades, date=DAY, day_limits=limits)
    assert quarantined(res) == {0: "non_positive_price", 1: "duplicate", 2: "price_outside_limits"}
    assert res.quality.counts["amount_mismatch"] == 0


def test_rows_in_equal_kept_plus_quarantined_per_file_and_rule():
    data = snaps(
        {"ts": at("10:00:00")},
        {"ts": at("10:00:00")},
        {"ts": at("12:00:00")},
        {"ts": at("10:00:03"), "ask_px_1": 9.0},
        {"ts": at("10:00:06"), "phase": "HALT"},
        {"ts": at("10:00:09")},
    )
    sources = [
        ("table=snapshots/date=2024-01-02/part-0000-a.parquet", 4),
        ("table=snapshots/date=2024-01-02/part-0001-b.parquet", 2),
    ]
    res = clean_table("snapshots", data, date=DAY, sources=sources)
    q = res.quality
    assert q.rows_in == 6 == q.kept + q.quarantined and res.kept.num_rows == q.kept
    assert [(f.rows_in, f.kept, f.quarantined, f.flagged) for f in q.files] == [(4, 1, 3, 0), (2, 2, 0, 1)]
    assert q.files[0].by_rule["crossed_book"] == 1 and q.files[1].by_rule["halted"] == 1
    assert res.quarantine.column("source").to_pylist() == [sources[0][0]] * 3
    assert res.quarantine.column("row").to_pylist() == [1, 2, 3]
    # Row numbers restart in the second file.
    assert res.quality.examples["halted"][0] == {
        "source": sources[1][0],
        "row": 0,
        "symbol": "600519.SH",
        "time": "2024-01-02 10:00:06.000",
        "detail": "phase HALT",
    }
    q.kept -= 1
    with pytest.raises(RuntimeError, match="rows in 6 != kept 2 \\+ quarantined 3"):
        q.check_invariant()
    with pytest.raises(ValueError, match="sources list 5 rows but the data has 6"):
        clean_table("snapshots", data, date=DAY, sources=[("a", 5)])


def test_quarantine_records_round_trip_to_the_original_values():
    ns_ts = pa.array([1704168000123456789], S.TS_TYPE)[0].as_py()  # 12:00:00.123456789 local, in the lunch break
    data = snaps(
        {"ts": at("12:00:00"), "last_px": 0.1 + 0.2, "bid_px_3": float("inf"), "cum_volume": 2**53 + 1},
        {"ts": at("12:00:03"), "phase": None, "ask_px_1": NAN, "bid_px_2": -0.0},
    )
    data = data.set_column(1, S.SNAPSHOTS.field("ts"), pa.array([ns_ts, at("12:00:03")], S.TS_TYPE))
    res = clean_table("snapshots", data, date=DAY)
    assert res.quarantine.num_rows == 2
    for rec in res.quarantine.column("record").to_pylist():  # strict JSON: no bare NaN/Infinity tokens
        json.loads(rec, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    back = restore_records(res.quarantine, "snapshots")
    assert same(back, data)
    assert math.copysign(1, back.column("bid_px_2")[1].as_py()) == -1.0
    assert back.column("ts")[0].value == 1704168000123456789
    trades = fills({"seq": 1, "price": 0.0, "side": 'B"\\'})
    res = clean_table("trades", trades, date=DAY)
    assert same(restore_records(res.quarantine, "trades"), trades)
    assert res.quarantine.column("ts").to_pylist() == trades.column("ts").to_pylist()
    assert res.quarantine.column("symbol").to_pylist() == ["600519.SH"]


def test_lobster_profile_has_no_ashare_sessions_or_limits():
    def ny(hms):
        return at(hms, tz=NY)

    data = fills(
        {"seq": 1, "ts": ny("09:29:59"), "symbol": "AAPL"},  # before the NASDAQ open
        {"seq": 2, "ts": ny("09:30:00"), "symbol": "AAPL"},
        {"seq": 3, "ts": ny("12:00:00"), "symbol": "AAPL"},  # A-share lunch break would reject it
        {"seq": 4, "ts": ny("15:30:00"), "symbol": "AAPL"},  # after the A-share close
        {"seq": 5, "ts": ny("16:00:00"), "symbol": "AAPL"},
    )
    res = clean_table("trades", data, date=DAY, profile="lobster")
    assert quarantined(res) == {0: "out_of_session", 4: "out_of_session"}
    assert "(America/New_York) is outside every session of profile lobster" in details(res)[0]
    assert res.quality.unchecked["price_outside_limits"] == 3
    book = snaps(
        {"symbol": "AAPL", "ts": ny("12:00:00"), "upper_limit_px": None, "lower_limit_px": None, "ask_px_1": None},
        {"symbol": "AAPL", "ts": ny("12:00:01"), "upper_limit_px": None, "lower_limit_px": None, "bid_px_1": None},
    )
    res = clean_table("snapshots", book, date=DAY, profile="lobster")
    assert quarantined(res) == {} and res.quality.flagged == 0


def test_malformed_partition_names_the_file_and_column():
    bad = pa.table({"symbol": ["600519.SH"], "ts": ["not a time"]})
    with pytest.raises(ValueError, match=r"part-0\.parquet: table snapshots: column 'ts' cannot be cast"):
        clean_table("snapshots", bad, date=DAY, sources=[("table=snapshots/date=2024-01-02/part-0.parquet", 1)])
    with pytest.raises(ValueError, match="not to table 'universe'"):
        clean_table("universe", bad, date=DAY)


def test_extra_and_missing_columns_are_reported():
    data = pa.Table.from_pylist([{**FILL, "vendor_flag": "X"}]).drop_columns(["side"])
    res = clean_table("trades", data, date=DAY)
    notes = " | ".join(res.quality.notes)
    assert "vendor_flag" in notes and "filled with null: side" in notes


def test_every_rule_is_implemented():
    from l2vol.data.cleaning import _TableRules

    assert all(callable(getattr(_TableRules, r.name, None)) for r in RULES)


def test_rows_are_the_same_whether_sliced_or_filtered(monkeypatch):
    import l2vol.data.cleaning as cleaning

    data = fills(*({"seq": i, "price": 0.0 if i % 3 == 0 else 10.0} for i in range(1, 20)))
    sliced = clean_table("trades", data, date=DAY)
    monkeypatch.setattr(cleaning, "_MAX_RUNS", 0)
    filtered = clean_table("trades", data, date=DAY)
    assert sliced.kept.num_rows == filtered.kept.num_rows == 13 and same(sliced.kept, filtered.kept)
    assert filtered.kept.column("seq").to_pylist() == [i for i in range(1, 20) if i % 3]
    assert filtered.quarantine.num_rows == 6 and same(sliced.quarantine, filtered.quarantine)
    assert same(
        restore_records(filtered.quarantine, "trades"), data.filter(pa.array([i % 3 == 0 for i in range(1, 20)]))
    )


@pytest.mark.parametrize("table", ["snapshots", "trades", "orders"])
def test_empty_partition(table):
    res = clean_table(table, S.schema_for(table).empty_table(), date=DAY, sources=[("part-0.parquet", 0)])
    assert res.quality.totals() == {"rows_in": 0, "kept": 0, "quarantined": 0, "repaired": 0, "flagged": 0}
    assert res.kept.schema.equals(S.schema_for(table)) and res.quarantine.schema.equals(S.QUARANTINE)
