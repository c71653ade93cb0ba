"""SSE / SZSE Level2 vendor CSV files -> raw canonical ``snapshots``, ``trades`` and ``orders``.

One file holds one table, told from its columns (:data:`l2vol.data.vendors.ASHARE_MARKERS`); files may
hold one or many symbols and dates, and sit anywhere under the source directory. Accepted column names
and units come from the vendor profile; see docs/ingest.md for the full list and the conversions.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from l2vol.data import schema
from l2vol.data.loaders import csvfiles, fields
from l2vol.data.loaders.base import SourceUnit, walk
from l2vol.data.loaders.errors import IngestError, RowError
from l2vol.data.profiles import MarketProfile
from l2vol.data.schema import N_LEVELS
from l2vol.data.vendors import VendorProfile

_PRICE_FIELDS = {
    "last_px", "open_px", "high_px", "low_px", "pre_close", "upper_limit_px", "lower_limit_px", "price",
    *(f"{s}_px_{i}" for s in ("bid", "ask") for i in range(1, N_LEVELS + 1)),
}  # fmt: skip
_QTY_FIELDS = {
    "cum_volume", "total_bid_qty", "total_ask_qty", "qty",
    *(f"{s}_qty_{i}" for s in ("bid", "ask") for i in range(1, N_LEVELS + 1)),
}  # fmt: skip
_INT_FIELDS = {"num_trades", "buy_order_no", "sell_order_no", "seq", "order_no",
               *(f"{s}_n_{i}" for s in ("bid", "ask") for i in range(1, N_LEVELS + 1))}  # fmt: skip
_AMOUNT_FIELDS = {"cum_amount", "amount"}
_TEXT_FIELDS = {"symbol", "date", "phase", "side", "type", "exec_type"}

_PATH_DATE = re.compile(r"(?<!\d)((?:19|20)\d\d)-?(\d\d)-?(\d\d)(?!\d)")
_FILE_CODE = re.compile(r"(?:(SH|SZ)\.?)?(\d{6})(?:\.(SH|SZ))?(?:$|[_.\-\s])", re.IGNORECASE)

_AUCTION_END_MS = (9 * 60 + 30) * 60_000  # opening call ends 09:30
_CLOSING_CALL_MS = (14 * 60 + 57) * 60_000  # closing call starts 14:57
_PREOPEN_MS = (9 * 60 + 25) * 60_000  # book frozen 09:25-09:30

TRADE_SIDES = {"B": "B", "S": "S", "N": "N"}
ORDER_SIDES = {"1": "B", "B": "B", "BUY": "B", "2": "S", "S": "S", "SELL": "S"}
#: OrdType (SZSE 1 market, 2 limit, U best-own-side; SSE A add, D delete) -> canonical order type.
ORDER_TYPES = {"1": "market", "2": "limit", "U": "market", "A": "limit", "D": "cancel",
               "LIMIT": "limit", "MARKET": "market", "CANCEL": "cancel"}  # fmt: skip
EXEC_TYPES = {"F": "fill", "4": "cancel"}


@dataclass
class FilePlan:
    """How one file maps to its table: resolved columns, their types, and what was left out."""

    table: str
    cols: dict[str, str]  # source field -> column name in the file
    types: dict[str, pa.DataType]  # file column -> read type
    names: list[str]  # header
    symbol: str | None = None  # from the file name, when there is no symbol column
    path_day: int | None = None
    ignored: list[str] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)


class AshareLoader:
    """Loader for ``sse-l2`` and ``szse-l2`` vendor CSV files."""

    def __init__(self, vendor: VendorProfile, market: MarketProfile):
        self.vendor = vendor
        self.market = market
        self.exchange = vendor.exchange

    # ------------------------------------------------------------------------------ discovery
    def discover(self, src: Path) -> tuple[list[SourceUnit], list[str]]:
        found, other = walk(src, (".csv",))
        return [SourceUnit(p, rel) for p, rel in found], other

    def plan(self, unit: SourceUnit, display: str) -> FilePlan:
        """Read the header, tell the table, resolve and check the columns and choose their types."""
        v = self.vendor
        head = csvfiles.read_head(unit.path, display, v.encoding, v.delimiter)
        header = [h.strip() for h in head[0]]
        by_name: dict[str, str] = {}
        for name in header:
            key = name.casefold()
            if key in by_name:
                raise IngestError(display, 1, f"duplicate column {name!r} in the header")
            by_name[key] = name
        table = next(
            (
                t
                for t in ("snapshots", "trades", "orders")
                if any(m.casefold() in by_name for m in v.markers.get(t, ()))
            ),
            None,
        )
        if table is None:
            raise IngestError(
                display,
                1,
                "cannot tell which table this file holds: none of the columns that mark snapshots "
                f"({', '.join(v.markers['snapshots'][:3])}...), trades ({', '.join(v.markers['trades'][:3])}...) "
                f"or orders ({', '.join(v.markers['orders'][:3])}...) is present; header: {', '.join(header[:12])}",
            )
        cols: dict[str, str] = {}
        used: set[str] = set()
        for fld, aliases in v.columns[table].items():
            for alias in aliases:
                name = by_name.get(alias.casefold())
                if name is not None and name not in used:
                    cols[fld] = name
                    used.add(name)
                    break
        plan = FilePlan(table, cols, {}, list(head[0]))
        plan.ignored = [h for h in header if h not in used]
        self._check_columns(plan, unit, display)
        plan.types = self._types(plan, head[1] if len(head) > 1 else [], header)
        # pyarrow matches names exactly, including any whitespace around them in the file
        exact = {h.strip(): h for h in head[0]}
        plan.types = {exact[c]: t for c, t in plan.types.items()}
        plan.cols = {f: exact[c] for f, c in plan.cols.items()}
        return plan

    def _check_columns(self, plan: FilePlan, unit: SourceUnit, display: str) -> None:
        v, cols, table = self.vendor, plan.cols, plan.table
        accepted = v.columns[table]
        missing = [f for f in v.required[table] if f not in cols]
        if missing:
            desc = "; ".join(f"{f}: one of {', '.join(accepted[f])}" for f in missing)
            raise IngestError(display, 1, f"missing required column(s) for {table}: {desc}")
        if table == "snapshots":
            for side in ("bid", "ask"):
                present = [i for i in range(1, N_LEVELS + 1) if f"{side}_px_{i}" in cols or f"{side}_qty_{i}" in cols]
                for i in present:
                    for kind in ("px", "qty"):
                        if f"{side}_{kind}_{i}" not in cols:
                            raise IngestError(
                                display,
                                1,
                                f"book level {i}: {side} {'price' if kind == 'px' else 'quantity'} column missing "
                                f"(one of {', '.join(accepted[f'{side}_{kind}_{i}'])})",
                            )
                if present and present != list(range(1, max(present) + 1)):
                    gap = min(set(range(1, max(present) + 1)) - set(present))
                    raise IngestError(display, 1, f"{side} book level {gap} is missing but deeper levels are present")
        if table == "orders" and "order_no" not in cols and "seq" not in cols:
            raise IngestError(
                display, 1, f"orders need an order number: one of {', '.join(accepted['order_no'] + accepted['seq'])}"
            )
        if "symbol" not in cols:
            m = _FILE_CODE.match(Path(unit.rel).name)
            try:
                plan.symbol = fields.ashare_symbol(m.group(0).rstrip("_.- \t"), self.exchange) if m else None
            except KeyError:
                plan.symbol = None
            if plan.symbol is None:
                raise IngestError(
                    display,
                    1,
                    f"no symbol column (one of {', '.join(accepted['symbol'])}) and the file name does not "
                    f"start with a 6-digit {self.exchange} code (e.g. 600519.csv)",
                )
        m = _PATH_DATE.search(unit.rel)
        if m is not None:
            try:
                plan.path_day = fields.day_number(dt.date(*map(int, m.groups())))
            except ValueError:
                plan.path_day = None
        plan.absent = sorted(set(schema.schema_for(table).names) - self._produces(plan))

    def _produces(self, plan: FilePlan) -> set[str]:
        out = {"symbol", "ts"} | {f for f in plan.cols if f in schema.schema_for(plan.table).names}
        if plan.table == "trades":
            out |= {"amount", "side"}  # computed when absent
        if plan.table == "orders":
            out |= {"order_no"}
        return out

    def _types(self, plan: FilePlan, first_row: list[str], header: list[str]) -> dict[str, pa.DataType]:
        price_type = pa.int64() if self.vendor.integer_prices else pa.float64()
        types: dict[str, pa.DataType] = {}
        for fld, col in plan.cols.items():
            if fld == "time":
                idx = header.index(col)
                sample = first_row[idx].strip() if idx < len(first_row) else ""
                types[col] = pa.int64() if sample.isdigit() or not sample else pa.timestamp("ns")
            elif fld in _TEXT_FIELDS:
                types[col] = pa.string()
            elif fld in _PRICE_FIELDS:
                types[col] = price_type
            elif fld in _QTY_FIELDS or fld in _INT_FIELDS:
                types[col] = pa.int64()
            elif fld in _AMOUNT_FIELDS:
                types[col] = pa.float64()
            else:  # a field added to the profile without a conversion rule
                raise ValueError(f"vendor profile {self.vendor.name}: no conversion for field {fld!r}")
        return types

    # -------------------------------------------------------------------------------- parsing
    def parse(self, unit: SourceUnit, display: str, sink) -> None:
        v = self.vendor
        csvfiles.check_not_empty_and_complete(unit.path, display)
        plan = self.plan(unit, display)
        stats = sink.stats
        stats.files_by_table[plan.table] += 1
        stats.ignored_columns[plan.table].update(plan.ignored)
        stats.absent_columns[plan.table].update(plan.absent)
        convert = {"snapshots": self._snapshots, "trades": self._trades, "orders": self._orders}[plan.table]
        rows = 0
        for line, batch in csvfiles.stream(
            unit.path, display, names=plan.names, has_header=True, types=plan.types,
            encoding=v.encoding, delimiter=v.delimiter,
        ):  # fmt: skip
            try:
                for table, out, days in convert(batch, plan, stats):
                    sink.emit(table, unit.rel, out, days)
            except RowError as exc:
                raise IngestError(display, line + exc.index, exc.problem) from None
            rows += batch.num_rows
        if rows == 0:
            stats.files_without_rows.append(unit.rel)

    # -- shared columns
    def _col(self, batch: pa.RecordBatch, plan: FilePlan, fld: str) -> pa.Array | None:
        name = plan.cols.get(fld)
        return batch.column(name) if name is not None else None

    def _keys(self, batch: pa.RecordBatch, plan: FilePlan) -> tuple[pa.Array, np.ndarray, np.ndarray, np.ndarray]:
        """symbol, UTC ns, local day numbers and local time of day (ms) of every row."""
        n = batch.num_rows
        time_col = plan.cols["time"]
        t = batch.column(time_col)
        fields.require_no_nulls(t, time_col, batch)
        if plan.symbol is not None:
            sym = pa.repeat(plan.symbol, n)
        else:
            sym = fields.symbols_from_column(batch.column(plan.cols["symbol"]), plan.cols["symbol"], self.exchange)
        if pa.types.is_timestamp(t.type):
            local = t.cast(pa.int64()).to_numpy()
            days = local // fields.NS_PER_DAY
        else:
            dates = None
            if "date" in plan.cols:
                dates = fields.parse_date_strings(batch.column(plan.cols["date"]), plan.cols["date"])
            local, days = fields.local_times_from_digits(t.to_numpy(), time_col, dates=dates, path_day=plan.path_day)
        utc = fields.local_to_utc(local, self.market.timezone)
        tod_ms = (local - days * fields.NS_PER_DAY) // fields.NS_PER_MS
        return sym, utc, days, tod_ms

    def _price(self, batch, plan, fld, *, zero_is_null: bool) -> pa.Array | None:
        a = self._col(batch, plan, fld)
        return None if a is None else fields.price(a, self.vendor.price_divisor, zero_is_null=zero_is_null)

    def _qty(self, batch, plan, fld) -> pa.Array | None:
        a = self._col(batch, plan, fld)
        return None if a is None else fields.quantity(a, self.vendor.qty_multiplier)

    def _scale_hint(self) -> str:
        return f"vendor profile {self.vendor.name!r} divides prices by {self.vendor.price_divisor}; pick a profile matching the file (e.g. {self.vendor.format}-int for prices x10000)"

    def _phase(self, code: str) -> str | None:
        c = code.strip().upper()
        if not c:
            return None
        if c in schema.PHASES:
            return c
        if self.vendor.halt_flag is not None and len(c) > 1 and c[1] == self.vendor.halt_flag:
            return "HALT"
        return self.vendor.phase_codes[c[0]]

    # -- tables
    def _snapshots(self, batch, plan, stats):
        n = batch.num_rows
        sym, utc, days, tod_ms = self._keys(batch, plan)
        out: dict[str, pa.Array] = {"symbol": sym, "ts": fields.ts_array(utc)}
        if "phase" in plan.cols:
            codes = "".join(sorted(self.vendor.phase_codes))
            phase = fields.map_codes(
                batch.column(plan.cols["phase"]),
                self._phase,
                column=plan.cols["phase"],
                allowed=f"first letter one of {codes} or a canonical phase ({', '.join(schema.PHASES)})",
            )
            preopen = pc.and_(pc.equal(phase, "OCALL"), pa.array(tod_ms >= _PREOPEN_MS))
            out["phase"] = pc.if_else(preopen, "PREOPEN", phase)
        for fld in schema.SNAPSHOTS.names:
            if fld in out or fld not in plan.cols:
                continue
            if fld in _PRICE_FIELDS:
                out[fld] = self._price(batch, plan, fld, zero_is_null=True)
            elif fld in _QTY_FIELDS:
                out[fld] = self._qty(batch, plan, fld)
            elif fld == "cum_amount":
                out[fld] = fields.amount(batch.column(plan.cols[fld]), self.vendor.amount_divisor)
            else:
                out[fld] = batch.column(plan.cols[fld])
        check = out["last_px"] if out["last_px"].null_count < n else out["ask_px_1"]
        fields.check_price_scale(check, self.vendor.max_price, plan.cols["last_px"], self._scale_hint())
        yield "snapshots", fields.record_batch(schema.SNAPSHOTS, out, n), days

    def _trades(self, batch, plan, stats):
        n = batch.num_rows
        sym, utc, days, tod_ms = self._keys(batch, plan)
        for fld in ("price", "qty"):
            fields.require_no_nulls(batch.column(plan.cols[fld]), plan.cols[fld], batch)
        px = self._price(batch, plan, "price", zero_is_null=False)
        qty = self._qty(batch, plan, "qty")
        fields.check_price_scale(px, self.vendor.max_price, plan.cols["price"], self._scale_hint())
        buy = self._col(batch, plan, "buy_order_no")
        sell = self._col(batch, plan, "sell_order_no")
        if "amount" in plan.cols:
            amt = fields.amount(batch.column(plan.cols["amount"]), self.vendor.amount_divisor)
        else:
            amt = pc.multiply(px, pc.cast(qty, pa.float64()))
            stats.notes.add("trades.amount computed as price x qty (no amount column)")
        if "side" in plan.cols:
            side = fields.map_codes(
                batch.column(plan.cols["side"]),
                lambda c: TRADE_SIDES[c.strip().upper()] if c.strip() else "N",
                column=plan.cols["side"],
                allowed="B, S, N or empty",
            )
            side = pc.fill_null(side, "N")
        elif buy is not None and sell is not None:
            # The aggressor's order arrived last, so it has the larger order number; call-auction fills
            # have no aggressor.
            b = pc.fill_null(buy, 0).to_numpy()
            s = pc.fill_null(sell, 0).to_numpy()
            auction = (tod_ms < _AUCTION_END_MS) | (tod_ms >= _CLOSING_CALL_MS)
            side = pa.array(np.where(auction, "N", np.where(b > s, "B", "S")), pa.string())
            stats.notes.add(
                "trades.side derived from order numbers (no TradeBSFlag column): larger order number = aggressor, N in call auctions"
            )
        else:
            side = pa.repeat(pa.scalar("N", pa.string()), n)
            stats.notes.add("trades.side is N (no TradeBSFlag or order-number columns)")
        seq = self._col(batch, plan, "seq")
        out = {"symbol": sym, "ts": fields.ts_array(utc), "price": px, "qty": qty, "amount": amt, "side": side,
               "buy_order_no": buy, "sell_order_no": sell, "seq": seq}  # fmt: skip
        if "exec_type" not in plan.cols:
            yield "trades", fields.record_batch(schema.TRADES, out, n), days
            return
        exec_col = plan.cols["exec_type"]
        fields.require_no_nulls(batch.column(exec_col), exec_col, batch)
        kind = fields.map_codes(
            batch.column(exec_col),
            lambda c: EXEC_TYPES[c.strip().upper()],
            column=exec_col,
            allowed="F (fill), 4 (cancel)",
        )
        cancel = pc.equal(kind, "cancel").to_numpy(zero_copy_only=False)
        fill = ~cancel
        if fill.all():
            yield "trades", fields.record_batch(schema.TRADES, out, n), days
            return
        if fill.any():
            yield "trades", fields.record_batch(schema.TRADES, out, n).filter(pa.array(fill)), days[fill]
        yield "orders", self._cancels(batch, plan, sym, utc, qty, buy, sell, seq, cancel), days[cancel]

    def _cancels(self, batch, plan, sym, utc, qty, buy, sell, seq, cancel: np.ndarray) -> pa.RecordBatch:
        """SZSE cancel records (ExecType 4) in a trade file -> ``orders`` rows of type cancel. The record
        names the cancelled order by its number on one side; the other side's number is 0."""
        idx = np.nonzero(cancel)[0]
        m = len(idx)
        take = pa.array(idx)
        if buy is not None and sell is not None:
            b = pc.fill_null(buy, 0).to_numpy()[idx]
            s = pc.fill_null(sell, 0).to_numpy()[idx]
            bad = (b > 0) == (s > 0)
            if bad.any():
                i = int(np.argmax(bad))
                raise RowError(
                    int(idx[i]),
                    f"cancel record ({plan.cols['exec_type']} 4) must name exactly one order: "
                    f"{plan.cols['buy_order_no']}={b[i]}, {plan.cols['sell_order_no']}={s[i]}",
                )
            side = pa.array(np.where(b > 0, "B", "S"), pa.string())
            order_no = pa.array(np.where(b > 0, b, s), pa.int64())
        else:
            side, order_no = None, None
        px = fields.price(batch.column(plan.cols["price"]).take(take), self.vendor.price_divisor, zero_is_null=True)
        out = {
            "symbol": sym.take(take),
            "ts": fields.ts_array(utc[idx]),
            "order_no": order_no,
            "side": side,
            "price": px,
            "qty": qty.take(take),
            "type": pa.repeat(pa.scalar("cancel", pa.string()), m),
            "seq": seq.take(take) if seq is not None else None,
        }
        return fields.record_batch(schema.ORDERS, out, m)

    def _orders(self, batch, plan, stats):
        n = batch.num_rows
        sym, utc, days, _tod = self._keys(batch, plan)
        for fld in ("side", "qty", "type"):
            fields.require_no_nulls(batch.column(plan.cols[fld]), plan.cols[fld], batch)
        side = fields.map_codes(
            batch.column(plan.cols["side"]), lambda c: ORDER_SIDES[c.strip().upper()], column=plan.cols["side"],
            allowed="1/B (buy), 2/S (sell)",
        )  # fmt: skip
        otype = fields.map_codes(
            batch.column(plan.cols["type"]), lambda c: ORDER_TYPES[c.strip().upper()], column=plan.cols["type"],
            allowed="1 (market), 2 (limit), U (best own side: market), A (add: limit), D (delete: cancel)",
        )  # fmt: skip
        px = self._price(batch, plan, "price", zero_is_null=False)
        if px is not None:
            # market orders and cancels carry no price; vendors write 0
            no_price = pc.and_(pc.equal(px, 0.0), pc.not_equal(otype, "limit"))
            px = pc.if_else(no_price, pa.scalar(None, pa.float64()), px)
        seq = self._col(batch, plan, "seq")
        order_no = self._col(batch, plan, "order_no")
        if order_no is None:
            order_no = seq
            stats.notes.add("orders.order_no taken from the sequence number (SZSE: ApplSeqNum numbers orders)")
        out = {"symbol": sym, "ts": fields.ts_array(utc), "order_no": order_no, "side": side, "price": px,
               "qty": self._qty(batch, plan, "qty"), "type": otype, "seq": seq}  # fmt: skip
        yield "orders", fields.record_batch(schema.ORDERS, out, n), days
