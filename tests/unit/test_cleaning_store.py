"""clean_store / validate_store on a small partitioned store: outputs, lineage, accounting, idempotence."""

from __future__ import annotations

import datetime as dt
import json
import posixpath
from zoneinfo import ZoneInfo

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from l2vol.data import schema as S
from l2vol.data.cleaning import clean_store, restore_records, validate_store
from l2vol.storage import DatasetStore

D1, D2 = dt.date(2024, 1, 2), dt.date(2024, 1, 3)
SH = ZoneInfo("Asia/Shanghai")


def at(day: dt.date, hms: str) -> dt.datetime:
    return dt.datetime.combine(day, dt.time.fromisoformat(hms), SH).astimezone(dt.UTC)


def book(day: dt.date, hms: str, **kw) -> dict:
    row = {
        "symbol": "600519.SH",
        "ts": at(day, hms),
        "phase": "TRADE",
        "last_px": 10.0,
        "upper_limit_px": 11.0,
        "lower_limit_px": 9.0,
        "bid_px_1": 10.0,
        "bid_qty_1": 100,
        "ask_px_1": 10.01,
        "ask_qty_1": 200,
    }
    return {**row, **kw}


def fill(day: dt.date, hms: str, seq: int, price: float = 10.0, qty: int = 100, **kw) -> dict:
    row = {"symbol": "600519.SH", "ts": at(day, hms), "price": price, "qty": qty, "amount": price * qty}
    return {**row, "side": "B", "buy_order_no": seq, "sell_order_no": seq + 1000, "seq": seq, **kw}


def table(name: str, rows: list[dict]) -> pa.Table:
    return S.conform(pa.Table.from_pylist(rows), name)


@pytest.fixture
def raw(tmp_path) -> DatasetStore:
    """Two days; day 1 snapshots in two part files, with one defect per quarantine rule."""
    store = DatasetStore(f"file://{tmp_path / 'raw'}")
    snaps_d1 = [
        book(D1, "09:25:00", phase="PREOPEN", upper_limit_px=None, lower_limit_px=None),  # limits come later
        book(D1, "10:00:00"),
        book(D1, "10:00:00"),  # duplicate
        book(D1, "12:00:00"),  # out_of_session
        book(D1, "10:00:06"),
        book(D1, "10:00:03"),  # out_of_order
        book(D1, "10:00:09", ask_px_1=9.98, bid_px_1=10.01),  # crossed_book
        book(D1, "10:00:12", bid_px_1=11.0, ask_px_1=None),  # limit_locked (flag)
    ]
    store.write_partition("snapshots", D1, table("snapshots", snaps_d1), schema=S.SNAPSHOTS, max_rows_per_file=5)
    trades_d1 = [
        fill(D1, "10:00:01", 1),
        fill(D1, "10:00:02", 2, price=11.5),  # price_outside_limits
        fill(D1, "10:00:03", 3, price=0.0),  # non_positive_price
        fill(D1, "10:00:04", 4, amount=123.0),  # amount_mismatch (repair)
        fill(D1, "10:00:05", 6),
        fill(D1, "10:00:06", 5),  # out_of_order by seq
        fill(D1, "10:00:07", 7, symbol=None),  # missing_key
    ]
    # Canonical partitions cannot hold a null symbol; a raw one written with relaxed nullability can.
    relaxed = pa.schema([f.with_nullable(True) for f in S.TRADES])
    store.write_partition("trades", D1, table("trades", trades_d1).cast(relaxed), schema=relaxed)
    store.write_partition("snapshots", D2, table("snapshots", [book(D2, "10:00:00")]), schema=S.SNAPSHOTS)
    store.write_partition("trades", D2, table("trades", [fill(D2, "10:00:00", 1)]), schema=S.TRADES)
    universe = S.conform(pa.table({"symbol": ["600519.SH"], "date": [D1], "board": ["main"]}), "universe")
    store.write_partition("universe", D1, universe, schema=S.UNIVERSE, metadata={"source": "test"})
    return store


EXPECTED_QUARANTINE = {
    "missing_key": 1,
    "duplicate": 1,
    "out_of_session": 1,
    "out_of_order": 2,
    "non_positive_price": 1,
    "price_outside_limits": 1,
    "crossed_book": 1,
}


