"""Market profiles: the dated A-share rule table, sessions and phases, the XSHG calendar, ticks and lots."""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_UP, Decimal

import pandas as pd
import pytest

from l2vol.data.profiles import (
    ASHARE,
    ASHARE_LIMIT_RULES,
    LOBSTER,
    OPTIVER,
    SSE_CLOSING_CALL_SINCE,
    board_of,
    get_profile,
    limit_pct,
    min_buy_qty,
    price_limits,
    round_to_tick,
)

D = dt.date
SEASONED = 250  # trading days since listing: no new-listing rule applies


# ------------------------------------------------------------------------------ dated limit table


@pytest.mark.parametrize(
    ("board", "st", "day", "days_listed", "pct"),
    [
        # main board ±10%, ST ±5% until the July 2025 change to ±10%
        ("main", False, D(2010, 6, 1), SEASONED, 0.10),
        ("main", False, D(2024, 1, 2), SEASONED, 0.10),
        ("main", True, D(2024, 1, 2), SEASONED, 0.05),
        ("main", True, D(2025, 7, 4), SEASONED, 0.05),
        ("main", True, D(2025, 7, 7), SEASONED, 0.10),
        ("main", True, D(2026, 1, 5), SEASONED, 0.10),
        # ChiNext ±10% (ST ±5%) before 2020-08-24, ±20% (ST too) from then
        ("chinext", False, D(2020, 8, 21), SEASONED, 0.10),
        ("chinext", True, D(2020, 8, 21), SEASONED, 0.05),
        ("chinext", False, D(2020, 8, 24), SEASONED, 0.20),
        ("chinext", True, D(2020, 8, 24), SEASONED, 0.20),
        # STAR ±20%, no limit in the first 5 days after listing
        ("star", False, D(2019, 7, 22), 0, None),
        ("star", False, D(2023, 5, 8), 4, None),
        ("star", False, D(2023, 5, 9), 5, 0.20),
        ("star", True, D(2024, 1, 2), SEASONED, 0.20),
        # ChiNext registration system: no limit in the first 5 days from 2020-08-24; IPO-day band before
        ("chinext", False, D(2020, 8, 24), 0, None),
        ("chinext", False, D(2020, 8, 24), 4, None),
        ("chinext", False, D(2020, 8, 24), 5, 0.20),
        ("chinext", False, D(2020, 8, 21), 0, 0.44),
        # main-board IPOs: +44%/-36% on the listing day until 2023-04-10, then no limit for 5 days
        ("main", False, D(2023, 4, 7), 0, 0.44),
        ("main", False, D(2023, 4, 7), 1, 0.10),
        ("main", False, D(2023, 4, 10), 0, None),
        ("main", False, D(2023, 4, 14), 4, None),
        ("main", False, D(2023, 4, 17), 5, 0.10),
    ],
)
def test_limit_table(board, st, day, days_listed, pct):
    assert limit_pct(board, st, day, days_listed) == pct


def test_limit_table_has_no_gap_or_overlap_for_seasoned_stocks():
    """Every board x ST status has exactly one seasoned-stock rule on each day since its board opened."""
    opened = {"main": D(1998, 4, 22), "chinext": D(2009, 10, 30), "star": D(2019, 7, 22)}
    for board, start in opened.items():
        for st in (False, True):
            for day in pd.date_range(start, "2026-12-31", freq="MS").date:
                n = sum(r.applies(board, st, day, SEASONED) for r in ASHARE_LIMIT_RULES if r.listing_days is None)
                assert n == 1, (board, st, day, n)


def test_no_rule_for_an_unknown_board():
    with pytest.raises(ValueError, match="no A-share limit rule for board=bse"):
        limit_pct("bse", False, D(2024, 1, 2), SEASONED)


