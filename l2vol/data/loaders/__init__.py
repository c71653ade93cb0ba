"""Loaders: vendor files -> raw canonical tables (not yet cleaned) in a :class:`~l2vol.storage.DatasetStore`.

``ingest(fmt, src, store)`` runs in two phases:

1. parse: every file under ``src`` is streamed (block by block, never whole), converted to the canonical
   schema with the vendor profile's units, fully validated, and grouped by (table, trading date) in a
   spool that spills to a temporary directory beyond a memory budget;
2. commit: each date partition is written once with :meth:`DatasetStore.write_partition`, its manifest
   recording the source files (see :mod:`l2vol.data.loaders.partitions` for how stored rows merge).

A malformed file raises :class:`IngestError` (file, line, problem) in phase 1, so nothing is written.
Accepted files and columns per format: docs/ingest.md.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from l2vol.data import schema
from l2vol.data.loaders.base import IngestStats, Loader, Sink
from l2vol.data.loaders.errors import IngestError
from l2vol.data.loaders.partitions import SPOOL_BUDGET, PartitionSpool, commit_spool
from l2vol.data.profiles import get_profile
from l2vol.data.vendors import VendorProfile, get_vendor
from l2vol.progress import Progress, ensure
from l2vol.storage import DatasetStore

FORMATS = ("sse-l2", "szse-l2", "lobster", "optiver", "bars-csv")

__all__ = ["FORMATS", "IngestError", "ingest"]


def _loader(fmt: str, vendor: VendorProfile) -> Loader:
    market = get_profile(vendor.market)
    if fmt in ("sse-l2", "szse-l2"):
        from l2vol.data.loaders.ashare import AshareLoader

        return AshareLoader(vendor, market)
    if fmt == "lobster":
        from l2vol.data.loaders.lobster import LobsterLoader

        return LobsterLoader(vendor, market)
    if fmt == "optiver":
        from l2vol.data.loaders.optiver import OptiverLoader

        return OptiverLoader(vendor)
    from l2vol.data.loaders.bars_csv import BarsCsvLoader

    return BarsCsvLoader(vendor)


def ingest(
    fmt: str,
    src: str | Path,
    store: DatasetStore,
    *,
    progress: Progress | None = None,
    vendor: str | Path | VendorProfile | None = None,
    spool_dir: str | Path | None = None,
    spool_budget: int = SPOOL_BUDGET,
) -> dict:
    """Ingest the ``fmt`` files at ``src`` (a file or a directory, searched recursively) into ``store``.

    ``vendor`` picks the vendor profile (units, encoding, column names): a built-in name, a YAML file,
    or a :class:`VendorProfile`; default: the built-in profile named like ``fmt``. ``spool_dir`` is where
    parsed rows beyond ``spool_budget`` bytes wait for their partition (default: the system temp dir).

    Returns a JSON-able summary: files, rows per table, dates, partitions written, columns ignored or
    absent, and notes on derived values. Raises :class:`IngestError` for a malformed file (nothing is
    written then) and ``ValueError`` for an unknown format or vendor profile.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    prof = get_vendor(fmt, vendor)
    src = Path(src)
    if not src.exists():
        raise IngestError(src, None, "no such file or directory")
    loader = _loader(fmt, prof)
    units, other = loader.discover(src)
    if not units:
        raise IngestError(src, None, f"no {fmt} files found (see docs/ingest.md for the expected files)")
    progress = ensure(progress)
    stats = IngestStats()
    parse_task, write_task = f"parse {fmt}", f"write {fmt}"
    progress.task(parse_task, len(units))
    with tempfile.TemporaryDirectory(prefix="l2vol-ingest-", dir=spool_dir) as tmp:
        spool = PartitionSpool(tmp, spool_budget)
        sink = Sink(spool, fmt, prof.name, prof.market, stats)
        for unit in units:
            loader.parse(unit, str(unit.path), sink)
            progress.advance(parse_task, 1, unit.rel)
        progress.task(write_task, len(spool.groups()))
        parts = commit_spool(store, spool, schema.TABLES, progress, write_task)
        spilled = spool.spilled_bytes
    kept: dict[str, int] = {}
    for p in parts:
        if p["kept_rows"]:
            kept[p["table"]] = kept.get(p["table"], 0) + p["kept_rows"]
    return {
        "format": fmt,
        "vendor": prof.name,
        "src": str(src),
        "store": store.location(),
        "files": len(units),
        **stats.summary(),
        "partitions": len(parts),
        "rows_kept_from_store": kept,
        "skipped_files": other,
        "spilled_bytes": spilled,
    }
