"""Allocator settings for l2vol processes: keep freed memory for reuse for a while.

The factor engine (and the cleaning, training-set and report code) allocates and frees about half a
gigabyte per trading date in short-lived Arrow and polars buffers. With the allocators' defaults, polars'
jemalloc and Arrow's mimalloc hand freed pages back to the kernel within milliseconds, and the next
buffer faults them in again, zeroed by the kernel: on a 300-symbol day that was ~100,000 page faults and
15-20 % of the engine's CPU time (``perf``: ``clear_page_erms`` under the two allocators). Keeping freed
pages for 30 s (jemalloc's ``dirty_decay_ms``/``muzzy_decay_ms``, mimalloc's ``purge_delay``) lets the
allocators reuse them; the peak RSS stays that of one date, and an idle process still returns the memory.

Both allocators read these settings from the environment when they start, i.e. when polars or pyarrow
is first imported: :func:`configure` (run by ``import l2vol``) therefore only takes effect when l2vol is
imported first, as the ``l2vol`` command, the pipeline components and the benchmarks do. Values already
in the environment win, and ``L2VOL_ALLOCATOR_DEFAULTS=0`` turns the whole thing off. Child processes
(torchrun workers, KFP's local runner) inherit the settings.
"""

from __future__ import annotations

import os

#: milliseconds a freed page is kept for reuse before it is returned to the kernel
DECAY_MS = 30_000

DEFAULTS = {
    # polars' jemalloc (the Rust build reads the prefixed variable)
    "_RJEM_MALLOC_CONF": f"dirty_decay_ms:{DECAY_MS},muzzy_decay_ms:{DECAY_MS}",
    # Arrow's default memory pool (mimalloc)
    "MIMALLOC_PURGE_DELAY": str(DECAY_MS),
}


def configure(environ: dict | None = None) -> dict[str, str]:
    """Put :data:`DEFAULTS` into ``environ`` (default ``os.environ``) where unset, unless
    ``L2VOL_ALLOCATOR_DEFAULTS=0``; returns the variables it set."""
    env = os.environ if environ is None else environ
    if env.get("L2VOL_ALLOCATOR_DEFAULTS", "1").strip() == "0":
        return {}
    added = {k: v for k, v in DEFAULTS.items() if k not in env}
    env.update(added)
    return added
