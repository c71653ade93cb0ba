"""Torch regressors on log RV: the shared fit/predict/save machinery and the MLP.

Every neural model standardizes its features with a :class:`l2vol.models.base.Standardizer` fit on the
training rows passed to ``fit`` (never the ``eval_set``), and its log target with the training mean and
standard deviation. Normalization inside the networks is LayerNorm (per row), never BatchNorm, so no
statistic mixes rows of different times."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from l2vol.models.base import LogTargetRegressor, Standardizer, as_matrix, feature_columns
from l2vol.storage import DatasetStore

WEIGHTS = "weights.safetensors"


class TorchRegressor(LogTargetRegressor):
    """Base of the torch models. Subclasses define ``_batcher(X, rows)`` (a function from positions in
    ``rows`` to the module's inputs for those rows of ``X``, after ``normalizer_``), ``_module()`` (a fresh
    network from the learned dimensions) and, when they learn more than the features,
    ``_fit_extra``/``_extra_state``/``_set_extra_state``."""

    features: Sequence[str] | None
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    patience: int
    seed: int
    device: str

    # ------------------------------------------------------------- subclass API
    def _batcher(self, X: pd.DataFrame, rows: np.ndarray):
        raise NotImplementedError

    def _module(self):
        raise NotImplementedError

    def _fit_extra(self, X: pd.DataFrame) -> None:
        """Learn non-feature vocabularies (e.g. symbol ids) from the training rows."""

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`_extra_state` returned."""

    # ----------------------------------------------------------------- fitting
    def _fit_log(self, X: pd.DataFrame, z: np.ndarray, eval_set) -> None:
        import torch

        from l2vol.models import _torch as T

        self.device_ = T.resolve_device(self.device)
        self.features_ = feature_columns(X, self.features, type(self).__name__)
        self.normalizer_ = Standardizer.fit(as_matrix(X, self.features_))  # training rows only
        self._fit_extra(X)
        keep = np.isfinite(z)
        self.z_mean_, self.z_std_ = float(z[keep].mean()), float(z[keep].std() or 1.0)

        def target(v: np.ndarray) -> torch.Tensor:
            return torch.as_tensor((v - self.z_mean_) / self.z_std_, dtype=torch.float32).to(self.device_)

        with T.seeded(self.seed, self.device_):
            self.module_ = self._module().to(self.device_)
            # Batches come from the rows whose target enters the loss; all rows of X stay available as
            # history for sequence models.
            train = (self._batcher(X, np.flatnonzero(keep)), int(keep.sum()))
            ev = None
            if eval_set is not None:
                ke = np.isfinite(eval_set[1])
                ev = ((self._batcher(eval_set[0], np.flatnonzero(ke)), int(ke.sum())), target(eval_set[1][ke]))
            self.best_epoch_, self.eval_history_ = T.train_module(
                self.module_,
                train,
                target(z[keep]),
                ev,
                epochs=self.epochs,
                batch_size=self.batch_size,
                lr=self.lr,
                weight_decay=self.weight_decay,
                patience=self.patience,
                seed=self.seed,
            )

    def _predict_log(self, X: pd.DataFrame) -> np.ndarray:
        from l2vol.models import _torch as T

        out = T.forward(self.module_, self._batcher(X, np.arange(len(X))), len(X))
        return out.double().cpu().numpy() * self.z_std_ + self.z_mean_

    # -------------------------------------------------------------- persistence
    def _state(self) -> dict[str, Any]:
        return {
            **self._base_state(),
            **self._scaled_state(),
            "best_epoch_": self.best_epoch_,
            "eval_history_": self.eval_history_,
            "device_": self.device_,
            **self._extra_state(),
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        self._set_base_state(state)
        self._set_scaled_state(state)
        self.best_epoch_, self.eval_history_ = state["best_epoch_"], state["eval_history_"]
        self._set_extra_state(state)

    def _write_blobs(self, store: DatasetStore, prefix: str) -> None:
        from l2vol.models import _torch as T

        store.write_bytes(prefix + WEIGHTS, T.state_bytes(self.module_))

    def _read_blobs(self, store: DatasetStore, prefix: str) -> None:
        from l2vol.models import _torch as T

        # The device is resolved again on the loading machine ("auto": CUDA when present).
        self.device_ = T.resolve_device(self.device)
        module = self._module()
        T.load_state_bytes(module, store.read_bytes(prefix + WEIGHTS))
        self.module_ = module.to(self.device_).eval()


class MLPRegressor(TorchRegressor):
    """Feed-forward network on standardized features: ``hidden`` blocks of Linear → LayerNorm → GELU →
    Dropout, then a linear output of standardized log RV. Adam on MSE; early stopping on ``eval_set``."""

    name: ClassVar[str] = "mlp"

    def __init__(
        self,
        *,
        features: Sequence[str] | None = None,
        hidden: Sequence[int] = (64, 32),
        dropout: float = 0.1,
        epochs: int = 100,
        batch_size: int = 512,
        lr: float = 1e-3,
        weight_decay: float = 1e-5,
        patience: int = 10,
        seed: int = 0,
        device: str = "auto",
        bias_correction: str = "ratio",
    ):
        self.features = features
        self.hidden = hidden
        self.dropout = dropout
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.patience = patience
        self.seed = seed
        self.device = device
        self.bias_correction = bias_correction

    @classmethod
    def debug_params(cls) -> dict[str, Any]:
        return {"hidden": (16,), "epochs": 15, "batch_size": 64, "lr": 3e-3, "patience": 5}

    def _batcher(self, X: pd.DataFrame, rows: np.ndarray):
        from l2vol.models import _torch as T

        return T.row_batcher([self.normalizer_.transform(as_matrix(X, self.features_))[rows]], self.device_)

    def _module(self):
        from l2vol.models._nets import MLPNet

        return MLPNet(len(self.features_), tuple(self.hidden), self.dropout)
