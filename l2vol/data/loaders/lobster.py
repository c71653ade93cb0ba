"""LOBSTER message + orderbook file pairs -> raw canonical ``snapshots``, ``trades`` and ``orders``.

Files are named ``TICKER_YYYY-MM-DD_STARTMS_ENDMS_message_N.csv`` and ``..._orderbook_N.csv`` (N book
levels); neither has a header, and line k of the orderbook file is the book after message k.

* Message columns: time (seconds after midnight, America/New_York, up to nanoseconds), event type,
  order id, size (shares), price (USD x 10000), direction (1 buy limit order, -1 sell limit order).
* Event types: 1 submission -> ``orders`` limit; 2 partial cancel and 3 deletion -> ``orders`` cancel
  (qty = size cancelled); 4 visible and 5 hidden execution -> ``trades`` with the aggressor opposite
  to the resting order (direction -1 executed = buyer-initiated, side B); 6 cross trade (auction) ->
  ``trades`` with side N; 7 trading halt (price -1 halt, 0 quoting resumes, 1 trading resumes) ->
  the ``phase`` of the snapshots (HALT until trading resumes).
* Every message gives one ``snapshots`` row with the book after it (levels beyond 10 are dropped;
  LOBSTER's empty-level prices +-9999999999 become null) and running day values derived from the
  executions in the file: last_px, open/high/low, cum_volume, cum_amount, num_trades.
* ``seq`` is the message's line number in the file (unique per symbol and day).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from l2vol.data import schema
from l2vol.data.loaders import csvfiles, fields
from l2vol.data.loaders.base import SourceUnit, walk
from l2vol.data.loaders.errors import IngestError, RowError
from l2vol.data.profiles import MarketProfile
from l2vol.data.schema import N_LEVELS
from l2vol.data.vendors import VendorProfile

_NAME = re.compile(
    r"(?P<ticker>.+?)_(?P<date>\d{4}-\d{2}-\d{2})_(?P<start>\d+)_(?P<end>\d+)_(?P<kind>message|orderbook)_(?P<levels>\d+)\.csv"
)
MESSAGE_COLUMNS = ["time", "type", "order_id", "size", "price", "direction"]
_EMPTY_ASK, _EMPTY_BID = 9_999_999_999, -9_999_999_999


class _State:
    """Running day values carried from one chunk of a message file to the next."""

    def __init__(self) -> None:
        self.last_px = np.nan
        self.open_px = np.nan
        self.high = -np.inf
        self.low = np.inf
        self.cum_volume = 0
        self.cum_amount = 0.0
        self.num_trades = 0
        self.phase = "TRADE"


class LobsterLoader:
    def __init__(self, vendor: VendorProfile, market: MarketProfile):
        self.vendor = vendor
        self.market = market

    def discover(self, src: Path) -> tuple[list[SourceUnit], list[str]]:
        found, other = walk(src, (".csv",))
        messages, books = {}, {}
        for path, rel in found:
            m = _NAME.fullmatch(path.name)
            if m is None:
                other.append(rel)
                continue
            key = (str(Path(rel).parent), m["ticker"], m["date"], m["start"], m["end"], m["levels"])
            (messages if m["kind"] == "message" else books)[key] = (path, rel)
        for key, (path, _rel) in books.items():
            if key not in messages:
                raise IngestError(path, None, "orderbook file without its message file (same name with 'message')")
        units = []
        for key, (path, rel) in messages.items():
            if key not in books:
                raise IngestError(path, None, "message file without its orderbook file (same name with 'orderbook')")
            bpath, brel = books[key]
            units.append(SourceUnit(path, rel, bpath, brel))
        return sorted(units, key=lambda u: u.rel), sorted(other)

    def parse(self, unit: SourceUnit, display: str, sink) -> None:
        m = _NAME.fullmatch(unit.path.name)
        ticker, levels = m["ticker"], int(m["levels"])
        try:
            day = dt.date.fromisoformat(m["date"])
        except ValueError:
            raise IngestError(display, None, f"file name date {m['date']!r} is not a valid date") from None
        if levels < 1:
            raise IngestError(display, None, "file name says 0 book levels")
        book_display = str(unit.partner)
        for path, disp in ((unit.path, display), (unit.partner, book_display)):
            csvfiles.check_not_empty_and_complete(path, disp)
        stats = sink.stats
        stats.files_by_table["snapshots"] += 1
        stats.files_by_table["trades"] += 1
        stats.files_by_table["orders"] += 1
        produced = {"symbol", "ts", "phase", "last_px", "open_px", "high_px", "low_px", "cum_volume", "cum_amount",
                    "num_trades"}  # fmt: skip
        produced |= {
            f"{s}_{k}_{i}" for s in ("bid", "ask") for k in ("px", "qty") for i in range(1, min(levels, N_LEVELS) + 1)
        }
        stats.absent_columns["snapshots"].update(set(schema.SNAPSHOTS.names) - produced)
        if levels > N_LEVELS:
            stats.notes.add(f"LOBSTER book levels beyond {N_LEVELS} are not kept (the canonical book has {N_LEVELS})")
        book_names = [f"{s}_{k}_{i}" for i in range(1, levels + 1) for s in ("ask", "bid") for k in ("px", "qty")]
        book_types = {n: pa.int64() for n in book_names if int(n.rsplit("_", 1)[1]) <= N_LEVELS}
        msg_types = {"time": pa.float64(), **{c: pa.int64() for c in MESSAGE_COLUMNS[1:]}}
        msgs = csvfiles.stream(unit.path, display, names=MESSAGE_COLUMNS, has_header=False, types=msg_types)
        books = csvfiles.stream(unit.partner, book_display, names=book_names, has_header=False, types=book_types)
        state = _State()
        day_ns = fields.day_number(day) * fields.NS_PER_DAY
        for line, msg, book in _aligned(msgs, books, display, book_display):
            try:
                for name in book.schema.names:
                    fields.require_no_nulls(book.column(name), name, book)
            except RowError as exc:
                raise IngestError(book_display, line + exc.index, exc.problem) from None
            try:
                self._convert(msg, book, line, ticker, day, day_ns, state, unit, sink)
            except RowError as exc:
                raise IngestError(display, line + exc.index, exc.problem) from None

    def _convert(self, msg, book, line, ticker, day, day_ns, state: _State, unit: SourceUnit, sink) -> None:
        n = msg.num_rows
        for c in MESSAGE_COLUMNS:
            fields.require_no_nulls(msg.column(c), c, msg)
        t = msg.column("time").to_numpy()
        etype = msg.column("type").to_numpy()
        oid = msg.column("order_id").to_numpy()
        size = msg.column("size").to_numpy()
        raw_px = msg.column("price").to_numpy()
        direction = msg.column("direction").to_numpy()
        bad = (etype < 1) | (etype > 7)
        if bad.any():
            i = fields.first_index(bad)
            raise RowError(i, f"event type {etype[i]} is not one of 1-7")
        bad = (direction != 1) & (direction != -1)
        if bad.any():
            i = fields.first_index(bad)
            raise RowError(i, f"direction {direction[i]} is not 1 (buy) or -1 (sell)")
        bad = ~((t >= 0) & (t < 86_400))
        if bad.any():
            i = fields.first_index(bad)
            raise RowError(i, f"time {t[i]} is not seconds after midnight (0 <= t < 86400)")
        local = day_ns + np.rint(t * 1e9).astype(np.int64)
        utc = fields.local_to_utc(local, self.market.timezone)
        days = np.full(n, fields.day_number(day), dtype=np.int64)
        px = raw_px / self.vendor.price_divisor
        seq = np.arange(line, line + n, dtype=np.int64)
        sym = pa.repeat(pa.scalar(ticker, pa.string()), n)

        # orders: submissions, partial cancels, deletions
        om = (etype >= 1) & (etype <= 3)
        if om.any():
            k = int(om.sum())
            out = {
                "symbol": sym[:k],
                "ts": fields.ts_array(utc[om]),
                "order_no": pa.array(oid[om]),
                "side": pa.array(np.where(direction[om] == 1, "B", "S"), pa.string()),
                "price": pa.array(px[om]),
                "qty": pa.array(size[om]),
                "type": pa.array(np.where(etype[om] == 1, "limit", "cancel"), pa.string()),
                "seq": pa.array(seq[om]),
            }
            sink.emit("orders", unit.rel, fields.record_batch(schema.ORDERS, out, k), days[om])

        # trades: executions of resting orders and cross trades
        execd = (etype >= 4) & (etype <= 6)
        if execd.any():
            k = int(execd.sum())
            cross = etype[execd] == 6
            d = direction[execd]
            ids = oid[execd]
            side = np.where(cross, "N", np.where(d == -1, "B", "S"))
            out = {
                "symbol": sym[:k],
                "ts": fields.ts_array(utc[execd]),
                "price": pa.array(px[execd]),
                "qty": pa.array(size[execd]),
                "amount": pa.array(px[execd] * size[execd]),
                "side": pa.array(side, pa.string()),
                "buy_order_no": pa.array(ids, mask=cross | (d != 1)),
                "sell_order_no": pa.array(ids, mask=cross | (d != -1)),
                "seq": pa.array(seq[execd]),
            }
            sink.emit("trades", unit.rel, fields.record_batch(schema.TRADES, out, k), days[execd])

        # snapshots: the book after every message, with running day values
        vol = np.where(execd, size, 0)
        amt = np.where(execd, px * size, 0.0)
        cum_volume = state.cum_volume + np.cumsum(vol)
        cum_amount = state.cum_amount + np.cumsum(amt)
        num_trades = state.num_trades + np.cumsum(execd)
        last_idx = np.maximum.accumulate(np.where(execd, np.arange(n), -1))
        last_px = np.where(last_idx >= 0, px[np.maximum(last_idx, 0)], state.last_px)
        exec_px = np.where(execd, px, np.nan)
        high = np.fmax.accumulate(np.concatenate([[state.high], np.where(execd, px, -np.inf)]))[1:]
        low = np.fmin.accumulate(np.concatenate([[state.low], np.where(execd, px, np.inf)]))[1:]
        open_px = np.full(n, state.open_px)
        if np.isnan(state.open_px) and execd.any():
            first = int(np.argmax(execd))
            open_px[first:] = exec_px[first]
        phase = np.empty(n, dtype=object)
        cur, start = state.phase, 0
        for i in np.nonzero(etype == 7)[0]:  # halts are rare: a short loop over them
            phase[start:i] = cur
            cur = {-1: "HALT", 0: "HALT", 1: "TRADE"}.get(int(raw_px[i]))
            if cur is None:
                raise RowError(int(i), f"trading-halt message price {raw_px[i]} is not -1, 0 or 1")
            start = i
        phase[start:] = cur
        state.phase = cur
        state.cum_volume, state.cum_amount, state.num_trades = (
            int(cum_volume[-1]),
            float(cum_amount[-1]),
            int(num_trades[-1]),
        )
        state.last_px, state.high, state.low, state.open_px = (
            float(last_px[-1]),
            float(high[-1]),
            float(low[-1]),
            float(open_px[-1]),
        )

        def nan_null(a: np.ndarray) -> pa.Array:
            a = np.where(np.isfinite(a), a, np.nan)
            return pa.array(a, mask=np.isnan(a))

        out = {
            "symbol": sym,
            "ts": fields.ts_array(utc),
            "phase": pa.array(phase.astype(str), pa.string()),
            "last_px": nan_null(last_px),
            "open_px": nan_null(open_px),
            "high_px": nan_null(high),
            "low_px": nan_null(low),
            "cum_volume": pa.array(cum_volume.astype(np.int64)),
            "cum_amount": pa.array(cum_amount),
            "num_trades": pa.array(num_trades.astype(np.int64)),
        }
        for name in book.schema.names:
            a = book.column(name).to_numpy()
            side, kind, _lvl = name.split("_")
            if kind == "px":
                empty = a == (_EMPTY_ASK if side == "ask" else _EMPTY_BID)
                out[name] = pa.array(a / self.vendor.price_divisor, mask=empty)
            else:
                out[name] = pa.array(a)
        sink.emit("snapshots", unit.partner_rel, fields.record_batch(schema.SNAPSHOTS, out, n), days)


def _aligned(
    msgs: Iterator[tuple[int, pa.RecordBatch]],
    books: Iterator[tuple[int, pa.RecordBatch]],
    msg_display: str,
    book_display: str,
) -> Iterator[tuple[int, pa.RecordBatch, pa.RecordBatch]]:
    """Zip two line-aligned streams into chunks of equal length; refuse files of different lengths."""
    ma = mb = None
    while True:
        if ma is None:
            ma = next(msgs, None)
        if mb is None:
            mb = next(books, None)
        if ma is None and mb is None:
            return
        if ma is None or mb is None:
            longer, (line, _b) = (book_display, mb) if ma is None else (msg_display, ma)
            other = msg_display if ma is None else book_display
            raise IngestError(
                longer, line, f"has more lines than {other}: message and orderbook files need one line per event"
            )
        (la, a), (lb, b) = ma, mb
        k = min(a.num_rows, b.num_rows)
        yield la, a.slice(0, k), b.slice(0, k)
        ma = (la + k, a.slice(k)) if k < a.num_rows else None
        mb = (lb + k, b.slice(k)) if k < b.num_rows else None
