"""`l2vol demo --quick`: the embedded pipeline end to end, in-process."""

from __future__ import annotations

import json
from pathlib import Path

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

    # Re-running is idempotent: the same manifests.
    manifests = {p: p.read_text() for p in out.rglob("_manifest.json")}
    res2 = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out), "--json"])
    assert res2.exit_code == 0, res2.output
    assert {p: p.read_text() for p in out.rglob("_manifest.json")} == manifests


def test_demo_prints_where_the_report_is(tmp_path):
    res = CliRunner().invoke(app, ["demo", "--quick", "--out", str(tmp_path / "d")])
    assert res.exit_code == 0, res.output
    assert "data-quality report:" in res.output
    assert "index.html" in res.output
