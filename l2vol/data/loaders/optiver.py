"""Optiver realized-volatility data set (Kaggle, 2021) -> raw canonical ``snapshots`` and ``trades``.

Layout as published: ``book_{train,test}.parquet/stock_id=N/*.parquet`` with time_id,
seconds_in_bucket, bid_price1/2, ask_price1/2, bid_size1/2, ask_size1/2, and
``trade_{train,test}.parquet/stock_id=N/*.parquet`` with time_id, seconds_in_bucket, price, size,
order_count. A file is a book file when a path component starts with ``book_``, a trade file when one
starts with ``trade_``; the stock comes from the ``stock_id=N`` directory (or a stock_id column).

The data are anonymised: prices are normalised (1.0 near the start of each bucket, no currency), and
time_id numbers 10-minute buckets whose real dates and order are hidden (time_ids are shuffled). Times
therefore map to a synthetic, documented clock (profile ``optiver``, UTC):

* trading date = the ``time_id``-th business day after 2000-01-03 (a Monday; weekdays, no holidays,
  matching the profile's calendar), so every time_id is its own date partition and no bucket ever
  shares a day with another;
* ``ts`` = that date at 00:00:00 UTC + ``seconds_in_bucket`` seconds.

Day-to-day features (lags across dates) are meaningless on this data, because consecutive synthetic
dates are not consecutive in real time. Symbols are ``stock_<N>``. Snapshots carry two book levels and
phase TRADE; trades have side N (no aggressor in the data), amount = price x size and ``seq`` = the
row's 1-based position in its file; ``order_count`` has no canonical column and is not kept.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from l2vol.data import schema
from l2vol.data.loaders import fields
from l2vol.data.loaders.base import SourceUnit, walk
from l2vol.data.loaders.errors import IngestError, RowError
from l2vol.data.vendors import VendorProfile

ANCHOR = np.datetime64("2000-01-03", "D")
BUCKET_SECONDS = 600
BOOK_COLUMNS = {
    "time_id": "int", "seconds_in_bucket": "int",
    "bid_price1": "float", "ask_price1": "float", "bid_size1": "int", "ask_size1": "int",
}  # fmt: skip
BOOK_OPTIONAL = {"bid_price2": "float", "ask_price2": "float", "bid_size2": "int", "ask_size2": "int"}
TRADE_COLUMNS = {"time_id": "int", "seconds_in_bucket": "int", "price": "float", "size": "int"}
_STOCK = re.compile(r"stock_id=(\d+)")


def synthetic_day(time_id: np.ndarray) -> np.ndarray:
    """time_id -> day number (days since 1970-01-01) of its synthetic trading date."""
    return np.busday_offset(ANCHOR, time_id.astype(np.int64), roll="forward").astype(np.int64)


class OptiverLoader:
    def __init__(self, vendor: VendorProfile):
        self.vendor = vendor

    def discover(self, src: Path) -> tuple[list[SourceUnit], list[str]]:
        found, other = walk(src, (".parquet",))
        units = []
        for path, rel in found:
            if self._kind(rel) is None:
                other.append(rel)
            else:
                units.append(SourceUnit(path, rel))
        return units, sorted(other)

    @staticmethod
    def _kind(rel: str) -> str | None:
        parts = Path(rel).parts
        if any(p.startswith("book_") for p in parts):
            return "book"
        if any(p.startswith("trade_") for p in parts):
            return "trade"
        return None

    def parse(self, unit: SourceUnit, display: str, sink) -> None:
        kind = self._kind(unit.rel)
        try:
            pf = pq.ParquetFile(unit.path)
        except (OSError, pa.ArrowException) as exc:
            raise IngestError(display, None, f"not a readable Parquet file ({exc})") from exc
        with pf:
            self._parse_file(pf, kind, unit, display, sink)

    def _parse_file(self, pf: pq.ParquetFile, kind: str, unit: SourceUnit, display: str, sink) -> None:
        names = pf.schema_arrow.names
        required = BOOK_COLUMNS if kind == "book" else TRADE_COLUMNS
        missing = [c for c in required if c not in names]
        if missing:
            raise IngestError(display, None, f"missing column(s) {missing} for an Optiver {kind} file (has {names})")
        wanted = {**required, **({k: v for k, v in BOOK_OPTIONAL.items() if k in names} if kind == "book" else {})}
        for c, want in wanted.items():
            t = pf.schema_arrow.field(c).type
            ok = pa.types.is_integer(t) if want == "int" else (pa.types.is_floating(t) or pa.types.is_integer(t))
            if not ok:
                raise IngestError(
                    display,
                    None,
                    f"column {c} has type {t}, expected {'an integer' if want == 'int' else 'a number'} type",
                )
        m = _STOCK.search(unit.rel)
        has_stock_col = "stock_id" in names
        if m is None and not has_stock_col:
            raise IngestError(display, None, "no stock_id: expected a stock_id=N directory or a stock_id column")
        columns = list(wanted) + (["stock_id"] if has_stock_col and m is None else [])
        table = "snapshots" if kind == "book" else "trades"
        sink.stats.files_by_table[table] += 1
        ignored = [c for c in names if c not in columns and c != "stock_id"]
        sink.stats.ignored_columns[table].update(ignored)
        produced = {"symbol", "ts"} | (
            {"price", "qty", "amount", "side", "seq"}
            if kind == "trade"
            else {"phase"} | {f"{s}_{k}_{lvl}" for s in ("bid", "ask") for k in ("px", "qty") for lvl in (1, 2)}
        )
        sink.stats.absent_columns[table].update(set(schema.schema_for(table).names) - produced)
        row = 1
        try:
            batches = pf.iter_batches(batch_size=65_536, columns=columns)
            for batch in batches:
                try:
                    out, days = self._convert(batch, kind, int(m.group(1)) if m else None, row)
                except RowError as exc:
                    raise IngestError(display, row + exc.index, exc.problem, unit="row") from None
                sink.emit(table, unit.rel, out, days)
                row += batch.num_rows
        except pa.ArrowException as exc:
            raise IngestError(display, None, f"cannot read at or after row {row} ({exc})") from exc
        if row == 1:
            sink.stats.files_without_rows.append(unit.rel)

    def _convert(self, batch: pa.RecordBatch, kind: str, stock: int | None, first_row: int):
        n = batch.num_rows
        for c in batch.schema.names:
            if c in ("time_id", "seconds_in_bucket", "stock_id", "price", "size") or c.endswith("1"):
                fields.require_no_nulls(batch.column(c), c)
        time_id = batch.column("time_id").to_numpy().astype(np.int64)
        secs = batch.column("seconds_in_bucket").to_numpy().astype(np.int64)
        bad = time_id < 0
        if bad.any():
            i = fields.first_index(bad)
            raise RowError(i, f"time_id {time_id[i]} is negative")
        bad = (secs < 0) | (secs >= BUCKET_SECONDS)
        if bad.any():
            i = fields.first_index(bad)
            raise RowError(i, f"seconds_in_bucket {secs[i]} is outside [0, {BUCKET_SECONDS})")
        days = synthetic_day(time_id)
        utc = days * fields.NS_PER_DAY + secs * 10**9
        if stock is None:
            sid = batch.column("stock_id")
            fields.require_no_nulls(sid, "stock_id")
            sym = pc.binary_join_element_wise("stock_", pc.cast(sid, pa.string()), "")
        else:
            sym = pa.repeat(pa.scalar(f"stock_{stock}", pa.string()), n)
        col = batch.column
        if kind == "trade":
            px = pc.cast(col("price"), pa.float64())
            qty = pc.cast(col("size"), pa.int64())
            out = {
                "symbol": sym, "ts": fields.ts_array(utc), "price": px, "qty": qty,
                "amount": pc.multiply(px, pc.cast(qty, pa.float64())),
                "side": pa.repeat(pa.scalar("N", pa.string()), n),
                "seq": pa.array(np.arange(first_row, first_row + n, dtype=np.int64)),
            }  # fmt: skip
            return fields.record_batch(schema.TRADES, out, n), days
        out = {"symbol": sym, "ts": fields.ts_array(utc), "phase": pa.repeat(pa.scalar("TRADE", pa.string()), n)}
        for lvl in (1, 2):
            for side in ("bid", "ask"):
                if f"{side}_price{lvl}" in batch.schema.names:
                    out[f"{side}_px_{lvl}"] = pc.cast(col(f"{side}_price{lvl}"), pa.float64())
                if f"{side}_size{lvl}" in batch.schema.names:
                    out[f"{side}_qty_{lvl}"] = pc.cast(col(f"{side}_size{lvl}"), pa.int64())
        return fields.record_batch(schema.SNAPSHOTS, out, n), days
