"""l2vol.models: one contract test over every model, then focused tests (HAR OLS, bias correction,
ensemble weights, causal LSTM windows, TabNet masks, train-only normalizers, safe artifacts)."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from l2vol.models import (
    HAR,
    INTRADAY_HAR,
    MODELS,
    Ensemble,
    Estimator,
    LightGBMRegressor,
    LSTMAttentionRegressor,
    MLPRegressor,
    NotFittedError,
    Standardizer,
    TabNetRegressor,
    causal_windows,
    simplex_least_squares,
)
from l2vol.models.base import as_matrix, feature_columns

N_SYMBOLS, N_BUCKETS, N_TRAIN_BUCKETS = 6, 80, 56
BETA = {"rv": 0.45, "har_rv_d": 0.25, "har_rv_w": 0.1, "har_rv_m": 0.05, "rv_seasonal_next": 0.1}
# The daily HAR terms are daily sums (48 buckets): the intercept brings the target back to bucket scale.
INTERCEPT = 0.05 * -9.2 - 0.4 * (np.log(48) + 0.25)


def make_panel(seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """A small panel of 5-minute buckets with a realistic log-RV relationship: a persistent symbol
    level, an intraday U-shape, HAR-style regressors and log-normal noise in the target (next-bucket RV)."""
    rng = np.random.default_rng(seed)
    frames = []
    t0 = pd.Timestamp("2024-01-02 01:35", tz="UTC")
    for s in range(N_SYMBOLS):
        level = -9.2 + 0.4 * rng.normal()
        bucket = np.arange(N_BUCKETS) % 48
        season = 0.5 * ((bucket - 23.5) / 23.5) ** 2
        lv = np.empty(N_BUCKETS)
        prev = level
        for t in range(N_BUCKETS):
            prev = level + season[t] + 0.6 * (prev - level - season[max(t - 1, 0)]) + 0.35 * rng.normal()
            lv[t] = prev
        frames.append(
            pd.DataFrame(
                {
                    "symbol": f"60000{s}.SH",
                    "industry": "bank" if s % 2 else "tech",
                    "ts": t0 + pd.to_timedelta(5 * np.arange(N_BUCKETS), unit="min"),
                    "bucket": bucket,
                    "rv": np.exp(lv),
                    "har_rv_d": np.exp(level + 0.25 + 0.1 * rng.normal(size=N_BUCKETS)) * 48,
                    "har_rv_w": np.exp(level + 0.25 + 0.05 * rng.normal(size=N_BUCKETS)) * 48,
                    "har_rv_m": np.exp(level + 0.25 + 0.03 * rng.normal(size=N_BUCKETS)) * 48,
                    "rv_seasonal_next": np.exp(level + np.roll(season, -1) + 0.05 * rng.normal(size=N_BUCKETS)),
                    "spread_bps": 5 + rng.gamma(2.0, 1.0, size=N_BUCKETS),
                }
            )
        )
    X = pd.concat(frames, ignore_index=True)
    logy = INTERCEPT + sum(b * np.log(X[c]) for c, b in BETA.items()) + 0.3 * rng.normal(size=len(X))
    return X, np.exp(logy.to_numpy())


@pytest.fixture(scope="module")
def data():
    X, y = make_panel()
    train = (X["ts"] < X["ts"].min() + pd.Timedelta(minutes=5 * N_TRAIN_BUCKETS)).to_numpy()
    return X[train].reset_index(drop=True), y[train], X[~train].reset_index(drop=True), y[~train]


def _artifact_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _assert_no_pickle(root: Path) -> None:
    files = _artifact_files(root)
    assert files
    for f in files:
        assert f.name in {"model.json", "model.txt", "weights.safetensors"}, f
        raw = f.read_bytes()
        assert not raw.startswith(b"PK"), f"{f}: a zip archive (torch.save / tabnet zip)"
        assert b"data.pkl" not in raw, f
        if f.suffix == ".safetensors":
            # safetensors: 8-byte header length, a JSON header, then raw tensor bytes and nothing else
            header_len = int.from_bytes(raw[:8], "little")
            header = json.loads(raw[8 : 8 + header_len])
            end = max(v["data_offsets"][1] for k, v in header.items() if k != "__metadata__")
            assert len(raw) == 8 + header_len + end, f
        else:
            assert not raw.startswith(b"\x80"), f"{f}: starts with a pickle protocol header"
            raw.decode("utf-8")  # JSON or LightGBM text


# ------------------------------------------------------------------------------------------- contract
@pytest.mark.parametrize("name", sorted(MODELS))
def test_estimator_contract(name, data, tmp_path, monkeypatch):
    Xtr, ytr, Xva, yva = data
    cls = MODELS[name]

    with pytest.raises(TypeError):
        cls(1)  # hyperparameters are keyword-only
    params = cls.debug_params()
    model = cls(**params)
    assert model.get_params() == {**cls().get_params(), **params}  # stored as given
    with pytest.raises(NotFittedError, match="not fitted"):
        model.predict(Xva)

    assert model.fit(Xtr, ytr, eval_set=(Xva, yva)) is model
    assert model.n_features_in_ == Xtr.shape[1]
    pred = model.predict(Xva)
    assert pred.shape == (len(Xva),)
    assert np.isfinite(pred).all() and (pred > 0).all()
    # forecasts are on the RV scale, not log: within a factor 5 of the realized level
    assert 0.2 < np.median(pred) / np.median(yva) < 5

    again = cls(**params).fit(Xtr, ytr, eval_set=(Xva, yva)).predict(Xva)
    np.testing.assert_array_equal(again, pred)  # deterministic with the (default) seed
    if "seed" in model.get_params():  # ... and the seed is what drives the randomness
        other = cls(**{**params, "seed": 1}).fit(Xtr, ytr, eval_set=(Xva, yva)).predict(Xva)
        assert not np.array_equal(other, pred)

    where = tmp_path / name
    model.save(str(where))
    _assert_no_pickle(where)

    def refuse(*a, **k):
        raise AssertionError("load must not unpickle")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    if "torch" in sys.modules:
        monkeypatch.setattr(sys.modules["torch"], "load", refuse)
    for loaded in (cls.load(str(where)), Estimator.load(f"file://{where}")):
        assert type(loaded) is cls
        assert loaded.get_params() == json.loads(json.dumps(model.get_params()))
        np.testing.assert_array_equal(loaded.predict(Xva), pred)


# ----------------------------------------------------------------------------------------- baselines
def test_har_recovers_known_ols_coefficients(data):
    Xtr, ytr, Xva, yva = data
    model = HAR(columns=INTRADAY_HAR, log=True).fit(Xtr, ytr)
    A = np.column_stack([np.ones(len(Xtr)), np.log(as_matrix(Xtr, INTRADAY_HAR))])
    beta = np.linalg.lstsq(A, np.log(ytr), rcond=None)[0]
    np.testing.assert_allclose([model.intercept_, *model.coef_], beta, rtol=1e-10, atol=1e-10)

    # without noise the true coefficients come back exactly
    X, _ = make_panel(seed=3)
    y = np.exp(INTERCEPT + sum(b * np.log(X[c].to_numpy()) for c, b in BETA.items()))
    exact = HAR.intraday().fit(X, y)
    np.testing.assert_allclose(exact.coef_, [BETA[c] for c in INTRADAY_HAR], atol=1e-8)
    np.testing.assert_allclose(exact.intercept_, INTERCEPT, atol=1e-7)

    levels = HAR(columns=("rv", "har_rv_d"), log=False).fit(X, 2e-5 + 0.5 * X["rv"] + 0.01 * X["har_rv_d"])
    np.testing.assert_allclose([levels.intercept_, *levels.coef_], [2e-5, 0.5, 0.01], rtol=1e-6, atol=1e-12)


def test_zero_targets_are_excluded_and_counted(data):
    Xtr, ytr, _, _ = data
    y = ytr.copy()
    y[:7] = 0.0
    y[7] = np.nan
    model = HAR.intraday().fit(Xtr, y)
    assert model.n_excluded_ == 8
    ref = HAR.intraday().fit(Xtr.iloc[8:], ytr[8:])
    np.testing.assert_allclose(model.coef_, ref.coef_, rtol=1e-12)
    assert LightGBMRegressor.debug().fit(Xtr, y).n_excluded_ == 8
    y[11] = -1e-6  # negative realized variance: a data error, not a zero bucket
    with pytest.raises(ValueError, match=r"HAR: y: row 11: target = -1e-06 is negative"):
        HAR.intraday().fit(Xtr, y)


def test_naive_persistence_forecasts_the_current_rv(data):
    Xtr, ytr, Xva, _ = data
    model = MODELS["naive"](column="rv").fit(Xtr, ytr)
    np.testing.assert_array_equal(model.predict(Xva), Xva["rv"].to_numpy())
    halted = Xva.assign(rv=0.0)
    assert (model.predict(halted) == model.floor_).all() and model.floor_ > 0


# ------------------------------------------------------------------------------------ bias correction
def test_bias_correction_makes_validation_mean_unbiased(data):
    Xtr, ytr, Xva, yva = data
    raw = HAR.intraday(bias_correction="none").fit(Xtr, ytr, eval_set=(Xva, yva))
    assert raw.predict(Xva).mean() < 0.97 * yva.mean()  # exp(E log y) < E y (Jensen)
    smear = HAR.intraday(bias_correction="smearing").fit(Xtr, ytr, eval_set=(Xva, yva))
    assert abs(smear.predict(Xva).mean() / yva.mean() - 1) < abs(raw.predict(Xva).mean() / yva.mean() - 1)
    for model in (
        HAR.intraday(),
        LightGBMRegressor.debug(),
        MLPRegressor.debug(),
    ):
        model.fit(Xtr, ytr, eval_set=(Xva, yva))
        assert model.bias_source_ == "eval_set"
        np.testing.assert_allclose(model.predict(Xva).mean(), yva.mean(), rtol=1e-9)
    # the factor comes from the validation rows: other validation targets, another factor
    shifted = HAR.intraday().fit(Xtr, ytr, eval_set=(Xva, 2 * yva))
    np.testing.assert_allclose(shifted.bias_factor_, 2 * HAR.intraday().fit(Xtr, ytr, eval_set=(Xva, yva)).bias_factor_)
    assert HAR.intraday().fit(Xtr, ytr).bias_source_ == "train"


# --------------------------------------------------------------------------------------------- ensemble
def test_simplex_least_squares_is_exact():
    rng = np.random.default_rng(1)
    P = rng.normal(size=(200, 3))
    t = P @ np.array([0.3, 0.7, 0.0])
    np.testing.assert_allclose(simplex_least_squares(P, t), [0.3, 0.7, 0.0], atol=1e-10)
    # the unconstrained optimum is off the simplex: the answer is the best point on it
    t2 = P @ np.array([1.5, -0.5, 0.0])
    w = simplex_least_squares(P, t2)
    assert (w >= 0).all() and np.isclose(w.sum(), 1)
    grid = [np.array([a, b, 1 - a - b]) for a in np.linspace(0, 1, 101) for b in np.linspace(0, 1 - a, 101)]
    assert np.sum((P @ w - t2) ** 2) <= min(np.sum((P @ g - t2) ** 2) for g in grid) + 1e-9


def test_ensemble_weights_on_the_simplex_fit_on_eval_set_only(data):
    Xtr, ytr, Xva, yva = data
    with pytest.raises(ValueError, match="eval_set"):
        Ensemble.debug().fit(Xtr, ytr)
    ens = Ensemble.debug().fit(Xtr, ytr, eval_set=(Xva, yva))
    w = np.asarray(ens.weights_)
    assert (w >= 0).all() and np.isclose(w.sum(), 1.0)
    # exactly the constrained least squares of the log validation targets on the members' validation forecasts
    P = np.column_stack([np.log(m.predict(Xva)) for m in ens.members_])
    np.testing.assert_allclose(w, simplex_least_squares(P, np.log(yva)), atol=1e-12)
    np.testing.assert_allclose(ens.predict(Xva).mean(), yva.mean(), rtol=1e-9)


# ------------------------------------------------------------------------------------ sequence windows
def test_causal_windows_only_see_the_same_symbol_at_or_before_ts(data):
    Xtr, *_ = data
    rng = np.random.default_rng(0)
    X = Xtr.sample(frac=1.0, random_state=1).reset_index(drop=True)  # any input row order
    x = rng.normal(size=(len(X), 3))
    k = 5
    win, pad = causal_windows(x, X["symbol"].to_numpy(), X["ts"].to_numpy(), k)
    assert win.shape == (len(X), k, 3) and pad.shape == (len(X), k)
    for i in rng.choice(len(X), 25, replace=False):
        same = X.index[(X["symbol"] == X.at[i, "symbol"]) & (X["ts"] <= X.at[i, "ts"])]
        hist = X.loc[same].sort_values("ts").index[-k:]
        np.testing.assert_array_equal(win[i, k - len(hist) :], x[hist])
        assert pad[i, : k - len(hist)].all() and not pad[i, k - len(hist) :].any()
        assert (win[i, : k - len(hist)] == 0).all()

    # perturbing a later row changes no window of an earlier bucket, nor any other symbol's
    j = int(X["ts"].idxmax())
    x2 = x.copy()
    x2[j] += 100.0
    win2, _ = causal_windows(x2, X["symbol"].to_numpy(), X["ts"].to_numpy(), k)
    changed = np.flatnonzero((win2 != win).any(axis=(1, 2)))
    assert list(changed) == [j]

    dup = pd.concat([X.iloc[:3], X.iloc[:1]])
    with pytest.raises(ValueError, match="duplicate"):
        causal_windows(np.zeros((4, 1)), dup["symbol"].to_numpy(), dup["ts"].to_numpy(), 2)


def test_lstm_forecasts_are_causal(data):
    Xtr, ytr, Xva, yva = data
    model = LSTMAttentionRegressor.debug().fit(Xtr, ytr, eval_set=(Xva, yva))
    full = pd.concat([Xtr, Xva], ignore_index=True)
    base = model.predict(full)
    cut = Xva["ts"].min()
    later = full["ts"] >= cut
    perturbed = full.copy()
    perturbed.loc[later, ["rv", "spread_bps"]] *= 50.0
    pred = model.predict(perturbed)
    np.testing.assert_array_equal(pred[~later.to_numpy()], base[~later.to_numpy()])
    assert not np.allclose(pred[later.to_numpy()], base[later.to_numpy()])
    assert model.symbols_ == sorted(Xtr["symbol"].unique()) and model.industries_ == ["bank", "tech"]


# --------------------------------------------------------------------------------------------- TabNet
def test_tabnet_explain_returns_masks_per_step(data):
    Xtr, ytr, Xva, yva = data
    model = TabNetRegressor.debug().fit(Xtr, ytr, eval_set=(Xva, yva))
    imp, masks = model.explain(Xva)
    n_features = len(model.features_)
    assert imp.shape == (len(Xva), n_features)
    assert masks.shape == (model.n_steps, len(Xva), n_features)
    np.testing.assert_allclose(imp.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(masks.sum(axis=2), 1.0, rtol=1e-4)
    assert (masks >= 0).all()


def test_tabnet_trains_with_the_fast_entmax_to_the_same_weights(data, monkeypatch, tmp_path):
    """The numpy-sorted entmax (l2vol.models._entmax) changes the cost only: fit and predictions are bit-identical
    to pytorch-tabnet's own entmax, and a saved model loads with the fast one."""
    import torch
    from pytorch_tabnet import sparsemax

    from l2vol.models import _entmax
    from l2vol.models import tabnet as tabnet_module

    Xtr, ytr, Xva, yva = data
    fast = TabNetRegressor.debug(max_epochs=3).fit(Xtr, ytr, eval_set=(Xva, yva))
    selectors = [type(m) for m in fast.tabnet_.network.modules() if type(m).__name__ == "Entmax15"]
    assert selectors and set(selectors) == {_entmax.Entmax15}
    fast.save(str(tmp_path))
    loaded = TabNetRegressor.load(str(tmp_path))
    assert {type(m) for m in loaded.tabnet_.network.modules() if type(m).__name__ == "Entmax15"} == {_entmax.Entmax15}
    np.testing.assert_array_equal(loaded.predict(Xva), fast.predict(Xva))
    monkeypatch.setattr(tabnet_module, "_fast_entmax_networks", lambda model: None)
    plain = TabNetRegressor.debug(max_epochs=3).fit(Xtr, ytr, eval_set=(Xva, yva))
    assert any(type(m) is sparsemax.Entmax15 for m in plain.tabnet_.network.modules())
    a, b = fast.tabnet_.network.state_dict(), plain.tabnet_.network.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    np.testing.assert_array_equal(fast.predict(Xva), plain.predict(Xva))


