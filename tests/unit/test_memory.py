"""Allocator defaults set by ``import l2vol`` (l2vol._memory)."""

from __future__ import annotations

import os
import subprocess
import sys

from l2vol import _memory


def test_defaults_fill_only_unset_variables_and_can_be_turned_off():
    env = {"MIMALLOC_PURGE_DELAY": "0"}
    added = _memory.configure(env)
    assert added == {"_RJEM_MALLOC_CONF": _memory.DEFAULTS["_RJEM_MALLOC_CONF"]}
    assert env["MIMALLOC_PURGE_DELAY"] == "0"  # the user's value wins
    assert env["_RJEM_MALLOC_CONF"] == f"dirty_decay_ms:{_memory.DECAY_MS},muzzy_decay_ms:{_memory.DECAY_MS}"
    off = {"L2VOL_ALLOCATOR_DEFAULTS": "0"}
    assert _memory.configure(off) == {} and set(off) == {"L2VOL_ALLOCATOR_DEFAULTS"}


def test_import_l2vol_sets_them_before_polars_and_pyarrow_load():
    code = (
        "import sys, os; import l2vol; "
        "assert 'polars' not in sys.modules and 'pyarrow' not in sys.modules, 'l2vol imported an allocator user'; "
        "print(os.environ['_RJEM_MALLOC_CONF'], os.environ['MIMALLOC_PURGE_DELAY'])"
    )
    env = {k: v for k, v in os.environ.items() if k not in _memory.DEFAULTS and k != "L2VOL_ALLOCATOR_DEFAULTS"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == [_memory.DEFAULTS["_RJEM_MALLOC_CONF"], _memory.DEFAULTS["MIMALLOC_PURGE_DELAY"]]
