"""Forecast losses, out-of-sample R², the oracle gap and evaluate_forecasts on hand numbers."""

from __future__ import annotations

import datetime as dt
import json
import math

import numpy as np
import pandas as pd
import polars as pl
import pytest

from l2vol.evaluation import (
    diebold_mariano,
    evaluate_forecasts,
    mae,
    mse,
    oracle_gap,
    period_means,
    qlike,
    qlike_loss,
    r2_oos,
    rmspe,
)

Y = np.array([1.0, 2.0, 4.0])
F = np.array([2.0, 2.0, 2.0])


def test_losses_on_hand_numbers():
    assert mse(Y, F) == pytest.approx(5.0 / 3.0)  # (1 + 0 + 4) / 3
    assert mae(Y, F) == pytest.approx(1.0)  # (1 + 0 + 2) / 3
    # QLIKE: (0.5 + ln 2 - 1) + 0 + (2 - ln 2 - 1) = 0.5
    assert qlike(Y, F) == pytest.approx(0.5 / 3.0)
    assert qlike_loss(Y, F)[0] == pytest.approx(0.5 - math.log(0.5) - 1.0)
    # RMSPE: ((1-2)/1)^2 = 1, 0, ((4-2)/4)^2 = 0.25
    assert rmspe(Y, F) == pytest.approx(math.sqrt(1.25 / 3.0))


def test_qlike_is_minimized_at_the_realized_value():
    rng = np.random.default_rng(1)
    y = rng.gamma(2.0, 1e-4, size=50)
    scales = np.linspace(0.5, 2.0, 61)
    values = [qlike(y, y * c) for c in scales]
    assert scales[int(np.argmin(values))] == pytest.approx(1.0)
    assert qlike(y, y) == 0.0
    assert qlike(y, 0.8 * y) > qlike(y, 1.25 * y)  # under-prediction of variance costs more


