"""Write the small vendor sample files under tests/data/ (deterministic; run from the repository root).

    .venv/bin/python tests/data/make_samples.py

The files imitate vendor deliveries closely enough to exercise every mapping of the loaders; their
canonical values are asserted in tests/unit/test_loaders_golden.py. Malformed variants are made by the
tests themselves from these files.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _write(path: Path, header: list[str], rows: list[list], encoding: str = "utf-8") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding=encoding) as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def _book(levels: int, prefix_px: str, prefix_qty: str, prefix_n: str | None) -> list[str]:
    cols = [f"{prefix_px}{i}" for i in range(1, levels + 1)] + [f"{prefix_qty}{i}" for i in range(1, levels + 1)]
    if prefix_n:
        cols += [f"{prefix_n}{i}" for i in range(1, levels + 1)]
    return cols


def sse(out: Path) -> None:
    """SSE: one file per table for the whole market, decimal CNY prices, SecurityID column."""
    root = out / "sse" / "20240102"
    header = ["SecurityID", "TransactTime", "TradingPhaseCode", "PreClosePx", "OpenPx", "HighPx", "LowPx", "LastPx",
              "UpLimitPx", "DownLimitPx", "TotalVolumeTrade", "TotalValueTrade", "NumTrades",
              *_book(10, "BidPrice", "BidOrderQty", "BidNumOrders"), *_book(10, "OfferPrice", "OfferOrderQty", "OfferNumOrders"),
              "TotalBidQty", "TotalOfferQty", "SecurityName"]  # fmt: skip

    def snap(code, t, phase, pre, last, vol, val, n, bid1, ask1, depth, name):
        pct = 0.2 if code.startswith("688") else 0.1  # STAR +-20%, main board +-10%
        up, down = round(pre * (1 + pct), 2), round(pre * (1 - pct), 2)
        bids = [round(bid1 - 0.01 * i, 2) if i < depth else 0 for i in range(10)]
        asks = [round(ask1 + 0.01 * i, 2) if i < depth else 0 for i in range(10)]
        bq = [100 * (i + 1) if i < depth else 0 for i in range(10)]
        bn = [i + 1 if i < depth else 0 for i in range(10)]
        opn = last if phase.startswith("T") else 0
        return [code, t, phase, pre, opn, last, last, last, up, down, vol, val, n,
                *bids, *bq, *bn, *asks, *bq, *bn, sum(bq), sum(bq), name]  # fmt: skip

    _write(
        root / "snapshot.csv",
        header,
        [
            snap("600519", 20240102091500000, "C111    ", 1685.0, 0, 0, 0, 0, 1684.0, 1684.0, 1, "MOUTAI"),
            snap(
                "600519",
                20240102092600000,
                "C111    ",
                1685.0,
                1684.0,
                1200,
                2020800.0,
                12,
                1683.99,
                1684.01,
                10,
                "MOUTAI",
            ),
            snap(
                "600519",
                20240102093003120,
                "T111    ",
                1685.0,
                1684.5,
                2400,
                4042200.0,
                25,
                1684.49,
                1684.51,
                10,
                "MOUTAI",
            ),
            snap("688981", 20240102093003000, "T111    ", 52.30, 52.35, 50000, 2617000.0, 80, 52.34, 52.36, 10, "SMIC"),
            snap("688981", 20240102130000000, "P011    ", 52.30, 52.40, 60000, 3141000.0, 95, 52.39, 52.41, 10, "SMIC"),
        ],
    )
    _write(
        root / "trade.csv",
        [
            "SecurityID",
            "TradeTime",
            "TradePrice",
            "TradeQty",
            "TradeAmount",
            "TradeBuyNo",
            "TradeSellNo",
            "TradeBSFlag",
            "TradeIndex",
            "TradeChannel",
        ],  # fmt: skip
        [
            ["600519", 20240102092500000, 1684.00, 1200, 2020800.00, 101, 55, "N", 1, 1],
            ["600519", 20240102093001500, 1684.51, 100, 168451.00, 230, 180, "B", 2, 1],
            ["600519", 20240102093002250, 1684.49, 300, 505347.00, 200, 240, "S", 3, 1],
            ["688981", 20240102093002000, 52.35, 2000, 104700.00, 501, 499, "B", 1, 2],
        ],
    )
    _write(
        root / "order.csv",
        [
            "SecurityID",
            "TransactTime",
            "OrderNo",
            "Price",
            "Balance",
            "OrderBSFlag",
            "OrdType",
            "OrderIndex",
            "Channel",
        ],
        [
            ["600519", 20240102093000010, 230, 1684.51, 100, "B", "A", 10, 1],
            ["600519", 20240102093000020, 240, 1684.49, 300, "S", "A", 11, 1],
            ["600519", 20240102093100000, 240, 0, 300, "S", "D", 12, 1],
        ],
    )


def szse(out: Path) -> None:
    """SZSE: one file per symbol and table (symbol from the file name), prices and amounts as integers
    x10000 (vendor profile szse-l2-int), 5 book levels, trades with ExecType F/4 and no BS flag."""
    root = out / "szse"
    header = ["TransactTime", "TradingPhaseCode", "PreClosePx", "OpenPx", "HighPx", "LowPx", "LastPx",
              "TotalVolumeTrade", "TotalValueTrade", "NumTrades",
              *_book(5, "BidPrice", "BidOrderQty", None), *_book(5, "OfferPrice", "OfferOrderQty", None)]  # fmt: skip

    def snap(t, phase, last, vol, val, n, bid1, ask1):
        bids = [bid1 - 100 * i for i in range(5)]
        asks = [ask1 + 100 * i for i in range(5)]
        q = [1000 * (i + 1) for i in range(5)]
        return [t, phase, 105000, last if phase[0] == "T" else 0, last, last, last, vol, val, n, *bids, *q, *asks, *q]

    _write(
        root / "snapshots" / "000001.csv",
        header,
        [
            snap(20240102092503000, "O0", 105100, 300000, 31530000000, 150, 105100, 105100),
            snap(20240102093006000, "T0", 105200, 450000, 47310000000, 260, 105100, 105200),
            snap(20240102145703000, "C0", 105300, 9000000, 947000000000, 9000, 105300, 105300),
        ],
    )
    _write(
        root / "trades" / "000001.csv",
        [
            "ChannelNo",
            "ApplSeqNum",
            "BidApplSeqNum",
            "OfferApplSeqNum",
            "LastPx",
            "LastQty",
            "ExecType",
            "TransactTime",
        ],
        [
            [2011, 1001, 900, 850, 105100, 300000, "F", 20240102092500000],
            [2011, 1002, 1000, 980, 105200, 1500, "F", 20240102093004000],
            [2011, 1003, 990, 1001, 105100, 800, "F", 20240102093005000],
            [2011, 1004, 0, 995, 0, 200, "4", 20240102093005500],
            [2011, 1005, 1000, 0, 0, 100, "4", 20240102093006000],
        ],
    )
    _write(
        root / "orders" / "000001.csv",
        ["ChannelNo", "ApplSeqNum", "TransactTime", "Price", "OrderQty", "Side", "OrdType"],
        [
            [2011, 990, 20240102093004500, 105100, 800, "1", "2"],
            [2011, 995, 20240102093004600, 105300, 200, "2", "2"],
            [2011, 1000, 20240102093003000, 0, 1600, "1", "1"],
        ],
    )


def lobster(out: Path) -> None:
    """A LOBSTER pair with 2 levels: submissions, a partial cancel, a deletion, visible and hidden
    executions, a trading halt and its resumption, and a cross trade."""
    root = out / "lobster"
    root.mkdir(parents=True, exist_ok=True)
    stem = "AAPL_2012-06-21_34200000_57600000_{}_2.csv"
    # time, type, order id, size, price x10000, direction
    messages = [
        (34200.004241176, 1, 16113575, 18, 5853300, 1),
        (34200.025552108, 1, 16120456, 18, 5859100, -1),
        (34200.201743503, 1, 16129480, 100, 5853100, 1),
        (34200.201926685, 2, 16129480, 40, 5853100, 1),
        (34200.202161035, 3, 16113575, 18, 5853300, 1),
        (34200.296891250, 4, 16120456, 10, 5859100, -1),
        (34200.305000000, 5, 0, 25, 5856000, 1),
        (34201.000000000, 7, 0, 0, -1, -1),
        (34260.000000000, 7, 0, 0, 1, -1),
        (34260.500000001, 4, 16129480, 60, 5853100, 1),
        (34261.000000000, 6, 0, 5000, 5855000, -1),
    ]
    # ask px, ask size, bid px, bid size for levels 1-2 after each message
    E_ASK, E_BID = 9999999999, -9999999999
    books = [
        (E_ASK, 0, 5853300, 18, E_ASK, 0, E_BID, 0),
        (5859100, 18, 5853300, 18, E_ASK, 0, E_BID, 0),
        (5859100, 18, 5853300, 18, E_ASK, 0, 5853100, 100),
        (5859100, 18, 5853300, 18, E_ASK, 0, 5853100, 60),
        (5859100, 18, 5853100, 60, E_ASK, 0, E_BID, 0),
        (5859100, 8, 5853100, 60, E_ASK, 0, E_BID, 0),
        (5859100, 8, 5853100, 60, E_ASK, 0, E_BID, 0),
        (5859100, 8, 5853100, 60, E_ASK, 0, E_BID, 0),
        (5859100, 8, 5853100, 60, E_ASK, 0, E_BID, 0),
        (5859100, 8, E_BID, 0, E_ASK, 0, E_BID, 0),
        (5859100, 8, E_BID, 0, E_ASK, 0, E_BID, 0),
    ]
    with open(root / stem.format("message"), "w", newline="") as f:
        for t, *rest in messages:
            f.write(f"{t:.9f}," + ",".join(str(x) for x in rest) + "\n")
    with open(root / stem.format("orderbook"), "w", newline="") as f:
        for row in books:
            a1, as1, b1, bs1, a2, as2, b2, bs2 = row
            f.write(",".join(str(x) for x in (a1, as1, b1, bs1, a2, as2, b2, bs2)) + "\n")


def optiver(out: Path) -> None:
    """Optiver book/trade Parquet laid out as in the Kaggle data set (hive-partitioned by stock_id)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = out / "optiver"
    for stock in (0, 1):
        off = 0.001 * stock
        book = pa.table(
            {
                "time_id": pa.array([5, 5, 5, 11, 11], pa.int16()),
                "seconds_in_bucket": pa.array([0, 1, 5, 0, 599], pa.int16()),
                "bid_price1": pa.array([1.001422 + off, 1.001422, 1.001422, 0.999, 0.9985], pa.float32()),
                "ask_price1": pa.array([1.002301 + off, 1.002301, 1.002301, 1.0, 0.9995], pa.float32()),
                "bid_price2": pa.array([1.00137, 1.00137, 1.00137, 0.998, 0.9975], pa.float32()),
                "ask_price2": pa.array([1.002353, 1.002353, 1.002405, 1.001, 1.0005], pa.float32()),
                "bid_size1": pa.array([3, 100, 100, 20, 7], pa.int32()),
                "ask_size1": pa.array([226, 100, 100, 5, 9], pa.int32()),
                "bid_size2": pa.array([2, 2, 2, 30, 40], pa.int32()),
                "ask_size2": pa.array([100, 100, 100, 50, 60], pa.int32()),
            }
        )
        d = root / "book_train.parquet" / f"stock_id={stock}"
        d.mkdir(parents=True)
        pq.write_table(book, d / "part-0.parquet")
        trade = pa.table(
            {
                "time_id": pa.array([5, 5, 11], pa.int16()),
                "seconds_in_bucket": pa.array([21, 46, 300], pa.int16()),
                "price": pa.array([1.002301, 1.002778, 0.9992], pa.float32()),
                "size": pa.array([326, 128, 55], pa.int32()),
                "order_count": pa.array([12, 4, 2], pa.int16()),
            }
        )
        d = root / "trade_train.parquet" / f"stock_id={stock}"
        d.mkdir(parents=True)
        pq.write_table(trade, d / "part-0.parquet")


