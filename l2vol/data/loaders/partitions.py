"""Group parsed rows by (table, date) and commit each date partition once, merged with what is stored.

Parsing and committing are separate phases. Every source file is parsed (and so validated) into a
:class:`PartitionSpool` before the first partition is written, so a malformed file fails the whole run
and leaves the store untouched. The spool keeps rows in memory up to a budget and spills the largest
groups to compressed Arrow IPC files in a temporary directory, so memory stays bounded whatever the
layout of the input: files may hold any mix of dates and a date may span many files.

Each partition records the files its rows came from, in row order, in its manifest
(``metadata["sources"]``: format, file relative to the source root, vendor profile, market profile,
rows). Rows are ordered by (format, file), then as in the file. That record makes writes merge, per
symbol:

* rows for a symbol that this run brings replace all stored rows of that symbol on that date;
* stored rows of other symbols are kept (so SSE and SZSE files can be ingested in two runs into one
  store), except rows from a file this run ingests again (the new version of the file wins);
* re-running the same input writes the same parts and the same manifest (idempotent).

A constraint follows: all files holding rows of one (symbol, date) must be ingested in the same run.
"""

from __future__ import annotations

import datetime as dt
import posixpath
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from l2vol.data.loaders.fields import day_date
from l2vol.storage import DatasetStore

#: Default memory budget of the spool before groups spill to disk.
SPOOL_BUDGET = 256 << 20
#: Approximate in-memory size of one part file: the store buffers a whole part before writing it.
PART_BYTES = 256 << 20