# ------------------------------------------------------------------------------ normalizers, devices
@pytest.mark.parametrize("cls", [MLPRegressor, TabNetRegressor, LSTMAttentionRegressor])
def test_normalizers_are_fit_on_training_rows_only(cls, data):
    Xtr, ytr, Xva, yva = data
    cols = feature_columns(Xtr, None, "test")
    expected = Standardizer.fit(as_matrix(Xtr, cols)).to_json()
    shifted = Xva.copy()
    shifted[cols] = shifted[cols] * 1000.0 + 7.0  # a validation set from another world
    model = cls.debug(epochs=2) if cls is not TabNetRegressor else cls.debug(max_epochs=2)
    model.fit(Xtr, ytr, eval_set=(shifted, yva))
    assert model.normalizer_.to_json() == expected
    assert model.device_ == ("cuda" if _cuda() else "cpu")  # "auto" resolved at fit


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def test_importing_models_loads_no_heavy_library():
    code = (
        "import sys, json, l2vol.models; "
        "print(json.dumps([m for m in ('torch', 'lightgbm', 'pytorch_tabnet', 'sklearn') if m in sys.modules]))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert json.loads(res.stdout.strip().splitlines()[-1]) == []


def test_load_refuses_another_class(data, tmp_path):
    Xtr, ytr, *_ = data
    HAR.debug().fit(Xtr, ytr).save(str(tmp_path))
    with pytest.raises(ValueError, match="holds a HAR"):
        LightGBMRegressor.load(str(tmp_path))


@pytest.mark.parametrize("name", ["lightgbm", "mlp", "tabnet", "lstm"])
def test_learners_forecast_rows_with_missing_factors(name, data):
    """Warm-up rows (e.g. no monthly HAR lag yet) carry NaN factors: learners still forecast them."""
    Xtr, ytr, Xva, yva = data
    holes = Xtr.copy()
    holes.loc[::7, "har_rv_m"] = np.nan
    model = MODELS[name].debug().fit(holes, ytr, eval_set=(Xva, yva))
    pred = model.predict(Xva.assign(har_rv_m=np.nan))
    assert np.isfinite(pred).all() and (pred > 0).all()


def test_unavailable_cuda_is_a_clear_error(data):
    if _cuda():
        pytest.skip("CUDA is available here")
    Xtr, ytr, *_ = data
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        MLPRegressor.debug(device="cuda").fit(Xtr, ytr)


@pytest.mark.gpu
@pytest.mark.parametrize("cls", [MLPRegressor, TabNetRegressor, LSTMAttentionRegressor])
def test_torch_models_train_and_round_trip_on_cuda(cls, data, tmp_path):
    if not _cuda():
        pytest.skip("needs CUDA")
    Xtr, ytr, Xva, yva = data
    model = cls.debug(device="auto").fit(Xtr, ytr, eval_set=(Xva, yva))
    assert model.device_ == "cuda"
    pred = model.predict(Xva)
    assert np.isfinite(pred).all() and (pred > 0).all()
    model.save(str(tmp_path))
    np.testing.assert_array_equal(cls.load(str(tmp_path)).predict(Xva), pred)
