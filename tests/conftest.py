"""Shared test fixtures. Helper functions live in tests/support.py (``from support import ...``)."""

from __future__ import annotations

import pytest


@pytest.fixture
def tmp_store(tmp_path):
    """A fresh file:// DatasetStore in a temp directory."""
    from l2vol.storage import DatasetStore

    return DatasetStore(f"file://{tmp_path / 'store'}")


@pytest.fixture
def one_torch_thread():
    """One torch thread (as the training harness pins it), restored afterwards."""
    import torch  # here: most tests never import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
