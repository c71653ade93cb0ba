"""Golden tests: the project's sample vendor files (tests/data, made by make_samples.py) map to known
canonical values: units and scaling, time zone, phases, sides, cancels -> orders, symbols from names."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pandas as pd
import pytest

from l2vol.data.loaders import FORMATS, IngestError, ingest
from l2vol.data.vendors import VENDORS, get_vendor

DATA = Path(__file__).resolve().parents[1] / "data"


def utc(s: str) -> pd.Timestamp:
    return pd.Timestamp(s, tz="UTC")


def rows(store, table: str) -> list[dict]:
    return store.read(table).to_pylist()


def test_formats_are_the_cli_contract():
    assert FORMATS == ("sse-l2", "szse-l2", "lobster", "optiver", "bars-csv")
    assert all(get_vendor(f).format == f for f in FORMATS)
    assert issubclass(IngestError, ValueError)


def test_sse_snapshots_trades_orders(tmp_store):
    summary = ingest("sse-l2", DATA / "sse", tmp_store)
    assert summary["rows"] == {"orders": 3, "snapshots": 5, "trades": 4}
    assert summary["dates"] == ["2024-01-02"]
    assert summary["files_by_table"] == {"orders": 1, "snapshots": 1, "trades": 1}
    assert summary["ignored_columns"] == {
        "orders": ["Channel"],
        "snapshots": ["SecurityName"],
        "trades": ["TradeChannel"],
    }

    snaps = rows(tmp_store, "snapshots")
    s0, s1, s2, _s3, s4 = snaps
    # Asia/Shanghai is UTC+8: 09:15:00.000 local is 01:15 UTC
    assert s0["symbol"] == "600519.SH" and s0["ts"] == utc("2024-01-02 01:15:00")
    assert s0["phase"] == "OCALL"
    # vendors write 0 for "no price": no trade yet, empty book levels
    assert s0["last_px"] is None and s0["open_px"] is None
    assert s0["bid_px_1"] == 1684.0 and s0["bid_px_2"] is None and s0["bid_qty_2"] == 0
    assert s0["pre_close"] == 1685.0 and s0["upper_limit_px"] == 1853.5 and s0["lower_limit_px"] == 1516.5
    assert s1["phase"] == "PREOPEN"  # call-auction code after 09:25: book frozen
    assert s2["ts"] == utc("2024-01-02 01:30:03.120") and s2["phase"] == "TRADE"
    assert s2["last_px"] == 1684.5 and s2["cum_volume"] == 2400 and s2["cum_amount"] == 4042200.0
    assert s2["bid_px_10"] == pytest.approx(1684.40) and s2["ask_px_10"] == pytest.approx(1684.60)
    assert s2["bid_qty_10"] == 1000 and s2["ask_n_10"] == 10 and s2["total_bid_qty"] == 5500
    assert s4["symbol"] == "688981.SH" and s4["phase"] == "HALT"  # P = suspended
    assert s4["upper_limit_px"] == 62.76  # STAR +-20%

    trades = rows(tmp_store, "trades")
    assert [t["side"] for t in trades] == ["N", "B", "S", "B"]
    t1 = trades[1]
    assert t1 == {
        "symbol": "600519.SH", "ts": utc("2024-01-02 01:30:01.500"), "price": 1684.51, "qty": 100,
        "amount": 168451.0, "side": "B", "buy_order_no": 230, "sell_order_no": 180, "seq": 2,
    }  # fmt: skip

    orders = rows(tmp_store, "orders")
    assert [(o["order_no"], o["side"], o["type"], o["price"], o["seq"]) for o in orders] == [
        (230, "B", "limit", 1684.51, 10),
        (240, "S", "limit", 1684.49, 11),
        (240, "S", "cancel", None, 12),  # SSE OrdType D deletes an order
    ]
    man = tmp_store.read_manifest("snapshots", "2024-01-02")
    assert man["metadata"]["sources"] == [
        {"format": "sse-l2", "file": "20240102/snapshot.csv", "vendor": "sse-l2", "market": "ashare", "rows": 5}
    ]


def test_szse_integer_prices_symbol_from_file_name_and_cancels(tmp_store):
    summary = ingest("szse-l2", DATA / "szse", tmp_store, vendor="szse-l2-int")
    assert summary["rows"] == {"orders": 5, "snapshots": 3, "trades": 3}
    assert summary["absent_columns"]["snapshots"][:3] == ["upper_limit_px", "lower_limit_px", "bid_px_6"]
    assert any("side derived" in n for n in summary["notes"])

    s0, s1, s2 = rows(tmp_store, "snapshots")
    assert s0["symbol"] == "000001.SZ"  # from 000001.csv in an szse directory
    assert s0["ts"] == utc("2024-01-02 01:25:03") and s0["phase"] == "PREOPEN"
    assert s0["last_px"] == 10.51 and s0["pre_close"] == 10.5  # 105100 / 10000
    assert s0["bid_px_1"] == 10.51 and s0["bid_px_5"] == 10.47 and s0["bid_px_6"] is None
    assert s0["cum_amount"] == 3153000.0 and s0["cum_volume"] == 300000
    assert s1["phase"] == "TRADE" and s2["phase"] == "CCALL"  # SZSE: C = closing call

    trades = rows(tmp_store, "trades")  # ExecType F only
    assert [(t["seq"], t["price"], t["qty"], t["side"]) for t in trades] == [
        (1001, 10.51, 300000, "N"),  # opening call: no aggressor
        (1002, 10.52, 1500, "B"),  # buy order 1000 arrived after sell order 980
        (1003, 10.51, 800, "S"),
    ]
    assert trades[1]["amount"] == pytest.approx(15780.0)

    orders = rows(tmp_store, "orders")
    assert [(o["seq"], o["order_no"], o["side"], o["type"], o["price"], o["qty"]) for o in orders] == [
        (990, 990, "B", "limit", 10.51, 800),
        (995, 995, "S", "limit", 10.53, 200),
        (1000, 1000, "B", "market", None, 1600),
        (1004, 995, "S", "cancel", None, 200),  # ExecType 4 in the trade file -> orders, not trades
        (1005, 1000, "B", "cancel", None, 100),
    ]
    assert orders[3]["ts"] == utc("2024-01-02 01:30:05.500")
    sources = tmp_store.read_manifest("orders", "2024-01-02")["metadata"]["sources"]
    assert [(s["file"], s["rows"]) for s in sources] == [("orders/000001.csv", 3), ("trades/000001.csv", 2)]


def test_lobster_pair(tmp_store):
    summary = ingest("lobster", DATA / "lobster", tmp_store)
    assert summary["rows"] == {"orders": 5, "snapshots": 11, "trades": 4}
    assert summary["dates"] == ["2012-06-21"]
    orders = rows(tmp_store, "orders")
    assert orders[0] == {
        "symbol": "AAPL",
        "ts": utc("2012-06-21 13:30:00.004241176"),
        "order_no": 16113575,
        "side": "B",
        "price": 585.33,
        "qty": 18,
        "type": "limit",
        "seq": 1,
    }  # fmt: skip  (EDT is UTC-4)
    assert [(o["type"], o["qty"]) for o in orders[3:]] == [("cancel", 40), ("cancel", 18)]

    trades = rows(tmp_store, "trades")
    assert [(t["side"], t["price"], t["qty"], t["buy_order_no"], t["sell_order_no"]) for t in trades] == [
        ("B", 585.91, 10, None, 16120456),  # a sell limit order executed: buyer-initiated
        ("S", 585.60, 25, 0, None),  # hidden execution
        ("S", 585.31, 60, 16129480, None),
        ("N", 585.50, 5000, None, None),  # cross trade
    ]
    snaps = rows(tmp_store, "snapshots")
    assert snaps[0]["ask_px_1"] is None and snaps[0]["bid_px_1"] == 585.33 and snaps[0]["bid_qty_1"] == 18
    assert snaps[0]["last_px"] is None and snaps[0]["cum_volume"] == 0
    assert snaps[6]["last_px"] == 585.60 and snaps[6]["cum_volume"] == 35 and snaps[6]["num_trades"] == 2
    assert snaps[6]["open_px"] == 585.91 and snaps[6]["high_px"] == 585.91 and snaps[6]["low_px"] == 585.60
    assert [s["phase"] for s in snaps[6:10]] == ["TRADE", "HALT", "TRADE", "TRADE"]
    assert snaps[10]["cum_volume"] == 5095
    src = tmp_store.read_manifest("snapshots", "2012-06-21")["metadata"]["sources"][0]["file"]
    assert src.endswith("_orderbook_2.csv")


def test_optiver_synthetic_clock(tmp_store):
    summary = ingest("optiver", DATA / "optiver", tmp_store)
    # time_id 5 -> 5th business day after 2000-01-03, time_id 11 -> the 11th
    assert summary["dates"] == ["2000-01-10", "2000-01-18"]
    assert summary["ignored_columns"] == {"trades": ["order_count"]}
    snaps = tmp_store.read_partition("snapshots", "2000-01-18").to_pylist()
    last = snaps[1]
    assert last["symbol"] == "stock_0" and last["ts"] == utc("2000-01-18 00:09:59")
    assert last["bid_px_1"] == pytest.approx(0.9985, rel=1e-6) and last["ask_qty_2"] == 60
    assert last["bid_px_3"] is None
    trades = tmp_store.read_partition("trades", "2000-01-10").to_pylist()
    assert trades[0]["ts"] == utc("2000-01-10 00:00:21") and trades[0]["qty"] == 326 and trades[0]["side"] == "N"


def test_bars_csv(tmp_store):
    summary = ingest("bars-csv", DATA / "bars", tmp_store)
    assert summary["rows"] == {"bars_1d": 4}
    b = tmp_store.read_partition("bars_1d", "2024-01-03").to_pylist()
    moutai, pingan = b
    assert moutai["symbol"] == "600519.SH" and moutai["date"] == dt.date(2024, 1, 3)
    assert moutai["close"] == 1647.0 and moutai["vwap"] == 1660.0 and moutai["adj_factor"] == 8.2
    assert moutai["suspended"] is False and moutai["limit_up"] is None
    assert pingan["volume"] == 0 and pingan["suspended"] is True and pingan["vwap"] is None
    jan2 = tmp_store.read_partition("bars_1d", "2024-01-02").to_pylist()
    assert jan2[1]["vwap"] == pytest.approx(1180000000.0 / 127000000)  # empty vwap -> amount / volume


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def test_time_of_day_with_date_column_path_date_and_iso(tmp_path, tmp_store):
    src = tmp_path / "src"
    _write(src / "a.csv", "SecurityID,TradeDate,TradeTime,TradePrice,TradeQty\n600000,20240103,93000120,7.01,100\n")
    _write(src / "20240104" / "b.csv", "SecurityID,TradeTime,TradePrice,TradeQty\n600000,130000000,7.02,200\n")
    _write(src / "c.csv", "SecurityID,TradeTime,TradePrice,TradeQty\n600000,2024-01-05 14:56:59.5,7.03,300\n")
    _write(src / "d.csv", "TradeDate,SecurityID,TradeTime,TradePrice,TradeQty\n20240108,600000,20240108150000000,7,1\n")
    ingest("sse-l2", src, tmp_store)
    ts = [r["ts"] for r in rows(tmp_store, "trades")]
    assert ts == [
        utc("2024-01-03 01:30:00.120"),
        utc("2024-01-04 05:00:00"),
        utc("2024-01-05 06:56:59.5"),
        utc("2024-01-08 07:00:00"),  # a full stamp needs no date column (one may be there)
    ]
    assert tmp_store.list_dates("trades") == [dt.date(2024, 1, d) for d in (3, 4, 5, 8)]


def test_gbk_vendor_profile_from_yaml(tmp_path, tmp_store):
    """A vendor with Chinese column names in GBK, lots (手) and a YAML profile."""
    src = _write(
        tmp_path / "src" / "trades.csv",
        "证券代码,成交时间,成交价格,成交数量,买卖方向\n600519,20240102093001500,1684.51,1,B\n",
        encoding="gbk",
    )
    prof = tmp_path / "vendor.yaml"
    prof.write_text(
        "base: sse-l2\nname: cn-vendor\nencoding: gbk\nqty_multiplier: 100\n"
        "columns:\n  trades:\n    symbol: [证券代码]\n    time: [成交时间]\n    price: [成交价格]\n"
        "    qty: [成交数量]\n    side: [买卖方向]\nmarkers:\n  trades: [成交价格]\n",
        encoding="utf-8",
    )
    summary = ingest("sse-l2", src, tmp_store, vendor=prof)
    assert summary["vendor"] == "cn-vendor"
    (t,) = rows(tmp_store, "trades")
    assert t["symbol"] == "600519.SH" and t["qty"] == 100 and t["side"] == "B"
    assert t["amount"] == pytest.approx(168451.0)


def test_vendor_profiles_validate():
    with pytest.raises(ValueError, match="describes format 'szse-l2'"):
        get_vendor("sse-l2", "szse-l2")
    with pytest.raises(ValueError, match="unknown vendor profile"):
        get_vendor("sse-l2", "nope")
    assert VENDORS["sse-l2-int"].price_divisor == 10_000


def test_yaml_profile_errors_name_the_key(tmp_path):
    p = tmp_path / "v.yaml"
    p.write_text("base: sse-l2\nprice_divisr: 10000\n")
    with pytest.raises(ValueError, match=r"v\.yaml: unknown key\(s\) \['price_divisr'\]"):
        get_vendor("sse-l2", p)
    p.write_text("base: sse-l2\ncolumns:\n  trades:\n    colour: [x]\n")
    with pytest.raises(ValueError, match="columns.trades.colour: unknown field"):
        get_vendor("sse-l2", p)


def test_single_file_source(tmp_path, tmp_store):
    f = tmp_path / "trade.csv"
    shutil.copy(DATA / "sse" / "20240102" / "trade.csv", f)
    summary = ingest("sse-l2", f, tmp_store)
    assert summary["files"] == 1 and summary["rows"] == {"trades": 4}
    assert tmp_store.read_manifest("trades", "2024-01-02")["metadata"]["sources"][0]["file"] == "trade.csv"


def test_docs_list_every_accepted_column():
    """docs/ingest.md is the user's reference: every column name a built-in profile accepts is in it."""
    from l2vol.data.vendors import ASHARE_BOOK_COLUMNS, ASHARE_COLUMNS, ASHARE_MARKERS, BARS_COLUMNS

    doc = (Path(__file__).resolve().parents[2] / "docs" / "ingest.md").read_text()
    level_names = {a.format(i=i) for names in ASHARE_BOOK_COLUMNS.values() for a in names for i in range(1, 11)}
    names = {a for t in (*ASHARE_COLUMNS.values(), *BARS_COLUMNS.values()) for a in sum(t.values(), ())}
    names |= {a for m in ASHARE_MARKERS.values() for a in m}
    missing = sorted(n for n in names - level_names if f"`{n}`" not in doc)
    missing += sorted(t for names in ASHARE_BOOK_COLUMNS.values() for t in names if f"`{t}`" not in doc)
    assert missing == []


def test_samples_match_their_generator(tmp_path):
    """tests/data is what make_samples.py writes (CSV byte for byte, Parquet by content)."""
    import importlib.util

    import pyarrow.parquet as pq

    spec = importlib.util.spec_from_file_location("make_samples", DATA / "make_samples.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    fresh = mod.make_all(tmp_path)
    assert [p.relative_to(tmp_path) for p in fresh] == sorted(
        p.relative_to(DATA) for name in mod.SAMPLES for p in (DATA / name).rglob("*") if p.is_file()
    )
    for p in fresh:
        committed = DATA / p.relative_to(tmp_path)
        if p.suffix == ".parquet":
            assert pq.read_table(p).equals(pq.read_table(committed)), p
        else:
            assert p.read_bytes() == committed.read_bytes(), p
