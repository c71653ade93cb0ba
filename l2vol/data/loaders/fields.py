"""Vectorized field conversions shared by the loaders: times, symbols, codes, prices and quantities.

Every check that can fail raises :class:`RowError` with the 0-based row in the batch; the loader adds
the file and line. Nothing here drops rows.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from l2vol.data.loaders.errors import RowError

EPOCH = dt.date(1970, 1, 1)
NS_PER_DAY = 86_400 * 10**9
NS_PER_MS = 10**6


def first_index(mask: np.ndarray | pa.Array) -> int:
    """Index of the first True (callers know there is one)."""
    if isinstance(mask, pa.Array | pa.ChunkedArray):
        mask = mask.to_numpy(zero_copy_only=False)
    return int(np.argmax(np.asarray(mask, dtype=bool)))


def require_no_nulls(arr: pa.Array, column: str, batch: pa.RecordBatch | None = None) -> None:
    """Refuse empty values in a required column (an all-empty row is reported as an empty line)."""
    if arr.null_count == 0:
        return
    i = first_index(arr.is_null())
    if batch is not None and all(batch.column(j)[i].as_py() is None for j in range(batch.num_columns)):
        raise RowError(i, "empty line")
    raise RowError(i, f"column {column} is empty")


def day_number(d: dt.date) -> int:
    return (d - EPOCH).days


def day_date(n: int) -> dt.date:
    return EPOCH + dt.timedelta(days=int(n))


def _yyyymmdd_days(values: np.ndarray, what: str) -> np.ndarray:
    """YYYYMMDD integers -> days since 1970-01-01 (validated through the unique values)."""
    if len(values) and values.min() == values.max():  # the usual case: one trading day per batch
        uniq, inverse = values[:1], np.zeros(len(values), dtype=np.intp)
    else:
        uniq, inverse = np.unique(values, return_inverse=True)
    days = np.empty(len(uniq), dtype=np.int64)
    for k, v in enumerate(uniq):
        v = int(v)
        try:
            days[k] = day_number(dt.date(v // 10000, v // 100 % 100, v % 100))
        except ValueError:
            raise RowError(first_index(values == v), f"{what}: {v} is not a valid date (YYYYMMDD)") from None
    return days[inverse]


def _parse_date(text: str) -> dt.date:
    t = text.strip().replace("/", "-")
    if t.isdigit() and len(t) == 8:
        return dt.date(int(t[:4]), int(t[4:6]), int(t[6:8]))
    if len(t) > 10:  # a date-time at midnight, as some bar vendors write dates
        stamp = dt.datetime.fromisoformat(t)
        if stamp.time() != dt.time(0):
            raise ValueError(t)
        return stamp.date()
    return dt.date.fromisoformat(t)


def parse_date_strings(arr: pa.Array, column: str) -> np.ndarray:
    """Dates written YYYYMMDD, YYYY-MM-DD, YYYY/MM/DD (or a date-time at 00:00) -> days since 1970-01-01."""
    require_no_nulls(arr, column)
    enc = pc.dictionary_encode(arr)
    out = np.empty(len(enc.dictionary), dtype=np.int64)
    for k, s in enumerate(enc.dictionary.to_pylist()):
        try:
            out[k] = day_number(_parse_date(s))
        except ValueError:
            idx = first_index(pc.equal(enc.indices, k))
            raise RowError(idx, f"column {column}: {s!r} is not a date (YYYYMMDD or YYYY-MM-DD)") from None
    return out[enc.indices.to_numpy(zero_copy_only=False)]


def local_times_from_digits(
    stamps: np.ndarray,
    column: str,
    *,
    dates: np.ndarray | None = None,
    path_day: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Vendor time stamps written as digits -> (local wall-clock ns since epoch, local day numbers).

    ``stamps`` are YYYYMMDDHHMMSSmmm (17 digits; a date column is then not needed), or HHMMSSmmm times of
    day (leading zeros may be missing: 93000120 is 09:30:00.120) dated by a date column (``dates``, day
    numbers) or else by the file's path (``path_day``).
    """
    if not len(stamps):
        return stamps, stamps
    full = (stamps >= 10**16) & (stamps < 10**17)
    if full.all():
        days = _yyyymmdd_days(stamps // 10**9, f"column {column}")
        tod = stamps % 10**9
    elif (neither := ~full & ((stamps < 0) | (stamps >= 10**9))).any():
        i = first_index(neither)
        raise RowError(i, f"column {column}: {stamps[i]} is not YYYYMMDDHHMMSSmmm (17 digits) or HHMMSSmmm")
    elif full.any():
        i = first_index(full != full[0])
        raise RowError(i, f"column {column}: {stamps[i]} mixes YYYYMMDDHHMMSSmmm stamps and HHMMSSmmm times of day")
    else:
        tod = stamps
        if dates is not None:
            days = dates
        elif path_day is not None:
            days = np.full(len(tod), path_day, dtype=np.int64)
        else:
            raise RowError(
                0,
                f"column {column} holds times of day (HHMMSSmmm) but the file has no date column and no "
                "YYYYMMDD in its path; add a TradeDate column or put the file under a YYYYMMDD directory",
            )
    hh, mm, ss, ms = tod // 10**7, tod // 10**5 % 100, tod // 1000 % 100, tod % 1000
    bad = (hh > 23) | (mm > 59) | (ss > 59)
    if bad.any():
        i = first_index(bad)
        raise RowError(
            i, f"column {column}: {stamps[i]} has an invalid time of day {hh[i]:02d}:{mm[i]:02d}:{ss[i]:02d}"
        )
    tod_ms = ((hh * 60 + mm) * 60 + ss) * 1000 + ms
    return days * NS_PER_DAY + tod_ms * NS_PER_MS, days


def local_to_utc(local_ns: np.ndarray, tz: str) -> np.ndarray:
    """Market wall-clock ns -> UTC ns. Times that do not exist or are ambiguous (DST changes) are refused."""
    if tz == "UTC":
        return local_ns
    idx = pd.DatetimeIndex(local_ns.view("M8[ns]")).tz_localize(tz, ambiguous="NaT", nonexistent="NaT")
    utc = idx.asi8
    if idx.hasnans:
        i = first_index(np.asarray(idx.isna()))
        when = pd.Timestamp(int(local_ns[i]))
        raise RowError(i, f"local time {when} does not exist or is ambiguous in {tz} (daylight-saving change)")
    return utc


def ts_array(utc_ns: np.ndarray) -> pa.Array:
    return pa.array(utc_ns, pa.int64()).view(pa.timestamp("ns", tz="UTC"))


def map_codes(
    arr: pa.Array,
    mapping: Callable[[str], str | None],
    *,
    column: str,
    allowed: str,
) -> pa.Array:
    """Map vendor codes to canonical strings through the distinct values (fast for low cardinality).

    ``mapping`` returns the canonical value or raises ``KeyError`` for an unknown code. Nulls stay null.
    """
    enc = pc.dictionary_encode(arr)
    values = []
    for k, code in enumerate(enc.dictionary.to_pylist()):
        try:
            values.append(mapping(code))
        except KeyError:
            idx = first_index(pc.equal(enc.indices, k))
            raise RowError(idx, f"column {column}: unknown code {code!r} (accepted: {allowed})") from None
    return pa.array(values, pa.string()).take(enc.indices)


_ASHARE_SYMBOL = re.compile(r"(?:(SH|SZ)\.?)?(\d{1,6})(?:\.(SH|SZ|XSHG|XSHE))?", re.IGNORECASE)
_EXCHANGE = {"SH": "SH", "SZ": "SZ", "XSHG": "SH", "XSHE": "SZ"}


def ashare_symbol(code: str, exchange: str | None) -> str:
    """``600519``, ``600519.SH``, ``SH600519``, ``sh.600519``, ``600519.XSHG`` -> ``600519.SH``.

    Codes that lost leading zeros (``1``) are padded to 6 digits. ``exchange`` (SH/SZ) is the format's
    exchange: a code that names the other one is refused; ``None`` requires the code to name one.
    Raises ``KeyError`` when the code is not an A-share code.
    """
    m = _ASHARE_SYMBOL.fullmatch(code.strip())
    if m is None or (m.group(1) and m.group(3)):
        raise KeyError(code)
    named = _EXCHANGE[(m.group(1) or m.group(3)).upper()] if (m.group(1) or m.group(3)) else None
    if named is None and exchange is None:
        raise KeyError(code)
    if named is not None and exchange is not None and named != exchange:
        raise KeyError(code)
    return f"{m.group(2).zfill(6)}.{named or exchange}"


def symbols_from_column(arr: pa.Array, column: str, exchange: str) -> pa.Array:
    require_no_nulls(arr, column)
    return map_codes(
        arr,
        lambda c: ashare_symbol(c, exchange),
        column=column,
        allowed=f"6-digit codes of the {exchange} exchange, e.g. 600519, 600519.{exchange}",
    )


def price(arr: pa.Array, divisor: int, *, zero_is_null: bool = False) -> pa.Array:
    """Vendor prices -> float64 currency units. ``zero_is_null``: vendors write 0 for 'no price'
    (empty book level, no trade yet), which becomes null."""
    out = pc.cast(arr, pa.float64())
    if divisor != 1:
        out = pc.divide(out, float(divisor))
    if zero_is_null:
        out = pc.if_else(pc.equal(out, 0.0), pa.scalar(None, pa.float64()), out)
    return out


def quantity(arr: pa.Array, multiplier: int) -> pa.Array:
    out = pc.cast(arr, pa.int64())
    return pc.multiply_checked(out, multiplier) if multiplier != 1 else out


def amount(arr: pa.Array, divisor: int) -> pa.Array:
    out = pc.cast(arr, pa.float64())
    return pc.divide(out, float(divisor)) if divisor != 1 else out


def check_price_scale(arr: pa.Array, max_price: float | None, column: str, hint: str) -> None:
    """Refuse a batch whose median positive price is implausibly high: the vendor profile's price
    divisor does not match the file (e.g. integer prices x10000 read as CNY)."""
    if max_price is None:
        return
    pos = pc.filter(arr, pc.greater(arr, 0.0))
    if len(pos) == 0:
        return
    med = pc.approximate_median(pos).as_py()
    if med is not None and med > max_price:
        i = first_index(pc.fill_null(pc.greater(arr, max_price), False))
        raise RowError(
            i,
            f"column {column}: prices around {med:g} are implausible (> {max_price:g}): the prices look scaled; {hint}",
        )


def record_batch(sch: pa.Schema, cols: dict[str, pa.Array | None], n: int) -> pa.RecordBatch:
    """A record batch of schema ``sch`` from ``cols`` (missing or None columns become nulls, others are
    cast to the schema's types)."""
    arrays = []
    for f in sch:
        a = cols.get(f.name)
        if a is None:
            a = pa.nulls(n, type=f.type)
        elif isinstance(a, pa.ChunkedArray):
            a = a.combine_chunks()
        if a.type != f.type:
            a = a.cast(f.type)
        arrays.append(a)
    return pa.RecordBatch.from_arrays(arrays, schema=sch)
