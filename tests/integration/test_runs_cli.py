"""`l2vol train → evaluate → predict` through the CLI (in-process CliRunner) on a tiny simulated market.

The store is built once per module with the demo's own stages (simulate → clean → factors → Feast on SQLite);
the run reads its training set from the Feast feature service, evaluates against the simulator's oracle, and
`predict --dates` over the test date reproduces the run's stored test forecasts.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from l2vol.cli import app

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    from l2vol.config import SimulationConfig
    from l2vol.data.cleaning import clean_store
    from l2vol.data.simulator import simulate_market
    from l2vol.demo import _feast_stage
    from l2vol.factors.engine import build_factors
    from l2vol.storage import DatasetStore

    root = tmp_path_factory.mktemp("market")
    raw, clean, feat = (DatasetStore(str(root / n)) for n in ("raw", "clean", "features"))
    simulate_market(SimulationConfig(symbols=4, days=7, seed=3), raw)
    clean_store(raw, clean, profile="ashare")
    build_factors(clean, feat)
    feast = _feast_stage(root, feat)
    dates = feat.list_dates("targets")
    cfg = root / "run.yaml"
    cfg.write_text(
        f"""name: cli
data:
  factors: {feat.location()}
  feature_repo: {feast["repo"]}
  raw: {raw.location()}
  start: {dates[1].isoformat()}
splits: {{train_days: 1, val_days: 1, test_days: 1}}
models:
  lightgbm: {{debug: true, params: {{n_estimators: 20}}}}
root: {root}
"""
    )
    return {"root": root, "config": cfg, "dates": dates}


def _ok(args: list[str]):
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_train_evaluate_predict(market):
    root, cfg = market["root"], market["config"]
    run = str(root / "runs" / "cli")
    trained = _ok(["train", "--model", "naive", "--model", "lightgbm", "--config", str(cfg), "--run", run, "--json"])
    assert trained["run_uri"] == run and trained["models"] == ["har", "naive", "lightgbm"]
    assert len(trained["folds"]) == 1 and trained["har"][0]["chosen"]
    test_date = market["dates"][-1].isoformat()
    assert f"test {test_date}..{test_date}" in trained["folds"][0]["describe"]

    ev = _ok(["evaluate", "--run", run, "--json"])
    assert ev["oracle"] is True  # the raw store is simulated: the oracle gap is computed
    rows = {r["model"]: r for r in ev["table"]}
    assert set(rows) == {"har", "naive", "lightgbm", "oracle"}
    assert rows["har"]["oracle_gap_qlike"] == pytest.approx(1.0)
    assert rows["oracle"]["oracle_gap_qlike"] == pytest.approx(0.0)
    assert Path(ev["report"]).is_file() and Path(ev["metrics"]).is_file()

    pr = _ok(["predict", "--run", run, "--dates", f"{test_date}:{test_date}", "--json"])
    got = pd.DataFrame(pr["rows"])
    got["ts"] = pd.to_datetime(got["ts"], utc=True)
    stored = pd.read_parquet(Path(run) / "predictions.parquet")
    m = stored.merge(got, on=["symbol", "ts"], suffixes=("_run", "_predict"), validate="one_to_one")
    assert len(m) == len(stored) == len(got) > 0
    for name in ("har", "naive", "lightgbm"):
        np.testing.assert_allclose(m[f"{name}_predict"], m[f"{name}_run"], rtol=1e-12, equal_nan=True)
    mon = pr["monitoring"]
    assert mon["n_realized"] > 0 and set(mon["models"]) == {"har", "naive", "lightgbm"}

    symbol = stored["symbol"].iloc[0]
    live = _ok(["predict", "--run", run, "--online", f"{symbol},NOPE.SH", "--json"])
    by_symbol = {r["symbol"]: r for r in live["rows"]}
    assert by_symbol[symbol]["lightgbm"] > 0 and by_symbol["NOPE.SH"]["lightgbm"] is None


def test_cli_errors_are_one_line(market):
    runner = CliRunner()
    res = runner.invoke(app, ["predict", "--run", str(market["root"] / "missing")])
    assert res.exit_code == 2 and "give exactly one of --dates START:END or --online SYMBOLS" in res.output
    res = runner.invoke(app, ["evaluate", "--run", str(market["root"] / "missing")])
    assert res.exit_code == 2 and "not a training run" in res.output
    res = runner.invoke(
        app, ["train", "--model", "lightgbm", "--config", str(market["config"]), "--algorithm", "parallel_de"]
    )
    assert res.exit_code == 2 and "--algorithm applies to torch models (mlp, tabnet, lstm)" in res.output
