"""Explainability (l2vol.evaluation.explain): LightGBM SHAP, TabNet masks, Integrated Gradients (Captum)
and the aggregated factor-importance table, on a synthetic panel where one factor drives the target."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from l2vol.evaluation import explain as E
from l2vol.models import MODELS

# captum is needed by Integrated Gradients only; LightGBM and TabNet explanations run without it.

FACTORS = ["driver", "f1", "f2", "f3", "f4"]


@pytest.fixture(scope="module")
def panel() -> tuple[pd.DataFrame, np.ndarray]:
    """4 symbols x 100 buckets; log y = -8 + 1.5 * driver + small noise; f1..f4 are pure noise."""
    rng = np.random.default_rng(0)
    n_sym, n_t = 4, 100
    n = n_sym * n_t
    X = pd.DataFrame(rng.normal(size=(n, len(FACTORS))), columns=FACTORS)
    X.insert(0, "symbol", np.repeat([f"S{i}" for i in range(n_sym)], n_t))
    ts = pd.date_range("2024-01-02 09:30", periods=n_t, freq="5min", tz="Asia/Shanghai")
    X.insert(1, "ts", np.tile(ts, n_sym))
    y = np.exp(-8 + 1.5 * X["driver"].to_numpy() + 0.1 * rng.normal(size=n))
    return X, y


@pytest.fixture(scope="module")
def models(panel) -> dict:
    X, y = panel
    val = np.arange(len(X)) % 5 == 0
    return {
        name: MODELS[name].debug().fit(X[~val], y[~val], eval_set=(X[val], y[val]))
        for name in ("lightgbm", "tabnet", "mlp", "lstm")
    }


def test_lightgbm_contributions_sum_to_raw_score(panel, models):
    X, _ = panel
    gbm = models["lightgbm"]
    c = E.lightgbm_contributions(gbm, X)
    assert list(c.columns) == [*FACTORS, E.EXPECTED_VALUE]
    assert c.shape == (len(X), len(FACTORS) + 1)
    np.testing.assert_allclose(c.sum(axis=1).to_numpy(), gbm.predict_log(X), rtol=0, atol=1e-9)
    assert c[E.EXPECTED_VALUE].nunique() == 1  # the base value is one number
    assert c[FACTORS].abs().mean().idxmax() == "driver"


def test_tabnet_importance_from_masks(panel, models):
    X, _ = panel
    imp = E.tabnet_importance(models["tabnet"], X)
    assert list(imp.index) == FACTORS
    assert list(imp.columns) == ["importance", "step_1", "step_2"]  # debug config: 2 decision steps
    np.testing.assert_allclose(imp.sum().to_numpy(), 1.0, atol=1e-9)
    assert (imp.to_numpy() >= 0).all()
    assert "driver" in imp["importance"].nlargest(3).index  # loose: a debug TabNet on 400 rows


@pytest.mark.parametrize("baseline", E.BASELINES)
def test_ig_mlp_completeness_and_driver(panel, models, baseline):
    X, _ = panel
    mlp = models["mlp"]
    a = E.integrated_gradients(mlp, X, baseline=baseline, n_steps=32)
    assert list(a.columns) == [*FACTORS, E.BASELINE_VALUE]
    assert len(a) == len(X)
    # Completeness: sum of attributions = f(x) - f(baseline), f the log-RV forecast.
    f_x = mlp.predict_log(X)
    np.testing.assert_allclose(a[FACTORS].sum(axis=1) + a[E.BASELINE_VALUE], f_x, rtol=0, atol=1e-4)
    assert np.abs(a.attrs["delta"]).max() < 1e-4
    # f(baseline), checked independently through predict_log: a raw all-zero row is the "zeros" baseline;
    # an all-missing row is imputed with the training mean of the standardized inputs ("train_mean").
    ref = pd.DataFrame({c: [0.0 if baseline == "zeros" else np.nan] for c in FACTORS})
    np.testing.assert_allclose(a[E.BASELINE_VALUE].to_numpy(), mlp.predict_log(ref)[0], atol=1e-5)
    assert a[FACTORS].abs().mean().idxmax() == "driver"


def test_ig_lstm_completeness_over_windows(panel, models):
    X, _ = panel
    lstm = models["lstm"]
    rows = np.array([0, 1, 2, 50, 99, 100, 101, 399])  # includes padded windows (first buckets of a symbol)
    a = E.integrated_gradients(lstm, X, baseline="train_mean", n_steps=32, rows=rows)
    assert list(a.index) == list(rows)
    # Attributions summed over the window's time steps; completeness against the model's own forecast
    # of those rows (windows built from all of X).
    f_x = lstm.predict_log(X)[rows]
    np.testing.assert_allclose(a[FACTORS].sum(axis=1) + a[E.BASELINE_VALUE], f_x, rtol=0, atol=1e-4)
    assert np.abs(a.attrs["delta"]).max() < 1e-4
    full = E.integrated_gradients(lstm, X, n_steps=16)
    assert full[FACTORS].abs().mean().idxmax() == "driver"


def test_integrated_gradients_refuses_other_models_and_baselines(panel, models):
    X, _ = panel
    with pytest.raises(TypeError, match="MLPRegressor or LSTMAttentionRegressor"):
        E.integrated_gradients(models["lightgbm"], X)
    with pytest.raises(ValueError, match="baseline"):
        E.integrated_gradients(models["mlp"], X, baseline="median")
    with pytest.raises(TypeError, match="LightGBMRegressor"):
        E.lightgbm_contributions(models["mlp"], X)
    with pytest.raises(TypeError, match="TabNetRegressor"):
        E.tabnet_importance(models["lightgbm"], X)


def test_factor_importance_table(panel, models):
    X, y = panel
    naive = MODELS["naive"](column="driver").fit(X, np.abs(y))
    ens = SimpleNamespace(members_=[models["lightgbm"], models["mlp"]])  # an ensemble is explained by member
    table = E.factor_importance({**models, "naive": naive, "ens": ens}, X, max_rows=200, n_steps=16)
    assert list(table.columns) == E.TABLE_COLUMNS
    groups = {
        ("lightgbm", "shap"),
        ("tabnet", "tabnet_mask"),
        ("mlp", "integrated_gradients"),
        ("lstm", "integrated_gradients"),
        ("ens/lightgbm", "shap"),
        ("ens/mlp", "integrated_gradients"),
    }
    assert set(map(tuple, table[["model", "method"]].drop_duplicates().to_numpy())) == groups
    assert table.shape == (len(groups) * len(FACTORS), len(E.TABLE_COLUMNS))
    assert table.attrs["skipped"] == ["naive"]
    for _, g in table.groupby(["model", "method"]):
        assert g["importance"].sum() == pytest.approx(1.0, abs=1e-9)
        assert sorted(g["rank"]) == list(range(1, len(FACTORS) + 1))
        assert sorted(g["factor"]) == sorted(FACTORS)
    top = table[table["rank"] == 1].set_index("model")["factor"]
    assert top["lightgbm"] == top["mlp"] == top["lstm"] == "driver"
    tab = table[table["model"] == "tabnet"].set_index("factor")["rank"]
    assert tab["driver"] <= 3


def test_import_loads_no_heavy_library():
    code = (
        "import sys, json, l2vol.evaluation.explain; "
        "print(json.dumps([m for m in ['torch', 'lightgbm', 'captum', 'l2vol.features'] if m in sys.modules]))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert json.loads(res.stdout.strip().splitlines()[-1]) == []


def test_ig_matches_closed_form_on_a_linear_network(panel):
    """With no hidden layer the MLP is linear, and IG is exactly w_i * (x_i - b_i) (times the target scale)."""
    X, y = panel
    lin = MODELS["mlp"].debug(hidden=()).fit(X, y)
    w = lin.module_.body[0].weight.detach().double().numpy()[0] * lin.z_std_
    x = lin.normalizer_.transform(X[FACTORS].to_numpy())
    for baseline, b in (
        ("train_mean", np.zeros(len(FACTORS))),
        ("zeros", lin.normalizer_.transform(np.zeros((1, 5)))[0]),
    ):
        a = E.integrated_gradients(lin, X, baseline=baseline, n_steps=4)
        np.testing.assert_allclose(a[FACTORS].to_numpy(), (x - b) * w, rtol=1e-5, atol=1e-6)


def test_ig_independent_of_chunking_and_survives_save_load(panel, models, tmp_path):
    X, _ = panel
    for name in ("mlp", "lstm"):
        model = models[name]
        a = E.integrated_gradients(model, X, n_steps=8)
        chunked = E.integrated_gradients(model, X, n_steps=8, batch_size=37)
        np.testing.assert_allclose(chunked.to_numpy(), a.to_numpy(), rtol=0, atol=1e-12)
        model.save(str(tmp_path / name))
        loaded = type(model).load(str(tmp_path / name))
        np.testing.assert_allclose(E.integrated_gradients(loaded, X, n_steps=8).to_numpy(), a.to_numpy(), atol=1e-12)
