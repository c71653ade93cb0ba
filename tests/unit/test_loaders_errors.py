"""Malformed vendor files fail with an IngestError naming the file, the line (1-based, header included)
and the problem, and leave the store untouched."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from l2vol.data.loaders import IngestError, ingest

DATA = Path(__file__).resolve().parents[1] / "data"
TRADE = DATA / "sse" / "20240102" / "trade.csv"


def sse_trades(tmp_path: Path, edit=None, *, raw: bytes | None = None, name: str = "trade.csv") -> Path:
    """A copy of the SSE sample trade file, optionally edited line by line (0 = header)."""
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    path = src / name
    if raw is not None:
        path.write_bytes(raw)
        return path
    lines = TRADE.read_text().splitlines()
    if edit is not None:
        lines = edit(lines)
    path.write_text("".join(line + "\n" for line in lines))
    return path


def fails(fmt: str, src: Path, store, *, line: int | None, match: str, **kw) -> IngestError:
    with pytest.raises(IngestError, match=match) as info:
        ingest(fmt, src, store, **kw)
    err = info.value
    assert err.row == line, str(err)
    assert err.file.startswith(str(src)), str(err)  # the file itself, as found under src
    assert store.list_tables() == []  # nothing committed
    return err


def replace(line_no: int, old: str, new: str):
    def edit(lines):
        lines[line_no] = lines[line_no].replace(old, new, 1)
        return lines

    return edit


def test_wrong_type_names_line_column_and_value(tmp_path, tmp_store):
    path = sse_trades(tmp_path, replace(2, "1684.51", "abc"))
    err = fails(
        "sse-l2", path, tmp_store, line=3, match=r"trade\.csv, line 3: column TradePrice: 'abc' is not a number"
    )
    assert err.file == str(path)


def test_integer_column_with_decimals(tmp_path, tmp_store):
    path = sse_trades(tmp_path, replace(4, ",2000,", ",2000.5,"))
    fails("sse-l2", path, tmp_store, line=5, match="column TradeQty: '2000.5' is not an integer")


def test_missing_required_column(tmp_path, tmp_store):
    def drop_price(lines):
        return [",".join(f for i, f in enumerate(line.split(",")) if i != 2) for line in lines]

    path = sse_trades(tmp_path, drop_price)
    fails("sse-l2", path, tmp_store, line=1, match="missing required column.*price: one of TradePrice, LastPx, Price")


def test_truncated_file_partial_last_line(tmp_path, tmp_store):
    path = sse_trades(tmp_path, raw=TRADE.read_bytes()[:-12])
    fails("sse-l2", path, tmp_store, line=5, match="truncated")


def test_short_line_in_the_middle(tmp_path, tmp_store):
    path = sse_trades(tmp_path, lambda lines: [*lines[:2], lines[2][:20], *lines[3:]])
    fails("sse-l2", path, tmp_store, line=3, match="expected 10 fields.*found 2")


def test_empty_file(tmp_path, tmp_store):
    path = sse_trades(tmp_path, raw=b"")
    fails("sse-l2", path, tmp_store, line=1, match="empty file")


def test_blank_line(tmp_path, tmp_store):
    path = sse_trades(tmp_path, lambda lines: [*lines[:3], "", *lines[3:]])
    fails("sse-l2", path, tmp_store, line=4, match="empty line")


def test_header_only_file_is_reported_not_an_error(tmp_path, tmp_store):
    path = sse_trades(tmp_path, lambda lines: lines[:1])
    summary = ingest("sse-l2", path, tmp_store)
    assert summary["rows"] == {} and summary["files_without_rows"] == ["trade.csv"]


def test_wrong_encoding_in_header(tmp_path, tmp_store):
    raw = "证券代码,TradeTime,TradePrice,TradeQty\n600519,20240102093001500,1684.51,100\n".encode("gbk")
    path = sse_trades(tmp_path, raw=raw)
    fails("sse-l2", path, tmp_store, line=1, match="not valid utf-8.*wrong encoding")


def test_wrong_encoding_in_a_text_column(tmp_path, tmp_store):
    text = TRADE.read_bytes().replace(b",S,3,", ",卖,3,".encode("gbk"))
    path = sse_trades(tmp_path, raw=text)
    fails("sse-l2", path, tmp_store, line=4, match="not valid utf-8")


def test_unknown_code(tmp_path, tmp_store):
    path = sse_trades(tmp_path, replace(3, ",S,", ",X,"))
    fails("sse-l2", path, tmp_store, line=4, match=r"column TradeBSFlag: unknown code 'X' \(accepted: B, S, N")


def test_invalid_time_stamp(tmp_path, tmp_store):
    path = sse_trades(tmp_path, replace(2, "20240102093001500", "20241302093001500"))
    fails("sse-l2", path, tmp_store, line=3, match="20241302 is not a valid date")
    path = sse_trades(tmp_path, replace(2, "20240102093001500", "20240102096101500"))
    fails("sse-l2", path, tmp_store, line=3, match="invalid time of day 09:61:01")
    path = sse_trades(tmp_path, replace(3, "20240102093002250", "202401020930"))
    fails("sse-l2", path, tmp_store, line=4, match="202401020930 is not YYYYMMDDHHMMSSmmm")
    path = sse_trades(tmp_path, replace(3, "20240102093002250", "93002250"))
    fails("sse-l2", path, tmp_store, line=4, match="mixes YYYYMMDDHHMMSSmmm stamps and HHMMSSmmm")


def test_symbol_of_the_other_exchange(tmp_path, tmp_store):
    path = sse_trades(tmp_path, replace(2, "600519", "000001.SZ"))
    fails("sse-l2", path, tmp_store, line=3, match="unknown code '000001.SZ'")


def test_integer_prices_read_as_cny_are_refused(tmp_path, tmp_store):
    src = tmp_path / "szse"
    shutil.copytree(DATA / "szse" / "trades", src)
    err = fails("szse-l2", src, tmp_store, line=2, match="implausible")
    assert "szse-l2-int" in str(err)


def test_decimal_prices_read_as_integers_are_refused(tmp_path, tmp_store):
    path = sse_trades(tmp_path)
    fails("sse-l2", path, tmp_store, line=2, vendor="sse-l2-int", match="column TradePrice: '1684.0' is not an integer")


def test_cannot_tell_the_table(tmp_path, tmp_store):
    path = sse_trades(tmp_path, raw=b"a,b\n1,2\n")
    fails("sse-l2", path, tmp_store, line=1, match="cannot tell which table")


def test_symbol_needed_from_column_or_name(tmp_path, tmp_store):
    raw = b"TradeTime,TradePrice,TradeQty\n20240102093001500,7.0,100\n"
    path = sse_trades(tmp_path, raw=raw, name="day.csv")
    fails("sse-l2", path, tmp_store, line=1, match="does not start with a 6-digit SH code")


def test_szse_cancel_must_name_one_order(tmp_path, tmp_store):
    src = tmp_path / "src"
    src.mkdir()
    text = (DATA / "szse" / "trades" / "000001.csv").read_text().replace("2011,1004,0,995,", "2011,1004,7,995,")
    (src / "000001.csv").write_text(text)
    fails("szse-l2", src, tmp_store, line=5, vendor="szse-l2-int", match="must name exactly one order")


def test_bad_file_among_good_ones_leaves_store_untouched(tmp_path, tmp_store):
    ingest("sse-l2", DATA / "sse", tmp_store)
    before = {t: tmp_store.read_manifest(t, "2024-01-02") for t in ("snapshots", "trades", "orders")}
    src = tmp_path / "src"
    shutil.copytree(DATA / "sse", src)
    bad = src / "20240102" / "zz_trade.csv"
    bad.write_text(TRADE.read_text().replace("1684.49", "1684.4x"))
    with pytest.raises(IngestError, match=r"zz_trade\.csv, line 4"):
        ingest("sse-l2", src, tmp_store)
    assert {t: tmp_store.read_manifest(t, "2024-01-02") for t in before} == before


# ------------------------------------------------------------------------------------------- LOBSTER
def lobster_copy(tmp_path: Path) -> tuple[Path, Path, Path]:
    src = tmp_path / "lob"
    shutil.copytree(DATA / "lobster", src)
    msg = next(src.glob("*_message_*.csv"))
    return src, msg, Path(str(msg).replace("_message_", "_orderbook_"))


def test_lobster_line_counts_must_match(tmp_path, tmp_store):
    src, msg, book = lobster_copy(tmp_path)
    book.write_text("".join(book.read_text().splitlines(keepends=True)[:-2]))
    err = fails("lobster", src, tmp_store, line=10, match="has more lines than")
    assert err.file == str(msg)


def test_lobster_needs_both_files(tmp_path, tmp_store):
    src, _msg, book = lobster_copy(tmp_path)
    book.unlink()
    fails("lobster", src, tmp_store, line=None, match="without its orderbook file")


def test_lobster_bad_event_type(tmp_path, tmp_store):
    src, msg, _book = lobster_copy(tmp_path)
    lines = msg.read_text().splitlines(keepends=True)
    lines[3] = lines[3].replace(",2,", ",9,", 1)
    msg.write_text("".join(lines))
    fails("lobster", src, tmp_store, line=4, match="event type 9 is not one of 1-7")


def test_lobster_with_a_header_is_refused(tmp_path, tmp_store):
    src, msg, _book = lobster_copy(tmp_path)
    msg.write_text("Time,Type,OrderID,Size,Price,Direction\n" + msg.read_text())
    fails("lobster", src, tmp_store, line=1, match="column time: 'Time' is not a number")


# ------------------------------------------------------------------------------------------- Optiver
def test_optiver_missing_column_and_wrong_type(tmp_path, tmp_store):
    d = tmp_path / "opt" / "trade_train.parquet" / "stock_id=3"
    d.mkdir(parents=True)
    f = d / "part-0.parquet"
    pq.write_table(pa.table({"time_id": [5], "seconds_in_bucket": [1], "price": [1.0]}), f)
    fails("optiver", tmp_path / "opt", tmp_store, line=None, match=r"missing column\(s\) \['size'\]")
    pq.write_table(pa.table({"time_id": [5], "seconds_in_bucket": [1], "price": ["1.0"], "size": [3]}), f)
    fails("optiver", tmp_path / "opt", tmp_store, line=None, match="column price has type string")


def test_optiver_bad_value_names_the_row(tmp_path, tmp_store):
    d = tmp_path / "opt" / "book_train.parquet" / "stock_id=3"
    d.mkdir(parents=True)
    t = pq.read_table(DATA / "optiver" / "book_train.parquet" / "stock_id=0" / "part-0.parquet")
    secs = t.column("seconds_in_bucket").to_pylist()
    secs[3] = 600
    pq.write_table(t.set_column(1, "seconds_in_bucket", pa.array(secs, pa.int16())), d / "p.parquet")
    fails("optiver", tmp_path / "opt", tmp_store, line=4, match="row 4: seconds_in_bucket 600 is outside")


def test_optiver_corrupt_file(tmp_path, tmp_store):
    d = tmp_path / "opt" / "book_train.parquet" / "stock_id=3"
    d.mkdir(parents=True)
    (d / "p.parquet").write_bytes(b"PAR1 not really")
    fails("optiver", tmp_path / "opt", tmp_store, line=None, match="not a readable Parquet file")


# ---------------------------------------------------------------------------------------- bars-csv
def bars_copy(tmp_path: Path, old: str, new: str) -> Path:
    src = tmp_path / "bars"
    src.mkdir()
    (src / "bars.csv").write_text((DATA / "bars" / "bars.csv").read_text().replace(old, new, 1))
    return src


def test_bars_bare_code_is_refused(tmp_path, tmp_store):
    src = bars_copy(tmp_path, "000001.SZ", "000001")
    fails("bars-csv", src, tmp_store, line=3, match="unknown code '000001'.*bare codes need an exchange")


def test_bars_bad_date(tmp_path, tmp_store):
    src = bars_copy(tmp_path, "2024-01-03", "2024-01-32")
    fails("bars-csv", src, tmp_store, line=4, match="'2024-01-32' is not a date")


def test_bars_missing_column(tmp_path, tmp_store):
    src = bars_copy(tmp_path, ",amount,", ",amt,")
    fails("bars-csv", src, tmp_store, line=1, match="amount: one of amount, turnover, value")


def test_unknown_format_and_missing_source(tmp_path, tmp_store):
    with pytest.raises(ValueError, match="unknown format 'csv'"):
        ingest("csv", tmp_path, tmp_store)
    with pytest.raises(IngestError, match="no such file or directory"):
        ingest("sse-l2", tmp_path / "nope", tmp_store)
    with pytest.raises(IngestError, match="no sse-l2 files found"):
        ingest("sse-l2", tmp_path, tmp_store)
