"""Walk-forward splits: layout, validation errors, the leakage property and the factor-set guard."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pytest

from l2vol.evaluation import (
    HORIZON_DAYS,
    LeakageError,
    assert_fold_compatible,
    buckets_to_days,
    check_no_leakage,
    horizon_days,
    walk_forward_splits,
)
from l2vol.factors.factor_set import FactorSetLeakError


def _dates(n: int, start: dt.date = dt.date(2024, 1, 2)) -> list[dt.date]:
    """``n`` weekdays (a stand-in trading calendar; the splitter only needs sorted unique dates)."""
    out, d = [], start
    while len(out) < n:
        if d.weekday() < 5:
            out.append(d)
        d += dt.timedelta(days=1)
    return out


def test_expanding_layout_and_describe():
    ds = _dates(40)
    folds = walk_forward_splits(ds, train_days=20, val_days=5, test_days=5, purge_days=1, embargo_days=1)
    assert len(folds) == 2  # 20 + 1 + 5 + 2 + 5 = 33; the second fold ends at 38; a third needs 43
    f0, f1 = folds
    assert f0.train == tuple(ds[:20]) and f0.gap_train_val == (ds[20],) and f0.val == tuple(ds[21:26])
    assert f0.gap_val_test == tuple(ds[26:28]) and f0.test == tuple(ds[28:33])
    assert f1.train == tuple(ds[:25]) and f1.test == tuple(ds[33:38])
    assert f0.span == tuple(ds[:33])
    text = f0.describe()
    assert "fold 0 (expanding)" in text and "purge 1 d + embargo 1 d" in text
    assert f"test {ds[28]}..{ds[32]} (5 d)" in text
    assert f0.to_dict()["test"] == {"start": ds[28].isoformat(), "end": ds[32].isoformat(), "days": 5}


def test_rolling_keeps_train_length_and_step():
    ds = _dates(60)
    folds = walk_forward_splits(
        ds, train_days=15, val_days=4, test_days=3, purge_days=2, embargo_days=2, step_days=2, mode="rolling"
    )
    assert len(folds) == 1 + (60 - (15 + 2 + 4 + 2 + 2 + 3)) // 2
    for k, f in enumerate(folds):
        assert len(f.train) == 15 and f.train[0] == ds[2 * k]
        assert len(f.gap_train_val) == 2 and len(f.gap_val_test) == 4 and len(f.test) == 3
    labels = folds[0].segment_of(ds[:30])
    assert list(labels[:15]) == ["train"] * 15 and labels[15] == "" and labels[17] == "val"
    assert list(labels[25:28]) == ["test"] * 3 and labels[28] == ""


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"purge_days": 0}, "shorter than the target horizon"),
        ({"purge_days": 1, "horizon": 2}, "use purge_days >= 2"),
        ({"embargo_days": 0}, "at least 1 trading day of embargo"),
        ({"train_days": 0}, "train_days=0"),
        ({"test_days": 50}, "cannot hold one fold"),
        ({"mode": "sliding"}, "expected 'expanding' or 'rolling'"),
        ({"step_days": 0}, "step_days=0"),
        ({"horizon": "next_week"}, "expected trading days"),
    ],
)
def test_split_configuration_errors(kw, message):
    base = dict(train_days=10, val_days=3, test_days=3, purge_days=1, embargo_days=1)
    with pytest.raises(ValueError, match=message):
        walk_forward_splits(_dates(30), **{**base, **kw})


def test_unsorted_dates_are_refused():
    ds = _dates(30)
    ds[5], ds[6] = ds[6], ds[5]
    with pytest.raises(ValueError, match=r"dates\[6\] .* is not after dates\[5\]"):
        walk_forward_splits(ds, train_days=10, val_days=3, test_days=3, purge_days=1, embargo_days=1)


def test_horizon_names_match_the_target_table():
    from l2vol.factors import HORIZONS

    assert set(HORIZON_DAYS) == set(HORIZONS)
    assert horizon_days("rv_next_day") == 1 and horizon_days(3) == 3
    assert buckets_to_days(1, 48) == 1 and buckets_to_days(6, 48) == 1
    assert buckets_to_days(48, 48) == 1 and buckets_to_days(49, 48) == 2


def test_no_train_or_val_window_touches_test_property():
    """Rows at every bucket end of every date; targets over (t, t + H buckets] on the trading clock.

    For random calendars, bucket counts, horizons (up to 3 days, crossing the close), purges, embargoes,
    window lengths, steps and both modes: every training/validation target window ends more than the
    embargo before the first test row, training targets end before the first validation row, feature
    windows (which end at their row) precede the test, and check_no_leakage agrees.
    """
    rng = np.random.default_rng(20241122)
    n_folds = 0
    for _ in range(150):
        b = int(rng.integers(1, 49))  # buckets per day
        h_buckets = int(rng.integers(1, 3 * b + 1))
        h_days = buckets_to_days(h_buckets, b)
        purge = h_days + int(rng.integers(0, 2))
        embargo = int(rng.integers(1, 3))
        train, val, test = (int(v) for v in rng.integers([1, 1, 1], [30, 8, 8]))
        need = train + 2 * purge + val + embargo + test
        ds = _dates(need + int(rng.integers(0, 25)))
        step = None if rng.random() < 0.5 else int(rng.integers(1, 6))
        mode = "expanding" if rng.random() < 0.5 else "rolling"
        folds = walk_forward_splits(
            ds,
            train_days=train,
            val_days=val,
            test_days=test,
            purge_days=purge,
            embargo_days=embargo,
            step_days=step,
            mode=mode,
            horizon=h_days,
        )
        assert folds
        # trading-clock bucket ends: day d covers (d*b, (d+1)*b]; its rows end at d*b + 1 .. d*b + b
        day = np.repeat(np.arange(len(ds)), b)
        t = day * b + np.tile(np.arange(1, b + 1), len(ds))
        target_end = t + h_buckets
        feature_window_end = t  # features at t use data strictly before t
        for fold in folds:
            n_folds += 1
            seg = fold.segment_of(ds)[day]
            train_rows, val_rows, test_rows = seg == "train", seg == "val", seg == "test"
            fit_rows = train_rows | val_rows
            first_test = t[test_rows].min()
            assert target_end[fit_rows].max() < first_test - embargo * b
            assert target_end[train_rows].max() < t[val_rows].min()
            assert feature_window_end[fit_rows].max() < first_test
            assert not (fit_rows & test_rows).any()
            report = check_no_leakage(fold, feature_window_days=22, target_horizon_days=h_days)
            assert report["clear_days_before_test"] >= embargo
    assert n_folds > 300


def test_check_no_leakage_catches_a_short_purge():
    """Negative control: moving one purge date into validation makes validation targets reach the embargo."""
    fold = walk_forward_splits(_dates(40), train_days=20, val_days=5, test_days=5, purge_days=1, embargo_days=1)[0]
    bad = dataclasses.replace(fold, val=fold.val + fold.gap_val_test[:1], gap_val_test=fold.gap_val_test[1:])
    with pytest.raises(LeakageError, match="within 1 embargo day"):
        check_no_leakage(bad, target_horizon_days=1)
    bad = dataclasses.replace(fold, train=fold.train + fold.gap_train_val, gap_train_val=())
    with pytest.raises(LeakageError, match="inside validation"):
        check_no_leakage(bad, target_horizon_days=1)
    with pytest.raises(LeakageError):  # a 2-day target on a 1-day purge
        check_no_leakage(fold, target_horizon_days=2)


def test_factor_set_guard():
    ds = _dates(40)
    fold = walk_forward_splits(ds, train_days=20, val_days=5, test_days=5, purge_days=1, embargo_days=1)[0]
    assert_fold_compatible(ds[0], fold.val[-1], fold)  # train + validation: allowed
    assert_fold_compatible(ds[3].isoformat(), ds[10].isoformat(), fold)
    with pytest.raises(FactorSetLeakError) as exc:
        assert_fold_compatible(ds[0], fold.test[1], fold)
    msg = str(exc.value)
    assert f"{ds[0]}..{fold.test[1]}" in msg and f"test {fold.test[0]}..{fold.test[-1]}" in msg
    assert "shared test dates" in msg
    with pytest.raises(FactorSetLeakError, match="ends after the last validation date"):
        assert_fold_compatible(ds[0], fold.gap_val_test[0], fold)  # the embargo is not for fitting either
    with pytest.raises(FactorSetLeakError):
        assert_fold_compatible(ds[35], ds[39], fold)  # fit on the future of the fold
