"""The snapshot grid of one A-share trading date, the trading clock and the intraday seasonality.

Snapshots are taken every ``step_s`` seconds from the start of each session of
:data:`l2vol.data.profiles.ASHARE` (``sessions_for(day, exchange)``): with 3 s, 200 opening-call
snapshots 09:15:00-09:24:57, 100 pre-open ones 09:25:00-09:29:57, 2,400 continuous 09:30:00-11:29:57,
2,340 continuous 13:00:00-14:56:57 and 61 closing-call ones 14:57:00-15:00:00 (5,101 per symbol-day).
No snapshot is taken in the lunch break.

The **trading clock** ``tau`` counts seconds of trading since 09:30:00 and stands still over the lunch
break: 11:29:57 is tau = 7,197, 13:00:00 is tau = 7,200, 14:57:00 is 14,220 and 15:00:00 is 14,400 = T.
The latent process lives on the *tau grid* ``tau_k = k * step_s``, ``k = 0..K`` (K = T / step_s), i.e.
the snapshots from 09:30:00 to 15:00:00. Step ``k`` is the trading-clock interval
``(tau_{k-1}, tau_k]``; in wall time it starts at snapshot ``k-1`` (the step ending at 13:00:00 is
11:29:57-11:30:00, before the lunch break).
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from l2vol.data.calibration import Calibration
from l2vol.data.profiles import ASHARE

#: Trading-clock length of an A-share day (s) and the positions of the lunch and the closing call.
T_DAY = 14_400
TAU_LUNCH = 7_200
TAU_CLOSE_CALL = 14_220

#: Phase codes used internally (the table column holds the names, see l2vol.data.schema.PHASES).
PHASE_NAMES = ("OCALL", "PREOPEN", "TRADE", "CCALL", "CLOSED", "HALT", "BREAK")
OCALL, PREOPEN, TRADE, CCALL, CLOSED, HALT, BREAK = range(7)
_CODE = {n: i for i, n in enumerate(PHASE_NAMES)}


def _utc_ns(day: dt.date, t: dt.time) -> int:
    return pd.Timestamp(dt.datetime.combine(day, t), tz=ASHARE.timezone).tz_convert("UTC").value


def _secs(t: dt.time) -> int:
    return t.hour * 3600 + t.minute * 60 + t.second


@dataclass(frozen=True)
class DayGrid:
    """All snapshot times of one date for one exchange's session table.

    ``ts_ns`` (UTC epoch ns) and ``phase`` (codes) cover the full grid; ``k0`` is the index of 09:30:00
    in it, so the tau grid is ``ts_ns[k0:]`` with ``tau = tau_s`` (length K + 1).
    """

    day: dt.date
    exchange: str
    step_s: int
    ts_ns: np.ndarray
    phase: np.ndarray
    k0: int
    tau_s: np.ndarray

    @property
    def n(self) -> int:
        return len(self.ts_ns)

    @property
    def K(self) -> int:
        return len(self.tau_s) - 1

    @property
    def tau_ts_ns(self) -> np.ndarray:
        return self.ts_ns[self.k0 :]

    @property
    def tau_phase(self) -> np.ndarray:
        return self.phase[self.k0 :]


def check_step(step_s: int) -> None:
    """The grid step must divide a minute, so that every session starts and ends on the grid."""
    if step_s < 1 or 60 % step_s:
        raise ValueError(f"snapshot_interval_s={step_s}: the simulator needs a divisor of 60 seconds")


@functools.lru_cache(maxsize=64)
def day_grid(day: dt.date, exchange: str, step_s: int) -> DayGrid:
    """The snapshot grid of ``day`` for ``exchange`` ("SSE"/"SZSE") every ``step_s`` seconds."""
    check_step(step_s)
    ts, ph, tau = [], [], []
    k0 = None
    elapsed = 0  # trading-clock seconds at the start of the current session (from 09:30)
    started = False
    for s in ASHARE.sessions_for(day, exchange):
        a, b = _secs(s.start), _secs(s.end)
        secs = np.arange(a, b, step_s, dtype=np.int64)
        base = _utc_ns(day, s.start)
        ts.append(base + (secs - a) * 1_000_000_000)
        ph.append(np.full(len(secs), _CODE[s.phase], dtype=np.int8))
        if s.phase == "TRADE" and not started:
            started = True
            k0 = sum(len(x) for x in ts[:-1])
        if started:
            tau.append(elapsed + (secs - a))
            elapsed += b - a
    ts_ns = np.concatenate(ts)
    phase = np.concatenate(ph)
    tau_s = np.concatenate(tau)
    if k0 is None or tau_s[0] != 0 or not np.array_equal(tau_s, np.arange(len(tau_s)) * step_s) or tau_s[-1] != T_DAY:
        raise ValueError(f"{day} {exchange}: sessions do not form a regular trading-clock grid of {step_s} s")
    return DayGrid(day, exchange, step_s, ts_ns, phase, int(k0), tau_s)


def seasonality_1s(cal: Calibration) -> np.ndarray:
    """Intraday variance seasonality s at each trading-clock second ``[u, u+1)``, u = 0..T-1, evaluated
    at the midpoint and normalized to mean 1 over the day (so it integrates to T):

    ``1 + A e^{-tau/a} + L e^{-(tau-7200)/l} [tau >= 7200] + C e^{-(14220-tau)/c} [tau < 14220]
    + D [tau >= 14220]`` — an open spike, a smaller restart after lunch, a build-up into 14:57 and the
    closing call level.
    """
    p = cal.intraday
    u = np.arange(T_DAY, dtype=np.float64) + 0.5
    s = 1.0 + p.open_amp * np.exp(-u / p.open_decay_s)
    aft = u >= TAU_LUNCH
    s[aft] += p.lunch_amp * np.exp(-(u[aft] - TAU_LUNCH) / p.lunch_decay_s)
    pre = u < TAU_CLOSE_CALL
    s[pre] += p.close_amp * np.exp(-(TAU_CLOSE_CALL - u[pre]) / p.close_decay_s)
    s[~pre] += p.close_amp + p.call_level
    return s / s.mean()


@dataclass(frozen=True)
class Seasonality:
    """Seasonality on a tau grid of ``step_s``: ``step_mean[k-1]`` is the mean of s over step k
    (``(tau_{k-1}, tau_k]``), ``point[k]`` the rate of the second starting at ``tau_k`` (the spot value)."""

    step_s: int
    step_mean: np.ndarray
    point: np.ndarray


@functools.lru_cache(maxsize=16)
def seasonality(cal: Calibration, step_s: int) -> Seasonality:
    s1 = seasonality_1s(cal)
    step_mean = s1.reshape(-1, step_s).mean(axis=1)
    point = np.append(s1[::step_s], s1[-1])
    return Seasonality(step_s, step_mean, point)
