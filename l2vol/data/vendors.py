"""Vendor profiles: how a data vendor's files map onto the canonical tables of :mod:`l2vol.data.schema`.

A profile names, for each canonical table, the vendor column names accepted for each source field (first
match wins, matching ignores case and surrounding whitespace), the units of the numbers, the text
encoding and the delimiter. Loaders (:mod:`l2vol.data.loaders`) do the reading; profiles only describe.

Units. Canonical prices are CNY (or the source currency) as float64, quantities are shares as int64:

* ``price_divisor``: vendor price = price x divisor. 1 for decimal prices (``10.51``), 10000 for integer
  prices scaled by 10^4 (``105100``). With a divisor other than 1, price columns must hold integers.
* ``amount_divisor``: the same for amounts (turnover).
* ``qty_multiplier``: shares per vendor quantity unit: 1 for shares, 100 for lots (手).

A profile may also come from a YAML file (``vendor=path.yaml``), which starts from a built-in profile
(``base:``) and overrides units, encoding, delimiter and extra column names::

    base: szse-l2
    name: my-vendor
    encoding: gbk
    price_divisor: 10000
    qty_multiplier: 100
    columns:
      trades:
        price: [成交价格]
        qty: [成交数量]

Extra names are tried before the base profile's. ``{i}`` in a name stands for the book level (1-10).
``markers: {table: [names]}`` adds column names that identify which table a file holds.
"""

from __future__ import annotations

import codecs
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from l2vol.data.schema import N_LEVELS

Aliases = Mapping[str, tuple[str, ...]]


