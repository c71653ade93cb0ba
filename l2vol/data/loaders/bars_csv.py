"""Daily OHLCV(+VWAP) bar CSV files -> ``bars_1d``.

Required columns (any accepted name, see :data:`l2vol.data.vendors.BARS_COLUMNS`): date, symbol, open,
high, low, close, volume, amount. Optional: vwap, pre_close, adj_factor, upper/lower limit prices,
suspended. Dates are YYYY-MM-DD or YYYYMMDD. A-share symbols may be written 600519.SH, SH600519,
sh.600519 or 600519.XSHG and become 600519.SH; a bare 6-digit code is refused (the exchange would be a
guess); other tickers (AAPL) are kept as written.

Derived values: vwap = amount / volume where the file gives none (null when volume is 0);
suspended = volume == 0 unless a suspended column says otherwise; limit_up / limit_down compare close
with the limit prices when both are known (null otherwise). days_since_listing is left null (it needs
listing dates: ``l2vol data bars`` derives it from the universe table).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from l2vol.data import schema
from l2vol.data.loaders import csvfiles, fields
from l2vol.data.loaders.base import SourceUnit, walk
from l2vol.data.loaders.errors import IngestError, RowError
from l2vol.data.vendors import VendorProfile

_PRICES = ("open", "high", "low", "close", "vwap", "pre_close", "upper_limit_px", "lower_limit_px")
_ASHARE_LIKE = re.compile(r"(?:(?:SH|SZ)\.?\d{6}|\d{6}\.(?:SH|SZ|XSHG|XSHE))", re.IGNORECASE)
_TRUE = {"1", "TRUE", "T", "Y", "YES"}
_FALSE = {"0", "FALSE", "F", "N", "NO"}


def bar_symbol(code: str) -> str:
    c = code.strip()
    if c.isdigit():
        raise KeyError(code)
    if _ASHARE_LIKE.fullmatch(c):
        return fields.ashare_symbol(c, None)
    if not c:
        raise KeyError(code)
    return c


class BarsCsvLoader:
    def __init__(self, vendor: VendorProfile):
        self.vendor = vendor

    def discover(self, src: Path) -> tuple[list[SourceUnit], list[str]]:
        found, other = walk(src, (".csv",))
        return [SourceUnit(p, rel) for p, rel in found], other

    def parse(self, unit: SourceUnit, display: str, sink) -> None:
        v = self.vendor
        csvfiles.check_not_empty_and_complete(unit.path, display)
        head = csvfiles.read_head(unit.path, display, v.encoding, v.delimiter, lines=1)
        names = head[0]
        by_name = {}
        for name in names:
            if name.strip().casefold() in by_name:
                raise IngestError(display, 1, f"duplicate column {name.strip()!r} in the header")
            by_name[name.strip().casefold()] = name
        cols: dict[str, str] = {}
        for fld, aliases in v.columns["bars_1d"].items():
            for a in aliases:
                if a.casefold() in by_name and by_name[a.casefold()] not in cols.values():
                    cols[fld] = by_name[a.casefold()]
                    break
        missing = [f for f in v.required["bars_1d"] if f not in cols]
        if missing:
            accepted = v.columns["bars_1d"]
            desc = "; ".join(f"{f}: one of {', '.join(accepted[f])}" for f in missing)
            raise IngestError(display, 1, f"missing required column(s) for bars_1d: {desc}")
        types = {}
        for fld, col in cols.items():
            types[col] = pa.string() if fld in ("symbol", "date", "suspended") else pa.float64()
        stats = sink.stats
        stats.files_by_table["bars_1d"] += 1
        stats.ignored_columns["bars_1d"].update(n.strip() for n in names if n not in cols.values())
        stats.absent_columns["bars_1d"].update(
            f for f in ("vwap", "pre_close", "adj_factor", "upper_limit_px", "lower_limit_px") if f not in cols
        )
        stats.absent_columns["bars_1d"].add("days_since_listing")
        stats.notes.add("bars_1d.vwap computed as amount / volume where the file gives none")
        rows = 0
        for line, batch in csvfiles.stream(
            unit.path, display, names=names, has_header=True, types=types, encoding=v.encoding, delimiter=v.delimiter
        ):
            try:
                out, days = self._convert(batch, cols)
            except RowError as exc:
                raise IngestError(display, line + exc.index, exc.problem) from None
            sink.emit("bars_1d", unit.rel, out, days)
            rows += batch.num_rows
        if rows == 0:
            stats.files_without_rows.append(unit.rel)

    def _convert(self, batch: pa.RecordBatch, cols: dict[str, str]):
        v = self.vendor
        n = batch.num_rows
        col = lambda f: batch.column(cols[f])  # noqa: E731
        for f in ("symbol", "date", "close", "volume"):
            fields.require_no_nulls(col(f), cols[f], batch)
        days = fields.parse_date_strings(col("date"), cols["date"])
        sym = fields.map_codes(
            col("symbol"), bar_symbol, column=cols["symbol"],
            allowed="600519.SH, SH600519, sh.600519, 600519.XSHG or a non-A-share ticker (bare codes need an exchange)",
        )  # fmt: skip
        out: dict[str, pa.Array] = {"symbol": sym, "date": pa.array(days.astype(np.int32), pa.date32())}
        for f in _PRICES:
            if f in cols:
                out[f] = fields.price(col(f), v.price_divisor)
        vol = pc.multiply(col("volume"), float(v.qty_multiplier))
        frac = pc.not_equal(vol, pc.floor(vol))
        if pc.any(frac).as_py():
            i = fields.first_index(pc.fill_null(frac, False))
            raise RowError(i, f"column {cols['volume']}: {col('volume')[i].as_py()} is not a whole number of shares")
        out["volume"] = pc.cast(vol, pa.int64())
        out["amount"] = fields.amount(col("amount"), v.amount_divisor)
        if "adj_factor" in cols:
            out["adj_factor"] = col("adj_factor")
        vol_f = pc.cast(out["volume"], pa.float64())
        computed = pc.if_else(pc.greater(vol_f, 0.0), pc.divide(out["amount"], vol_f), pa.scalar(None, pa.float64()))
        out["vwap"] = pc.fill_null(out["vwap"], computed) if "vwap" in out else computed
        if "suspended" in cols:
            out["suspended"] = fields.map_codes(
                col("suspended"), _flag, column=cols["suspended"], allowed="1/0, true/false, Y/N"
            ).cast(pa.bool_())
            out["suspended"] = pc.if_else(pc.is_null(out["suspended"]), pc.equal(out["volume"], 0), out["suspended"])
        else:
            out["suspended"] = pc.equal(out["volume"], 0)
        if "upper_limit_px" in cols:
            out["limit_up"] = pc.greater_equal(out["close"], pc.subtract(out["upper_limit_px"], 1e-9))
        if "lower_limit_px" in cols:
            out["limit_down"] = pc.less_equal(out["close"], pc.add(out["lower_limit_px"], 1e-9))
        return fields.record_batch(schema.BARS_1D, out, n), days


def _flag(code: str) -> str:
    c = code.strip().upper()
    if c in _TRUE:
        return "true"
    if c in _FALSE:
        return "false"
    raise KeyError(code)
