"""Walk-forward splits by trading date, and the guards that keep a test fold unseen.

A fold cuts a contiguous run of trading dates into::

    train | purge | validation | purge + embargo | test

* **purge** (``purge_days`` trading days, both gaps) drops the dates into which the *targets* of the
  preceding segment reach. A row stamped ``t`` (a bucket end on date ``d``) has features that use only
  data before ``t`` and a target over ``(t, t + h]``. With a horizon of ``H`` trading days the target of
  the last row of date ``d`` ends at the close of date ``d + H``; so ``purge_days >= H`` keeps every
  training target out of validation and every validation target out of the purge-and-embargo gap.
* **embargo** (``embargo_days >= 1``, only before test) adds whole dates between the last date any
  training or validation target touches and the first test date, so slowly decaying dependence (vol
  clustering) and publication lags do not carry validation information into test.

Horizons are counted in trading days. Intraday horizons (next bucket, next 30 minutes, rest of day)
end before the close of their own date; they are rounded up to one whole day
(:func:`buckets_to_days`), which is simpler than purging by buckets and costs one date per gap.
The feature look-back (HAR's monthly RV uses 22 past dates) needs no purge: it looks *back*, so a
training row's features never read test data; a test row's features may read training-period data,
which is legitimate (that data is known at forecast time).

``expanding`` folds keep the first training date and grow the training window by ``step_days`` per
fold; ``rolling`` folds slide a training window of fixed length ``train_days``. Validation and test
windows have fixed lengths and move by ``step_days`` (default ``test_days``: test windows tile the
sample without overlap).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

#: Forecast horizons of :mod:`l2vol.factors.targets`, in trading days the target window can reach past
#: its row's date (intraday horizons rounded up to one whole day; see :func:`buckets_to_days`).
HORIZON_DAYS: dict[str, int] = {"next_bucket": 1, "next_30min": 1, "rest_of_day": 1, "next_day": 1}

Mode = Literal["expanding", "rolling"]


class LeakageError(ValueError):
    """A training or validation row's target window reaches the test window (or its embargo)."""


def buckets_to_days(horizon_buckets: int, buckets_per_day: int) -> int:
    """A horizon of ``horizon_buckets`` trading-clock buckets in whole trading days, rounded up (>= 1).

    With 48 five-minute buckets a day, the next-bucket (1) and next-30-minute (6) horizons are 1 day.
    """
    if horizon_buckets < 1 or buckets_per_day < 1:
        raise ValueError(f"horizon_buckets={horizon_buckets}, buckets_per_day={buckets_per_day}: both must be >= 1")
    return max(1, math.ceil(horizon_buckets / buckets_per_day))


def horizon_days(horizon: int | str) -> int:
    """Trading days a target window reaches past its row's date: an int (days) or a target name.

    Names are those of ``l2vol.factors.HORIZONS`` (``next_bucket``, ``next_30min``, ``rest_of_day``,
    ``next_day``), optionally prefixed ``rv_``.
    """
    if isinstance(horizon, bool):
        raise TypeError(f"horizon {horizon!r}: expected trading days (int) or a target name")
    if isinstance(horizon, int | np.integer):
        if horizon < 1:
            raise ValueError(f"horizon={horizon}: a target window covers at least one trading day (>= 1)")
        return int(horizon)
    name = str(horizon).removeprefix("rv_")
    if name not in HORIZON_DAYS:
        raise ValueError(f"horizon {horizon!r}: expected trading days (int) or one of {sorted(HORIZON_DAYS)}")
    return HORIZON_DAYS[name]


