"""Entity frames for training sets: (symbol, ts, targets...) rows taken from the ``targets`` table.

The targets table is never a feature view; its rows only say *when* a training example is taken (the
bucket end ``ts``) and carry the labels, which pass through ``training_set`` untouched.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from l2vol.storage import DatasetStore


def entities_from_targets(
    store: DatasetStore,
    *,
    start: dt.date | str | None = None,
    end: dt.date | str | None = None,
    targets: Sequence[str] | None = None,
    symbols: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Rows (symbol, ts, <targets>, <zero flags>) of the ``targets`` table for dates in [start, end].

    ``targets`` names target columns (e.g. ``rv_next_bucket``); default: all of them. The matching
    ``zero_*`` flag columns (halted / limit-locked windows, excluded from losses) come along.
    """
    parts = []
    for _, tbl in store.iter_partitions("targets", start, end, symbols=symbols):
        parts.append(tbl)
    if not parts:
        span = "" if start is None and end is None else f" in [{start or '...'}, {end or '...'}]"
        raise ValueError(f"{store.location('table=targets')}: no committed targets{span} (run `l2vol factors build`)")
    import pyarrow as pa

    df = pa.concat_tables(parts).to_pandas()
    rv_cols = [c for c in df.columns if c.startswith("rv_")]
    if targets:
        unknown = [t for t in targets if t not in rv_cols]
        if unknown:
            raise ValueError(f"unknown target(s) {unknown}; the targets table has {rv_cols}")
        rv_cols = list(targets)
    zero_cols = [f"zero_{c.removeprefix('rv_')}" for c in rv_cols if f"zero_{c.removeprefix('rv_')}" in df.columns]
    return df[["symbol", "ts", *rv_cols, *zero_cols]].reset_index(drop=True)


def write_training_set(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write a training set to ``path`` as Parquet atomically (a temp file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)
    return path
