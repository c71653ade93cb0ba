"""Ensemble: a convex blend of member forecasts, weights fit on the validation rows only."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from l2vol.models.base import (
    BIAS_CORRECTIONS,
    Estimator,
    check_x,
    check_xy,
    fit_bias_factor,
    log_target,
    unpack_eval,
)
from l2vol.storage import DatasetStore


def simplex_least_squares(P: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``argmin_w ||P w - t||^2`` subject to ``w >= 0`` and ``sum(w) = 1`` (exact).

    Active-set enumeration: for every support the equality-constrained least-squares solution comes from
    its KKT system; the feasible (non-negative) one with the lowest loss wins. Ensembles have a handful
    of members, so the 2^m supports are cheap, and the answer is exact and deterministic (no iterative
    solver tolerance)."""
    P, t = np.asarray(P, float), np.asarray(t, float)
    m = P.shape[1]
    if m > 12:
        raise ValueError(f"simplex_least_squares: {m} members; at most 12 supported")
    best_w, best_loss = None, np.inf
    for mask in range(1, 2**m):
        idx = [j for j in range(m) if mask >> j & 1]
        A = P[:, idx]
        k = len(idx)
        kkt = np.zeros((k + 1, k + 1))
        kkt[:k, :k] = 2 * A.T @ A
        kkt[:k, k] = kkt[k, :k] = 1.0
        rhs = np.r_[2 * A.T @ t, 1.0]
        sol = np.linalg.lstsq(kkt, rhs, rcond=None)[0][:k]
        if (sol < -1e-12).any():
            continue
        w = np.zeros(m)
        w[idx] = np.clip(sol, 0.0, None)
        w /= w.sum()
        loss = float(np.sum((P @ w - t) ** 2))
        if best_w is None or loss < best_loss - 1e-12 * max(1.0, best_loss):
            best_w, best_loss = w, loss
    assert best_w is not None  # every singleton support is feasible
    return best_w


class Ensemble(Estimator):
    """Weighted geometric blend of member models: ``log forecast = sum_i w_i log f_i`` with ``w`` on the
    simplex (non-negative, summing to 1), then the bias correction (``bias_correction``) back to the RV
    scale.

    ``members`` is a sequence of ``(registry name, hyperparameters)`` pairs, e.g.
    ``[("har", {}), ("lightgbm", {"n_estimators": 500})]``. ``fit`` trains every member on the training
    rows (each with the ``eval_set`` for its own early stopping and bias correction), then fits the
    weights by simplex-constrained least squares of the log validation targets on the members' log
    validation forecasts, and the bias factor on the same validation rows. The ``eval_set`` is required:
    weights fit on training rows would favour the members that overfit most. Learned: ``members_``
    (fitted models), ``weights_``, ``bias_factor_``."""

    name: ClassVar[str] = "ensemble"

    def __init__(
        self,
        *,
        members: Sequence[tuple[str, dict[str, Any]]] = (("har", {}), ("lightgbm", {}), ("tabnet", {})),
        bias_correction: str = "ratio",
    ):
        self.members = members
        self.bias_correction = bias_correction

    @classmethod
    def debug_params(cls) -> dict[str, Any]:
        from l2vol.models import MODELS

        return {"members": [(n, MODELS[n].debug_params()) for n in ("naive", "har", "lightgbm", "mlp")]}

    def _build_members(self) -> list[Estimator]:
        from l2vol.models import MODELS

        out = []
        for i, spec in enumerate(self.members):
            name, params = spec
            if name not in MODELS or name == "ensemble":
                raise ValueError(f"Ensemble: member {i} names {name!r}; known: {sorted(set(MODELS) - {'ensemble'})}")
            out.append(MODELS[name](**dict(params or {})))
        return out

    def fit(self, X, y, *, eval_set=None) -> Ensemble:
        self.n_features_in_ = None  # a failed (re)fit leaves the model unfitted
        if eval_set is None:
            raise ValueError(
                "Ensemble.fit needs eval_set=(X_val, y_val): the blend weights are fit on validation data only"
            )
        if self.bias_correction not in BIAS_CORRECTIONS:
            raise ValueError(f"Ensemble: bias_correction={self.bias_correction!r} is not one of {BIAS_CORRECTIONS}")
        X, y = check_xy(X, y, "Ensemble")
        Xe, ye = check_xy(*unpack_eval(eval_set), "Ensemble eval_set")
        members = [m.fit(X, y, eval_set=(Xe, ye)) for m in self._build_members()]
        P = self._log_forecasts(members, Xe)
        ze = log_target(ye)
        ok = np.isfinite(ze) & np.isfinite(P).all(axis=1)
        if ok.sum() < 1:
            raise ValueError("Ensemble: no validation row with a positive target and finite member forecasts")
        self.members_ = members
        self.weights_ = simplex_least_squares(P[ok], ze[ok]).tolist()
        self.bias_factor_ = fit_bias_factor(ze[ok], P[ok] @ np.asarray(self.weights_), self.bias_correction)
        self.n_features_in_ = X.shape[1]
        return self

    @staticmethod
    def _log_forecasts(members: Sequence[Estimator], X) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.column_stack([np.log(m.predict(X)) for m in members])

    def predict(self, X) -> np.ndarray:
        self._check_fitted()
        X = check_x(X, "Ensemble")
        return self.bias_factor_ * np.exp(self._log_forecasts(self.members_, X) @ np.asarray(self.weights_))

    # -------------------------------------------------------------- persistence
    def _state(self) -> dict[str, Any]:
        return {"n_features_in_": self.n_features_in_, "weights_": self.weights_, "bias_factor_": self.bias_factor_}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.weights_, self.bias_factor_ = state["weights_"], state["bias_factor_"]
        self.n_features_in_ = state["n_features_in_"]

    def _write_blobs(self, store: DatasetStore, prefix: str) -> None:
        for i, m in enumerate(self.members_):
            m._save_into(store, f"{prefix}members/{i}/")

    def _read_blobs(self, store: DatasetStore, prefix: str) -> None:
        self.members_ = [Estimator._load_from(store, f"{prefix}members/{i}/") for i in range(len(self.members))]
