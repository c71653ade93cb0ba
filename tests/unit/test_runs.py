"""Training runs (l2vol.runs): config validation, run layout and provenance, the factor-set refusal, the HAR
variant chosen on validation only, predictions keyed to their rows, evaluation written and re-runnable.

A synthetic panel (4 symbols × 8 trading dates × 12 buckets) with a committed ``targets``/``factors`` store stands in
for the Feast training set (``train_run(training_frame=...)``); the Feast path is covered by
tests/integration/test_runs_cli.py.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from l2vol.config import load_yaml_config
from l2vol.runs import RunConfig, default_run_uri, evaluate_run, fit_estimator, train_run
from l2vol.runs.config import load_run_config
from l2vol.runs.provenance import manifest_hashes
from l2vol.runs.run import torch_threads

REPO = Path(__file__).resolve().parents[2]
DATES = [dt.date(2024, 1, d) for d in (2, 3, 4, 5, 8, 9, 10, 11)]
SYMBOLS = ["600000.SH", "600001.SH", "000001.SZ", "000002.SZ"]
BUCKETS = 12


def _panel(seed: int = 0) -> pd.DataFrame:
    """Rows (symbol, ts) with HAR regressors, two other factors and a next-bucket target driven by them."""
    rng = np.random.default_rng(seed)
    rows = []
    for d in DATES:
        base = pd.Timestamp(d.isoformat() + " 01:30", tz="UTC")  # 09:30 Shanghai
        for s_i, s in enumerate(SYMBOLS):
            level = 1e-5 * (1 + s_i) * np.exp(rng.normal(0, 0.3))
            for b in range(BUCKETS):
                rv = level * np.exp(rng.normal(0, 0.5))
                rows.append(
                    {
                        "symbol": s,
                        "ts": base + pd.Timedelta(minutes=5 * (b + 1)),
                        "rv": rv,
                        "har_rv_d": level * BUCKETS,
                        "har_rv_w": np.nan,  # too short a history: dropped from the HAR variants
                        "har_rv_m": np.nan,
                        "rv_seasonal_next": np.nan,
                        "spread": rng.normal(1, 0.1),
                        "depth_l1": rng.normal(5, 1),
                    }
                )
    df = pd.DataFrame(rows)
    df["rv_next_bucket"] = 0.6 * df["rv"] + 0.4 * df["har_rv_d"] / BUCKETS
    df["rv_next_bucket"] *= np.exp(rng.normal(0, 0.3, len(df)))
    last = df["ts"].dt.strftime("%H:%M") == df["ts"].max().strftime("%H:%M")
    df.loc[last, "rv_next_bucket"] = np.nan  # no next bucket after the close
    df["zero_next_bucket"] = False
    return df


@pytest.fixture(scope="module")
def panel() -> pd.DataFrame:
    return _panel()


@pytest.fixture(scope="module")
def factor_store(tmp_path_factory, panel):
    """A store with committed targets and factors partitions for the panel's dates (list_dates, provenance)."""
    from l2vol.storage import DatasetStore

    root = tmp_path_factory.mktemp("factors")
    store = DatasetStore(str(root))
    dates = panel["ts"].dt.date
    for d in DATES:
        part = panel[dates == d]
        store.write_partition(
            "targets", d, pa.Table.from_pandas(part[["symbol", "ts", "rv_next_bucket"]], preserve_index=False)
        )
        store.write_partition(
            "factors", d, pa.Table.from_pandas(part.drop(columns=["rv_next_bucket"]), preserve_index=False)
        )
    return store


def _config(factor_store, tmp_path, **over) -> RunConfig:
    doc = {
        "name": "unit",
        "data": {"factors": factor_store.uri, "feature_repo": str(tmp_path / "no-repo"), "start": "2024-01-03"},
        "splits": {"train_days": 2, "val_days": 1, "test_days": 1},
        "models": {"lightgbm": {"debug": True, "params": {"n_estimators": 20}}},
        "root": str(tmp_path),
    }
    for k, v in over.items():
        doc[k] = v
    return RunConfig.model_validate(doc)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, factor_store, panel):
    tmp = tmp_path_factory.mktemp("run")
    cfg = _config(factor_store, tmp)
    res = train_run(cfg, ["naive", "lightgbm"], run_uri=str(tmp / "run"), training_frame=panel, argv=["l2vol", "t"])
    return res, cfg


