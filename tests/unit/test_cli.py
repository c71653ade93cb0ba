"""The l2vol command in-process (typer's CliRunner): help texts, JSON output and clear errors."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from l2vol.cli import app
from l2vol.config import SimulationConfig, load_yaml_config

runner = CliRunner()


def _commands(typer_app, prefix=()):
    import typer.main

    group = typer.main.get_command(typer_app)
    stack = [(prefix, group)]
    while stack:
        path, cmd = stack.pop()
        yield path
        for name, sub in getattr(cmd, "commands", {}).items():
            stack.append(((*path, name), sub))


def test_every_command_has_help_text():
    paths = list(_commands(app))
    assert ("data", "simulate") in paths and ("demo",) in paths
    for path in paths:
        res = runner.invoke(app, [*path, "--help"])
        assert res.exit_code == 0, (path, res.output)
        assert "Usage" in res.output


def test_ls_lists_committed_tables_as_json(tmp_store):
    tmp_store.write_partition("trades", "2024-01-02", pa.table({"symbol": ["600000.SH"], "qty": [100]}))
    tmp_store.write_partition("trades", "2024-01-03", pa.table({"symbol": ["600000.SH"] * 2, "qty": [1, 2]}))
    res = runner.invoke(app, ["data", "ls", tmp_store.uri, "--json"])
    assert res.exit_code == 0, res.output
    listing = json.loads(res.stdout)
    assert listing == {"trades": {"dates": 2, "first": "2024-01-02", "last": "2024-01-03", "rows": 3}}


def test_bad_store_uri_is_one_clear_error():
    res = runner.invoke(app, ["data", "ls", "ftp://somewhere/x"])
    assert res.exit_code == 2
    assert "unsupported scheme 'ftp'" in res.output
    assert "Traceback" not in res.output


def test_invalid_simulation_parameters_are_refused(tmp_path):
    res = runner.invoke(app, ["data", "simulate", "--out", str(tmp_path), "--symbols", "0"])
    assert res.exit_code == 2
    assert "symbols" in res.output


def test_yaml_config_errors_name_file_and_key(tmp_path):
    p = tmp_path / "sim.yaml"
    p.write_text("symbols: 3\nsymbol_count: 4\n")
    with pytest.raises(ValueError, match=r"sim\.yaml: symbol_count: Extra inputs are not permitted"):
        load_yaml_config(p, SimulationConfig)
    p.write_text("symbols: [\n")
    with pytest.raises(ValueError, match=r"sim\.yaml: invalid YAML"):
        load_yaml_config(p, SimulationConfig)
    p.write_text("symbols: 3\ndays: 2\n")
    cfg = load_yaml_config(p, SimulationConfig)
    assert (cfg.symbols, cfg.days) == (3, 2)


def test_data_commands_chain_on_the_vendor_samples(tmp_path):
    """ingest (SSE + SZSE samples, one with a repeated trade) → validate --strict → clean → bars, via the CLI."""
    import shutil
    from pathlib import Path

    data = Path(__file__).resolve().parents[1] / "data"
    sse = tmp_path / "sse"
    shutil.copytree(data / "sse", sse)
    trades = sse / "20240102" / "trade.csv"
    lines = trades.read_text().splitlines()
    trades.write_text("\n".join([*lines, lines[1]]) + "\n")  # the first fill again, at the end
    raw, clean = str(tmp_path / "raw"), str(tmp_path / "clean")

    res = runner.invoke(app, ["data", "ingest", "--format", "sse-l2", "--src", str(sse), "--out", raw, "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["rows"]["trades"] == len(lines)  # header excluded, duplicate included
    res = runner.invoke(
        app,
        ["data", "ingest", "--format", "szse-l2", "--vendor", "szse-l2-int", "--src", str(data / "szse"),
         "--out", raw, "--json"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output

    res = runner.invoke(app, ["data", "validate", raw, "--strict", "--json", "--report", str(tmp_path / "rep")])
    assert res.exit_code == 1, res.output  # one row would be quarantined
    assert json.loads(res.stdout)["totals"]["trades"]["quarantined"] == 1

    res = runner.invoke(app, ["data", "clean", "--src", raw, "--out", clean, "--json"])
    assert res.exit_code == 0, res.output
    totals = json.loads(res.stdout)["totals"]
    assert totals["trades"]["quarantined"] == 1
    assert totals["trades"]["rows_in"] == totals["trades"]["kept"] + 1

    res = runner.invoke(app, ["data", "bars", "--src", clean, "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["rows"]["bars_1d"] == 3  # 600519.SH, 688981.SH (SSE sample), 000001.SZ (SZSE sample)

    res = runner.invoke(app, ["data", "validate", clean, "--strict", "--json"])
    assert res.exit_code == 0, res.output


def test_malformed_vendor_file_is_one_clear_error_naming_file_and_line(tmp_path):
    bad = tmp_path / "sse" / "20240102"
    bad.mkdir(parents=True)
    (bad / "trade.csv").write_text(
        "SecurityID,TradeTime,TradePrice,TradeQty,TradeAmount,TradeBSFlag,TradeBuyNo,TradeSellNo,TradeIndex\n"
        "600000,20240102093001000,abc,100,1000,B,1,2,1\n"
    )
    res = runner.invoke(app, ["data", "ingest", "--format", "sse-l2", "--src", str(tmp_path / "sse"),
                              "--out", str(tmp_path / "raw")])  # fmt: skip
    assert res.exit_code == 2, res.output
    assert "trade.csv" in res.output and "line 2" in res.output and "'abc'" in res.output
    assert not (tmp_path / "raw" / "table=trades").exists()
