"""What every format loader shares: source units, the sink they emit canonical batches into, and the
per-run statistics that become the ingest summary."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa

from l2vol.data import schema
from l2vol.data.loaders.fields import day_date
from l2vol.data.loaders.partitions import PartitionSpool, Source


@dataclass(frozen=True)
class SourceUnit:
    """One thing to parse: a file, or a pair of files (LOBSTER) with ``partner`` set."""

    path: Path
    rel: str  # relative to the source root, POSIX separators
    partner: Path | None = None
    partner_rel: str | None = None


@dataclass
class IngestStats:
    files_by_table: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    rows: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    days: set[int] = field(default_factory=set)
    files_without_rows: list[str] = field(default_factory=list)
    ignored_columns: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    absent_columns: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    notes: set[str] = field(default_factory=set)

    def summary(self) -> dict:
        return {
            "files_by_table": dict(sorted(self.files_by_table.items())),
            "rows": dict(sorted(self.rows.items())),
            "dates": [day_date(d).isoformat() for d in sorted(self.days)],
            "files_without_rows": sorted(self.files_without_rows),
            "ignored_columns": {t: sorted(c) for t, c in sorted(self.ignored_columns.items()) if c},
            "absent_columns": {
                t: [n for n in schema.schema_for(t).names if n in c]
                for t, c in sorted(self.absent_columns.items())
                if c
            },
            "notes": sorted(self.notes),
        }


class Sink:
    """Where a loader puts canonical batches: the spool, tagged with their source file."""

    def __init__(self, spool: PartitionSpool, fmt: str, vendor: str, market: str, stats: IngestStats):
        self.spool = spool
        self.fmt = fmt
        self.vendor = vendor
        self.market = market
        self.stats = stats

    def emit(self, table: str, rel: str, batch: pa.RecordBatch, days: np.ndarray) -> None:
        if batch.num_rows == 0:
            return
        self.spool.add(table, Source(self.fmt, rel, self.vendor, self.market), batch, days)
        self.stats.rows[table] += batch.num_rows
        if days[0] == days[-1] and days.min() == days.max():
            self.stats.days.add(int(days[0]))
        else:
            self.stats.days.update(np.unique(days).tolist())


class Loader(Protocol):
    def discover(self, src: Path) -> tuple[list[SourceUnit], list[str]]:
        """Units to parse (sorted by ``rel``) and the files under ``src`` that are not of this format."""

    def parse(self, unit: SourceUnit, display: str, sink: Sink) -> None:
        """Parse and validate one unit completely, emitting canonical batches; raise IngestError."""


def relpath(path: Path, root: Path) -> str:
    return path.name if path == root else path.relative_to(root).as_posix()


def walk(src: Path, suffixes: tuple[str, ...]) -> tuple[list[tuple[Path, str]], list[str]]:
    """Files under ``src`` (or ``src`` itself) with one of ``suffixes``, sorted by relative path, and the
    other files (hidden files and directories are skipped)."""
    if src.is_file():
        return ([(src, src.name)], []) if src.name.lower().endswith(suffixes) else ([], [src.name])
    found, other = [], []
    for p in src.rglob("*"):
        rel = p.relative_to(src)
        if any(part.startswith(".") for part in rel.parts) or not p.is_file():
            continue
        (found if p.name.lower().endswith(suffixes) else other).append((p, rel.as_posix()))
    # sorted by the relative path as a string: the order rows take within a partition
    return sorted(found, key=lambda f: f[1]), sorted(r for _, r in other)
