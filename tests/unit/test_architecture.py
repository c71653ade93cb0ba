"""The layering rules of DESIGN §1, checked by import-linter, and the cheap-CLI-import rule."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LINT = BIN / "lint-imports"


def _contracts() -> dict[str, dict]:
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {c["id"]: c for c in cfg["contracts"]}


def _top_level_modules() -> set[str]:
    pkg = REPO / "l2vol"
    names = {p.name for p in pkg.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    names |= {p.stem for p in pkg.glob("*.py") if p.stem != "__init__"}
    return {f"l2vol.{n}" for n in names}


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    assert LINT.exists(), "import-linter is a dev dependency; reinstall with `make test`"
    return subprocess.run([str(LINT), "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=180, check=False)


def test_import_linter_contracts_hold():
    res = _lint(REPO)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"Contracts: {len(_contracts())} kept, 0 broken" in res.stdout, res.stdout


def test_contracts_cover_every_package():
    """A new top-level package must be added to the storage and data contracts (no silent gaps)."""
    c = _contracts()
    mods = _top_level_modules()
    assert set(c["storage"]["forbidden_modules"]) >= mods - {"l2vol.storage"}
    allowed_for_data = {"l2vol.data", "l2vol.storage", "l2vol.config", "l2vol.progress"}
    assert set(c["data"]["forbidden_modules"]) >= mods - allowed_for_data


def test_import_linter_catches_a_violation(tmp_path):
    """Negative control: a feast import inside l2vol.data must break the contract."""
    shutil.copytree(REPO / "l2vol", tmp_path / "l2vol", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "l2vol" / "data" / "leak.py").write_text("import feast  # noqa\n")
    res = subprocess.run(
        [str(LINT), "--no-cache"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={"PYTHONPATH": str(tmp_path), "PATH": str(BIN)},
    )
    assert res.returncode != 0
    assert "feast only in l2vol.features BROKEN" in res.stdout, res.stdout


def test_cli_import_pulls_in_no_heavy_library():
    code = (
        "import sys, json, l2vol.cli; "
        "heavy = ['torch', 'feast', 'kfp', 'lightgbm', 'captum', 'kubernetes', 'pandas', 'polars', 'pyarrow']; "
        "print(json.dumps([m for m in heavy if m in sys.modules]))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert json.loads(res.stdout.strip().splitlines()[-1]) == []


def test_ruff_is_clean():
    ruff = BIN / "ruff"
    if not ruff.exists():
        ruff = Path(shutil.which("ruff") or "ruff")
    res = subprocess.run([str(ruff), "check", "."], cwd=REPO, capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    res = subprocess.run([str(ruff), "format", "--check", "."], cwd=REPO, capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
