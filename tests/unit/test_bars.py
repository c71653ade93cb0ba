"""bars_1d derived from the canonical Level2 tables (l2vol.data.bars.derive_bars)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pytest

from l2vol.data import schema
from l2vol.data.bars import derive_bars
from l2vol.data.loaders import ingest

DATA = Path(__file__).resolve().parents[1] / "data"
D = dt.date(2024, 1, 2)


def write_universe(store) -> None:
    rows = [  # symbol, board, exchange, listing date, suspended
        ("600519.SH", "main", "SSE", dt.date(2001, 8, 27), False),
        ("688981.SH", "star", "SSE", dt.date(2023, 12, 28), False),
        ("000001.SZ", "main", "SZSE", dt.date(1991, 4, 3), False),
        ("600000.SH", "main", "SSE", dt.date(1999, 11, 10), True),
        ("000002.SZ", "main", "SZSE", dt.date(1991, 1, 29), False),
    ]
    cols = list(zip(*rows, strict=True))
    n = len(rows)
    uni = pa.table(
        {
            "symbol": cols[0], "date": [D] * n, "board": cols[1], "exchange": cols[2], "industry": ["x"] * n,
            "is_st": [False] * n, "in_index": [True] * n, "listing_date": cols[3], "suspended": cols[4],
        }
    )  # fmt: skip
    store.write_partition("universe", D, schema.conform(uni, "universe"), schema=schema.UNIVERSE)


@pytest.fixture
def l2_store(tmp_store):
    ingest("sse-l2", DATA / "sse", tmp_store)
    ingest("szse-l2", DATA / "szse", tmp_store, vendor="szse-l2-int")
    write_universe(tmp_store)
    return tmp_store


def by_symbol(store, day=D) -> dict[str, dict]:
    return {r["symbol"]: r for r in store.read_partition("bars_1d", day).to_pylist()}


def test_bars_from_trades_snapshots_and_universe(l2_store):
    summary = derive_bars(l2_store)
    assert summary["dates"] == ["2024-01-02"] and summary["rows"] == {"bars_1d": 4}
    assert summary["universe_symbols_without_level2"] == 1  # 000002.SZ: no rows, not suspended
    bars = by_symbol(l2_store)
    assert sorted(bars) == ["000001.SZ", "600000.SH", "600519.SH", "688981.SH"]

    m = bars["600519.SH"]
    assert (m["open"], m["high"], m["low"], m["close"]) == (1684.0, 1684.51, 1684.0, 1684.49)
    assert m["volume"] == 1600 and m["amount"] == pytest.approx(2694598.0)
    assert m["vwap"] == pytest.approx(2694598.0 / 1600)
    assert m["pre_close"] == 1685.0 and m["upper_limit_px"] == 1853.5 and m["lower_limit_px"] == 1516.5
    assert m["suspended"] is False and m["limit_up"] is False and m["limit_down"] is False
    assert m["date"] == D and m["adj_factor"] is None

    smic = bars["688981.SH"]
    assert smic["days_since_listing"] == 2  # 2023-12-28, 12-29, (new year holiday), 2024-01-02
    assert smic["limit_up"] is False  # STAR in its first 5 days: no limit

    pingan = bars["000001.SZ"]
    assert pingan["volume"] == 302300 and pingan["close"] == 10.51 and pingan["high"] == 10.52
    # SZSE snapshots carry no limits: from the rule table (main board +-10% of pre_close 10.50)
    assert (pingan["lower_limit_px"], pingan["upper_limit_px"]) == (9.45, 11.55)

    pf = bars["600000.SH"]  # suspended in the universe, no Level2 rows
    assert pf["suspended"] is True and pf["volume"] == 0 and pf["close"] is None
    assert pf["limit_up"] is False and pf["limit_down"] is False


def test_rerun_is_idempotent_and_keeps_other_symbols(l2_store, tmp_path):
    src = tmp_path / "bars"
    src.mkdir()
    (src / "b.csv").write_text(
        "date,symbol,open,high,low,close,volume,amount\n"
        "2024-01-02,601318.SH,41.0,41.5,40.8,41.2,1000,41200.0\n"
        "2024-01-02,600519.SH,1.0,1.0,1.0,1.0,1,1.0\n"
    )
    ingest("bars-csv", src, l2_store)
    derive_bars(l2_store)
    first = l2_store.read_manifest("bars_1d", D)
    derive_bars(l2_store, start=D, end=D)
    assert l2_store.read_manifest("bars_1d", D) == first
    bars = by_symbol(l2_store)
    assert bars["601318.SH"]["close"] == 41.2  # from bars-csv, no Level2 data: kept
    assert bars["600519.SH"]["close"] == 1684.49  # derived bars replace the CSV's for the same symbol
    assert [s["format"] for s in first["metadata"]["sources"]] == ["bars-csv", "derived"]
    assert set(first["metadata"]["derived_from"]) == {"snapshots", "trades", "universe"}


def test_without_trades_the_last_snapshot_gives_the_bar(tmp_path, tmp_store):
    src = tmp_path / "snaps"
    src.mkdir()
    (src / "s.csv").write_bytes((DATA / "sse" / "20240102" / "snapshot.csv").read_bytes())
    ingest("sse-l2", src, tmp_store)
    derive_bars(tmp_store)
    bars = by_symbol(tmp_store)
    m = bars["600519.SH"]
    assert (m["open"], m["close"], m["volume"], m["amount"]) == (1684.5, 1684.5, 2400, 4042200.0)
    assert m["days_since_listing"] is None  # no universe
    assert bars["688981.SH"]["close"] == 52.40 and bars["688981.SH"]["volume"] == 60000


def test_foreign_symbols_have_no_limits(tmp_store):
    ingest("lobster", DATA / "lobster", tmp_store)
    derive_bars(tmp_store)
    (aapl,) = tmp_store.read_partition("bars_1d", "2012-06-21").to_pylist()
    assert aapl["limit_up"] is False and aapl["limit_down"] is False and aapl["upper_limit_px"] is None
    assert aapl["volume"] == 5095 and aapl["open"] == 585.91 and aapl["close"] == 585.50


def test_no_level2_data_is_an_error(tmp_store):
    with pytest.raises(ValueError, match="no snapshots or trades partitions"):
        derive_bars(tmp_store, start="2024-01-01", end="2024-01-31")
