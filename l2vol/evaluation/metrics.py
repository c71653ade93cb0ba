"""Forecast losses on the realized-variance scale, and the evaluation of a panel of forecasts.

Notation: ``y`` is the realized target (RV over the target window, squared log returns, not
annualised), ``f`` a forecast of it on the same scale, both per (symbol, ts) row. Losses:

* squared error ``(y - f)^2`` (MSE, robust to noise in the RV proxy: Patton 2011);
* QLIKE ``y/f - log(y/f) - 1`` (Patton's robust form; >= 0, zero iff ``f = y``; penalises
  under-prediction of variance more than over-prediction);
* absolute error ``|y - f|`` (MAE);
* squared percentage error ``((y - f)/y)^2`` (RMSPE = square root of its mean).

Rows with ``y = 0`` (a halted or limit-locked window: no price change observed) are excluded from
every loss and counted; QLIKE and RMSPE are undefined there. Rows with a missing target are excluded
and counted separately. Forecasts must be positive and finite (``forecast_floor`` clips them, counted).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from l2vol.evaluation.forecast_tests import default_nw_lag, diebold_mariano, mincer_zarnowitz

#: Loss functions by name, elementwise on arrays ``(y, f)``.
LOSSES = ("qlike", "mse", "mae", "spe")
#: Losses the Diebold-Mariano comparison is run on, in :func:`evaluate_forecasts`.
DM_LOSSES = ("qlike", "mse")
KEY_COLUMNS = ("symbol", "ts", "y", "bucket")


def squared_error(y: np.ndarray, f: np.ndarray) -> np.ndarray:
    """``(y - f)^2`` per row."""
    y, f = _pair(y, f)
    return (y - f) ** 2


def absolute_error(y: np.ndarray, f: np.ndarray) -> np.ndarray:
    """``|y - f|`` per row."""
    y, f = _pair(y, f)
    return np.abs(y - f)


def qlike_loss(y: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Patton's robust QLIKE per row: ``y/f - log(y/f) - 1`` (needs ``y > 0``, ``f > 0``); 0 iff ``f = y``."""
    y, f = _pair(y, f)
    _require_positive(y, "y (realized)")
    _require_positive(f, "f (forecast)")
    r = y / f
    return r - np.log(r) - 1.0


def squared_percentage_error(y: np.ndarray, f: np.ndarray) -> np.ndarray:
    """``((y - f) / y)^2`` per row (needs ``y > 0``)."""
    y, f = _pair(y, f)
    _require_positive(y, "y (realized)")
    return ((y - f) / y) ** 2


