"""l2vol.training.tune and ``l2vol tune``: DE tuning of LightGBM and of ensemble weights on validation QLIKE, with
proof that the worker count does not change results and that rows outside the train/validation ranges are never
used."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from l2vol.cli import app
from l2vol.config import load_yaml_config
from l2vol.training.tune import (
    DateRange,
    SearchConfig,
    TuneEnsembleConfig,
    TuneLightGBMConfig,
    _evaluate_lightgbm,
    _Slices,
    tune_ensemble,
    tune_lightgbm,
)

runner = CliRunner()
N_DAYS, BUCKETS = 12, 48
DAYS = [d.date() for d in pd.bdate_range("2024-01-02", periods=N_DAYS)]  # Jan 2..11 | 12 | 15, 16 | 17
TRAIN = DateRange(start=DAYS[0], end=DAYS[7])  # fit Jan 2..9, purge Jan 10, early stopping Jan 11
VAL = DateRange(start=DAYS[9], end=DAYS[10])  # after a one-date gap (Jan 12); Jan 17 plays the test date
USED = set(DAYS[:6]) | {DAYS[7], DAYS[9], DAYS[10]}


def make_training_set(seed: int = 0, n_symbols: int = 4) -> pd.DataFrame:
    """A training set as ``write_training_set`` writes it: 5-minute buckets whose next-bucket RV follows a known
    log-linear relation (persistent symbol level, intraday U-shape, AR(1) latent log-vol), plus two pure-noise
    factors and a few zero targets."""
    rng = np.random.default_rng(seed)
    frames = []
    open_utc = pd.Timedelta(hours=1, minutes=30)  # 09:30 Asia/Shanghai
    ts = np.concatenate(
        [pd.Timestamp(d, tz="UTC") + open_utc + pd.to_timedelta(5 * np.arange(BUCKETS), unit="min") for d in DAYS]
    )
    for s in range(n_symbols):
        level = -9.0 + 0.5 * rng.normal()
        b = np.tile(np.arange(BUCKETS), N_DAYS)
        season = 0.6 * ((b - 23.5) / 23.5) ** 2
        lat = np.empty(len(b))
        prev = 0.0
        for t in range(len(b)):
            prev = 0.7 * prev + 0.4 * rng.normal()
            lat[t] = prev
        n = len(b)
        frames.append(
            pd.DataFrame(
                {
                    "symbol": f"60000{s}.SH",
                    "ts": ts,
                    "bucket": b,
                    "rv": np.exp(level + season + lat + 0.2 * rng.normal(size=n)),
                    "har_rv_d": np.exp(level + 0.1 * rng.normal(size=n)),
                    "rv_seasonal_next": np.exp(level + np.roll(season, -1) + 0.05 * rng.normal(size=n)),
                    "noise_a": rng.normal(size=n),
                    "noise_b": rng.gamma(2.0, 1.0, size=n),
                    "rv_next_bucket": np.exp(level + np.roll(season, -1) + 0.7 * lat + 0.3 * rng.normal(size=n)),
                }
            )
        )
    X = pd.concat(frames, ignore_index=True)
    X.loc[X.index % 97 == 0, "rv_next_bucket"] = 0.0
    X["zero_next_bucket"] = X["rv_next_bucket"] == 0.0
    return X


def _config(data, out, workers=1, **kw) -> TuneLightGBMConfig:
    return TuneLightGBMConfig(
        data=str(data),
        train=TRAIN,
        val=VAL,
        n_estimators=150,
        early_stopping_rounds=10,
        search=SearchConfig(pop_size=6, generations=3, seed=1),
        workers=workers,
        out=str(out),
        **kw,
    )


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("tune") / "training_set.parquet"
    make_training_set().to_parquet(path, index=False)
    return path


@pytest.fixture(scope="module")
def tuned(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("tuned1")
    return tune_lightgbm(_config(dataset, out, workers=1)), out


def test_tuned_params_beat_defaults_and_outputs_written(tuned):
    doc, out = tuned
    assert doc["val_qlike_best"] <= doc["val_qlike_default"]
    assert doc["improvement"] == pytest.approx(doc["val_qlike_default"] - doc["val_qlike_best"])
    assert doc["features"] == ["bucket", "rv", "har_rv_d", "rv_seasonal_next", "noise_a", "noise_b"]
    assert doc["slices"]["fit"] == {"start": "2024-01-02", "end": "2024-01-09", "days": 6, "rows": 4 * 6 * BUCKETS}
    assert doc["slices"]["early_stopping"]["start"] == "2024-01-11" and doc["slices"]["val"]["days"] == 2
    assert doc["slices"]["val_rows_excluded_nonpositive_target"] > 0  # zero RV: QLIKE undefined, left out
    p = doc["best_params"]
    assert isinstance(p["num_leaves"], int) and 4 <= p["num_leaves"] <= 128
    assert 0.005 <= p["learning_rate"] <= 0.3 and isinstance(p["min_data_in_leaf"], int)
    assert json.loads((out / "best_params.json").read_text()) == json.loads(json.dumps(doc))
    hist = json.loads((out / "history.json").read_text())
    best = [g["best"] for g in hist["generations"]]
    assert len(best) == 4 and all(b <= a for a, b in zip(best, best[1:], strict=False))
    assert best[-1] == pytest.approx(doc["val_qlike_best"])
    assert len(hist["evaluations"]) == 6 * 4 == doc["evaluations"]
    assert (out / "convergence.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*.tmp"))


def test_worker_count_does_not_change_results(dataset, tuned, tmp_path):
    doc1, out1 = tuned
    doc2 = tune_lightgbm(_config(dataset, tmp_path, workers=3))
    for k in ("best_params", "val_qlike_best", "val_qlike_default", "best_iteration", "evaluations"):
        assert doc2[k] == doc1[k], k
    h1 = json.loads((out1 / "history.json").read_text())
    h2 = json.loads((tmp_path / "history.json").read_text())
    assert h1 == h2


def test_rows_outside_the_ranges_are_never_used_cli(dataset, tuned, tmp_path):
    """Garbage in every row whose date is outside fit/early-stopping/val (the purge date inside the train range,
    the gap, the later 'test' date) changes nothing; garbage in one validation row does."""
    assert "test" not in TuneLightGBMConfig.model_fields
    frame = pd.read_parquet(dataset)
    dates = frame["ts"].dt.tz_convert("Asia/Shanghai").dt.date
    outside = ~dates.isin(USED)
    assert outside.sum() == 3 * 4 * BUCKETS
    garbage = frame.copy()
    for c in ("rv", "har_rv_d", "rv_seasonal_next", "noise_a", "noise_b", "rv_next_bucket"):
        garbage.loc[outside, c] = np.where(np.arange(outside.sum()) % 2, np.nan, 1e6)
    path = tmp_path / "garbage.parquet"
    garbage.to_parquet(path, index=False)
    cfg = _config(path, tmp_path / "out", workers=2).model_dump(mode="json")
    (tmp_path / "tune.yaml").write_text(yaml.safe_dump(cfg))
    res = runner.invoke(app, ["tune", "lightgbm", "--config", str(tmp_path / "tune.yaml"), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    doc1, _ = tuned
    for k in ("best_params", "val_qlike_best", "val_qlike_default", "slices"):
        assert doc[k] == doc1[k], k

    # sensitivity: the same perturbation of validation rows changes the score
    val_rows = dates == DAYS[9]
    garbage.loc[val_rows, "rv"] = 1e6
    garbage.to_parquet(path, index=False)
    cfg_obj = _config(path, tmp_path / "o2")
    q_garbage, _ = _evaluate_lightgbm(cfg_obj, _Slices(cfg_obj), doc1["best_params"])
    assert q_garbage != pytest.approx(doc1["val_qlike_best"], rel=1e-6)


def test_bad_ranges_and_configs_are_refused(dataset, tmp_path):
    with pytest.raises(ValueError, match="overlap or are out of order"):
        TuneLightGBMConfig(data="x", train=TRAIN, val=DateRange(start=DAYS[7], end=DAYS[9]), out="o")
    with pytest.raises(ValueError, match="purge_days=0 is shorter than the 1 trading day"):
        TuneLightGBMConfig(data="x", train=TRAIN, val=VAL, out="o", purge_days=0)
    with pytest.raises(ValueError, match="end before start"):
        DateRange(start=DAYS[3], end=DAYS[2])
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        TuneLightGBMConfig(data="x", train=TRAIN, val=VAL, out="o", test=VAL.model_dump())
    with pytest.raises(ValueError, match="unknown LightGBM parameters"):
        TuneLightGBMConfig(data="x", train=TRAIN, val=VAL, out="o", space={"max_depth": {"low": 1, "high": 9}})
    # val starts right after train end: no date left for the purge
    cfg = _config(dataset, tmp_path, workers=1)
    cfg.train = DateRange(start=DAYS[0], end=DAYS[8])
    with pytest.raises(ValueError, match=r"only 0 trading dates between train end 2024-01-12 and val start"):
        _Slices(cfg)
    bad = _config(dataset, tmp_path).model_dump(mode="json") | {"target": "rv_next_day"}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    res = runner.invoke(app, ["tune", "lightgbm", "--config", str(tmp_path / "bad.yaml")])
    assert res.exit_code == 2 and "column 'rv_next_day' missing" in res.output and "Traceback" not in res.output
    (tmp_path / "typo.yaml").write_text("data: x\nout: o\ntrain: {start: 2024-01-02, end: 2024-01-05}\nval: {}\n")
    res = runner.invoke(app, ["tune", "lightgbm", "--config", str(tmp_path / "typo.yaml")])
    assert res.exit_code == 2 and "typo.yaml" in res.output and "val.start" in res.output


def _predictions(seed: int = 0, n: int = 3000) -> pd.DataFrame:
    """Validation predictions of three members on the RV scale: one sharp, one biased upward, one noisy."""
    rng = np.random.default_rng(seed)
    logv = -9.0 + 0.6 * rng.standard_normal(n)
    y = np.exp(logv + 0.4 * rng.standard_normal(n) - 0.08)
    return pd.DataFrame(
        {
            "sharp": np.exp(logv + 0.15 * rng.standard_normal(n)),
            "biased": np.exp(logv + 0.5 + 0.05 * rng.standard_normal(n)),
            "noisy": np.exp(logv + 0.6 * rng.standard_normal(n)),
            "rv_next_bucket": np.where(np.arange(n) % 500 == 0, 0.0, y),
        }
    )


def test_tune_ensemble_matches_or_beats_least_squares(tmp_path):
    path = tmp_path / "preds.parquet"
    _predictions().to_parquet(path, index=False)
    for blend in ("arithmetic", "geometric"):
        cfg = TuneEnsembleConfig(data=str(path), members=["sharp", "biased", "noisy"], blend=blend, out=str(tmp_path))
        doc = tune_ensemble(cfg)
        w = np.array(list(doc["weights_de"].values()))
        assert w.sum() == pytest.approx(1.0) and (w >= 0).all()
        assert doc["val_qlike_de"] <= doc["val_qlike_least_squares"] + 1e-9
        assert doc["val_qlike_de"] < doc["val_qlike_equal"]
        assert doc["val_qlike_de"] < min(doc["val_qlike_members"].values())
        assert doc["rows"] == 3000 - 6 and doc["rows_excluded_nonpositive_target"] == 6
    assert (tmp_path / "weights.json").exists() and (tmp_path / "convergence.png").exists()


def test_tune_ensemble_cli_and_errors(tmp_path):
    preds = _predictions(n=800)
    preds.to_parquet(tmp_path / "p.parquet", index=False)
    cfg = {"data": str(tmp_path / "p.parquet"), "members": ["sharp", "noisy"], "out": str(tmp_path / "out")}
    cfg["search"] = {"pop_size": 8, "generations": 20}
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(cfg))
    assert load_yaml_config(tmp_path / "e.yaml", TuneEnsembleConfig).search.generations == 20
    res = runner.invoke(app, ["tune", "ensemble", "--config", str(tmp_path / "e.yaml"), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["weights_de"]["sharp"] > doc["weights_de"]["noisy"]
    preds.loc[5, "noisy"] = -1.0
    preds.to_parquet(tmp_path / "p.parquet", index=False)
    res = runner.invoke(app, ["tune", "ensemble", "--config", str(tmp_path / "e.yaml")])
    assert res.exit_code == 2 and "member 'noisy' has a non-positive or non-finite forecast at row 5" in res.output
    preds.loc[5, "noisy"] = preds.loc[6, "noisy"]
    preds.loc[9, "rv_next_bucket"] = -1e-4  # a realized variance below zero: bad data, not a zero bucket
    preds.to_parquet(tmp_path / "p.parquet", index=False)
    res = runner.invoke(app, ["tune", "ensemble", "--config", str(tmp_path / "e.yaml")])
    assert res.exit_code == 2 and "row 9: rv_next_bucket = -0.0001 is negative" in res.output
    with pytest.raises(ValueError, match="members listed twice"):
        TuneEnsembleConfig(data="x", members=["a", "a"], out="o")


def test_dates_follow_the_exchange_time_zone():
    # 2024-01-02 17:00 UTC is 2024-01-03 01:00 in Shanghai: the row belongs to Jan 3
    from l2vol.training.tune import _trading_dates

    ts = pd.Series(pd.to_datetime(["2024-01-02 17:00", "2024-01-02 01:30"], utc=True))
    assert list(_trading_dates(ts, "Asia/Shanghai", "x")) == [dt.date(2024, 1, 3), dt.date(2024, 1, 2)]