# ------------------------------------------------------------------------------------------- config
def test_config_errors_name_the_file_and_key(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text("data: {factors: /x}\nsplits: {train_days: 2, val_days: 1, test_days: 1}\nmodles: {}\n")
    with pytest.raises(ValueError, match=r"run\.yaml: modles: Extra inputs are not permitted"):
        load_run_config(p)
    p.write_text("data: {factors: /x}\nsplits: {train_days: 2, val_days: 1, test_days: 1, purge_days: 0}\n")
    with pytest.raises(ValueError, match=r"splits\.purge_days"):
        load_run_config(p)
    p.write_text(
        "data: {factors: /x, start: 2024-01-05, end: 2024-01-02}\nsplits: {train_days: 1, val_days: 1, test_days: 1}\n"
    )
    with pytest.raises(ValueError, match="end 2024-01-02 is before start 2024-01-05"):
        load_run_config(p)
    p.write_text("data: {factors: /x}\nsplits: {train_days: 1, val_days: 1, test_days: 1}\nmodels: {xgb: {}}\n")
    with pytest.raises(ValueError, match=r"unknown model\(s\) \['xgb'\]"):
        load_run_config(p)
    p.write_text("data: {factors: /x}\ntarget: rv_next_week\nsplits: {train_days: 1, val_days: 1, test_days: 1}\n")
    with pytest.raises(ValueError, match="target"):
        load_yaml_config(p, RunConfig)


def test_model_params_debug_then_overrides_and_seed(tmp_path, factor_store):
    cfg = _config(factor_store, tmp_path, seed=7)
    p = cfg.model_params("lightgbm")
    assert p["n_estimators"] == 20 and p["num_leaves"] == 7 and p["seed"] == 7  # debug, override, run seed
    assert cfg.model_params("naive") == {}
    assert cfg.har_candidates() == ["daily_log", "daily_levels", "intraday_log", "intraday_levels"]
    assert _config(factor_store, tmp_path, target="rv_next_day").har_candidates() == ["daily_log", "daily_levels"]


def test_default_run_uri_is_timestamp_and_config_hash(tmp_path, factor_store):
    cfg = _config(factor_store, tmp_path)
    uri = default_run_uri(cfg, ["har", "naive"], now=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC))
    assert re.fullmatch(re.escape(str(tmp_path)) + r"/runs/20260102T030405Z-[0-9a-f]{8}", uri)
    assert default_run_uri(cfg, ["har", "lightgbm"], now=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)) != uri


# -------------------------------------------------------------------------------------- run layout
def test_run_layout_and_provenance(trained, factor_store):
    res, cfg = trained
    root = Path(res.run_uri)
    for f in ("config.json", "data.json", "training_set.parquet", "predictions.parquet", "provenance.json"):
        assert (root / f).is_file(), f
    assert res.models == ["har", "naive", "lightgbm"]
    for name in res.models:
        assert (root / "models" / "fold-0" / name / "model.json").is_file()
    data = json.loads((root / "data.json").read_text())
    assert data["target"] == "rv_next_bucket"
    assert data["date_range"] == {"start": "2024-01-03", "end": "2024-01-11", "dates": 7}
    fold = data["folds"][0]
    assert fold["train"]["days"] == 2 and fold["val"]["days"] == 1 and fold["test"]["start"] == "2024-01-11"
    assert fold["leakage_check"]["clear_days_before_test"] >= 1
    assert fold["rows"] == {"train": 2 * 4 * 11, "val": 4 * 11, "test": 4 * 12}  # last bucket: no target
    assert data["feature_service"]["name"] == "vol_forecast_v1" and "spread" in data["feature_service"]["features"]
    assert data["training_set"]["rows"] == len(DATES) * 4 * BUCKETS

    prov = json.loads((root / "provenance.json").read_text())
    assert set(prov) >= {"code", "data", "lock", "python", "libraries", "command", "timestamp"}
    assert re.fullmatch(r"[0-9a-f]{40}", prov["code"]["git_commit"]) and isinstance(prov["code"]["dirty"], bool)
    used = DATES[1:]
    assert prov["data"]["targets"] == manifest_hashes(factor_store, "targets", used)
    assert prov["data"]["factors"]["sha256"] != prov["data"]["targets"]["sha256"]
    assert prov["lock"]["sha256"] == hashlib.sha256((REPO / "constraints.txt").read_bytes()).hexdigest()
    assert prov["command"] == ["l2vol", "t"] and prov["libraries"]["lightgbm"]
    cfg_doc = json.loads((root / "config.json").read_text())
    assert cfg_doc["models"] == res.models and RunConfig.model_validate(cfg_doc["config"]).splits == cfg.splits


