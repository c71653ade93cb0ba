"""Shared test fixtures. Helper functions live in tests/support.py (``from support import ...``)."""

from __future__ import annotations

import pytest


@pytest.fixture
def tmp_store(tmp_path):
    """A fresh file:// DatasetStore in a temp directory."""
    from l2vol.storage import DatasetStore

    return DatasetStore(f"file://{tmp_path / 'store'}")