def test_qlike_refuses_non_positive_values():
    with pytest.raises(ValueError, match=r"y \(realized\): 1 value\(s\) not > 0 \(first at row 1"):
        qlike([1.0, 0.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="f \\(forecast\\)"):
        qlike([1.0, 1.0], [1.0, -1.0])


def test_r2_oos_sign():
    bench = np.array([1.0, 1.0, 1.0])  # SSE 0 + 1 + 9 = 10; F has SSE 5
    assert r2_oos(Y, F, bench) == pytest.approx(0.5)
    assert r2_oos(Y, bench, F) == pytest.approx(-1.0)
    assert r2_oos(Y, bench, bench) == 0.0


def test_oracle_gap_on_hand_numbers():
    assert oracle_gap([1.0, 3.0], [2.0, 4.0], [1.0, 1.0]) == pytest.approx(0.5)  # (2 - 1) / (3 - 1)
    assert oracle_gap([1.0], [1.0], [1.0]) != oracle_gap([1.0], [1.0], [1.0])  # undefined: NaN


def _panel(seed: int = 0, n_days: int = 30, n_sym: int = 6, n_buckets: int = 4) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ts = [
        pd.Timestamp(dt.datetime(2024, 1, 1) + dt.timedelta(days=d, hours=9, minutes=35 + 5 * b), tz="Asia/Shanghai")
        for d in range(n_days)
        for b in range(n_buckets)
    ]
    rows = []
    for i, t in enumerate(ts):
        for s in range(n_sym):
            sigma2 = 1e-4 * (1.0 + 0.5 * np.sin(i / 7.0 + s))
            y = sigma2 * rng.chisquare(3) / 3.0
            rows.append(
                {
                    "symbol": f"60000{s}.SH",
                    "ts": t,
                    "y": y,
                    "har": sigma2 * 1.3,
                    "good": sigma2 * rng.lognormal(0.0, 0.05),
                    "naive": max(y * rng.lognormal(0.0, 0.5), 1e-9),
                }
            )
    return pd.DataFrame(rows)


def test_evaluate_forecasts_tables_and_zero_rv_counted():
    df = _panel()
    df.loc[[3, 10, 11], "y"] = 0.0  # halted windows
    df.loc[[20], "y"] = np.nan  # no target (last bucket of a day)
    out = evaluate_forecasts(df, benchmark="har")
    json.dumps(out, allow_nan=False)  # strict JSON
    assert out["n_rows"] == len(df) and out["n_zero_excluded"] == 3 and out["n_missing_target"] == 1
    assert out["n_used"] == len(df) - 4
    good, har = out["models"]["good"], out["models"]["har"]
    assert good["n_zero_excluded"] == 3 and good["n_used"] == len(df) - 4
    keep = df["y"].notna() & (df["y"] > 0)
    y, f, b = (df.loc[keep, c].to_numpy() for c in ("y", "good", "har"))
    assert good["qlike"] == pytest.approx(qlike(y, f)) and good["rmspe"] == pytest.approx(rmspe(y, f))
    assert good["mse"] == pytest.approx(mse(y, f)) and good["mae"] == pytest.approx(mae(y, f))
    assert good["r2_oos"] == pytest.approx(r2_oos(y, f, b)) and good["r2_oos"] > 0
    assert har["r2_oos"] == 0.0 and har["dm"] is None
    # DM on the per-period cross-sectional mean loss differential
    ts = df.loc[keep, "ts"].to_numpy()
    ref = diebold_mariano(qlike_loss(y, f), qlike_loss(y, b), periods=ts, horizon_periods=1)
    assert good["dm"]["qlike"]["stat"] == pytest.approx(ref["stat"])
    assert good["dm"]["qlike"]["n_periods"] == out["n_periods"] == df["ts"].nunique()
    assert good["dm"]["qlike"]["stat"] < 0 and good["dm"]["qlike"]["p_value"] < 0.01  # good beats a biased HAR
    assert set(good["mz"]) >= {"intercept", "slope", "se_intercept", "se_slope", "p_value"}
    row = next(r for r in out["table"] if r["model"] == "good")
    assert row["dm_qlike_p"] == good["dm"]["qlike"]["p_value"] and row["mz_slope"] == good["mz"]["slope"]
    # breakdowns: local clock time of ts, and symbol; counts add up per model
    tod = [r for r in out["by_time_of_day"] if r["model"] == "good"]
    assert [r["bucket"] for r in tod] == ["09:35:00", "09:40:00", "09:45:00", "09:50:00"]
    assert sum(r["n"] for r in tod) == out["n_used"]
    sym = [r for r in out["by_symbol"] if r["model"] == "naive"]
    assert len(sym) == 6 and sum(r["n"] for r in sym) == out["n_used"]
    s0 = keep & (df["symbol"] == "600000.SH")
    assert sym[0]["qlike"] == pytest.approx(qlike(df.loc[s0, "y"], df.loc[s0, "naive"]))


def test_evaluate_forecasts_polars_matches_pandas_and_bucket_column():
    df = _panel(seed=2, n_days=10)
    df["bucket"] = df.groupby(df["ts"].dt.date).cumcount() // 6
    a = evaluate_forecasts(df, benchmark="har")
    b = evaluate_forecasts(pl.from_pandas(df), benchmark="har")
    assert a["table"] == b["table"]
    assert sorted({r["bucket"] for r in a["by_time_of_day"]}) == [0, 1, 2, 3]


def test_evaluate_forecasts_missing_forecast_and_floor():
    df = _panel(seed=3, n_days=10)
    df.loc[5, "naive"] = np.nan
    df.loc[7, "naive"] = 0.0
    df["date"] = df["ts"].dt.date  # a non-numeric column is not a forecast
    with pytest.raises(ValueError, match=r"model 'naive' forecasts 1 non-positive value"):
        evaluate_forecasts(df)
    out = evaluate_forecasts(df, forecast_floor=1e-10)
    assert out["models"]["naive"]["n_missing_forecast"] == 1 and out["models"]["naive"]["n_floored"] == 1
    assert out["models"]["good"]["n_missing_forecast"] == 0
    assert out["n_used"] == len(df) - 1  # every model on the same rows
    with pytest.raises(ValueError, match="forecast column\\(s\\) \\['lgbm'\\]"):
        evaluate_forecasts(df, benchmark="lgbm")


def test_period_means_is_the_cross_sectional_mean():
    vals = np.array([1.0, 3.0, 10.0, 5.0, 7.0])
    per = np.array([2, 2, 1, 3, 3])
    assert period_means(vals, per).tolist() == [10.0, 2.0, 6.0]


def test_evaluate_forecasts_oracle_gap():
    df = _panel(seed=4, n_days=10)
    df["oracle"] = df["good"] / np.exp(0.05**2 / 2)
    out = evaluate_forecasts(df, benchmark="har", oracle="oracle")
    keep = df["y"] > 0
    y = df.loc[keep, "y"].to_numpy()
    lq = {m: qlike_loss(y, df.loc[keep, m].to_numpy()) for m in ("good", "har", "oracle")}
    assert out["models"]["good"]["oracle_gap"]["qlike"] == pytest.approx(
        oracle_gap(lq["good"], lq["har"], lq["oracle"])
    )
    assert out["models"]["har"]["oracle_gap"]["qlike"] == pytest.approx(1.0)
    assert out["models"]["oracle"]["oracle_gap"]["qlike"] == pytest.approx(0.0, abs=1e-12)
    assert {r["model"] for r in out["table"]} == {"har", "good", "naive", "oracle"}


def test_evaluation_imports_no_heavy_library():
    import subprocess
    import sys

    code = (
        "import sys, json, l2vol.evaluation; "
        "print(json.dumps([m for m in ('torch', 'lightgbm', 'feast', 'l2vol.features') if m in sys.modules]))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert json.loads(res.stdout.strip().splitlines()[-1]) == []
