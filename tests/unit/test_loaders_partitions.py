"""How ingested rows become date partitions: grouping across files and dates, bounded memory (spill),
per-symbol merge with stored rows, idempotent re-runs and the source record in manifests."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pyarrow as pa

from l2vol.data import schema
from l2vol.data.loaders import ingest
from l2vol.storage import DatasetStore

DATA = Path(__file__).resolve().parents[1] / "data"
D = dt.date(2024, 1, 2)


def manifests(store: DatasetStore) -> dict:
    return {(t, d): store.read_manifest(t, d) for t in store.list_tables() for d in store.list_dates(t)}


def test_rerun_is_idempotent(tmp_store):
    ingest("sse-l2", DATA / "sse", tmp_store)
    first = manifests(tmp_store)
    summary = ingest("sse-l2", DATA / "sse", tmp_store)
    assert manifests(tmp_store) == first
    assert summary["rows_kept_from_store"] == {}  # everything replaced by the same rows


def test_two_exchanges_merge_in_either_order(tmp_path):
    a, b = DatasetStore(str(tmp_path / "a")), DatasetStore(str(tmp_path / "b"))
    ingest("sse-l2", DATA / "sse", a)
    summary = ingest("szse-l2", DATA / "szse", a, vendor="szse-l2-int")
    assert summary["rows_kept_from_store"] == {"orders": 3, "snapshots": 5, "trades": 4}
    ingest("szse-l2", DATA / "szse", b, vendor="szse-l2-int")
    ingest("sse-l2", DATA / "sse", b)
    assert manifests(a) == manifests(b)  # rows ordered by (format, file): same parts, same manifests
    snaps = a.read_partition("snapshots", D)
    assert snaps.num_rows == 8
    assert [s["format"] for s in a.read_manifest("snapshots", D)["metadata"]["sources"]] == ["sse-l2", "szse-l2"]


def test_renamed_file_replaces_the_symbols_rows(tmp_path, tmp_store):
    ingest("sse-l2", DATA / "sse", tmp_store)
    src = tmp_path / "renamed"
    shutil.copytree(DATA / "sse" / "20240102", src)
    (src / "trade.csv").rename(src / "trades_v2.csv")
    (src / "trades_v2.csv").write_text((src / "trades_v2.csv").read_text().replace("1684.51,100", "1684.51,200"))
    ingest("sse-l2", src / "trades_v2.csv", tmp_store)
    trades = tmp_store.read_partition("trades", D).to_pylist()
    assert len(trades) == 4  # not 8: the new file's symbols replace the old file's rows
    assert [t["qty"] for t in trades if t["seq"] == 2 and t["symbol"] == "600519.SH"] == [200]
    sources = tmp_store.read_manifest("trades", D)["metadata"]["sources"]
    assert [s["file"] for s in sources] == ["trades_v2.csv"]


def test_partial_symbol_overlap_keeps_other_symbols(tmp_path, tmp_store):
    ingest("sse-l2", DATA / "sse", tmp_store)
    src = tmp_path / "one"
    src.mkdir()
    lines = (DATA / "sse" / "20240102" / "trade.csv").read_text().splitlines()
    (src / "688981_fix.csv").write_text("\n".join([lines[0], lines[4].replace("52.35", "52.36")]) + "\n")
    ingest("sse-l2", src, tmp_store)
    trades = tmp_store.read_partition("trades", D).to_pylist()
    # rows are ordered by source file: the kept rows of 20240102/trade.csv, then 688981_fix.csv
    assert [(t["symbol"], t["price"]) for t in trades] == [
        ("600519.SH", 1684.0),
        ("600519.SH", 1684.51),
        ("600519.SH", 1684.49),
        ("688981.SH", 52.36),
    ]
    sources = tmp_store.read_manifest("trades", D)["metadata"]["sources"]
    assert [(s["file"], s["rows"]) for s in sources] == [("20240102/trade.csv", 3), ("688981_fix.csv", 1)]


def test_files_spanning_dates_and_dates_spanning_files(tmp_path, tmp_store):
    src = tmp_path / "src"
    src.mkdir()
    head = "SecurityID,TradeTime,TradePrice,TradeQty,TradeIndex\n"
    (src / "a.csv").write_text(head + "600000,20240102093000000,7.0,100,1\n600000,20240103093000000,7.1,100,1\n")
    (src / "b.csv").write_text(head + "600001,20240102093000000,9.0,100,1\n600001,20240103093000000,9.1,100,1\n")
    summary = ingest("sse-l2", src, tmp_store)
    assert summary["dates"] == ["2024-01-02", "2024-01-03"] and summary["partitions"] == 2
    for day, prices in ((D, [7.0, 9.0]), (dt.date(2024, 1, 3), [7.1, 9.1])):
        assert tmp_store.read_partition("trades", day).column("price").to_pylist() == prices
        srcs = tmp_store.read_manifest("trades", day)["metadata"]["sources"]
        assert [(s["file"], s["rows"]) for s in srcs] == [("a.csv", 1), ("b.csv", 1)]


def test_spilling_spool_gives_the_same_partitions(tmp_path):
    small, big = DatasetStore(str(tmp_path / "s")), DatasetStore(str(tmp_path / "b"))
    s = ingest("lobster", DATA / "lobster", small, spool_budget=1, spool_dir=tmp_path)
    assert s["spilled_bytes"] > 0
    b = ingest("lobster", DATA / "lobster", big)
    assert b["spilled_bytes"] == 0
    assert manifests(small) == manifests(big)
    assert list(tmp_path.glob("l2vol-ingest-*")) == []  # the spool is removed


def test_partition_written_without_sources_is_merged_as_one_run(tmp_store):
    other = schema.conform(pa.table({"symbol": ["600000.SH"], "ts": pa.array([0], schema.TS_TYPE)}), "trades")
    tmp_store.write_partition("trades", D, other, schema=schema.TRADES)
    ingest("sse-l2", DATA / "sse", tmp_store)
    trades = tmp_store.read_partition("trades", D)
    assert trades.column("symbol").to_pylist()[0] == "600000.SH" and trades.num_rows == 5
    first = tmp_store.read_manifest("trades", D)["metadata"]["sources"][0]
    assert first["format"] == "" and first["rows"] == 1


def test_progress_reports_files_and_partitions(tmp_store):
    events = []

    class Recorder:
        def task(self, name, total):
            events.append(("task", name, total))

        def advance(self, name, n=1, note=""):
            events.append(("advance", name, note))

    ingest("sse-l2", DATA / "sse", tmp_store, progress=Recorder())
    assert ("task", "parse sse-l2", 3) in events and ("task", "write sse-l2", 3) in events
    assert ("advance", "parse sse-l2", "20240102/trade.csv") in events
    assert ("advance", "write sse-l2", "snapshots 2024-01-02") in events


def test_many_small_files_with_interleaved_dates(tmp_path):
    """One bar file per symbol, dates out of order: each date's rows follow file order, whether the
    spool keeps everything in memory or spills almost every batch."""
    src = tmp_path / "bars"
    src.mkdir()
    head = "date,symbol,open,high,low,close,volume,amount\n"
    for k in range(70):  # > the spool's coalescing threshold of batches per group
        sym = f"{600000 + k}.SH"
        lines = [f"2024-01-0{d},{sym},1,1,1,{k}.{d},100,100.0\n" for d in (3, 2, 4, 2)]
        (src / f"{sym}.csv").write_text(head + "".join(lines))
    stores = [DatasetStore(str(tmp_path / name)) for name in ("mem", "spill")]
    ingest("bars-csv", src, stores[0])
    summary = ingest("bars-csv", src, stores[1], spool_budget=20_000, spool_dir=tmp_path)
    assert summary["spilled_bytes"] > 0
    assert manifests(stores[0]) == manifests(stores[1])
    jan2 = stores[1].read_partition("bars_1d", D)
    assert jan2.num_rows == 140
    assert jan2.column("close").to_pylist()[:4] == [0.2, 0.2, 1.2, 1.2]
    sources = stores[1].read_manifest("bars_1d", D)["metadata"]["sources"]
    assert [(s["file"], s["rows"]) for s in sources[:2]] == [("600000.SH.csv", 2), ("600001.SH.csv", 2)]