def test_clean_store_writes_kept_quarantine_copies_and_reports(raw, tmp_path):
    dst = DatasetStore(f"file://{tmp_path / 'clean'}")
    summary = clean_store(raw, dst)
    assert summary.counts(action="quarantine") == EXPECTED_QUARANTINE
    assert summary.counts(action="repair") == {"amount_mismatch": 1}
    assert summary.counts(table="snapshots", action="flag") == {"limit_locked": 1, "auction_bid_eq_ask": 0, "halted": 0}
    assert summary.totals() == {"rows_in": 17, "kept": 9, "quarantined": 8, "repaired": 1, "flagged": 1}
    assert summary.totals("trades") == {"rows_in": 8, "kept": 4, "quarantined": 4, "repaired": 1, "flagged": 0}

    assert dst.read_partition("snapshots", D1).num_rows == 4
    trades = dst.read_partition("trades", D1)
    assert trades.schema.equals(S.TRADES) and trades.column("seq").to_pylist() == [1, 4, 6]
    assert trades.column("amount").to_pylist()[1] == 10.0 * 100  # repaired
    assert dst.read_partition("universe", D1).equals(raw.read_partition("universe", D1))
    assert dst.read_manifest("universe", D1)["metadata"] == {"source": "test"}
    assert dst.read_partition("quarantine", D2).num_rows == 0  # written empty: re-runs replace stale rows

    # Lineage in the manifest of a cleaned partition.
    meta = dst.read_manifest("trades", D1)["metadata"]
    assert meta["rows_in"] == 7 and meta["rows_quarantined"] == 4 and meta["counts"]["amount_mismatch"] == 1
    assert meta["source"]["files"][0]["sha256"] == raw.read_manifest("trades", D1)["files"][0]["sha256"]

    # Each quarantine row names its source part file and row; the record is that row, exactly.
    q = dst.read_partition("quarantine", D1)
    assert q.num_rows == 8
    man = raw.read_manifest("snapshots", D1)
    assert [f["rows"] for f in man["files"]] == [5, 3]
    for tbl in ("snapshots", "trades"):
        mine = q.filter(pa.compute.equal(q.column("table"), tbl))
        restored = restore_records(q, tbl)
        for i, (source, row) in enumerate(
            zip(mine.column("source").to_pylist(), mine.column("row").to_pylist(), strict=True)
        ):
            assert source.startswith(f"table={tbl}/date=2024-01-02/part-")
            original = pq.read_table(posixpath.join(raw.root, source)).slice(row, 1)
            assert pl.from_arrow(original).equals(pl.from_arrow(restored.slice(i, 1))), (source, row)
    rules = dict(zip(q.column("row").to_pylist()[:4], q.column("rule").to_pylist()[:4], strict=True))
    assert rules == {2: "duplicate", 3: "out_of_session", 0: "out_of_order", 1: "crossed_book"}  # rows 5, 6 of file 2

    # Reports.
    assert summary.index_location == dst.location("reports/quality/index.html")
    assert dst.exists("reports/quality/index.html") and dst.exists("reports/quality/summary.json")
    day = dst.read_json("reports/quality/date=2024-01-02/quality.json")
    assert day["tables"]["snapshots"]["rows_in"] == 8 and day["copied"] == {"universe": 1}
    assert [f["rows_in"] for f in day["tables"]["snapshots"]["files"]] == [5, 3]
    assert dst.read_json("reports/quality/summary.json") == json.loads(json.dumps(summary.to_dict()))


def test_clean_store_is_idempotent(raw, tmp_path):
    dst = DatasetStore(f"file://{tmp_path / 'clean'}")
    clean_store(raw, dst)
    first = {(t, d): dst.read_manifest(t, d) for t in dst.list_tables() for d in dst.list_dates(t)}
    reports = {p: dst.read_bytes(p) for p in ("reports/quality/index.html", "reports/quality/summary.json")}
    clean_store(raw, dst)
    again = {(t, d): dst.read_manifest(t, d) for t in dst.list_tables() for d in dst.list_dates(t)}
    assert first == again and len(first) == 7
    assert reports == {p: dst.read_bytes(p) for p in reports}


def test_validate_store_counts_like_clean_and_writes_no_data(raw, tmp_path):
    tables = raw.list_tables()
    summary = validate_store(raw)
    assert raw.list_tables() == tables  # no quarantine, nothing rewritten
    assert summary.counts() == clean_store(raw, DatasetStore(f"file://{tmp_path / 'c'}")).counts()
    assert summary.mode == "validate" and summary.destination is None
    assert raw.exists("reports/quality/date=2024-01-03/quality.html")
    elsewhere = DatasetStore(f"file://{tmp_path / 'reports'}")
    one_day = validate_store(raw, start=D2, end=D2, report_store=elsewhere)
    assert [d.date for d in one_day.dates] == [D2] and elsewhere.exists("reports/quality/index.html")


def test_clean_store_reports_progress(raw, tmp_path):
    events = []

    class Recorder:
        def task(self, name, total):
            events.append(("task", name, total))

        def advance(self, name, n=1, note=""):
            events.append(("advance", name, note))

    clean_store(raw, DatasetStore(f"file://{tmp_path / 'c'}"), progress=Recorder())
    assert events[0] == ("task", "clean", 2)
    assert events[1] == ("advance", "clean", "2024-01-02: 8 rows quarantined")


def test_clean_store_refuses_in_place_and_empty_ranges(raw, tmp_path):
    with pytest.raises(ValueError, match="in place"):
        clean_store(raw, DatasetStore(raw.uri))
    with pytest.raises(ValueError, match="no committed snapshots, trades or orders partitions between 2025-01-01"):
        clean_store(raw, DatasetStore(f"file://{tmp_path / 'c'}"), start="2025-01-01")
    with pytest.raises(KeyError, match="unknown market profile 'nyse'"):
        validate_store(raw, profile="nyse")


def test_quarantine_already_in_the_source_is_carried_over(raw, tmp_path):
    prior = S.conform(
        pa.table({"table": ["trades"], "source": ["vendor.csv"], "row": [7], "rule": ["missing_key"]}), "quarantine"
    )
    raw.write_partition("quarantine", D1, prior, schema=S.QUARANTINE)
    dst = DatasetStore(f"file://{tmp_path / 'clean'}")
    summary = clean_store(raw, dst)
    q = dst.read_partition("quarantine", D1)
    assert q.num_rows == 9 and q.column("source")[0].as_py() == "vendor.csv"
    assert summary.dates[0].notes == ["quarantine rows already in the source, carried over unchanged: 1"]
    assert summary.totals()["quarantined"] == 8  # the report counts this run's rules only
