"""Helpers shared by the tests (importable as ``support``: pytest puts tests/ on sys.path).

Tests that need a service (PostgreSQL, Redis, Chromium, an S3 server binary) call
:func:`require_service`: it skips with the reason where the service is absent, and fails instead when
``L2VOL_REQUIRE_SERVICES=1`` (set by ``.ci/run``), so CI always runs them.
"""

from __future__ import annotations

import os
import socket
import subprocess

import pytest


def services_required() -> bool:
    return os.environ.get("L2VOL_REQUIRE_SERVICES", "") not in ("", "0", "false", "no")


def require_service(available: bool, reason: str) -> None:
    """Skip (or fail under L2VOL_REQUIRE_SERVICES=1) when ``available`` is False."""
    if available:
        return
    if services_required():
        pytest.fail(f"required service missing (L2VOL_REQUIRE_SERVICES=1): {reason}")
    pytest.skip(reason)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """Terminate a server started by a test; kill it if it has not exited within ``timeout`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
