"""Explainability of the fitted forecasters (DESIGN §5): LightGBM SHAP values, TabNet attention masks and
Integrated Gradients (Captum) for the MLP and the LSTM, aggregated into one factor-importance table.

Every attribution is in the space the learners are trained in — ``log y`` (log RV) — so LightGBM SHAP
values and Integrated Gradients of the torch models share units. torch, lightgbm and captum are imported
inside the functions that need them; importing this module loads none of them. See
docs/explainability.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from l2vol.models.base import as_matrix, check_x

#: Column of :func:`lightgbm_contributions` holding the model's expected value (the SHAP base value).
EXPECTED_VALUE = "expected_value"
#: Column of :func:`integrated_gradients` holding the model's log forecast at the baseline.
BASELINE_VALUE = "baseline_value"
BASELINES = ("train_mean", "zeros")
TABLE_COLUMNS = ["model", "method", "factor", "importance", "rank", "score"]


def _fitted(model: Any, who: str) -> None:
    check = getattr(model, "_check_fitted", None)
    if check is None:
        raise TypeError(f"{who}: expected an l2vol model, got {type(model).__name__}")
    check()


# --------------------------------------------------------------------- LightGBM
def lightgbm_contributions(model: Any, X) -> pd.DataFrame:
    """SHAP values (TreeSHAP, LightGBM's ``pred_contrib=True``) of a fitted
    :class:`~l2vol.models.LightGBMRegressor` on the rows of ``X``.

    Returns a frame with one row per row of ``X`` and the columns ``model.features_`` plus
    ``expected_value`` (last). Values are in log-target space: each row sums to the booster's raw score,
    ``model.predict_log(X)`` (before the bias correction)."""
    from l2vol.models import LightGBMRegressor

    if not isinstance(model, LightGBMRegressor):
        raise TypeError(f"lightgbm_contributions: expected a LightGBMRegressor, got {type(model).__name__}")
    _fitted(model, "lightgbm_contributions")
    X = check_x(X, "lightgbm_contributions")
    contrib = model.booster_.predict(as_matrix(X, model.features_), pred_contrib=True, num_threads=model.num_threads)
    contrib = np.asarray(contrib, dtype=np.float64)
    return pd.DataFrame(contrib, columns=[*model.features_, EXPECTED_VALUE], index=X.index)


# ----------------------------------------------------------------------- TabNet
def tabnet_importance(model: Any, X) -> pd.DataFrame:
    """TabNet's own attribution of a fitted :class:`~l2vol.models.TabNetRegressor` on the rows of ``X``.

    Indexed by ``model.features_``. Column ``importance``: the per-row aggregate importances of
    ``model.explain(X)`` (each decision step's attention mask weighted by that step's contribution to the
    output, rows normalized to 1) averaged over rows and renormalized to sum to 1. Columns ``step_1`` …
    ``step_S``: the mean attention mask of each decision step (each sums to 1)."""
    from l2vol.models import TabNetRegressor

    if not isinstance(model, TabNetRegressor):
        raise TypeError(f"tabnet_importance: expected a TabNetRegressor, got {type(model).__name__}")
    _fitted(model, "tabnet_importance")
    importances, masks = model.explain(X)
    agg = np.nan_to_num(np.asarray(importances, dtype=np.float64)).mean(axis=0)
    out = {"importance": _normalized(agg)}
    for s in range(masks.shape[0]):
        out[f"step_{s + 1}"] = _normalized(np.asarray(masks[s], dtype=np.float64).mean(axis=0))
    return pd.DataFrame(out, index=pd.Index(model.features_, name="factor"))


def _normalized(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    total = v.sum()
    return v / total if total > 0 and np.isfinite(total) else np.full_like(v, 1.0 / max(len(v), 1))


# ------------------------------------------------------------ Integrated Gradients
def integrated_gradients(
    model: Any,
    X,
    *,
    baseline: str = "train_mean",
    n_steps: int = 32,
    rows: np.ndarray | None = None,
    batch_size: int = 256,
) -> pd.DataFrame:
    """Integrated Gradients (Sundararajan et al. 2017, Captum ``IntegratedGradients``) of a fitted
    :class:`~l2vol.models.MLPRegressor` or :class:`~l2vol.models.LSTMAttentionRegressor`.

    The attributed function is the network's forecast of ``log y`` (``predict_log``, before the bias
    correction) as a function of its standardized inputs, so attributions are in log-RV units like
    LightGBM's SHAP values. ``baseline``:

    * ``"train_mean"`` — every standardized input at its training mean (0; also what a missing value is
      imputed with): "a typical training row";
    * ``"zeros"`` — every *raw* factor equal to 0, standardized like the data (``(asinh(0) − mean) / std``).

    For the LSTM the attributed input is the causal window ``(rows, window, features)``; attributions
    are summed over time steps to one value per factor. Padded window positions (missing history) stay
    zero in the input and the baseline, so they get no attribution. The symbol/industry embeddings and
    the padding mask are held fixed at the row's own values (``additional_forward_args``), so their
    effect is part of ``baseline_value`` rather than attributed.

    Computed in float64 on a copy of the network (tight completeness). ``rows`` selects rows of ``X`` to
    explain (the LSTM still builds their windows from all of ``X``). Returns one row per explained row:
    the columns ``model.features_`` and ``baseline_value`` = f(baseline); by completeness each row sums to
    ``predict_log`` of the row up to the integration error, which is in ``.attrs["delta"]`` (array,
    ``sum(attributions) − (f(x) − f(baseline))`` per row)."""
    import copy

    import torch

    from l2vol.models import LSTMAttentionRegressor, MLPRegressor

    if not isinstance(model, MLPRegressor | LSTMAttentionRegressor):
        raise TypeError(
            f"integrated_gradients: expected an MLPRegressor or LSTMAttentionRegressor, got {type(model).__name__}"
        )
    if baseline not in BASELINES:
        raise ValueError(f"integrated_gradients: baseline={baseline!r} is not one of {BASELINES}")
    if n_steps < 2:
        raise ValueError(f"integrated_gradients: n_steps={n_steps} must be >= 2")
    try:
        from captum.attr import IntegratedGradients
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("integrated_gradients needs captum (pip install captum==0.9.0)") from e
    _fitted(model, "integrated_gradients")
    X = check_x(X, "integrated_gradients")
    rows = np.arange(len(X)) if rows is None else np.asarray(rows, dtype=np.int64)
    sequence = isinstance(model, LSTMAttentionRegressor)

    device = model.device_
    net = copy.deepcopy(model.module_).to(device).double().eval()
    for p in net.parameters():
        p.requires_grad_(False)
    z_mean, z_std = float(model.z_mean_), float(model.z_std_)

    def f(x: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        return net(x, *extra) * z_std + z_mean  # log-RV forecast

    # Standardized value of a raw 0 (the "zeros" baseline); "train_mean" is the standardized 0.
    norm = model.normalizer_
    if baseline == "zeros":
        ref = torch.as_tensor(norm.transform(np.zeros((1, len(model.features_)))), dtype=torch.float64)
    else:
        ref = torch.zeros((1, len(model.features_)), dtype=torch.float64)
    ref = ref.to(device)

    batcher = model._batcher(X, rows)  # positions 0..len(rows)-1 → the network's inputs for those rows
    ig = IntegratedGradients(f)
    attrs, deltas, base_vals = [], [], []
    # cuDNN's RNN backward refuses eval mode; the plain kernels differentiate fine.
    with torch.backends.cudnn.flags(enabled=False):
        for start in range(0, len(rows), batch_size):
            idx = torch.arange(start, min(start + batch_size, len(rows)), device=device)
            inputs = batcher(idx)
            x = inputs[0].to(torch.float64)
            extra = tuple(inputs[1:])
            if sequence:
                pad = extra[0]  # (b, k) True at padded positions: keep them zero in the baseline
                base = torch.where(pad[..., None], torch.zeros_like(x), ref.expand_as(x))
            else:
                base = ref.expand_as(x)
            a, delta = ig.attribute(
                x,
                baselines=base,
                additional_forward_args=extra if extra else None,
                n_steps=n_steps,
                return_convergence_delta=True,
            )
            if sequence:
                a = a.sum(dim=1)  # over the window's time steps
            with torch.no_grad():
                base_vals.append(f(base, *extra).cpu().numpy())
            attrs.append(a.detach().cpu().numpy())
            deltas.append(delta.detach().cpu().numpy())
    n_f = len(model.features_)
    a_all = np.concatenate(attrs) if attrs else np.zeros((0, n_f))
    out = pd.DataFrame(a_all, columns=list(model.features_))
    out[BASELINE_VALUE] = np.concatenate(base_vals) if base_vals else np.zeros(0)
    out.index = X.index[rows]
    out.attrs["delta"] = np.concatenate(deltas) if deltas else np.zeros(0)
    out.attrs["baseline"] = baseline
    out.attrs["n_steps"] = n_steps
    return out


# ------------------------------------------------------------------ aggregation
def _members(name: str, model: Any) -> list[tuple[str, Any]]:
    """An ensemble is explained through its fitted members (``"<name>/<member>"``)."""
    members = getattr(model, "members_", None)
    if members is None:
        return [(name, model)]
    out: list[tuple[str, Any]] = []
    seen: dict[str, int] = {}
    for m in members:
        label = f"{name}/{m.name or type(m).__name__}"
        seen[label] = seen.get(label, 0) + 1
        out += _members(label if seen[label] == 1 else f"{label}#{seen[label]}", m)
    return out


def factor_importance(
    models: Mapping[str, Any],
    X,
    *,
    baseline: str = "train_mean",
    n_steps: int = 32,
    max_rows: int | None = 2048,
) -> pd.DataFrame:
    """One factor-importance table over every explainable model in ``models`` (name → fitted model).

    Methods: ``shap`` (LightGBM, mean |SHAP value| per factor), ``tabnet_mask`` (TabNet's aggregate mask
    importance, :func:`tabnet_importance`), ``integrated_gradients`` (MLP and LSTM, mean |attribution|
    per factor, :func:`integrated_gradients` with ``baseline``/``n_steps``). Ensembles are expanded into
    their members (``"ens/lightgbm"``); models with no method (naive, HAR) are skipped and listed in
    ``.attrs["skipped"]``.

    Columns: ``model``, ``method``, ``factor``, ``importance`` (``score`` normalized to sum to 1 within each
    (model, method)), ``rank`` (1 = most important within the (model, method)), ``score`` (the unnormalized
    mean |attribution| in log-RV units; for TabNet the mean mask importance). ``max_rows`` evenly spaced
    rows of ``X`` are explained (all when None); the LSTM still builds their windows from all of ``X``."""
    from l2vol.models import LightGBMRegressor, LSTMAttentionRegressor, MLPRegressor, TabNetRegressor

    X = check_x(X, "factor_importance")
    rows = np.arange(len(X))
    if max_rows is not None and len(X) > max_rows:
        rows = np.unique(np.linspace(0, len(X) - 1, max_rows).round().astype(np.int64))
    parts, skipped = [], []
    for top_name, top_model in models.items():
        for name, model in _members(str(top_name), top_model):
            if isinstance(model, LightGBMRegressor):
                c = lightgbm_contributions(model, X.iloc[rows]).drop(columns=EXPECTED_VALUE)
                method, score = "shap", c.abs().mean(axis=0)
            elif isinstance(model, TabNetRegressor):
                method, score = "tabnet_mask", tabnet_importance(model, X.iloc[rows])["importance"]
            elif isinstance(model, MLPRegressor | LSTMAttentionRegressor):
                a = integrated_gradients(model, X, baseline=baseline, n_steps=n_steps, rows=rows)
                method, score = "integrated_gradients", a.drop(columns=BASELINE_VALUE).abs().mean(axis=0)
            else:
                skipped.append(name)
                continue
            score = score.astype(np.float64)
            imp = _normalized(score.to_numpy())
            parts.append(
                pd.DataFrame(
                    {
                        "model": name,
                        "method": method,
                        "factor": [str(c) for c in score.index],
                        "importance": imp,
                        "rank": pd.Series(imp).rank(ascending=False, method="first").astype(int).to_numpy(),
                        "score": score.to_numpy(),
                    }
                )
            )
    table = (
        pd.concat(parts, ignore_index=True).sort_values(["model", "method", "rank"], ignore_index=True)
        if parts
        else pd.DataFrame({c: pd.Series(dtype=object) for c in TABLE_COLUMNS})
    )
    table.attrs["skipped"] = skipped
    return table