def _levels(template: Mapping[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    return {
        f.format(i=i): tuple(a.format(i=i) for a in names)
        for f, names in template.items()
        for i in range(1, N_LEVELS + 1)
    }


_SYMBOL = ("SecurityID", "SecurityCode", "Symbol")
_DATE = ("TradeDate", "MDDate", "ActionDay", "TradingDay", "Date")

#: Book-level columns; ``{i}`` is the level, 1-10 (a file may carry fewer levels, from level 1 on).
ASHARE_BOOK_COLUMNS: dict[str, tuple[str, ...]] = {
    "bid_px_{i}": ("BidPrice{i}", "BidPx{i}"),
    "bid_qty_{i}": ("BidOrderQty{i}", "BidVolume{i}", "BidQty{i}", "BidSize{i}"),
    "bid_n_{i}": ("BidNumOrders{i}", "BidOrders{i}", "BidNumOrder{i}"),
    "ask_px_{i}": ("OfferPrice{i}", "AskPrice{i}", "OfferPx{i}", "AskPx{i}"),
    "ask_qty_{i}": ("OfferOrderQty{i}", "AskVolume{i}", "OfferQty{i}", "AskQty{i}", "OfferVolume{i}", "AskSize{i}"),
    "ask_n_{i}": ("OfferNumOrders{i}", "AskNumOrders{i}", "OfferOrders{i}", "AskOrders{i}"),
}

#: Accepted vendor column names per canonical table and source field (A-share Level2 CSV).
ASHARE_COLUMNS: dict[str, dict[str, tuple[str, ...]]] = {
    "snapshots": {
        "symbol": _SYMBOL,
        "time": ("TransactTime", "DataTimeStamp", "UpdateTime", "TradeTime", "MDTime", "Time"),
        "date": _DATE,
        "phase": ("TradingPhaseCode", "TradingPhase", "InstrumentStatus"),
        "last_px": ("LastPx", "LastPrice"),
        "open_px": ("OpenPx", "OpenPrice"),
        "high_px": ("HighPx", "HighPrice"),
        "low_px": ("LowPx", "LowPrice"),
        "pre_close": ("PreClosePx", "PreClosePrice", "PrevClosePx", "PreClose"),
        "upper_limit_px": ("UpLimitPx", "HighLimitPx", "UpperLimitPx", "LimitUpPx", "PriceUpLimit"),
        "lower_limit_px": ("DownLimitPx", "LowLimitPx", "LowerLimitPx", "LimitDownPx", "PriceDownLimit"),
        "cum_volume": ("TotalVolumeTrade", "TotalVolume", "Volume", "CumVolume"),
        "cum_amount": ("TotalValueTrade", "TotalValue", "Turnover", "Amount", "CumAmount"),
        "num_trades": ("NumTrades", "TradeCount", "NumberOfTrades"),
        **_levels(ASHARE_BOOK_COLUMNS),
        "total_bid_qty": ("TotalBidQty", "TotalBidVolume"),
        "total_ask_qty": ("TotalOfferQty", "TotalAskQty", "TotalOfferVolume"),
    },
    "trades": {
        "symbol": _SYMBOL,
        "time": ("TradeTime", "TransactTime", "Time"),
        "date": _DATE,
        "price": ("TradePrice", "LastPx", "Price"),
        "qty": ("TradeQty", "LastQty", "TradeVolume", "Qty", "Volume"),
        "amount": ("TradeAmount", "TradeMoney", "TradeValue", "Amount"),
        "side": ("TradeBSFlag", "BSFlag"),
        "buy_order_no": ("BuyNo", "TradeBuyNo", "BidApplSeqNum", "BuyOrderNo"),
        "sell_order_no": ("SellNo", "TradeSellNo", "OfferApplSeqNum", "SellOrderNo"),
        "seq": ("ApplSeqNum", "TradeIndex", "BizIndex", "TradeSeq", "SeqNo"),
        "exec_type": ("ExecType",),
    },
    "orders": {
        "symbol": _SYMBOL,
        "time": ("OrderTime", "TransactTime", "Time"),
        "date": _DATE,
        "order_no": ("OrderNo", "OrderID"),
        "seq": ("ApplSeqNum", "OrderIndex", "BizIndex", "SeqNo"),
        "side": ("Side", "OrderBSFlag", "BSFlag"),
        "price": ("Price", "OrderPrice"),
        "qty": ("OrderQty", "Balance", "Qty", "OrderVolume"),
        "type": ("OrdType", "OrderType"),
    },
}

#: A file holds the first table (in this order) for which one of these columns is present.
ASHARE_MARKERS: dict[str, tuple[str, ...]] = {
    "snapshots": ("BidPrice1", "OfferPrice1", "AskPrice1", "BidPx1", "OfferPx1", "AskPx1"),
    "trades": (
        "TradePrice", "TradeQty", "TradeAmount", "TradeBSFlag", "TradeBuyNo", "TradeSellNo", "BuyNo", "SellNo",
        "ExecType", "LastQty", "BidApplSeqNum", "OfferApplSeqNum", "TradeIndex",
    ),
    "orders": ("OrderQty", "OrdType", "OrderType", "OrderNo", "OrderBSFlag", "OrderPrice", "OrderIndex", "OrderTime"),
}  # fmt: skip

#: Fields a file must have (``time`` may be a full stamp, or a time of day with a ``date`` column or a
#: YYYYMMDD in the path; ``symbol`` may come from the file name).
ASHARE_REQUIRED: dict[str, tuple[str, ...]] = {
    "snapshots": ("time", "last_px", "bid_px_1", "bid_qty_1", "ask_px_1", "ask_qty_1"),
    "trades": ("time", "price", "qty"),
    "orders": ("time", "side", "qty", "type"),
}

#: First character of TradingPhaseCode -> canonical phase (schema.PHASES), per exchange. SSE spells the
#: call auction ``C`` and the closing call ``U``; SZSE spells them ``O`` and ``C``.
SSE_PHASES = {"S": "CLOSED", "C": "OCALL", "T": "TRADE", "B": "BREAK", "U": "CCALL", "E": "CLOSED",
              "P": "HALT", "M": "HALT", "N": "HALT"}  # fmt: skip
SZSE_PHASES = {"S": "CLOSED", "O": "OCALL", "T": "TRADE", "B": "BREAK", "C": "CCALL", "E": "CLOSED",
               "H": "HALT", "V": "HALT", "A": "CLOSED"}  # fmt: skip

BARS_COLUMNS: dict[str, dict[str, tuple[str, ...]]] = {
    "bars_1d": {
        "symbol": ("symbol", "ts_code", "code", "ticker", "SecurityID"),
        "date": ("date", "trade_date", "trading_date", "TradeDate"),
        "open": ("open", "OpenPx"),
        "high": ("high", "HighPx"),
        "low": ("low", "LowPx"),
        "close": ("close", "ClosePx"),
        "volume": ("volume", "vol"),
        "amount": ("amount", "turnover", "value"),
        "vwap": ("vwap", "avg_price"),
        "pre_close": ("pre_close", "preclose", "prev_close"),
        "adj_factor": ("adj_factor", "adjfactor", "factor"),
        "upper_limit_px": ("upper_limit_px", "high_limit", "up_limit", "upper_limit"),
        "lower_limit_px": ("lower_limit_px", "low_limit", "down_limit", "lower_limit"),
        "suspended": ("suspended", "paused"),
    }
}
BARS_REQUIRED = {"bars_1d": ("symbol", "date", "open", "high", "low", "close", "volume", "amount")}


@dataclass(frozen=True)
class VendorProfile:
    """How one vendor's files map to the canonical tables (see the module docstring for units)."""

    name: str
    format: str
    description: str
    market: str  # l2vol.data.profiles name: ashare, lobster, optiver
    exchange: str | None = None  # symbol suffix (SH, SZ) for A-share formats
    encoding: str = "utf-8"
    delimiter: str = ","
    price_divisor: int = 1
    amount_divisor: int = 1
    qty_multiplier: int = 1
    #: Median price above which a batch is taken as mis-scaled (wrong price_divisor), in CNY.
    max_price: float | None = None
    columns: Mapping[str, Aliases] = field(default_factory=dict)
    markers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    required: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    phase_codes: Mapping[str, str] = field(default_factory=dict)
    #: Second character of TradingPhaseCode that means "suspended / cannot trade" (SSE 0, SZSE 1).
    halt_flag: str | None = None

    def __post_init__(self) -> None:
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            raise ValueError(f"vendor profile {self.name!r}: unknown encoding {self.encoding!r}") from None
        for attr in ("price_divisor", "amount_divisor", "qty_multiplier"):
            v = getattr(self, attr)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"vendor profile {self.name!r}: {attr} must be a positive integer, got {v!r}")
        if len(self.delimiter) != 1:
            raise ValueError(f"vendor profile {self.name!r}: delimiter must be one character, got {self.delimiter!r}")

    @property
    def integer_prices(self) -> bool:
        return self.price_divisor != 1


_ASHARE_COMMON = dict(
    market="ashare",
    max_price=10_000.0,  # no A-share has traded near 10,000 CNY; 10^4-scaled integer prices land above it
    columns=ASHARE_COLUMNS,
    markers=ASHARE_MARKERS,
    required=ASHARE_REQUIRED,
)

VENDORS: dict[str, VendorProfile] = {
    p.name: p
    for p in (
        VendorProfile(
            "sse-l2", "sse-l2", "SSE Level2 CSV, decimal CNY prices, shares, UTF-8", exchange="SH",
            phase_codes=SSE_PHASES, halt_flag="0", **_ASHARE_COMMON,
        ),
        VendorProfile(
            "szse-l2", "szse-l2", "SZSE Level2 CSV, decimal CNY prices, shares, UTF-8", exchange="SZ",
            phase_codes=SZSE_PHASES, halt_flag="1", **_ASHARE_COMMON,
        ),
        VendorProfile(
            "sse-l2-int", "sse-l2", "SSE Level2 CSV, prices and amounts as integers x10000, shares, UTF-8",
            exchange="SH", price_divisor=10_000, amount_divisor=10_000, phase_codes=SSE_PHASES, halt_flag="0",
            **_ASHARE_COMMON,
        ),
        VendorProfile(
            "szse-l2-int", "szse-l2", "SZSE Level2 CSV, prices and amounts as integers x10000, shares, UTF-8",
            exchange="SZ", price_divisor=10_000, amount_divisor=10_000, phase_codes=SZSE_PHASES, halt_flag="1",
            **_ASHARE_COMMON,
        ),
        VendorProfile(
            "lobster", "lobster", "LOBSTER message/orderbook CSV pairs, prices x10000, shares",
            market="lobster", price_divisor=10_000,
        ),
        VendorProfile(
            "optiver", "optiver", "Optiver realized-volatility book/trade Parquet (normalized prices)",
            market="optiver",
        ),
        VendorProfile(
            "bars-csv", "bars-csv", "daily bars CSV, decimal prices, shares, amount in currency units",
            market="ashare", columns=BARS_COLUMNS, required=BARS_REQUIRED,
        ),
    )
}  # fmt: skip

_YAML_KEYS = {"base", "name", "description", "encoding", "delimiter", "price_divisor", "amount_divisor",
              "qty_multiplier", "max_price", "columns", "markers"}  # fmt: skip


def get_vendor(fmt: str, vendor: str | Path | VendorProfile | None = None) -> VendorProfile:
    """The vendor profile for ``fmt``: the built-in of the same name, another built-in, a YAML file or an
    explicit :class:`VendorProfile`. A profile for another format is refused."""
    if isinstance(vendor, VendorProfile):
        prof = vendor
    elif vendor is None:
        prof = VENDORS[fmt]
    elif str(vendor) in VENDORS:
        prof = VENDORS[str(vendor)]
    elif str(vendor).endswith((".yaml", ".yml")):
        prof = load_vendor_yaml(vendor)
    else:
        raise ValueError(f"unknown vendor profile {str(vendor)!r}; built-in: {', '.join(VENDORS)}, or a .yaml file")
    if prof.format != fmt:
        raise ValueError(f"vendor profile {prof.name!r} describes format {prof.format!r}, not {fmt!r}")
    return prof


def load_vendor_yaml(path: str | Path) -> VendorProfile:
    """Load a profile from YAML (see the module docstring); errors name the file and the key."""
    import yaml

    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ValueError(f"{p}: cannot read vendor profile ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise ValueError(f"{p}: invalid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"{p}: a vendor profile is a mapping of keys, got {type(raw).__name__}")
    unknown = sorted(set(raw) - _YAML_KEYS)
    if unknown:
        raise ValueError(f"{p}: unknown key(s) {unknown}; allowed: {sorted(_YAML_KEYS)}")
    base_name = raw.get("base")
    if base_name not in VENDORS:
        raise ValueError(f"{p}: 'base' must name a built-in profile ({', '.join(VENDORS)}), got {base_name!r}")
    base = VENDORS[base_name]
    columns = {t: dict(f) for t, f in base.columns.items()}
    for table, fields in (raw.get("columns") or {}).items():
        if table not in columns or not isinstance(fields, dict):
            raise ValueError(f"{p}: columns.{table}: unknown table for {base.format} (known: {', '.join(columns)})")
        for fld, names in fields.items():
            known = columns[table]
            is_level = "{i}" in fld
            targets = [fld.format(i=i) for i in range(1, N_LEVELS + 1)] if is_level else [fld]
            if any(t not in known for t in targets):
                raise ValueError(f"{p}: columns.{table}.{fld}: unknown field (known: {', '.join(known)})")
            if isinstance(names, str):
                names = [names]
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ValueError(f"{p}: columns.{table}.{fld}: expected a list of column names")
            for i, t in enumerate(targets, start=1):
                extra = tuple(n.format(i=i) if is_level else n for n in names)
                known[t] = extra + tuple(a for a in known[t] if a not in extra)
    markers = {t: tuple(names) for t, names in base.markers.items()}
    for table, names in (raw.get("markers") or {}).items():
        if table not in markers or not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"{p}: markers.{table}: expected a list of column names for one of {', '.join(markers)}")
        markers[table] = tuple(names) + markers[table]
    updates = {k: raw[k] for k in _YAML_KEYS - {"base", "columns", "markers"} if k in raw}
    updates.setdefault("name", f"{base.name}+{p.stem}")
    try:
        return dataclasses.replace(base, columns=columns, markers=markers, **updates)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{p}: {exc}") from exc