@dataclass(frozen=True)
class Fold:
    """One walk-forward fold: disjoint, time-ordered date segments of a contiguous run of trading dates.

    ``gap_train_val`` holds the purged dates between train and validation; ``gap_val_test`` the purged
    and embargoed dates between validation and test (``purge_days + embargo_days`` of them). No row of
    a gap date is used by the fold.
    """

    index: int
    mode: Mode
    train: tuple[dt.date, ...]
    gap_train_val: tuple[dt.date, ...]
    val: tuple[dt.date, ...]
    gap_val_test: tuple[dt.date, ...]
    test: tuple[dt.date, ...]
    purge_days: int
    embargo_days: int
    horizon_days: int

    @property
    def span(self) -> tuple[dt.date, ...]:
        """All dates of the fold in order, gaps included (a contiguous run of the trading calendar)."""
        return self.train + self.gap_train_val + self.val + self.gap_val_test + self.test

    @property
    def train_range(self) -> tuple[dt.date, dt.date]:
        return self.train[0], self.train[-1]

    @property
    def val_range(self) -> tuple[dt.date, dt.date]:
        return self.val[0], self.val[-1]

    @property
    def test_range(self) -> tuple[dt.date, dt.date]:
        return self.test[0], self.test[-1]

    def segment_of(self, dates: Sequence[dt.date] | np.ndarray) -> np.ndarray:
        """Label each row date ``"train"``, ``"val"``, ``"test"`` or ``""`` (a gap or outside the fold)."""
        lookup = {d: "train" for d in self.train} | {d: "val" for d in self.val} | {d: "test" for d in self.test}
        return np.array([lookup.get(_as_date(d), "") for d in dates], dtype=object)

    def describe(self) -> str:
        """One line, e.g. ``fold 0 (expanding): train 2024-01-02..2024-03-29 (60 d) | purge 1 d | ...``."""
        embargo = self.embargo_days
        return (
            f"fold {self.index} ({self.mode}): train {_span(self.train)} | purge {len(self.gap_train_val)} d | "
            f"val {_span(self.val)} | purge {len(self.gap_val_test) - embargo} d + embargo {embargo} d | "
            f"test {_span(self.test)} (horizon {self.horizon_days} d)"
        )

    def to_dict(self) -> dict:
        """JSON-able summary: ISO date ranges and day counts of each segment."""

        def seg(ds: tuple[dt.date, ...]) -> dict:
            return {"start": ds[0].isoformat(), "end": ds[-1].isoformat(), "days": len(ds)} if ds else {"days": 0}

        return {
            "index": self.index,
            "mode": self.mode,
            "train": seg(self.train),
            "gap_train_val": seg(self.gap_train_val),
            "val": seg(self.val),
            "gap_val_test": seg(self.gap_val_test),
            "test": seg(self.test),
            "purge_days": self.purge_days,
            "embargo_days": self.embargo_days,
            "horizon_days": self.horizon_days,
        }


def walk_forward_splits(
    dates: Sequence[dt.date],
    *,
    train_days: int,
    val_days: int,
    test_days: int,
    purge_days: int,
    embargo_days: int,
    step_days: int | None = None,
    mode: Mode = "expanding",
    horizon: int | str = 1,
) -> list[Fold]:
    """Walk-forward folds over the trading dates ``dates`` (strictly increasing, no gaps implied).

    Fold ``k`` (``s = step_days``, default ``test_days``): training ends after date
    ``train_days + k*s`` of ``dates`` and starts at the first date (``expanding``) or ``k*s`` dates in
    (``rolling``: always ``train_days`` long); then ``purge_days`` gap dates, ``val_days`` validation
    dates, ``purge_days + embargo_days`` gap dates and ``test_days`` test dates. Folds are produced
    while a whole test window fits.

    Refuses ``purge_days`` shorter than the horizon (:func:`horizon_days`; a target over
    ``(t, t + h]`` of the last training row would reach into validation) and ``embargo_days < 1``.
    """
    ds = [_as_date(d) for d in dates]
    for i in range(1, len(ds)):
        if ds[i] <= ds[i - 1]:
            raise ValueError(
                f"dates[{i}] = {ds[i]} is not after dates[{i - 1}] = {ds[i - 1]}: pass sorted, unique trading dates"
            )
    h = horizon_days(horizon)
    for name, value, low in (
        ("train_days", train_days, 1),
        ("val_days", val_days, 1),
        ("test_days", test_days, 1),
        ("purge_days", purge_days, 0),
        ("embargo_days", embargo_days, 0),
    ):
        if not isinstance(value, int | np.integer) or value < low:
            raise ValueError(f"{name}={value!r}: must be an integer >= {low}")
    if purge_days < h:
        raise ValueError(
            f"purge_days={purge_days} is shorter than the target horizon ({h} trading day(s) for horizon={horizon!r}): "
            f"the target window (t, t+h] of the last training/validation rows would reach the next segment; "
            f"use purge_days >= {h}"
        )
    if embargo_days < 1:
        raise ValueError(
            f"embargo_days={embargo_days}: at least 1 trading day of embargo must separate validation from test"
        )
    step = test_days if step_days is None else step_days
    if not isinstance(step, int | np.integer) or step < 1:
        raise ValueError(f"step_days={step_days!r}: must be an integer >= 1")
    if mode not in ("expanding", "rolling"):
        raise ValueError(f"mode={mode!r}: expected 'expanding' or 'rolling'")

    need = train_days + purge_days + val_days + purge_days + embargo_days + test_days
    if len(ds) < need:
        raise ValueError(
            f"{len(ds)} trading dates cannot hold one fold: train {train_days} + purge {purge_days} + val {val_days} "
            f"+ purge {purge_days} + embargo {embargo_days} + test {test_days} = {need} dates"
        )
    folds: list[Fold] = []
    k = 0
    while True:
        train_end = train_days + k * step  # exclusive index
        val_start = train_end + purge_days
        test_start = val_start + val_days + purge_days + embargo_days
        if test_start + test_days > len(ds):
            break
        train_start = 0 if mode == "expanding" else k * step
        folds.append(
            Fold(
                index=k,
                mode=mode,
                train=tuple(ds[train_start:train_end]),
                gap_train_val=tuple(ds[train_end:val_start]),
                val=tuple(ds[val_start : val_start + val_days]),
                gap_val_test=tuple(ds[val_start + val_days : test_start]),
                test=tuple(ds[test_start : test_start + test_days]),
                purge_days=int(purge_days),
                embargo_days=int(embargo_days),
                horizon_days=h,
            )
        )
        k += 1
    return folds