def rows_per_part(schema: pa.Schema) -> int:
    """Rows per part file so a part buffers about :data:`PART_BYTES` (wide snapshots get smaller parts)."""
    width = sum(16 if pa.types.is_string(f.type) else max(f.type.bit_width // 8, 1) for f in schema)
    return max(50_000, PART_BYTES // width)


@dataclass(frozen=True)
class Source:
    """One input file: ``file`` is relative to the source root (stable across machines); ``market`` is
    the market profile its rows follow (what cleaning should apply)."""

    format: str
    file: str
    vendor: str
    market: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.format, self.file)

    def record(self, rows: int) -> dict:
        return {"format": self.format, "file": self.file, "vendor": self.vendor, "market": self.market, "rows": rows}


#: Estimated bookkeeping bytes per buffered batch and column, counted against the budget so that
#: many tiny batches (e.g. one bar per file and date) cannot exhaust memory unnoticed.
_BATCH_OVERHEAD, _COLUMN_OVERHEAD = 512, 128
#: Buffered batches of one group are concatenated once there are this many.
_COALESCE = 64
#: Spilled rows are written (and read back) in pieces of about this many bytes.
_SPILL_PIECE = 32 << 20


class _Group:
    """One (table, day): rows in arrival order. Spilled batches come first, then buffered ones."""

    __slots__ = ("buffered", "mem", "run_rows", "run_sources", "spilled", "symbols")

    def __init__(self) -> None:
        self.run_sources = array("l")  # source index per run of consecutive rows from one file
        self.run_rows = array("q")
        self.buffered: list[pa.RecordBatch] = []
        self.spilled: list[Path] = []  # IPC files, each with one or more batches
        self.mem = 0
        self.symbols: set[str] = set()


def _cost(batch: pa.RecordBatch) -> int:
    return batch.nbytes + _BATCH_OVERHEAD + _COLUMN_OVERHEAD * batch.num_columns


def _concat(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    if len(batches) == 1:
        return batches[0]
    return pa.Table.from_batches(batches).combine_chunks().to_batches(max_chunksize=None)[0]


class PartitionSpool:
    """Parsed rows per (table, day), in arrival order, held in memory up to ``budget_bytes``."""

    def __init__(self, directory: str | Path, budget_bytes: int = SPOOL_BUDGET):
        self.directory = Path(directory)
        self.budget = budget_bytes
        self._groups: dict[tuple[str, int], _Group] = {}
        self._sources: list[Source] = []
        self._source_ids: dict[Source, int] = {}
        self._mem = 0
        self._spills = 0
        self.spilled_bytes = 0

    def add(self, table: str, source: Source, batch: pa.RecordBatch, days: np.ndarray) -> None:
        """Add ``batch`` (canonical schema), split by ``days`` (day numbers, one per row) keeping the
        row order within each day."""
        if batch.num_rows == 0:
            return
        sid = self._source_ids.setdefault(source, len(self._sources))
        if sid == len(self._sources):
            self._sources.append(source)
        if days[0] == days[-1] and days.min() == days.max():
            self._add(table, int(days[0]), sid, batch)
            return
        if (np.diff(days) < 0).any():  # rows of several days interleaved: group them, stably
            order = np.argsort(days, kind="stable")
            batch, days = batch.take(pa.array(order)), days[order]
        cuts = [0, *(np.flatnonzero(np.diff(days)) + 1).tolist(), len(days)]
        for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
            self._add(table, int(days[lo]), sid, batch.slice(lo, hi - lo))

    def _add(self, table: str, day: int, sid: int, batch: pa.RecordBatch) -> None:
        g = self._groups.setdefault((table, day), _Group())
        if g.run_sources and g.run_sources[-1] == sid:
            g.run_rows[-1] += batch.num_rows
        else:
            g.run_sources.append(sid)
            g.run_rows.append(batch.num_rows)
        g.symbols.update(pc.unique(batch.column("symbol")).to_pylist())
        g.buffered.append(batch)
        size = _cost(batch)
        g.mem += size
        self._mem += size
        if len(g.buffered) >= _COALESCE and g.mem <= _SPILL_PIECE:  # many small batches: one copy
            merged = _concat(g.buffered)
            g.buffered = [merged]
            self._mem += _cost(merged) - g.mem
            g.mem = _cost(merged)
        if self._mem > self.budget:
            self._relieve()

    def _relieve(self) -> None:
        for g in sorted(self._groups.values(), key=lambda g: g.mem, reverse=True):
            if self._mem <= self.budget // 2:
                break
            if g.buffered:
                self._spill(g)

    def _spill(self, g: _Group) -> None:
        """Write the group's buffered rows to a compressed IPC file, in pieces of at most about
        :data:`_SPILL_PIECE` bytes so that reading them back never holds much more than one piece."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"spill-{self._spills:06d}.arrow"
        self._spills += 1
        opts = ipc.IpcWriteOptions(compression="lz4")
        with ipc.new_file(str(path), g.buffered[0].schema, options=opts) as writer:
            for batch in g.buffered:
                step = max(1, batch.num_rows * _SPILL_PIECE // max(batch.nbytes, 1))
                for lo in range(0, batch.num_rows, step):
                    writer.write_batch(batch.slice(lo, step))
        g.spilled.append(path)
        g.buffered = []
        self.spilled_bytes += path.stat().st_size
        self._mem -= g.mem
        g.mem = 0

    def groups(self) -> list[tuple[str, int]]:
        """(table, day) groups in commit order: by day, then table."""
        return sorted(self._groups, key=lambda k: (k[1], k[0]))

    def runs(self, key: tuple[str, int]) -> list[tuple[Source, int]]:
        """(source, rows) in row order; consecutive rows of one file form one run."""
        g = self._groups[key]
        return [(self._sources[s], int(n)) for s, n in zip(g.run_sources, g.run_rows, strict=True)]

    def symbols(self, key: tuple[str, int]) -> set[str]:
        return self._groups[key].symbols

    def batches(self, key: tuple[str, int]) -> Iterator[pa.RecordBatch]:
        """The group's rows in arrival order (batch boundaries need not match runs)."""
        g = self._groups[key]
        for path in g.spilled:
            with pa.OSFile(str(path), "rb") as f:
                reader = ipc.open_file(f)
                for i in range(reader.num_record_batches):
                    yield reader.get_batch(i)  # read and decompressed into memory
        yield from g.buffered

    def release(self, key: tuple[str, int]) -> None:
        g = self._groups.pop(key)
        self._mem -= g.mem
        for path in g.spilled:
            path.unlink(missing_ok=True)


class _Rows:
    """Hands out consecutive row ranges of a batch stream, optionally filtered by a keep mask."""

    def __init__(self, batches: Iterator[pa.RecordBatch], keep: np.ndarray | None = None):
        self._batches = batches
        self._keep = keep
        self._pos = 0
        self._pending: pa.RecordBatch | None = None

    def take(self, start: int, end: int) -> Iterator[pa.RecordBatch]:
        """Rows [start, end) of the stream (``start`` >= the end of the previous take)."""
        while self._pos < end:
            batch = self._pending if self._pending is not None else next(self._batches)
            self._pending = None
            b_start, b_end = self._pos, self._pos + batch.num_rows
            lo, hi = max(b_start, start), min(b_end, end)
            if hi < b_end:
                self._pending = batch.slice(hi - b_start)
            self._pos = hi
            if lo < hi:
                piece = batch.slice(lo - b_start, hi - lo)
                if self._keep is None:
                    yield piece
                else:
                    mask = self._keep[lo:hi]
                    yield piece if mask.all() else piece.filter(pa.array(mask))


# --------------------------------------------------------------------------------------- committing
_OPAQUE = {"format": "", "file": "(rows without a source record)", "vendor": "", "market": "", "rows": 0}


def _stored_runs(manifest: dict) -> list[dict]:
    """The stored partition's rows as source runs, in row order. A partition written by anything but
    this module (no usable source record) counts as one anonymous run that sorts first."""
    rows = int(manifest.get("rows", 0))
    sources = (manifest.get("metadata") or {}).get("sources")
    ok = (
        isinstance(sources, list)
        and all(
            isinstance(s, dict) and isinstance(s.get("rows"), int) and isinstance(s.get("file"), str) for s in sources
        )
        and sum(s["rows"] for s in sources) == rows
    )
    if ok:
        return [
            dict(s, format=s.get("format", ""), vendor=s.get("vendor", ""), market=s.get("market", "")) for s in sources
        ]
    return [dict(_OPAQUE, rows=rows)] if rows else []


def _stored_batches(store: DatasetStore, table: str, date: dt.date, manifest: dict) -> Iterator[pa.RecordBatch]:
    pdir = store.partition_path(table, date)
    for f in manifest["files"]:
        with store.fs.open_input_file(posixpath.join(pdir, f["name"])) as fh:
            yield from pq.ParquetFile(fh).iter_batches(batch_size=65_536)


def _ascending(xs: list[int]) -> bool:
    return all(a < b for a, b in zip(xs, xs[1:], strict=False))


def commit_partition(
    store: DatasetStore,
    table: str,
    date: dt.date,
    *,
    schema: pa.Schema,
    runs: list[tuple[Source, int]],
    symbols: set[str],
    batches: Iterator[pa.RecordBatch],
    metadata: dict | None = None,
) -> dict:
    """Write one partition: the new ``runs`` (their rows, in run order, come from ``batches``) merged with the
    stored rows of other symbols and other files (see the module docstring). Returns row counts."""
    stored = store.read_manifest(table, date)
    new_keys = {s.key for s, _ in runs}
    plan: list[tuple[tuple[str, str], str, object, int, int, int]] = []  # (key, kind, what, start, end, rows)
    keep = np.zeros(0, dtype=bool)
    if stored is not None and stored.get("rows", 0):
        sym = store.read_partition(table, date, columns=["symbol"]).column("symbol")
        keep = ~pc.is_in(sym, value_set=pa.array(sorted(symbols), pa.string())).to_numpy(zero_copy_only=False)
        start = 0
        for run in _stored_runs(stored):
            end = start + run["rows"]
            key = (run["format"], run["file"])
            if key not in new_keys:
                kept = int(keep[start:end].sum())
                if kept:
                    plan.append((key, "stored", run, start, end, kept))
            start = end
    pos = 0
    for src, rows in runs:
        plan.append((src.key, "new", src, pos, pos + rows, rows))
        pos += rows
    ordered = sorted(plan, key=lambda p: p[0])
    # Both streams are read front to back, so each kind must stay in stream order. It does when files
    # are ingested in key order (discovery sorts by relative path); a stored record in another order
    # (not written by this module) is kept as it is, ahead of the new rows.
    if all(_ascending([p[3] for p in ordered if p[1] == kind]) for kind in ("stored", "new")):
        plan = ordered

    records = []
    for _key, kind, what, _s, _e, rows in plan:
        records.append(dict(what, rows=rows) if kind == "stored" else what.record(rows))
    kept_rows = sum(p[5] for p in plan if p[1] == "stored")

    def data() -> Iterator[pa.RecordBatch]:
        stored_rows = _Rows(_stored_batches(store, table, date, stored), keep) if kept_rows else None
        new_rows = _Rows(iter(batches))
        for _key, kind, _what, start, end, _rows in plan:
            yield from (stored_rows if kind == "stored" else new_rows).take(start, end)

    meta = {"sources": records, **(metadata or {})}
    info = store.write_partition(
        table, date, data(), schema=schema, metadata=meta, max_rows_per_file=rows_per_part(schema)
    )
    return {"table": table, "date": date.isoformat(), "rows": info.rows, "kept_rows": kept_rows}


def commit_spool(
    store: DatasetStore, spool: PartitionSpool, schemas: dict[str, pa.Schema], progress, task: str
) -> list[dict]:
    """Commit every (table, day) group of ``spool`` (by day, then table) and free it as it goes."""
    out = []
    for key in spool.groups():
        table, day = key
        date = day_date(day)
        out.append(
            commit_partition(
                store,
                table,
                date,
                schema=schemas[table],
                runs=spool.runs(key),
                symbols=spool.symbols(key),
                batches=spool.batches(key),
            )
        )
        spool.release(key)
        progress.advance(task, 1, f"{table} {date.isoformat()}")
    return out
