"""Provenance of a run: which code, which data, which locked environment, which command, when.

Enough to tell whether two runs are comparable and to rebuild one: the git commit (and whether the
checkout had uncommitted changes) or the installed package version, sha256 digests of the committed
factor/target partitions the run read (from their manifests, so the data are not re-read), the hash of
the lock file (constraints.txt), library versions, the command line and a UTC timestamp.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import platform
import subprocess
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from l2vol.storage import DatasetStore

_REPO = Path(__file__).resolve().parents[2]
_LIBRARIES = ("numpy", "pandas", "pyarrow", "polars", "torch", "lightgbm", "pytorch-tabnet", "feast", "scipy")


def code_version(repo: Path = _REPO) -> dict:
    """``{"git_commit", "dirty"}`` inside a git checkout, else ``{"package_version"}``."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        return {"git_commit": commit, "dirty": bool(status.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"package_version": _version("l2vol")}


def manifest_hashes(store: DatasetStore, table: str, dates: Sequence[dt.date]) -> dict:
    """sha256 over the committed partitions of ``table`` at ``dates`` (each date and its part hashes, as in
    :func:`l2vol.factors.mining.manifest_digest`), and the dates it covers."""
    h = hashlib.sha256()
    for d in dates:
        man = store.read_manifest(table, d) or {}
        parts = [f.get("sha256", "") for f in man.get("files", [])]
        h.update(json.dumps([d.isoformat(), parts]).encode())
    return {
        "sha256": h.hexdigest(),
        "dates": len(dates),
        "first": dates[0].isoformat() if dates else None,
        "last": dates[-1].isoformat() if dates else None,
    }


def lock_hash(repo: Path = _REPO) -> dict:
    """sha256 of the lock file the environment was installed from (constraints.txt), when present."""
    p = repo / "constraints.txt"
    if not p.is_file():
        return {"file": None, "sha256": None}
    return {"file": p.name, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def provenance(data: dict[str, dict], *, argv: Sequence[str] | None = None) -> dict:
    """The provenance record of a run (``data``: table → :func:`manifest_hashes`)."""
    return {
        "code": code_version(),
        "data": data,
        "lock": lock_hash(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "libraries": {name: _version(name) for name in _LIBRARIES},
        "command": list(sys.argv if argv is None else argv),
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
