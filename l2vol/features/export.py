"""Export the committed ``factors`` table into the Parquet layout Feast's offline stores read.

The factor store commits a date partition with a ``_manifest.json`` (DESIGN §2); Feast's file sources
cannot honour manifests, and a feature view reads one family. So each committed date of ``factors`` is
split by family into ``<root>/<family>/<YYYY-MM-DD>.parquet`` (symbol, ts, the family's factors):

* one file per date and family: a re-run replaces exactly the dates that changed, and a reader globbing
  ``<family>/*.parquet`` sees only whole files (local: written under ``<root>/_staging/`` then renamed
  in place, an atomic rename; S3: one PUT per object);
* incremental and idempotent: ``<root>/_export_state.json`` records, per date, the fingerprint of the
  source manifest (content hashes of its part files); a date whose fingerprint and files are unchanged
  is skipped, a changed one is rewritten, and a date that disappeared from the source is removed.

Rows are sorted by (symbol, ts) so a point-in-time join scans runs of one symbol; ``ts`` is stored in
microseconds (see :data:`TS_TYPE`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import posixpath
import time
import uuid

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from l2vol.factors.engine import FACTORS_TABLE
from l2vol.factors.registry import FAMILIES, REGISTRY
from l2vol.storage import DatasetStore
from l2vol.storage.uri import open_filesystem

STATE_FILE = "_export_state.json"
STAGING_DIR = "_staging"
EXPORT_VERSION = 1
KEY_COLUMNS = ("symbol", "ts")
#: Microseconds: DuckDB (the offline engine) cannot cast TIMESTAMPTZ_NS in its point-in-time SQL, and bucket
#: ends are whole seconds, so nothing is lost.
TS_TYPE = pa.timestamp("us", tz="UTC")


def family_columns() -> dict[str, list[str]]:
    """Factor names per family, as the feature views declare them."""
    return {fam: REGISTRY.names(fam) for fam in FAMILIES}


def _fingerprint(manifest: dict) -> str:
    files = [(f["name"], f["sha256"], f["rows"]) for f in manifest["files"]]
    payload = json.dumps({"v": EXPORT_VERSION, "files": files, "schema": manifest.get("schema")}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


class _Target:
    """The export root on a local disk or S3 (atomic whole-file writes on both)."""

    def __init__(self, root: str):
        self.uri = root
        self.fs, path = open_filesystem(root)
        self.root = path.rstrip("/")
        self.local = isinstance(self.fs, pafs.LocalFileSystem)

    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def put(self, rel: str, payload: bytes) -> None:
        dst = self.path(rel)
        if not self.local:
            with self.fs.open_output_stream(dst) as f:
                f.write(payload)
            return
        self.fs.create_dir(posixpath.dirname(dst), recursive=True)
        self.fs.create_dir(self.path(STAGING_DIR), recursive=True)
        tmp = self.path(STAGING_DIR, f"{uuid.uuid4().hex}.tmp")
        try:
            with self.fs.open_output_stream(tmp) as f:
                f.write(payload)
            self.fs.move(tmp, dst)
        except BaseException:
            if self.exists(tmp):
                self.fs.delete_file(tmp)
            raise

    def get(self, rel: str) -> bytes | None:
        try:
            with self.fs.open_input_stream(self.path(rel)) as f:
                return f.read()
        except (FileNotFoundError, OSError):
            return None

    def exists(self, path: str) -> bool:
        return self.fs.get_file_info(path).type == pafs.FileType.File

    def delete(self, rel: str) -> None:
        if self.exists(self.path(rel)):
            self.fs.delete_file(self.path(rel))


def _date_file(family: str, d: dt.date) -> str:
    return f"{family}/{d.isoformat()}.parquet"


def export_offline(
    src: DatasetStore,
    root: str,
    *,
    start: dt.date | str | None = None,
    end: dt.date | str | None = None,
    full: bool = False,
) -> dict:
    """Write the committed ``factors`` partitions of ``src`` in [start, end] to ``root`` as
    ``<family>/<YYYY-MM-DD>.parquet`` (see the module docstring). ``full`` rewrites every date.

    Every factor the feature views declare must be a column of the partition (a factor table built with
    a factor subset cannot back the views; the error names the partition and the missing factors).
    Returns a summary: dates written, skipped and removed, rows, bytes, seconds.
    """
    t0 = time.perf_counter()
    target = _Target(root)
    state_raw = target.get(STATE_FILE)
    state = json.loads(state_raw) if state_raw else {"version": EXPORT_VERSION, "dates": {}}
    if state.get("version") != EXPORT_VERSION:
        state = {"version": EXPORT_VERSION, "dates": {}}
    families = family_columns()
    dates = src.list_dates(FACTORS_TABLE, start, end)
    lo = dt.date.fromisoformat(str(start)) if start is not None else None
    hi = dt.date.fromisoformat(str(end)) if end is not None else None
    summary = {"root": root, "written": [], "skipped": 0, "removed": [], "rows": 0, "bytes": 0}

    # Dates exported earlier whose source partition is gone (in the requested range): remove them.
    present = {d.isoformat() for d in dates}
    for ds in sorted(state["dates"]):
        d = dt.date.fromisoformat(ds)
        if ds in present or (lo and d < lo) or (hi and d > hi):
            continue
        for fam in families:
            target.delete(_date_file(fam, d))
        del state["dates"][ds]
        summary["removed"].append(ds)

    for d in dates:
        man = src.read_manifest(FACTORS_TABLE, d)
        if man is None:  # uncommitted between listing and reading
            continue
        fp = _fingerprint(man)
        done = state["dates"].get(d.isoformat())
        if (
            not full
            and done is not None
            and done.get("fingerprint") == fp
            and all(target.exists(target.path(_date_file(fam, d))) for fam in families)
        ):
            summary["skipped"] += 1
            continue
        available = {name for name, _ in man.get("schema", [])}
        missing = sorted({c for cols in families.values() for c in cols} - available)
        if missing:
            raise ValueError(
                f"{src.display(src.partition_path(FACTORS_TABLE, d))}: factors {missing} are declared by the "
                "feature views but not in the partition (build factors with every registered factor)"
            )
        table = src.read_partition(FACTORS_TABLE, d)
        table = table.sort_by([("symbol", "ascending"), ("ts", "ascending")])
        ts_idx = table.schema.get_field_index("ts")
        table = table.set_column(ts_idx, table.schema.field("ts").with_type(TS_TYPE), table["ts"].cast(TS_TYPE))
        for fam, cols in families.items():
            buf = io.BytesIO()
            pq.write_table(table.select([*KEY_COLUMNS, *cols]), buf, compression="zstd")
            payload = buf.getvalue()
            target.put(_date_file(fam, d), payload)
            summary["bytes"] += len(payload)
        state["dates"][d.isoformat()] = {"fingerprint": fp, "rows": table.num_rows}
        # Recorded after the date's files: a crash in between only makes the next run redo this date.
        target.put(STATE_FILE, json.dumps(state, indent=1, sort_keys=True).encode())
        summary["written"].append(d.isoformat())
        summary["rows"] += table.num_rows
    if summary["removed"]:
        target.put(STATE_FILE, json.dumps(state, indent=1, sort_keys=True).encode())
    summary["families"] = {fam: len(cols) for fam, cols in families.items()}
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    return summary


def read_exported(root: str, family: str) -> pa.Table:
    """All exported rows of ``family`` (a check for tests and tools; Feast reads the files itself)."""
    target = _Target(root)
    sel = pafs.FileSelector(target.path(family), allow_not_found=True)
    files = sorted(i.path for i in target.fs.get_file_info(sel) if i.path.endswith(".parquet"))
    return pa.concat_tables([pq.read_table(f, filesystem=target.fs) for f in files])
