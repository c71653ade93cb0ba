"""Baselines: naive persistence and HAR-RV (levels, logs, intraday with the time-of-day term)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from l2vol.models.base import (
    BIAS_CORRECTIONS,
    Estimator,
    as_matrix,
    check_x,
    check_xy,
    fit_bias_factor,
    positive_target,
    require_columns,
    unpack_eval,
)

#: Daily HAR regressors (factor names of :mod:`l2vol.factors.history`): previous day's RV, mean daily RV of
#: the previous 5 and 22 days.
DAILY_HAR = ("har_rv_d", "har_rv_w", "har_rv_m")
#: Intraday HAR: the current bucket's RV, the daily HAR terms and the seasonal (same time of day) RV of
#: the bucket the target covers.
INTRADAY_HAR = ("rv", "har_rv_d", "har_rv_w", "har_rv_m", "rv_seasonal_next")


def _floor(y: np.ndarray) -> float:
    """Smallest forecast a level model may return: 1e-3 × the median positive training target. Keeps
    forecasts positive (QLIKE needs it) when a level regression or a zero-RV bucket would give <= 0."""
    pos = y[positive_target(y)]
    return float(1e-3 * np.median(pos)) if len(pos) else 1e-12


class NaivePersistence(Estimator):
    """Persistence forecast: the target RV equals a current RV column, rescaled to the target horizon.

    ``column="rv"`` forecasts next-bucket RV by the current bucket's RV; ``column="har_rv_d"`` forecasts
    next-day RV by the last daily RV. ``scale`` multiplies the column (e.g. 6 buckets for a 30-minute
    target from a 5-minute RV); nothing is learned from the target except ``floor_``, the positive
    lower bound that replaces zero or missing RVs (halted buckets)."""

    name: ClassVar[str] = "naive"

    def __init__(self, *, column: str = "rv", scale: float = 1.0):
        self.column = column
        self.scale = scale

    @classmethod
    def debug_params(cls) -> dict[str, Any]:
        return {"column": "rv"}

    def fit(self, X, y, *, eval_set=None) -> NaivePersistence:
        X, y = check_xy(X, y, "NaivePersistence")
        require_columns(X, [self.column], "NaivePersistence")
        self.floor_ = _floor(y)
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X) -> np.ndarray:
        self._check_fitted()
        X = check_x(X, "NaivePersistence")
        require_columns(X, [self.column], "NaivePersistence")
        v = self.scale * as_matrix(X, [self.column])[:, 0]
        return np.where(np.isfinite(v) & (v > self.floor_), v, self.floor_)

    def _state(self) -> dict[str, Any]:
        return {"n_features_in_": self.n_features_in_, "floor_": self.floor_}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.floor_ = state["floor_"]
        self.n_features_in_ = state["n_features_in_"]


class HAR(Estimator):
    """HAR-RV (Corsi 2009) by OLS (numpy ``lstsq``).

    * ``log=False`` (levels): ``y = b0 + sum_j b_j x_j``; forecasts floored at ``floor_`` > 0.
    * ``log=True`` (logs): ``log y = b0 + sum_j b_j log x_j``; forecasts are ``bias_factor_ * exp(...)``
      with the bias correction of :class:`l2vol.models.base.LogTargetRegressor` (fit on ``eval_set``,
      else on the training residuals). Zero regressors (halted buckets) are replaced by ``eps_``,
      1e-3 × the column's median positive training value, before the log.

    ``columns`` are the regressors: :data:`DAILY_HAR` (default; next-day RV) or :data:`INTRADAY_HAR`
    (next-bucket RV: lagged bucket RV, daily HAR terms and the seasonal RV of the target's time of day;
    see :meth:`intraday`). Rows with a missing regressor or a zero/non-finite target are excluded from
    the fit (``n_excluded_``); at predict time a missing regressor gives a missing (NaN) forecast.
    Learned: ``coef_`` (per column), ``intercept_``."""

    name: ClassVar[str] = "har"

    def __init__(
        self,
        *,
        columns: Sequence[str] = DAILY_HAR,
        log: bool = True,
        bias_correction: str = "ratio",
    ):
        self.columns = columns
        self.log = log
        self.bias_correction = bias_correction

    @classmethod
    def intraday(cls, **overrides: Any) -> HAR:
        """Intraday HAR in logs with the time-of-day seasonal term (next-bucket target)."""
        return cls(**{"columns": INTRADAY_HAR, "log": True, **overrides})

    def _design(self, X: pd.DataFrame) -> np.ndarray:
        x = as_matrix(X, self.columns)
        if self.log:
            x = np.log(np.where(np.isfinite(x) & (x > 0), x, np.where(np.isnan(x), np.nan, self.eps_)))
        return np.column_stack([np.ones(len(x)), x])

    def fit(self, X, y, *, eval_set=None) -> HAR:
        self.n_features_in_ = None  # a failed (re)fit leaves the model unfitted
        if self.bias_correction not in BIAS_CORRECTIONS:
            raise ValueError(f"HAR: bias_correction={self.bias_correction!r} is not one of {BIAS_CORRECTIONS}")
        X, y = check_xy(X, y, "HAR")
        require_columns(X, self.columns, "HAR")
        x = as_matrix(X, self.columns)
        self.eps_ = [_floor(x[:, j]) for j in range(x.shape[1])]
        self.floor_ = _floor(y)
        A = self._design(X)
        keep = positive_target(y) & np.isfinite(A).all(axis=1)
        self.n_excluded_ = int((~keep).sum())
        if keep.sum() <= A.shape[1]:
            raise ValueError(f"HAR: {int(keep.sum())} usable rows for {A.shape[1]} coefficients")
        t = np.log(y[keep]) if self.log else y[keep]
        beta, *_ = np.linalg.lstsq(A[keep], t, rcond=None)
        self.intercept_, self.coef_ = float(beta[0]), [float(b) for b in beta[1:]]
        self.bias_factor_, self.bias_source_ = 1.0, "none"
        if self.log:
            if eval_set is not None:
                Xe, ye = check_xy(*unpack_eval(eval_set), "HAR eval_set")
                require_columns(Xe, self.columns, "HAR eval_set")
                ze, ze_hat, src = ye, self._linear(Xe), "eval_set"
            else:
                ze, ze_hat, src = y[keep], A[keep] @ beta, "train"
            ok = positive_target(ze) & np.isfinite(ze_hat)
            if not ok.any():
                raise ValueError(f"HAR: no {src} row with a positive target and complete regressors")
            self.bias_factor_ = fit_bias_factor(np.log(ze[ok]), ze_hat[ok], self.bias_correction)
            self.bias_source_ = src
        self.n_features_in_ = X.shape[1]
        return self

    def _linear(self, X: pd.DataFrame) -> np.ndarray:
        return self._design(X) @ np.r_[self.intercept_, self.coef_]

    def predict(self, X) -> np.ndarray:
        self._check_fitted()
        X = check_x(X, "HAR")
        require_columns(X, self.columns, "HAR")
        f = self._linear(X)
        if self.log:
            return self.bias_factor_ * np.exp(f)
        return np.where(np.isnan(f), np.nan, np.maximum(f, self.floor_))

    def _state(self) -> dict[str, Any]:
        return {
            k: getattr(self, k)
            for k in (
                "n_features_in_",
                "n_excluded_",
                "intercept_",
                "coef_",
                "eps_",
                "floor_",
                "bias_factor_",
                "bias_source_",
            )
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            setattr(self, k, v)
