"""Market profiles: time zone, calendar, sessions, tick, lot and price-limit rules.

A profile belongs to a data source. A-share rules (SSE/SZSE) come from the dated rule table
:data:`ASHARE_LIMIT_RULES`; LOBSTER (NASDAQ) and Optiver data carry their own profiles and A-share
rules never apply to them.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Session:
    """A phase of the trading day in market-local wall-clock time, [start, end)."""

    start: dt.time
    end: dt.time
    phase: str

    def contains(self, t: dt.time) -> bool:
        return self.start <= t < self.end


@dataclass(frozen=True)
class LimitRule:
    """One row of the dated price-limit table.

    ``pct`` is the daily limit as a fraction of ``pre_close`` (``None`` = no limit). The row applies to
    ``board`` (and to risk-warned stocks only when ``st`` is True, non-ST only when False) for trading
    dates in ``[since, until)`` and, when ``listing_days`` is set, only while the stock's
    ``days_since_listing`` is below it (new-listing rules).
    """

    board: str
    st: bool | None
    since: dt.date
    until: dt.date | None
    pct: float | None
    listing_days: int | None = None
    note: str = ""

    def applies(self, board: str, is_st: bool, day: dt.date, days_since_listing: int) -> bool:
        if self.board != board:
            return False
        if self.st is not None and self.st != is_st:
            return False
        if day < self.since or (self.until is not None and day >= self.until):
            return False
        return not (self.listing_days is not None and days_since_listing >= self.listing_days)


_D = dt.date
#: Dated A-share price-limit rules. First matching row wins, so new-listing rows come first.
ASHARE_LIMIT_RULES: tuple[LimitRule, ...] = (
    # New listings.
    LimitRule("star", None, _D(2019, 7, 22), None, None, 5, "STAR: no limit in the first 5 days"),
    LimitRule("chinext", None, _D(2020, 8, 24), None, None, 5, "ChiNext registration: no limit first 5 days"),
    LimitRule("main", None, _D(2023, 4, 10), None, None, 5, "main-board registration: no limit first 5 days"),
    LimitRule("main", None, _D(1990, 1, 1), _D(2023, 4, 10), 0.44, 1, "main-board IPO day: +44% (-36% down)"),
    LimitRule("chinext", None, _D(2009, 10, 30), _D(2020, 8, 24), 0.44, 1, "ChiNext IPO day: +44% (-36% down)"),
    # Board rules.
    LimitRule("star", None, _D(2019, 7, 22), None, 0.20, None, "STAR ±20%"),
    LimitRule("chinext", None, _D(2020, 8, 24), None, 0.20, None, "ChiNext ±20% from 2020-08-24 (ST too)"),
    LimitRule("chinext", True, _D(2009, 10, 30), _D(2020, 8, 24), 0.05, None, "ChiNext ST ±5% before reform"),
    LimitRule("chinext", False, _D(2009, 10, 30), _D(2020, 8, 24), 0.10, None, "ChiNext ±10% before reform"),
    LimitRule("main", True, _D(1998, 4, 22), _D(2025, 7, 7), 0.05, None, "main-board ST ±5% until July 2025"),
    LimitRule("main", True, _D(2025, 7, 7), None, 0.10, None, "main-board ST ±10% from 2025-07-07"),
    LimitRule("main", False, _D(1996, 12, 16), None, 0.10, None, "main board ±10%"),
)

#: SSE introduced the closing call auction on this date (SZSE had one long before).
SSE_CLOSING_CALL_SINCE = _D(2018, 8, 20)

BOARDS = ("main", "chinext", "star")


def board_of(symbol: str) -> str:
    """Board of an A-share symbol from its code prefix (600/601/603/605 and 000/001/002/003: main)."""
    code, _, exch = symbol.partition(".")
    if exch == "SH" and code.startswith("688"):
        return "star"
    if exch == "SZ" and code.startswith(("300", "301")):
        return "chinext"
    return "main"


@dataclass(frozen=True)
class MarketProfile:
    """Everything about a market that cleaning, simulation and factors need to know."""

    name: str
    timezone: str
    calendar: str | None
    sessions: tuple[Session, ...]
    tick: float
    currency: str
    lot: int = 1
    price_limits: bool = False
    closing_call_since: dt.date | None = None
    extra: dict = field(default_factory=dict)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def session_at(self, t: dt.time, day: dt.date | None = None) -> Session | None:
        for s in self.sessions_for(day):
            if s.contains(t):
                return s
        return None

    def sessions_for(self, day: dt.date | None = None, exchange: str | None = None) -> tuple[Session, ...]:
        """Sessions of ``day``. Before the closing-call date (SSE: 2018-08-20) the last minutes are
        continuous trading up to 15:00:00 and the 15:00:00 closing snapshot is phase CLOSED. SZSE
        (``exchange="SZSE"``) had its closing call long before and keeps it on every date."""
        if (
            day is not None
            and self.closing_call_since is not None
            and day < self.closing_call_since
            and exchange != "SZSE"
        ):
            out = []
            for s in self.sessions:
                if s.phase == "CCALL":
                    out.append(Session(s.start, dt.time(s.end.hour, s.end.minute), "TRADE"))
                    if s.end.second:
                        out.append(Session(dt.time(s.end.hour, s.end.minute), s.end, "CLOSED"))
                else:
                    out.append(s)
            return tuple(out)
        return self.sessions

    def continuous_sessions(self, day: dt.date | None = None) -> tuple[Session, ...]:
        return tuple(s for s in self.sessions_for(day) if s.phase == "TRADE")

    def continuous_seconds(self, day: dt.date | None = None) -> int:
        return sum(
            (dt.datetime.combine(_D(2000, 1, 1), s.end) - dt.datetime.combine(_D(2000, 1, 1), s.start)).seconds
            for s in self.continuous_sessions(day)
        )

    def phase_of(
        self, local_times: pd.DatetimeIndex | pd.Series, day: dt.date | None = None, exchange: str | None = None
    ) -> np.ndarray:
        """Vectorized phase label (or ``None`` outside every session) for market-local times."""
        idx = pd.DatetimeIndex(local_times)
        secs = idx.hour * 3600 + idx.minute * 60 + idx.second + idx.microsecond / 1e6
        out = np.full(len(idx), None, dtype=object)
        for s in self.sessions_for(day, exchange):
            a = s.start.hour * 3600 + s.start.minute * 60 + s.start.second
            b = s.end.hour * 3600 + s.end.minute * 60 + s.end.second
            out[(secs >= a) & (secs < b)] = s.phase
        return out

    def trading_days(self, start: dt.date | str, end: dt.date | str) -> list[dt.date]:
        """Trading dates in [start, end] from the exchange calendar (weekdays if none)."""
        if self.calendar is None:
            days = pd.bdate_range(start, end)
        else:
            cal = _calendar(self.calendar)
            days = cal.sessions_in_range(pd.Timestamp(start), pd.Timestamp(end))
        return [d.date() for d in days]

    def next_trading_days(self, start: dt.date | str, n: int) -> list[dt.date]:
        """The first ``n`` trading dates on or after ``start``; a clear error past the calendar's end."""
        out: list[dt.date] = []
        lo = pd.Timestamp(start)
        last = _calendar(self.calendar).last_session if self.calendar is not None else None
        while len(out) < n:
            if last is not None and lo > last:
                raise ValueError(
                    f"{self.calendar} calendar ends on {last.date()}: only {len(out)} of {n} trading days "
                    f"from {pd.Timestamp(start).date()}"
                )
            hi = lo + pd.Timedelta(days=max(14, 2 * (n - len(out))))
            if last is not None and hi > last:
                hi = last
            out.extend(d for d in self.trading_days(lo.date(), hi.date()) if not out or d > out[-1])
            lo = hi + pd.Timedelta(days=1)
        return out[:n]