def test_predictions_are_keyed_to_their_rows(trained, panel):
    res, _ = trained
    pred = pd.read_parquet(Path(res.run_uri) / "predictions.parquet")
    assert list(pred.columns) == ["symbol", "ts", "fold", "y", "har", "naive", "lightgbm"]
    test = panel[panel["ts"].dt.date == dt.date(2024, 1, 11)]
    assert len(pred) == len(test)
    m = pred.merge(test, on=["symbol", "ts"], how="inner", validate="one_to_one")
    assert len(m) == len(pred)
    np.testing.assert_array_equal(m["y"].to_numpy(), m["rv_next_bucket"].to_numpy())
    np.testing.assert_array_equal(m["naive"].to_numpy(), m["rv"].to_numpy())  # persistence: its own row's RV
    from l2vol.models import Estimator

    lgb = Estimator.load(str(Path(res.run_uri) / "models" / "fold-0" / "lightgbm"))
    X = m[["symbol", "ts", "rv", "har_rv_d", "har_rv_w", "har_rv_m", "rv_seasonal_next", "spread", "depth_l1"]]
    np.testing.assert_allclose(m["lightgbm"].to_numpy(), lgb.predict(X), rtol=1e-12)


# --------------------------------------------------------------------------------------- HAR choice
def test_har_variant_is_chosen_on_validation_only(tmp_path, factor_store, panel):
    cfg = _config(factor_store, tmp_path)
    base = train_run(cfg, ["har"], run_uri=str(tmp_path / "a"), training_frame=panel)
    rec = json.loads((Path(base.run_uri) / "data.json").read_text())["har"][0]
    assert rec["chosen"] in cfg.har_candidates()
    assert rec["candidates"]["intraday_log"]["dropped"] == ["har_rv_w", "har_rv_m", "rv_seasonal_next"]
    scores = {v: c["val_qlike"] for v, c in rec["candidates"].items()}
    assert rec["chosen"] == min(scores, key=scores.get)

    rng = np.random.default_rng(1)
    test_day = panel["ts"].dt.date == dt.date(2024, 1, 11)
    perturbed = panel.copy()
    perturbed.loc[test_day, "rv_next_bucket"] *= rng.lognormal(0, 2, int(test_day.sum()))
    other = train_run(cfg, ["har"], run_uri=str(tmp_path / "b"), training_frame=perturbed)
    rec2 = json.loads((Path(other.run_uri) / "data.json").read_text())["har"][0]
    assert rec2 == rec  # the test targets do not move the choice or its validation scores
    p1 = pd.read_parquet(Path(base.run_uri) / "predictions.parquet")
    p2 = pd.read_parquet(Path(other.run_uri) / "predictions.parquet")
    np.testing.assert_array_equal(p1["har"].to_numpy(), p2["har"].to_numpy())
    assert not np.array_equal(p1["y"].to_numpy(), p2["y"].to_numpy(), equal_nan=True)

    # Control: perturbing the validation targets does move the validation scores.
    val_day = panel["ts"].dt.date == dt.date(2024, 1, 8)
    pv = panel.copy()
    pv.loc[val_day, "rv_next_bucket"] *= rng.lognormal(0, 2, int(val_day.sum()))
    third = train_run(cfg, ["har"], run_uri=str(tmp_path / "c"), training_frame=pv)
    rec3 = json.loads((Path(third.run_uri) / "data.json").read_text())["har"][0]
    assert {v: c["val_qlike"] for v, c in rec3["candidates"].items()} != scores


# ------------------------------------------------------------------------------------ factor sets
def _factor_set(tmp_path, fit_start: str, fit_end: str) -> str:
    from l2vol.factors.factor_set import FactorSet

    fs = FactorSet(
        name="unit", factors=["rv", "spread"], primary_target="rv_next_bucket", fit_start=fit_start, fit_end=fit_end
    )
    return str(fs.save(tmp_path / f"fs-{fit_end}.yaml"))