def check_no_leakage(fold: Fold, *, feature_window_days: int = 0, target_horizon_days: int | str = 1) -> dict:
    """Check, on the fold's own calendar, that no training or validation row sees the test window.

    A row on date ``d`` (position ``p`` in ``fold.span``) has a feature window of dates
    ``[p - feature_window_days, p]`` (data strictly before the row's bucket end) and a target window
    reaching to the close of position ``p + H`` (``H`` = :func:`horizon_days` of
    ``target_horizon_days``). Requires:

    * every training target ends before the first validation date (the train/validation purge);
    * every training and validation target ends at least ``fold.embargo_days`` whole dates before the
      first test date;
    * every training and validation feature window ends before the first test date.

    Raises :class:`LeakageError` naming the offending date and both windows; returns a summary dict
    (last dates the train/val targets reach, first test date, free dates before test).
    """
    h = horizon_days(target_horizon_days)
    if feature_window_days < 0:
        raise ValueError(f"feature_window_days={feature_window_days}: must be >= 0")
    span = fold.span
    pos = {d: i for i, d in enumerate(span)}
    first_val, first_test = pos[fold.val[0]], pos[fold.test[0]]
    last_train, last_val = pos[fold.train[-1]], pos[fold.val[-1]]

    def reach(p: int) -> str:
        return span[p].isoformat() if p < len(span) else f"{span[-1].isoformat()} + {p - len(span) + 1} trading day(s)"

    if last_train + h >= first_val:
        raise LeakageError(
            f"fold {fold.index}: the target of training date {fold.train[-1]} (horizon {h} d) reaches "
            f"{reach(last_train + h)}, inside validation {_span(fold.val)}"
        )
    last_target = last_val + h
    if last_target >= first_test - fold.embargo_days:
        raise LeakageError(
            f"fold {fold.index}: the target of validation date {fold.val[-1]} (horizon {h} d) reaches "
            f"{reach(last_target)}, within {fold.embargo_days} embargo day(s) of test {_span(fold.test)}"
        )
    if last_val >= first_test:  # feature windows end at their row; test starts later
        raise LeakageError(f"fold {fold.index}: validation date {fold.val[-1]} is not before test {_span(fold.test)}")
    return {
        "fold": fold.index,
        "train_targets_reach": span[last_train + h].isoformat(),
        "val_targets_reach": span[last_target].isoformat(),
        "first_test_date": fold.test[0].isoformat(),
        "clear_days_before_test": first_test - last_target - 1,
        "feature_window_days": feature_window_days,
        "horizon_days": h,
    }


def assert_fold_compatible(fit_start: dt.date | str, fit_end: dt.date | str, fold: Fold) -> None:
    """Refuse a factor set (or any fitted selection/normalizer) fit on ``[fit_start, fit_end]`` for ``fold``.

    What learns from data may see the fold's training and validation dates only: a fit range that
    overlaps the test window, its purge/embargo gap, or anything after the last validation date is
    refused with :class:`l2vol.factors.factor_set.FactorSetLeakError` naming both ranges. (A fit
    range ending on the last validation date is allowed: the purge keeps its targets out of test.)
    """
    from l2vol.factors.factor_set import FactorSetLeakError

    lo, hi = _as_date(fit_start), _as_date(fit_end)
    if hi < lo:
        raise ValueError(f"fit range {lo}..{hi} is empty (fit_end before fit_start)")
    last_allowed = fold.val[-1]
    if hi > last_allowed:
        t0, t1 = fold.test_range
        overlap = ""
        if lo <= t1 and t0 <= hi:
            overlap = f"; shared test dates {max(lo, t0)}..{min(hi, t1)}"
        raise FactorSetLeakError(
            f"factor set fit on {lo}..{hi} cannot be used for fold {fold.index} with test {t0}..{t1}: "
            f"its fit range ends after the last validation date {last_allowed}{overlap}; refit it on dates "
            f"up to {last_allowed} (train {_span(fold.train)}, val {_span(fold.val)})"
        )


def _span(ds: tuple[dt.date, ...]) -> str:
    return f"{ds[0]}..{ds[-1]} ({len(ds)} d)" if ds else "(none)"


def _as_date(d) -> dt.date:
    if isinstance(d, dt.datetime):
        return d.date()
    if isinstance(d, dt.date):
        return d
    if isinstance(d, np.datetime64):
        return dt.date.fromisoformat(str(d.astype("datetime64[D]")))
    if hasattr(d, "date") and callable(d.date):  # pandas Timestamp
        return d.date()
    return dt.date.fromisoformat(str(d))
