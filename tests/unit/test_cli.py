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