def loss(name: str, y: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Elementwise loss by name: ``qlike``, ``mse`` (squared error), ``mae`` (absolute), ``spe``."""
    fns = {"qlike": qlike_loss, "mse": squared_error, "mae": absolute_error, "spe": squared_percentage_error}
    if name not in fns:
        raise ValueError(f"loss {name!r}: expected one of {sorted(fns)}")
    return fns[name](y, f)


def mse(y: np.ndarray, f: np.ndarray) -> float:
    """Mean squared error ``mean((y - f)^2)``."""
    return float(squared_error(y, f).mean())


def mae(y: np.ndarray, f: np.ndarray) -> float:
    """Mean absolute error ``mean(|y - f|)``."""
    return float(absolute_error(y, f).mean())


def qlike(y: np.ndarray, f: np.ndarray) -> float:
    """Mean QLIKE ``mean(y/f - log(y/f) - 1)``."""
    return float(qlike_loss(y, f).mean())


def rmspe(y: np.ndarray, f: np.ndarray) -> float:
    """Root mean squared percentage error ``sqrt(mean(((y - f)/y)^2))`` (a fraction, not %)."""
    return float(math.sqrt(squared_percentage_error(y, f).mean()))


def r2_oos(y: np.ndarray, f: np.ndarray, benchmark: np.ndarray) -> float:
    """Out-of-sample R² against a benchmark forecast: ``1 - sum((y - f)^2) / sum((y - b)^2)``.

    Positive when the forecast has lower squared error than the benchmark (e.g. HAR), 0 when equal.
    """
    y, f = _pair(y, f)
    _, b = _pair(y, benchmark)
    den = float(((y - b) ** 2).sum())
    if den == 0.0:
        return math.nan
    return 1.0 - float(((y - f) ** 2).sum()) / den


def oracle_gap(loss_model, loss_benchmark, loss_oracle) -> float:
    """``(L_model - L_oracle) / (L_benchmark - L_oracle)`` with ``L`` the mean of each loss array.

    0: the model matches the oracle (the conditional expectation of the target given the latent state,
    :mod:`l2vol.data.oracle`); 1: no better than the benchmark (HAR). The arrays are per-row losses on
    the same rows. NaN when the benchmark is not worse than the oracle (the gap is undefined).
    """
    lm, lb, lo = (np.asarray(a, dtype=float) for a in (loss_model, loss_benchmark, loss_oracle))
    if not (lm.shape == lb.shape == lo.shape):
        raise ValueError(f"loss arrays must have one shape, got {lm.shape}, {lb.shape}, {lo.shape}")
    m, b, o = float(lm.mean()), float(lb.mean()), float(lo.mean())
    if b - o <= 0:
        return math.nan
    return (m - o) / (b - o)


def evaluate_forecasts(
    df,
    *,
    benchmark: str = "har",
    horizon_periods: int = 1,
    forecast_columns: Sequence[str] | None = None,
    oracle: str | None = None,
    nw_lag: int | None = None,
    forecast_floor: float | None = None,
    breakdowns: bool = True,
) -> dict:
    """Evaluate forecast columns of a panel against realized ``y`` and a benchmark forecast column.

    ``df`` (pandas or polars) has ``symbol``, ``ts`` (the bucket end the forecast is made at; one
    period of the Diebold-Mariano series), ``y`` (realized target, RV scale), optionally ``bucket``
    (time-of-day label; else the wall-clock time of ``ts`` in its own zone, UTC when naive), and one
    column per model (``forecast_columns``, default every other numeric column), among them ``benchmark``.

    Rows with ``y = 0`` are excluded and counted (``n_zero_excluded``), as are rows with a missing
    target (``n_missing_target``); rows where any forecast is missing are dropped and counted per model
    (``n_missing_forecast``), so every model is scored on the same rows. Non-positive forecasts raise,
    unless ``forecast_floor`` clips them (counted as ``n_floored``).

    ``oracle`` names a column holding the oracle forecast (simulated data: E[target | latent state],
    :mod:`l2vol.data.oracle`); each model then gets ``oracle_gap`` per loss in :data:`DM_LOSSES`
    (:func:`oracle_gap` with the benchmark), and the oracle is scored like a model.

    ``horizon_periods``: the target horizon in periods of ``ts`` (next bucket 1, next 30 minutes 6 with
    5-minute buckets, next day 1 on daily rows); the Newey-West lag is at least it
    (:func:`~l2vol.evaluation.forecast_tests.default_nw_lag` unless ``nw_lag``).

    Returns a JSON-able dict: ``models`` (per model: rmspe, qlike, mse, mae, r2_oos vs benchmark,
    ``dm`` per loss in :data:`DM_LOSSES` vs benchmark, ``mz``, counts), ``table`` (one flat row per
    model), ``by_time_of_day`` and ``by_symbol`` (rows of model, key, n, rmspe, qlike, mse, mae), and
    the sample counts. Non-finite numbers are ``None``.
    """
    cols = _columns(df)
    for c in ("symbol", "ts", "y"):
        if c not in cols:
            raise ValueError(f"evaluate_forecasts: missing column {c!r} (have {sorted(cols)})")
    if forecast_columns is not None:
        models = list(forecast_columns)
    else:
        models = [c for c in cols if c not in KEY_COLUMNS and cols[c].dtype.kind in "fiu"]
    missing = [m for m in [*models, benchmark, *([oracle] if oracle else [])] if m not in cols]
    if missing:
        raise ValueError(f"evaluate_forecasts: forecast column(s) {missing} not in the frame (have {sorted(cols)})")
    for extra in (benchmark, oracle):
        if extra and extra not in models:
            models.append(extra)
    y_all = _numeric(cols["y"], "y")
    n_rows = y_all.size
    if np.any(y_all < 0):
        i = int(np.flatnonzero(y_all < 0)[0])
        raise ValueError(f"evaluate_forecasts: y row {i} is {y_all[i]!r}: realized variance cannot be negative")
    missing_target = ~np.isfinite(y_all)
    zero = np.isfinite(y_all) & (y_all == 0)
    keep = ~missing_target & ~zero
    forecasts = {m: _numeric(cols[m], m) for m in models}
    n_missing_forecast = {m: int((keep & ~np.isfinite(forecasts[m])).sum()) for m in models}
    for m in models:
        keep &= np.isfinite(forecasts[m])
    if not keep.any():
        raise ValueError(f"evaluate_forecasts: no row left of {n_rows} after excluding zero/missing targets")
    y = y_all[keep]
    ts = np.asarray(cols["ts"])[keep]
    symbol = np.asarray(cols["symbol"]).astype(str)[keep]
    tod = _time_of_day(cols["bucket"] if "bucket" in cols else cols["ts"], keep)
    n_floored: dict[str, int] = {}
    for m in models:
        f = forecasts[m][keep]
        bad = f <= 0
        if forecast_floor is not None:
            n_floored[m] = int((f < forecast_floor).sum())
            f = np.maximum(f, forecast_floor)
        elif bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"evaluate_forecasts: model {m!r} forecasts {int(bad.sum())} non-positive value(s) "
                f"(first: symbol {symbol[i]}, ts {ts[i]}: {f[i]!r}); QLIKE needs f > 0 (pass forecast_floor)"
            )
        else:
            n_floored[m] = 0
        forecasts[m] = f

    n_periods = int(np.unique(ts).size)
    lag = nw_lag if nw_lag is not None else default_nw_lag(n_periods, horizon_periods)
    b = forecasts[benchmark]
    losses = {m: {name: loss(name, y, forecasts[m]) for name in LOSSES} for m in models}
    result_models: dict[str, dict] = {}
    table = []
    for m in models:
        lo = losses[m]
        row: dict = {
            "rmspe": math.sqrt(float(lo["spe"].mean())),
            "qlike": float(lo["qlike"].mean()),
            "mse": float(lo["mse"].mean()),
            "mae": float(lo["mae"].mean()),
            "r2_oos": r2_oos(y, forecasts[m], b),
            "n_used": int(y.size),
            "n_zero_excluded": int(zero.sum()),
            "n_missing_forecast": n_missing_forecast[m],
            "n_floored": n_floored[m],
        }
        if m == benchmark:
            row["dm"] = None
        else:
            row["dm"] = {
                name: _dm_or_none(lo[name], losses[benchmark][name], ts, horizon_periods, lag) for name in DM_LOSSES
            }
        row["mz"] = _mz_or_none(y, forecasts[m], ts, lag, horizon_periods)
        if oracle:
            row["oracle_gap"] = {
                name: oracle_gap(lo[name], losses[benchmark][name], losses[oracle][name]) for name in DM_LOSSES
            }
        result_models[m] = row
        flat = {"model": m, **{k: row[k] for k in ("rmspe", "qlike", "mse", "mae", "r2_oos", "n_used")}}
        for name in DM_LOSSES:
            dm = (row["dm"] or {}).get(name) or {}
            flat[f"dm_{name}_stat"] = dm.get("stat")
            flat[f"dm_{name}_p"] = dm.get("p_value")
        if oracle:
            flat |= {f"oracle_gap_{name}": row["oracle_gap"][name] for name in DM_LOSSES}
        mz = row["mz"] or {}
        flat |= {"mz_intercept": mz.get("intercept"), "mz_slope": mz.get("slope"), "mz_p": mz.get("p_value")}
        table.append(flat)

    out = {
        "benchmark": benchmark,
        "oracle": oracle,
        "horizon_periods": int(horizon_periods),
        "nw_lag": int(lag),
        "n_rows": int(n_rows),
        "n_used": int(y.size),
        "n_zero_excluded": int(zero.sum()),
        "n_missing_target": int(missing_target.sum()),
        "n_periods": n_periods,
        "n_symbols": int(np.unique(symbol).size),
        "models": result_models,
        "table": table,
    }
    if breakdowns:
        out["by_time_of_day"] = _breakdown(losses, tod, "bucket")
        out["by_symbol"] = _breakdown(losses, symbol, "symbol")
    return _jsonable(out)


def _breakdown(losses: dict[str, dict[str, np.ndarray]], keys: np.ndarray, key_name: str) -> list[dict]:
    uniq, codes = np.unique(keys, return_inverse=True)
    codes = codes.ravel()
    counts = np.bincount(codes, minlength=uniq.size)
    rows = []
    for m, lo in losses.items():
        means = {
            name: np.bincount(codes, weights=lo[name], minlength=uniq.size) / counts
            for name in ("spe", "qlike", "mse", "mae")
        }
        for i, k in enumerate(uniq):
            rows.append(
                {
                    "model": m,
                    key_name: k.item() if hasattr(k, "item") else k,
                    "n": int(counts[i]),
                    "rmspe": math.sqrt(float(means["spe"][i])),
                    "qlike": float(means["qlike"][i]),
                    "mse": float(means["mse"][i]),
                    "mae": float(means["mae"][i]),
                }
            )
    return rows


def _dm_or_none(lm, lb, ts, h, lag) -> dict | None:
    try:
        return diebold_mariano(lm, lb, periods=ts, horizon_periods=h, lag=max(lag, h))
    except ValueError:  # too few periods for the test
        return None


def _mz_or_none(y, f, ts, lag, h) -> dict | None:
    try:
        return mincer_zarnowitz(y, f, periods=ts, lag=lag, horizon_periods=h)
    except ValueError:  # constant forecast or too few rows: slope not identified
        return None


def _columns(df) -> dict[str, np.ndarray]:
    # tz-aware timestamps become naive wall-clock times of their zone (Asia/Shanghai for A-shares), so
    # time-of-day breakdowns read as market clock times and periods sort as numbers.
    if hasattr(df, "to_pandas") and not hasattr(df, "iloc"):  # polars
        out = {}
        for c in df.columns:
            s = df.get_column(c)
            if getattr(s.dtype, "time_zone", None):
                s = s.dt.replace_time_zone(None)
            out[c] = s.to_numpy()
        return out
    if hasattr(df, "columns") and hasattr(df, "iloc"):  # pandas
        out = {}
        for c in df.columns:
            s = df[c]
            if getattr(s.dtype, "tz", None) is not None:
                s = s.dt.tz_localize(None)
            out[str(c)] = s.to_numpy()
        return out
    if isinstance(df, dict):
        return {str(k): np.asarray(v) for k, v in df.items()}
    raise TypeError(f"evaluate_forecasts: expected a pandas or polars DataFrame, got {type(df).__name__}")


def _numeric(a, name: str) -> np.ndarray:
    try:
        return np.asarray(a, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"evaluate_forecasts: column {name!r} is not numeric ({exc})") from exc


def _time_of_day(a: np.ndarray, keep: np.ndarray) -> np.ndarray:
    a = np.asarray(a)[keep]
    if np.issubdtype(a.dtype, np.datetime64):
        seconds = (a - a.astype("datetime64[D]")).astype("timedelta64[s]").astype(np.int64)
        uniq, codes = np.unique(seconds, return_inverse=True)
        labels = np.array([f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}" for s in uniq.tolist()], dtype=object)
        return labels[codes.ravel()]
    return a


def _pair(y, f) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=float)
    f = np.asarray(f, dtype=float)
    if y.shape != f.shape:
        raise ValueError(f"y and f must have one shape, got {y.shape} and {f.shape}")
    return y, f


def _require_positive(a: np.ndarray, what: str) -> None:
    bad = ~(a > 0)
    if bad.any():
        i = int(np.flatnonzero(bad.ravel())[0])
        raise ValueError(
            f"{what}: {int(bad.sum())} value(s) not > 0 (first at row {i}: {a.ravel()[i]!r}); "
            "exclude zero-RV rows (counted) and floor forecasts before this loss"
        )


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if hasattr(x, "isoformat"):
        return x.isoformat()
    return x
