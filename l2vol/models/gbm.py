"""LightGBM regressor on log RV."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from l2vol.models.base import LogTargetRegressor, as_matrix, feature_columns
from l2vol.storage import DatasetStore

MODEL_TXT = "model.txt"


class LightGBMRegressor(LogTargetRegressor):
    """Gradient-boosted trees (LightGBM 4.x, ``objective="regression"``) on ``log y``, forecasts brought
    back with the validation bias correction.

    Features are used raw (trees are scale-free; missing values go to LightGBM's learned default
    branch). Early stopping uses the ``eval_set`` only, after ``early_stopping_rounds`` rounds without
    improvement of its L2 loss; without an ``eval_set`` all ``n_estimators`` rounds are kept.
    Deterministic for a given ``seed`` (``deterministic=True``, fixed ``num_threads``). Learned:
    ``booster_`` (saved as LightGBM's text model), ``best_iteration_``, ``features_``."""

    name: ClassVar[str] = "lightgbm"

    def __init__(
        self,
        *,
        features: Sequence[str] | None = None,
        n_estimators: int = 2000,
        learning_rate: float = 0.03,
        num_leaves: int = 31,
        min_child_samples: int = 50,
        subsample: float = 0.8,
        subsample_freq: int = 1,
        colsample_bytree: float = 0.8,
        reg_lambda: float = 1.0,
        early_stopping_rounds: int = 100,
        num_threads: int = 4,
        seed: int = 0,
        bias_correction: str = "ratio",
    ):
        self.features = features
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.subsample = subsample
        self.subsample_freq = subsample_freq
        self.colsample_bytree = colsample_bytree
        self.reg_lambda = reg_lambda
        self.early_stopping_rounds = early_stopping_rounds
        self.num_threads = num_threads
        self.seed = seed
        self.bias_correction = bias_correction

    @classmethod
    def debug_params(cls) -> dict[str, Any]:
        return {
            "n_estimators": 60,
            "learning_rate": 0.1,
            "num_leaves": 7,
            "min_child_samples": 10,
            "early_stopping_rounds": 10,
            "num_threads": 2,
        }

    def _lgb_params(self) -> dict[str, Any]:
        return {
            "objective": "regression",
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_child_samples,
            "bagging_fraction": self.subsample,
            "bagging_freq": self.subsample_freq,
            "feature_fraction": self.colsample_bytree,
            "lambda_l2": self.reg_lambda,
            "num_threads": self.num_threads,
            "seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,
            "verbosity": -1,
        }

    def _fit_log(self, X: pd.DataFrame, z: np.ndarray, eval_set) -> None:
        import lightgbm as lgb

        self.features_ = feature_columns(X, self.features, "LightGBMRegressor")
        keep = np.isfinite(z)
        train = lgb.Dataset(
            as_matrix(X, self.features_)[keep], z[keep], feature_name=self.features_, free_raw_data=True
        )
        valid_sets, callbacks = [], []
        if eval_set is not None:
            ke = np.isfinite(eval_set[1])
            valid_sets = [lgb.Dataset(as_matrix(eval_set[0], self.features_)[ke], eval_set[1][ke], reference=train)]
            callbacks = [lgb.early_stopping(self.early_stopping_rounds, verbose=False)]
        booster = lgb.train(
            self._lgb_params(),
            train,
            num_boost_round=self.n_estimators,
            valid_sets=valid_sets,
            callbacks=callbacks,
        )
        self.best_iteration_ = int(booster.best_iteration or booster.current_iteration())
        # Keep only the trees up to the best iteration, so the saved text model is exactly what predicts.
        self.booster_ = lgb.Booster(model_str=booster.model_to_string(num_iteration=self.best_iteration_))

    def _predict_log(self, X: pd.DataFrame) -> np.ndarray:
        return self.booster_.predict(as_matrix(X, self.features_), num_threads=self.num_threads)

    def feature_importance(self, importance_type: str = "gain") -> pd.Series:
        """Importance per feature (``"gain"`` or ``"split"``), sorted descending."""
        self._check_fitted()
        imp = self.booster_.feature_importance(importance_type=importance_type)
        return pd.Series(imp, index=self.features_, name=importance_type).sort_values(ascending=False)

    def _state(self) -> dict[str, Any]:
        return {**self._base_state(), "features_": self.features_, "best_iteration_": self.best_iteration_}

    def _set_state(self, state: dict[str, Any]) -> None:
        self._set_base_state(state)
        self.features_, self.best_iteration_ = state["features_"], state["best_iteration_"]

    def _write_blobs(self, store: DatasetStore, prefix: str) -> None:
        store.write_bytes(prefix + MODEL_TXT, self.booster_.model_to_string().encode())

    def _read_blobs(self, store: DatasetStore, prefix: str) -> None:
        import lightgbm as lgb

        self.booster_ = lgb.Booster(model_str=store.read_bytes(prefix + MODEL_TXT).decode())