def test_factor_set_overlapping_a_test_fold_is_refused(tmp_path, factor_store, panel):
    from l2vol.factors.factor_set import FactorSetLeakError

    cfg = _config(factor_store, tmp_path, factor_set=_factor_set(tmp_path, "2024-01-03", "2024-01-11"))
    with pytest.raises(FactorSetLeakError, match=r"2024-01-03\.\.2024-01-11 cannot be used for fold 0 with test"):
        train_run(cfg, ["naive"], run_uri=str(tmp_path / "refused"), training_frame=panel)
    assert not (tmp_path / "refused").exists()  # refused before anything is written

    ok = _config(factor_store, tmp_path, factor_set=_factor_set(tmp_path, "2024-01-03", "2024-01-08"))
    res = train_run(ok, ["lightgbm"], run_uri=str(tmp_path / "ok"), training_frame=panel)
    data = json.loads((Path(res.run_uri) / "data.json").read_text())
    assert data["factor_set"]["fit_end"] == "2024-01-08" and data["factor_set"]["factors"] == ["rv", "spread"]
    from l2vol.models import Estimator

    assert Estimator.load(str(Path(res.run_uri) / "models/fold-0/lightgbm")).features_ == ["rv", "spread"]


def test_algorithm_applies_to_torch_models_only(panel):
    train, val = panel.iloc[:200], panel.iloc[200:300]
    with pytest.raises(ValueError, match=r"--algorithm applies to torch models \(mlp, tabnet, lstm\); lightgbm"):
        fit_estimator("lightgbm", {}, train, val, algorithm="parallel_de", workdir="/tmp/unused")
    with pytest.raises(ValueError, match="unknown model"):
        fit_estimator("xgboost", {}, train, val)


def test_launcher_without_algorithm_is_refused(tmp_path, factor_store, panel):
    cfg = _config(factor_store, tmp_path)
    with pytest.raises(ValueError, match="--launcher/--nproc apply with --algorithm"):
        train_run(cfg, ["mlp"], run_uri=str(tmp_path / "r"), launcher="torchrun", nproc=2, training_frame=panel)
    with pytest.raises(ValueError, match="--algorithm 'adam': expected one of single, ddp, local_sgd, parallel_de"):
        train_run(cfg, ["mlp"], run_uri=str(tmp_path / "r"), algorithm="adam", training_frame=panel)


def test_torch_model_through_the_training_harness(tmp_path, panel):
    """algorithm="single", launcher "none": the fold's rows and a TrainConfig go through l2vol.training.launch in
    this process; the harness's saved model comes back as the l2vol estimator."""
    import yaml

    from l2vol.models import MLPRegressor

    rows = panel.dropna(subset=["rv_next_bucket"])
    d = rows["ts"].dt.date
    train, val = rows[d <= dt.date(2024, 1, 5)], rows[d == dt.date(2024, 1, 8)]
    params = {**MLPRegressor.debug_params(), "seed": 3}
    with torch_threads(1, ["mlp"]):  # as train_run does (RunConfig.torch_threads)
        model = fit_estimator(
            "mlp", params, train, val, algorithm="single", workdir=tmp_path / "h", harness={"budget": {"steps": 60}}
        )
    assert isinstance(model, MLPRegressor)
    f = model.predict(val.drop(columns=["rv_next_bucket", "zero_next_bucket"]))
    assert f.shape == (len(val),) and np.all(np.isfinite(f) & (f > 0))
    cfg = yaml.safe_load((tmp_path / "h" / "train.yaml").read_text())
    assert cfg["algorithm"] == "single" and cfg["seed"] == 3 and cfg["budget"]["steps"] == 60
    assert cfg["optim"]["lr"] == params["lr"] and "lr" not in cfg["model_params"]
    assert len(pd.read_parquet(cfg["data"]["train"])) == len(train)


# --------------------------------------------------------------------------------------- evaluate
def test_evaluate_writes_metrics_and_report_and_is_idempotent(trained):
    res, _ = trained
    root = Path(res.run_uri)
    out = evaluate_run(res.run_uri)
    assert Path(out["metrics"]).is_file() and Path(out["report"]).is_file()
    assert [r["model"] for r in out["table"]] == ["har", "naive", "lightgbm"]
    metrics = json.loads((root / "metrics.json").read_text())
    ev = metrics["evaluation"]
    assert ev["benchmark"] == "har" and ev["horizon_periods"] == 1 and ev["n_used"] > 0
    assert metrics["oracle"] is None  # no raw simulated store configured
    assert {r["model"] for r in metrics["importance"]} == {"lightgbm"}  # SHAP; naive/HAR have no method
    html = (root / "report.html").read_text()
    assert "<table" in html and "lightgbm" in html and "data:image/png;base64," in html
    first = (root / "metrics.json").read_bytes()
    evaluate_run(res.run_uri)
    assert (root / "metrics.json").read_bytes() == first
