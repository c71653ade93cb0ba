"""`l2vol demo --quick`: the embedded pipeline end to end, in-process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from l2vol.cli import app

pytestmark = pytest.mark.e2e


def test_demo_quick_runs_the_data_pipeline_end_to_end(tmp_path):
    out = tmp_path / "demo"
    res = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)

    # Every stage wrote committed tables.
    for table in ("snapshots", "trades", "universe", "bars_1d", "quarantine"):
        assert result["clean_rows"][table] > 0, table
    # What the cleaner quarantined/repaired is exactly what the simulator injected.
    found = {(r["table"], r["rule"]): r["rows"] for r in result["by_rule"] if r["action"] != "flag"}
    injected = {(t, rule): n for t, rules in result["injected"].items() for rule, n in rules.items()}
    assert injected, "the demo injects defects"
    for key, n in found.items():
        assert n == injected.get(key, 0), key
    # Rows in = kept + quarantined.
    for table, tot in result["totals"].items():
        assert tot["rows_in"] == tot["kept"] + tot["quarantined"], table

    report = Path(result["report"].removeprefix("file://"))
    assert report.is_file() and report.name == "index.html"
    html = report.read_text()
    assert "<table" in html and "crossed_book" in html

    # Factor mining finds what the simulated market holds: realized measures forecast next-bucket RV.
    top = {r["factor"]: r for r in result["factor_report"]["top"]}
    assert result["factor_report"]["primary_target"] == "rv_next_bucket"
    realized = [r for r in top.values() if r["family"] == "realized"]
    assert realized and all(r["rank_ic_mean"] > 0.2 for r in realized)

    # Feast on SQLite: one training row per target row, 49 point-in-time features, online fast path = SDK.
    fe = result["feast"]
    n_targets = sum(1 for _ in _target_rows(out))
    assert fe["training_rows"] == n_targets > 0
    assert fe["training_features"] >= 40
    assert fe["online_fast_equals_sdk"] is True

    # The features CLI on the demo's repo: a training set with the asof engine and an online read.
    repo = fe["repo"]
    ts_path = tmp_path / "ts.parquet"
    res_ts = CliRunner().invoke(
        app,
        ["features", "training-set", "--repo", repo, "--targets", str(out / "features"), "--engine", "asof",
         "--output", str(ts_path), "--json"],
    )  # fmt: skip
    assert res_ts.exit_code == 0, res_ts.output
    assert json.loads(res_ts.stdout)["rows"] == n_targets
    import pandas as pd

    a = pd.read_parquet(ts_path)
    b = pd.read_parquet(fe["training_set"])
    feats = [c for c in b.columns if c not in ("symbol", "ts") and not c.startswith(("rv_next", "rv_rest", "zero_"))]
    assert a[feats].astype("float64").equals(b[feats].astype("float64"))  # asof engine == get_historical_features
    sym = b["symbol"].iloc[0]
    res_on = CliRunner().invoke(app, ["features", "online", sym, "--repo", repo, "--fast", "--json"])
    assert res_on.exit_code == 0, res_on.output
    assert json.loads(res_on.stdout)[0]["symbol"] == sym

    # Training stage: naive, HAR, LightGBM and TabNet on a walk-forward fold, evaluated against HAR with the
    # simulator's oracle; the report is written and the run holds its provenance.
    tr = result["training"]
    assert tr["models"] == ["har", "naive", "lightgbm", "tabnet"] and len(tr["folds"]) >= 1
    table = {r["model"]: r for r in tr["table"]}
    assert set(table) == {"har", "naive", "lightgbm", "tabnet", "oracle"} and tr["oracle"] is True
    assert all(r["n_used"] > 0 and r["qlike"] > 0 for r in table.values())
    assert table["har"]["oracle_gap_qlike"] == 1.0 and table["oracle"]["oracle_gap_qlike"] == 0.0
    run = Path(tr["run"])
    assert Path(tr["report"]).is_file() and (run / "provenance.json").is_file()
    assert (run / "models" / "fold-0" / "tabnet" / "weights.safetensors").is_file()

    # Parallel_DE: TabNet trained over 2 local processes (torchrun, gloo) on the same fold, scored against HAR;
    # its report carries the convergence + diversity plot of the training.
    pde = tr["parallel_de"]
    assert pde["nproc"] == 2 and {r["model"] for r in pde["table"]} == {"har", "tabnet", "oracle"}
    assert [(t["model"], t["algorithm"], t["world_size"]) for t in pde["training"]] == [("tabnet", "parallel_de", 2)]
    assert all(np.isfinite(t["val_loss"]) and t["final_diversity"] > 0 for t in pde["training"])
    pde_run = Path(pde["run"])
    assert (pde_run / "harness" / "fold-0" / "tabnet" / "out" / "history.png").is_file()
    assert 'id="training-tabnet-fold0"' in Path(pde["report"]).read_text()

    # Re-running is idempotent (the same manifests), and the human-readable output says where the reports are.
    manifests = {p: p.read_text() for p in out.rglob("_manifest.json")}
    res2 = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out)])
    assert res2.exit_code == 0, res2.output
    assert {p: p.read_text() for p in out.rglob("_manifest.json")} == manifests
    assert "data-quality report:" in res2.output and "index.html" in res2.output
    assert "evaluation report:" in res2.output and "report.html" in res2.output
    assert "Parallel_DE report" in res2.output


def _target_rows(out: Path):
    from l2vol.storage import DatasetStore

    store = DatasetStore(str(out / "features"))
    for _, tbl in store.iter_partitions("targets", columns=["symbol"]):
        yield from range(tbl.num_rows)