def _t(s: str) -> dt.time:
    return dt.time.fromisoformat(s)


@functools.lru_cache(maxsize=4)
def _calendar(name: str):
    import exchange_calendars as xc  # import is slow; only when a calendar is needed

    return xc.get_calendar(name)


ASHARE = MarketProfile(
    name="ashare",
    timezone="Asia/Shanghai",
    calendar="XSHG",
    sessions=(
        Session(_t("09:15"), _t("09:25"), "OCALL"),
        Session(_t("09:25"), _t("09:30"), "PREOPEN"),
        Session(_t("09:30"), _t("11:30"), "TRADE"),
        Session(_t("13:00"), _t("14:57"), "TRADE"),
        Session(_t("14:57"), _t("15:00:01"), "CCALL"),
    ),
    tick=0.01,
    currency="CNY",
    lot=100,
    price_limits=True,
    closing_call_since=SSE_CLOSING_CALL_SINCE,
)

LOBSTER = MarketProfile(
    name="lobster",
    timezone="America/New_York",
    calendar="XNYS",
    sessions=(Session(_t("09:30"), _t("16:00"), "TRADE"),),
    tick=0.01,
    currency="USD",
    lot=1,
)

OPTIVER = MarketProfile(
    name="optiver",
    # Optiver's realized-volatility data set is anonymised: 10-minute buckets with seconds offsets and
    # no calendar or time zone. We anchor each time_id to a synthetic UTC day.
    timezone="UTC",
    calendar=None,
    sessions=(Session(_t("00:00"), _t("23:59:59"), "TRADE"),),
    tick=0.0,
    currency="USD",
    lot=1,
)