def bars(out: Path) -> None:
    _write(
        out / "bars" / "bars.csv",
        ["date", "symbol", "open", "high", "low", "close", "volume", "amount", "vwap", "pre_close", "adj_factor"],
        [
            ["2024-01-02", "600519.SH", 1685.0, 1690.0, 1670.01, 1684.0, 2500000, 4211250000.0, 1684.5, 1726.0, 8.2],
            ["2024-01-02", "000001.SZ", 9.39, 9.42, 9.21, 9.21, 127000000, 1180000000.0, "", 9.39, 109.2],
            ["2024-01-03", "600519.SH", 1681.0, 1681.0, 1646.0, 1647.0, 3000000, 4980000000.0, 1660.0, 1684.0, 8.2],
            ["2024-01-03", "000001.SZ", 9.19, 9.22, 9.15, 9.20, 0, 0.0, "", 9.21, 109.2],
        ],
    )


SAMPLES = ("sse", "szse", "lobster", "optiver", "bars")


def make_all(out: Path = HERE) -> list[Path]:
    """(Re)write every sample under ``out``; returns the files written."""
    for name in SAMPLES:
        shutil.rmtree(out / name, ignore_errors=True)
    sse(out)
    szse(out)
    lobster(out)
    optiver(out)
    bars(out)
    return sorted(p for name in SAMPLES for p in (out / name).rglob("*") if p.is_file())


if __name__ == "__main__":
    for p in make_all():
        print(f"{p.relative_to(HERE)}  {p.stat().st_size} bytes")
