"""The estimator contract shared by every forecasting model, the log-target bias correction and the
artifact format.

Contract (scikit-learn style): hyperparameters are keyword-only and stored as given by ``__init__``;
``fit(X, y, *, eval_set=None)`` returns ``self``; learned attributes end in ``_``; ``predict(X)`` returns
forecasts on the RV scale (log-return^2 over the target's horizon); ``save(uri)`` / ``load(uri)``
round-trip to identical predictions.

``X`` is a pandas DataFrame of feature rows (one row per (symbol, ts), columns named after factors);
``y`` the target RV of each row over ``(ts, ts+h]``. Rows whose target is zero or not finite (halted or
limit-locked buckets) are excluded from every loss and counted in ``n_excluded_``.

Artifacts are safe to load: ``model.json`` (class, hyperparameters, learned scalars and arrays as JSON)
plus, per model, a LightGBM text model or torch weights in safetensors. Nothing is ever unpickled.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from l2vol.storage import DatasetStore

FORMAT = "l2vol.model/1"
MODEL_JSON = "model.json"
BIAS_CORRECTIONS = ("ratio", "smearing", "none")
# Columns that identify a row; never used as numeric features.
KEY_COLUMNS = ("symbol", "ts", "date", "bucket_start", "industry")


class NotFittedError(RuntimeError):
    """Raised by ``predict`` (and friends) on an estimator that has not been fit or loaded."""


class Estimator:
    """Base of every model: parameter handling, validation and the save/load framework."""

    #: registry name, e.g. ``"har"``
    name: ClassVar[str] = ""

    # ------------------------------------------------------------------ params
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]

    def get_params(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self._param_names()}

    def set_params(self, **params: Any) -> Estimator:
        names = set(self._param_names())
        for k, v in params.items():
            if k not in names:
                raise ValueError(f"{type(self).__name__}: unknown hyperparameter {k!r} (known: {sorted(names)})")
            setattr(self, k, v)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    @classmethod
    def debug(cls, **overrides: Any) -> Estimator:
        """A configuration that trains in seconds on CPU (tests, ``--quick`` demos)."""
        return cls(**{**cls.debug_params(), **overrides})

    @classmethod
    def debug_params(cls) -> dict[str, Any]:
        return {}

    # ---------------------------------------------------------------- fitting
    @property
    def is_fitted(self) -> bool:
        return getattr(self, "n_features_in_", None) is not None

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(
                f"{type(self).__name__} is not fitted yet: call fit(X, y) or {type(self).__name__}.load(uri) "
                "before predict"
            )

    # ------------------------------------------------------------ persistence
    def _state(self) -> dict[str, Any]:
        """Learned attributes as JSON-able values (arrays as lists)."""
        raise NotImplementedError

    def _set_state(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def _write_blobs(self, store: DatasetStore, prefix: str) -> None:
        """Write weight files next to model.json (LightGBM text, safetensors)."""

    def _read_blobs(self, store: DatasetStore, prefix: str) -> None:
        """Read what :meth:`_write_blobs` wrote."""

    def save(self, uri: str) -> str:
        """Write the fitted model under ``uri`` (a directory path, ``file://`` or ``s3://`` location).

        Layout: ``model.json`` (format, class, hyperparameters, learned state) plus weight files of the
        model (see each class). Returns the location of ``model.json``."""
        self._check_fitted()
        return self._save_into(DatasetStore(uri), "")

    def _save_into(self, store: DatasetStore, prefix: str) -> str:
        doc = {
            "format": FORMAT,
            "class": type(self).__name__,
            "name": self.name,
            "params": _jsonable(self.get_params()),
            "state": _jsonable(self._state()),
        }
        self._write_blobs(store, prefix)
        return store.write_bytes(prefix + MODEL_JSON, json.dumps(doc, indent=1, allow_nan=True).encode())

    @classmethod
    def load(cls, uri: str) -> Estimator:
        """Load a model written by :meth:`save`. Called on :class:`Estimator` it returns whichever model
        class the artifact names; on a subclass it refuses an artifact of another class."""
        return cls._load_from(DatasetStore(uri), "")

    @classmethod
    def _load_from(cls, store: DatasetStore, prefix: str) -> Estimator:
        from l2vol.models import MODELS

        doc = json.loads(store.read_bytes(prefix + MODEL_JSON))
        where = store.location(prefix + MODEL_JSON)
        if doc.get("format") != FORMAT:
            raise ValueError(f"{where}: format {doc.get('format')!r} is not {FORMAT!r}")
        by_class = {c.__name__: c for c in MODELS.values()}
        klass = by_class.get(doc["class"])
        if klass is None:
            raise ValueError(f"{where}: unknown model class {doc['class']!r} (known: {sorted(by_class)})")
        if cls is not Estimator and not issubclass(klass, cls):
            raise ValueError(f"{where}: holds a {doc['class']}, not a {cls.__name__}")
        model = klass(**doc["params"])
        model._set_state(doc["state"])
        model._read_blobs(store, prefix)
        return model


class LogTargetRegressor(Estimator):
    """Mixin for learners trained on ``log(y)``: fitting, exclusion of zero targets, and the bias
    correction that brings ``exp(log forecast)`` back to the RV scale.

    ``exp(E[log y])`` underestimates ``E[y]`` (Jensen), by a factor that depends on the residual
    variance. The correction multiplies every forecast by a constant ``bias_factor_`` fit on the
    validation rows (``eval_set``), never on test data:

    * ``"ratio"`` (default): ``sum(y) / sum(exp(z_hat))`` — the forecasts' mean equals the realized mean on
      the validation rows exactly;
    * ``"smearing"`` (Duan 1983): ``mean(exp(z - z_hat))``, unbiased when residuals are independent of
      the forecast;
    * ``"none"``: factor 1 (the conditional median under log-normal errors).

    Without an ``eval_set`` the factor is fit on the training residuals (Duan's original estimator,
    optimistic for flexible learners); ``bias_source_`` records which one was used.

    Subclasses implement ``_fit_log(X, z, eval_set)`` and ``_predict_log(X)``. ``z`` is ``log y`` with NaN
    on excluded rows (zero or non-finite target), which the learner must leave out of its loss; the rows
    stay in ``X`` so sequence models keep them as history. ``eval_set`` is ``(X_val, z_val)`` alike, or
    ``None``.
    """

    bias_correction: str

    def fit(self, X, y, *, eval_set=None) -> LogTargetRegressor:
        self.n_features_in_ = None  # a failed (re)fit leaves the model unfitted
        if self.bias_correction not in BIAS_CORRECTIONS:
            raise ValueError(
                f"{type(self).__name__}: bias_correction={self.bias_correction!r} is not one of {BIAS_CORRECTIONS}"
            )
        X, y = check_xy(X, y, type(self).__name__)
        z = log_target(y)
        self.n_excluded_ = int(np.isnan(z).sum())
        if np.isfinite(z).sum() < 2:
            raise ValueError(f"{type(self).__name__}: fewer than 2 rows with a positive finite target")
        ev = None
        if eval_set is not None:
            Xe, ye = check_xy(*unpack_eval(eval_set), f"{type(self).__name__} eval_set")
            ev = (Xe, log_target(ye))
            if np.isfinite(ev[1]).sum() < 1:
                raise ValueError(f"{type(self).__name__}: eval_set has no row with a positive finite target")
        self._fit_log(X, z, ev)
        Xb, zb = ev if ev is not None else (X, z)
        zb_hat = self._predict_log(Xb)
        ok = np.isfinite(zb) & np.isfinite(zb_hat)
        self.bias_source_ = "eval_set" if ev is not None else "train"
        self.bias_factor_ = fit_bias_factor(zb[ok], zb_hat[ok], self.bias_correction)
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X) -> np.ndarray:
        """Forecast of the target RV on the RV scale (``bias_factor_ * exp(log forecast)``)."""
        self._check_fitted()
        X = check_x(X, type(self).__name__)
        return self.bias_factor_ * np.exp(self._predict_log(X))

    def predict_log(self, X) -> np.ndarray:
        """The learner's forecast of ``log y`` (before the bias correction)."""
        self._check_fitted()
        return self._predict_log(check_x(X, type(self).__name__))

    def _fit_log(self, X: pd.DataFrame, z: np.ndarray, eval_set) -> None:
        raise NotImplementedError

    def _predict_log(self, X: pd.DataFrame) -> np.ndarray:
        raise NotImplementedError

    def _base_state(self) -> dict[str, Any]:
        return {
            "n_features_in_": self.n_features_in_,
            "n_excluded_": self.n_excluded_,
            "bias_factor_": self.bias_factor_,
            "bias_source_": self.bias_source_,
        }

    def _set_base_state(self, state: dict[str, Any]) -> None:
        for k in ("n_excluded_", "bias_factor_", "bias_source_"):
            setattr(self, k, state[k])
        self.n_features_in_ = state["n_features_in_"]

    def _scaled_state(self) -> dict[str, Any]:
        """State of learners that standardize inputs and the log target (neural models): the feature list,
        the input normalizer and the target's training mean and std."""
        return {
            "features_": self.features_,
            "normalizer_": self.normalizer_.to_json(),
            "z_mean_": self.z_mean_,
            "z_std_": self.z_std_,
        }

    def _set_scaled_state(self, state: dict[str, Any]) -> None:
        self.features_ = state["features_"]
        self.normalizer_ = Standardizer.from_json(state["normalizer_"])
        self.z_mean_, self.z_std_ = state["z_mean_"], state["z_std_"]


def fit_bias_factor(z: np.ndarray, z_hat: np.ndarray, method: str) -> float:
    """Multiplicative correction from log forecasts ``z_hat`` of log targets ``z`` (see
    :class:`LogTargetRegressor`)."""
    z, z_hat = np.asarray(z, float), np.asarray(z_hat, float)
    if method == "none":
        return 1.0
    if method == "ratio":
        # Both sums are scaled by exp(-max) so tiny RVs (1e-8) neither underflow nor lose precision.
        m = max(z.max(), z_hat.max())
        return float(np.exp(z - m).sum() / np.exp(z_hat - m).sum())
    if method == "smearing":
        return float(np.mean(np.exp(z - z_hat)))
    raise ValueError(f"bias correction {method!r} is not one of {BIAS_CORRECTIONS}")


# ---------------------------------------------------------------- validation
def unpack_eval(eval_set) -> tuple[Any, Any]:
    if isinstance(eval_set, list) and len(eval_set) == 1 and isinstance(eval_set[0], tuple):
        eval_set = eval_set[0]
    if not (isinstance(eval_set, tuple) and len(eval_set) == 2):
        raise TypeError("eval_set must be a tuple (X_val, y_val)")
    return eval_set


def check_x(X, who: str) -> pd.DataFrame:
    if hasattr(X, "to_pandas") and not isinstance(X, pd.DataFrame):
        X = X.to_pandas()
    if not isinstance(X, pd.DataFrame):
        raise TypeError(f"{who}: X must be a pandas DataFrame of feature rows (got {type(X).__name__})")
    if len(X) == 0:
        raise ValueError(f"{who}: X has no rows")
    return X.reset_index(drop=True)


def check_xy(X, y, who: str) -> tuple[pd.DataFrame, np.ndarray]:
    X = check_x(X, who)
    y = np.asarray(y, dtype=float).reshape(-1)
    if len(y) != len(X):
        raise ValueError(f"{who}: X has {len(X)} rows but y has {len(y)}")
    require_nonnegative_target(y, f"{who}: y")
    return X, y


def log_target(y: np.ndarray) -> np.ndarray:
    """``log y`` on rows with a positive finite target, NaN elsewhere (excluded from losses)."""
    keep = positive_target(y)
    return np.log(np.where(keep, y, 1.0)) + np.where(keep, 0.0, np.nan)


def positive_target(y: np.ndarray) -> np.ndarray:
    """Rows whose target enters the loss: finite and > 0 (zero-RV buckets are excluded)."""
    return np.isfinite(y) & (y > 0)


def require_nonnegative_target(y: np.ndarray, where: str, name: str = "target") -> None:
    """Refuse a negative realized variance: zero (halted, limit-locked buckets) and missing targets are left out of
    the losses and counted, but a value below zero is a data error, named by ``where``, row and value."""
    neg = np.flatnonzero(np.asarray(y, dtype=np.float64) < 0)
    if len(neg):
        i = int(neg[0])
        raise ValueError(
            f"{where}: row {i}: {name} = {float(y[i])!r} is negative (a realized variance is >= 0); "
            f"{len(neg)} such row(s)"
        )


def feature_columns(X: pd.DataFrame, features: Sequence[str] | None, who: str) -> list[str]:
    """The feature columns: ``features`` if given (all must exist), else every numeric column that is not
    a key column (symbol, ts, date, industry)."""
    if features is not None:
        missing = [c for c in features if c not in X.columns]
        if missing:
            raise KeyError(f"{who}: feature columns {missing} are not in X (columns: {list(X.columns)})")
        return list(features)
    cols = [c for c in X.columns if c not in KEY_COLUMNS and pd.api.types.is_numeric_dtype(X[c])]
    if not cols:
        raise ValueError(f"{who}: X has no numeric feature column")
    return [str(c) for c in cols]


def require_columns(X: pd.DataFrame, cols: Sequence[str], who: str) -> None:
    missing = [c for c in cols if c not in X.columns]
    if missing:
        raise KeyError(f"{who}: columns {missing} are not in X (columns: {list(X.columns)})")


def as_matrix(X: pd.DataFrame, cols: Sequence[str]) -> np.ndarray:
    return X[list(cols)].to_numpy(dtype=np.float64, na_value=np.nan)


# ----------------------------------------------------------------- normalizer
class Standardizer:
    """Feature normalizer for the neural models, fit on the training rows passed to ``fit`` only.

    Per column: ``u = asinh(x / scale)`` with ``scale`` the median |x| of the training rows (compresses the
    heavy right tail of variance-like factors, keeps sign), then ``(u - mean) / std`` with the training
    mean and standard deviation of ``u``. Missing values become 0 (the training mean) after scaling."""

    def __init__(self, scale: np.ndarray, mean: np.ndarray, std: np.ndarray):
        self.scale, self.mean, self.std = (np.asarray(a, dtype=np.float64) for a in (scale, mean, std))

    @classmethod
    def fit(cls, x: np.ndarray) -> Standardizer:
        x = np.asarray(x, dtype=np.float64)
        with np.errstate(all="ignore"):
            a = np.abs(np.where(np.isfinite(x), x, np.nan))
            scale = np.nanmedian(a, axis=0) if len(a) else np.ones(x.shape[1])
        scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
        u = np.arcsinh(x / scale)
        u = np.where(np.isfinite(u), u, np.nan)
        with np.errstate(all="ignore"):
            mean = np.nanmean(u, axis=0)
            std = np.nanstd(u, axis=0)
        mean = np.where(np.isfinite(mean), mean, 0.0)
        std = np.where(np.isfinite(std) & (std > 1e-12), std, 1.0)
        return cls(scale, mean, std)

    def transform(self, x: np.ndarray) -> np.ndarray:
        u = (np.arcsinh(np.asarray(x, dtype=np.float64) / self.scale) - self.mean) / self.std
        return np.where(np.isfinite(u), u, 0.0).astype(np.float32)

    def to_json(self) -> dict[str, list[float]]:
        return {"scale": self.scale.tolist(), "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_json(cls, d: dict[str, list[float]]) -> Standardizer:
        return cls(d["scale"], d["mean"], d["std"])


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return obj  # json writes NaN/Infinity; read back by json.loads
    return obj
