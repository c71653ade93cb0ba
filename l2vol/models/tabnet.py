"""TabNet regressor (pytorch-tabnet 4.1) on log RV, with its attention masks."""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from l2vol.models.base import LogTargetRegressor, Standardizer, as_matrix, check_x, feature_columns
from l2vol.storage import DatasetStore

WEIGHTS = "weights.safetensors"


def _fast_entmax_networks(model) -> None:
    """Every network ``model`` builds (``_set_network``: in ``fit``, on load, in the training task) gets
    :class:`l2vol.models._entmax.Entmax15`: pytorch-tabnet's entmax with a faster sort, bit-identical outputs."""
    build = model._set_network

    def _set_network() -> None:
        from l2vol.models._entmax import use_fast_entmax

        build()
        use_fast_entmax(model.network)

    model._set_network = _set_network


class TabNetRegressor(LogTargetRegressor):
    """TabNet (Arik & Pfister 2021) on standardized features and standardized ``log y``.

    Features are standardized by a :class:`l2vol.models.base.Standardizer` fit on the training rows only.
    TabNet's ghost BatchNorm normalizes over virtual batches of *rows* of a tabular sample (not across
    time steps of a sequence). Early stopping on the ``eval_set`` (MSE, best epoch restored); without one,
    all ``max_epochs`` run. :meth:`explain` returns the per-row feature importances and the attention
    masks of each decision step.

    Saved as JSON (hyperparameters, normalizer) plus the network's state dict (parameters and
    BatchNorm statistics) in safetensors. pytorch-tabnet's own ``save_model`` is not used: it writes
    ``torch.save`` pickles that ``load_model`` unpickles."""

    name: ClassVar[str] = "tabnet"

    def __init__(
        self,
        *,
        features: Sequence[str] | None = None,
        n_d: int = 16,
        n_a: int = 16,
        n_steps: int = 4,
        gamma: float = 1.5,
        n_independent: int = 2,
        n_shared: int = 2,
        lambda_sparse: float = 1e-4,
        momentum: float = 0.02,
        mask_type: str = "entmax",
        lr: float = 2e-2,
        max_epochs: int = 100,
        patience: int = 15,
        batch_size: int = 1024,
        virtual_batch_size: int = 128,
        seed: int = 0,
        device: str = "auto",
        bias_correction: str = "ratio",
    ):
        self.features = features
        self.n_d = n_d
        self.n_a = n_a
        self.n_steps = n_steps
        self.gamma = gamma
        self.n_independent = n_independent
        self.n_shared = n_shared
        self.lambda_sparse = lambda_sparse
        self.momentum = momentum
        self.mask_type = mask_type
        self.lr = lr
        self.max_epochs = max_epochs
        self.patience = patience
        self.batch_size = batch_size
        self.virtual_batch_size = virtual_batch_size
        self.seed = seed
        self.device = device
        self.bias_correction = bias_correction

    @classmethod
    def debug_params(cls) -> dict[str, Any]:
        return {
            "n_d": 8,
            "n_a": 8,
            "n_steps": 2,
            "n_independent": 1,
            "n_shared": 1,
            "max_epochs": 10,
            "patience": 5,
            "batch_size": 64,
            "virtual_batch_size": 32,
        }

    def _tabnet(self):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # pytorch-tabnet 4.1 imports scipy.sparse.base
            from pytorch_tabnet.tab_model import TabNetRegressor as _TabNet

        model = _TabNet(
            n_d=self.n_d,
            n_a=self.n_a,
            n_steps=self.n_steps,
            gamma=self.gamma,
            n_independent=self.n_independent,
            n_shared=self.n_shared,
            lambda_sparse=self.lambda_sparse,
            momentum=self.momentum,
            mask_type=self.mask_type,
            optimizer_params={"lr": self.lr},
            seed=self.seed,
            verbose=0,
            device_name=self.device_,
        )
        _fast_entmax_networks(model)
        return model

    def _x(self, X: pd.DataFrame) -> np.ndarray:
        return self.normalizer_.transform(as_matrix(X, self.features_))

    def _fit_log(self, X: pd.DataFrame, z: np.ndarray, eval_set) -> None:
        from l2vol.models import _torch as T

        self.device_ = T.resolve_device(self.device)
        self.features_ = feature_columns(X, self.features, "TabNetRegressor")
        self.normalizer_ = Standardizer.fit(as_matrix(X, self.features_))  # training rows only
        keep = np.isfinite(z)
        self.z_mean_, self.z_std_ = float(z[keep].mean()), float(z[keep].std() or 1.0)
        x, t = self._x(X)[keep], ((z[keep] - self.z_mean_) / self.z_std_).reshape(-1, 1)
        kwargs: dict[str, Any] = {"patience": 0}
        if eval_set is not None:
            ke = np.isfinite(eval_set[1])
            xe = self._x(eval_set[0])[ke]
            te = ((eval_set[1][ke] - self.z_mean_) / self.z_std_).reshape(-1, 1)
            kwargs = {"eval_set": [(xe, te)], "eval_name": ["valid"], "eval_metric": ["mse"], "patience": self.patience}
        batch = min(self.batch_size, len(x))
        self.virtual_batch_size_ = min(self.virtual_batch_size, batch)
        # pytorch-tabnet prints its early-stopping summary whatever its verbosity; keep it off stdout.
        with T.seeded(self.seed, self.device_), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore", UserWarning)  # "best weights from best epoch are used" notices
            model = self._tabnet()
            model.fit(
                x,
                t,
                max_epochs=self.max_epochs,
                batch_size=batch,
                virtual_batch_size=self.virtual_batch_size_,
                drop_last=len(x) > batch,  # a ghost-BatchNorm chunk of one row cannot be normalized
                compute_importance=False,
                **kwargs,
            )
        self.tabnet_ = model
        self.best_epoch_ = int(getattr(model, "best_epoch", None) or self.max_epochs)

    def _predict_log(self, X: pd.DataFrame) -> np.ndarray:
        out = self.tabnet_.predict(self._x(X))[:, 0].astype(np.float64)
        return out * self.z_std_ + self.z_mean_

    def explain(self, X) -> tuple[np.ndarray, np.ndarray]:
        """TabNet's explanation of each row: ``importances`` (n, features), the aggregated feature
        importance of the row (rows sum to 1), and ``masks`` (n_steps, n, features), the attention mask of
        each decision step (sparsemax/entmax weights, each row sums to 1 per step). Column order:
        ``features_``."""
        self._check_fitted()
        X = check_x(X, "TabNetRegressor")
        imp, masks = self.tabnet_.explain(self._x(X), normalize=True)
        return np.asarray(imp), np.stack([np.asarray(masks[s]) for s in sorted(masks)])

    # -------------------------------------------------------------- persistence
    def _state(self) -> dict[str, Any]:
        return {
            **self._base_state(),
            **self._scaled_state(),
            "virtual_batch_size_": self.virtual_batch_size_,
            "best_epoch_": self.best_epoch_,
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        self._set_base_state(state)
        self._set_scaled_state(state)
        self.virtual_batch_size_ = state["virtual_batch_size_"]
        self.best_epoch_ = state["best_epoch_"]

    def _write_blobs(self, store: DatasetStore, prefix: str) -> None:
        from l2vol.models import _torch as T

        store.write_bytes(prefix + WEIGHTS, T.state_bytes(self.tabnet_.network))

    def _read_blobs(self, store: DatasetStore, prefix: str) -> None:
        from l2vol.models import _torch as T

        self.device_ = T.resolve_device(self.device)
        model = self._tabnet()
        model.input_dim, model.output_dim = len(self.features_), 1
        model.virtual_batch_size, model.batch_size = self.virtual_batch_size_, 1024
        model._set_network()  # the architecture from the hyperparameters, as pytorch-tabnet's load_model does
        T.load_state_bytes(model.network, store.read_bytes(prefix + WEIGHTS))
        model.network.eval()
        self.tabnet_ = model