PROFILES: dict[str, MarketProfile] = {p.name: p for p in (ASHARE, LOBSTER, OPTIVER)}


def get_profile(name: str) -> MarketProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise KeyError(f"unknown market profile {name!r}; known: {', '.join(PROFILES)}") from None


def limit_pct(board: str, is_st: bool, day: dt.date, days_since_listing: int) -> float | None:
    """Daily price-limit fraction for an A-share on ``day`` from the dated rule table (None = no limit)."""
    for rule in ASHARE_LIMIT_RULES:
        if rule.applies(board, is_st, day, days_since_listing):
            return rule.pct
    raise ValueError(f"no A-share limit rule for board={board} st={is_st} on {day}")


def round_to_tick(px: float | np.ndarray, tick: float = 0.01) -> float | np.ndarray:
    return np.round(np.round(np.asarray(px) / tick) * tick, 2)


def price_limits(
    pre_close: float, board: str, is_st: bool, day: dt.date, days_since_listing: int
) -> tuple[float | None, float | None]:
    """(lower, upper) limit prices for the day, rounded to the tick half up as the exchanges do.

    Decimal arithmetic: 4.35 x 0.9 is exactly 3.915 and rounds to 3.92 (binary floats give 3.9149...).
    """
    from decimal import ROUND_HALF_UP, Decimal

    pct = limit_pct(board, is_st, day, days_since_listing)
    if pct is None:
        return None, None
    if pct == 0.44:  # IPO day: +44% / -36%
        up, down = Decimal("0.44"), Decimal("0.36")
    else:
        up = down = Decimal(str(pct))
    pc = Decimal(str(pre_close))
    cent = Decimal("0.01")
    upper = float((pc * (1 + up)).quantize(cent, rounding=ROUND_HALF_UP))
    lower = float((pc * (1 - down)).quantize(cent, rounding=ROUND_HALF_UP))
    return lower, upper


def min_buy_qty(board: str) -> tuple[int, int]:
    """(minimum, step) of a buy order in shares: 100/100 on main and ChiNext, 200/1 on STAR."""
    return (200, 1) if board == "star" else (100, 100)