def _half_up(x: Decimal) -> float:
    return float(x.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


@pytest.mark.parametrize(
    ("pre_close", "board", "st", "day", "days_listed", "expected"),
    [
        (10.00, "main", False, D(2024, 1, 2), SEASONED, (9.00, 11.00)),
        (10.05, "main", False, D(2024, 1, 2), SEASONED, (9.05, 11.06)),  # 9.045 -> 9.05, 11.055 -> 11.06
        (7.45, "main", True, D(2024, 1, 2), SEASONED, (7.08, 7.82)),  # ST ±5%: 7.0775, 7.8225
        (25.00, "chinext", False, D(2024, 1, 2), SEASONED, (20.00, 30.00)),
        (10.00, "main", False, D(2022, 1, 4), 0, (6.40, 14.40)),  # IPO day: +44% / -36%
        (30.00, "star", False, D(2024, 1, 2), 2, (None, None)),
    ],
)
def test_price_limits(pre_close, board, st, day, days_listed, expected):
    assert price_limits(pre_close, board, st, day, days_listed) == expected


def test_price_limits_round_half_up_exactly_like_the_exchanges():
    day = D(2024, 1, 2)
    for cents in range(100, 20_001):  # every pre_close from 1.00 to 200.00
        pc = Decimal(cents) / 100
        for board, st, pct in (("main", False, "0.10"), ("main", True, "0.05"), ("chinext", False, "0.20")):
            want = (_half_up(pc * (1 - Decimal(pct))), _half_up(pc * (1 + Decimal(pct))))
            assert price_limits(float(pc), board, st, day, SEASONED) == want, (float(pc), board, st)


# ------------------------------------------------------------------------------- sessions, phases


TIMES = ["09:14:59", "09:15", "09:24:59", "09:25", "09:29:59", "09:30", "11:29:59", "11:30", "12:59:59",
         "13:00", "14:56:59", "14:57", "14:59:59", "15:00", "15:00:01"]  # fmt: skip


def _phases(day: dt.date) -> list:
    local = pd.DatetimeIndex([f"{day} {t}" for t in TIMES]).tz_localize("Asia/Shanghai")
    return list(ASHARE.phase_of(local, day))


def test_phases_with_the_sse_closing_call():
    assert dt.date(2018, 8, 20) == SSE_CLOSING_CALL_SINCE
    assert _phases(D(2018, 8, 20)) == [
        None, "OCALL", "OCALL", "PREOPEN", "PREOPEN", "TRADE", "TRADE", None, None,
        "TRADE", "TRADE", "CCALL", "CCALL", "CCALL", None,
    ]  # fmt: skip


def test_before_2018_08_20_the_close_is_continuous_trading():
    assert _phases(D(2018, 8, 17)) == [
        None, "OCALL", "OCALL", "PREOPEN", "PREOPEN", "TRADE", "TRADE", None, None,
        "TRADE", "TRADE", "TRADE", "TRADE", "CLOSED", None,
    ]  # fmt: skip
    # The 15:00:00 closing snapshot is CLOSED (not continuous): continuous trading is exactly 4 hours.
    assert [s.phase for s in ASHARE.sessions_for(D(2018, 8, 17))] == [
        "OCALL", "PREOPEN", "TRADE", "TRADE", "TRADE", "CLOSED",
    ]  # fmt: skip
    # SZSE kept its closing call on every date.
    assert "CCALL" in [s.phase for s in ASHARE.sessions_for(D(2018, 8, 17), exchange="SZSE")]
    assert "CCALL" in [s.phase for s in ASHARE.sessions_for(D(2018, 8, 20))]


def test_session_at_and_continuous_sessions():
    assert ASHARE.session_at(dt.time(10, 0)).phase == "TRADE"
    assert ASHARE.session_at(dt.time(12, 0)) is None  # lunch break
    assert ASHARE.session_at(dt.time(14, 58), D(2024, 1, 2)).phase == "CCALL"
    assert ASHARE.session_at(dt.time(14, 58), D(2017, 1, 3)).phase == "TRADE"
    cont = ASHARE.continuous_sessions(D(2024, 1, 2))
    assert [(s.start, s.end) for s in cont] == [
        (dt.time(9, 30), dt.time(11, 30)),
        (dt.time(13, 0), dt.time(14, 57)),
    ]
    assert ASHARE.continuous_seconds(D(2024, 1, 2)) == 4 * 3600 - 180


def test_continuous_seconds_before_the_closing_call_is_four_hours():
    assert ASHARE.continuous_seconds(D(2018, 8, 17)) == 4 * 3600


# ------------------------------------------------------------------------------------- calendar


def test_xshg_calendar_skips_the_spring_festival_and_weekends():
    days = ASHARE.trading_days("2024-02-05", "2024-02-23")
    assert D(2024, 2, 12) not in days  # Spring Festival
    assert days == [D(2024, 2, d) for d in (5, 6, 7, 8, 19, 20, 21, 22, 23)]
    assert ASHARE.next_trading_days("2024-02-08", 3) == [D(2024, 2, 8), D(2024, 2, 19), D(2024, 2, 20)]
    assert ASHARE.next_trading_days("2024-02-10", 1) == [D(2024, 2, 19)]
    national_day = ASHARE.trading_days("2024-09-30", "2024-10-08")
    assert national_day == [D(2024, 9, 30), D(2024, 10, 8)]


def test_next_trading_days_spans_long_holidays():
    days = ASHARE.next_trading_days("2024-01-02", 60)
    assert len(days) == 60 and days == sorted(set(days))
    assert days == ASHARE.trading_days(days[0], days[-1])


def test_profiles_without_a_calendar_use_weekdays():
    assert OPTIVER.trading_days("2024-02-09", "2024-02-13") == [D(2024, 2, 9), D(2024, 2, 12), D(2024, 2, 13)]


# ------------------------------------------------------------------------------ ticks, lots, boards


def test_ashare_tick_and_lots():
    assert ASHARE.tick == 0.01 and ASHARE.lot == 100 and ASHARE.timezone == "Asia/Shanghai"
    assert ASHARE.calendar == "XSHG" and ASHARE.price_limits
    assert min_buy_qty("main") == (100, 100)
    assert min_buy_qty("chinext") == (100, 100)
    assert min_buy_qty("star") == (200, 1)  # 200 minimum, then steps of 1 share


def test_round_to_tick():
    assert round_to_tick(10.004) == 10.0
    assert round_to_tick(10.006) == 10.01
    assert list(round_to_tick(pd.Series([1.234, 5.678]).to_numpy())) == [1.23, 5.68]


@pytest.mark.parametrize(
    ("symbol", "board"),
    [("600519.SH", "main"), ("601318.SH", "main"), ("603288.SH", "main"), ("605499.SH", "main"),
     ("000001.SZ", "main"), ("002594.SZ", "main"), ("003816.SZ", "main"), ("300750.SZ", "chinext"),
     ("301269.SZ", "chinext"), ("688981.SH", "star")],
)  # fmt: skip
def test_board_of(symbol, board):
    assert board_of(symbol) == board


def test_foreign_profiles_carry_no_ashare_rules():
    for p in (LOBSTER, OPTIVER):
        assert not p.price_limits and p.closing_call_since is None and p.lot == 1
        assert "CCALL" not in [s.phase for s in p.sessions_for(D(2024, 1, 2))]
    assert LOBSTER.timezone == "America/New_York" and LOBSTER.calendar == "XNYS"
    assert [(s.start, s.end) for s in LOBSTER.sessions] == [(dt.time(9, 30), dt.time(16, 0))]
    assert get_profile("lobster") is LOBSTER and get_profile("ashare") is ASHARE
    with pytest.raises(KeyError, match="unknown market profile 'nyse'"):
        get_profile("nyse")


def test_next_trading_days_up_to_the_calendar_end():
    days = ASHARE.next_trading_days("2026-12-01", 10)
    assert len(days) == 10 and days[-1] <= D(2026, 12, 31)
    with pytest.raises(ValueError, match="calendar ends on 2026-12-31"):
        ASHARE.next_trading_days("2026-12-01", 400)
