"""Partitioned Parquet datasets on a URI (``file://`` or ``s3://``), committed by manifests.

Layout under the store root::

    table=<name>/date=YYYY-MM-DD/part-<content-hash>.parquet
    table=<name>/date=YYYY-MM-DD/_manifest.json      <- written last: commits the partition

A partition is visible only once its ``_manifest.json`` exists, and readers read exactly the files the
manifest lists, so a write that crashes mid-partition leaves nothing visible. Part files are named by
their content hash, so re-writing the same data produces the same files and the same manifest
(idempotent). Every file is written whole or not at all (a temporary file renamed into place on local
disks, a single PUT on S3), so re-writing a committed part never exposes a half-written file. Replacing
a partition writes the new parts, swaps the manifest and only then deletes parts that the new manifest
no longer lists. Parts left behind by crashed writes are invisible; :meth:`DatasetStore.gc` removes them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import posixpath
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from l2vol.storage.uri import StoreError, open_filesystem

MANIFEST = "_manifest.json"
MANIFEST_VERSION = 1
_TMP = ".tmp-"  # infix of temporary files renamed into place (local disks)


@dataclass(frozen=True)
class PartitionInfo:
    table: str
    date: dt.date
    rows: int
    files: tuple[str, ...]
    manifest: dict


def _date(d: dt.date | str) -> dt.date:
    if isinstance(d, dt.datetime):  # also pandas.Timestamp: its calendar date, not an ISO datetime
        return d.date()
    return d if isinstance(d, dt.date) else dt.date.fromisoformat(str(d))


class DatasetStore:
    """A store of date-partitioned tables at ``uri``.

    ``file:///abs/path`` or a plain path for local disks; ``s3://bucket/prefix`` for MinIO, SeaweedFS,
    AWS or any S3-compatible endpoint (endpoint, credentials and TLS come from the environment, see
    :func:`l2vol.storage.uri.open_filesystem`).
    """

    def __init__(self, uri: str, *, filesystem: pafs.FileSystem | None = None):
        self.uri = uri
        fs, root = open_filesystem(uri) if filesystem is None else (filesystem, uri)
        self.fs: pafs.FileSystem = fs
        self.root = root.rstrip("/")
        self._is_local = isinstance(self.fs, pafs.LocalFileSystem)

    def __repr__(self) -> str:
        return f"DatasetStore({self.uri!r})"

    # ------------------------------------------------------------------ paths
    def _path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def partition_path(self, table: str, date: dt.date | str) -> str:
        return self._path(f"table={table}", f"date={_date(date).isoformat()}")

    def display(self, path: str) -> str:
        """A user-facing location for ``path`` (s3://bucket/key or a local path)."""
        return f"s3://{path}" if self.uri.startswith("s3://") else path

    # ----------------------------------------------------------------- writes
    def write_partition(
        self,
        table: str,
        date: dt.date | str,
        data: pa.Table | Iterable[pa.RecordBatch | pa.Table],
        *,
        schema: pa.Schema | None = None,
        metadata: dict | None = None,
        max_rows_per_file: int = 2_000_000,
    ) -> PartitionInfo:
        """Write (or replace) one date partition of ``table`` and commit it with a manifest.

        ``data`` is a table, a record batch or an iterable of batches/tables (streamed: at most
        ``max_rows_per_file`` rows are buffered, and each part file holds at most that many rows).
        ``schema`` (when given) is enforced, otherwise the first chunk's schema is: chunks are cast to it
        and a mismatch raises ``ValueError`` naming the table and date. ``metadata`` is stored in the
        manifest. If the write fails or the process dies, the previously committed version (if any)
        stays visible and unchanged.
        """
        if max_rows_per_file < 1:
            raise ValueError(f"max_rows_per_file must be >= 1, got {max_rows_per_file}")
        date = _date(date)
        pdir = self.partition_path(table, date)
        self._mkdir(pdir)
        chunks = [data] if isinstance(data, pa.Table | pa.RecordBatch) else data
        files: list[dict] = []
        written: list[str] = []
        buf: list[pa.Table] = []
        buffered = 0
        out_schema = schema

        def flush() -> None:
            nonlocal buf, buffered
            if not buf:
                return
            tbl = pa.concat_tables(buf) if len(buf) > 1 else buf[0]
            buf, buffered = [], 0
            payload = _to_parquet_bytes(tbl)
            digest = hashlib.sha256(payload).hexdigest()
            name = f"part-{len(files):04d}-{digest[:16]}.parquet"
            # Atomic even though the name is new to this write: an idempotent re-write produces the
            # names the committed manifest lists, and must not truncate them in place.
            self._put_bytes(posixpath.join(pdir, name), payload, atomic=True)
            written.append(name)
            files.append({"name": name, "rows": tbl.num_rows, "bytes": len(payload), "sha256": digest})

        try:
            for chunk in chunks:
                tbl = chunk if isinstance(chunk, pa.Table) else pa.Table.from_batches([chunk])
                if out_schema is None:
                    out_schema = tbl.schema
                tbl = _enforce_schema(tbl, out_schema, table, date)
                offset = 0
                while offset < tbl.num_rows:  # split chunks so no part exceeds max_rows_per_file
                    piece = tbl.slice(offset, max_rows_per_file - buffered)
                    offset += piece.num_rows
                    buf.append(piece)
                    buffered += piece.num_rows
                    if buffered >= max_rows_per_file:
                        flush()
            flush()
            if not files:  # an empty partition is still committed (e.g. a day with no trades)
                empty = pa.Table.from_batches([], schema=out_schema) if out_schema is not None else pa.table({})
                payload = _to_parquet_bytes(empty)
                digest = hashlib.sha256(payload).hexdigest()
                name = f"part-0000-{digest[:16]}.parquet"
                self._put_bytes(posixpath.join(pdir, name), payload, atomic=True)
                written.append(name)
                files.append({"name": name, "rows": 0, "bytes": len(payload), "sha256": digest})
        except BaseException:
            # Nothing is committed; remove what this attempt wrote unless an older manifest lists it.
            self._remove_unlisted(pdir, written)
            raise

        manifest = {
            "version": MANIFEST_VERSION,
            "table": table,
            "date": date.isoformat(),
            "rows": sum(f["rows"] for f in files),
            "files": files,
            "schema": _schema_fingerprint(out_schema),
            "metadata": metadata or {},
        }
        old = self.read_manifest(table, date)
        self._put_bytes(posixpath.join(pdir, MANIFEST), _json_bytes(manifest), atomic=True)
        if old is not None:
            keep = {f["name"] for f in files}
            for f in old["files"]:
                if f["name"] not in keep:
                    self._delete(posixpath.join(pdir, f["name"]))
        return PartitionInfo(table, date, manifest["rows"], tuple(f["name"] for f in files), manifest)

    def delete_partition(self, table: str, date: dt.date | str) -> bool:
        """Uncommit (manifest first) and delete a partition. Returns False if it did not exist."""
        pdir = self.partition_path(table, date)
        man = self.read_manifest(table, date)
        if man is None:
            return False
        self._delete(posixpath.join(pdir, MANIFEST))
        for f in man["files"]:
            self._delete(posixpath.join(pdir, f["name"]))
        return True

    # ------------------------------------------------------------------ reads
    def read_manifest(self, table: str, date: dt.date | str) -> dict | None:
        path = posixpath.join(self.partition_path(table, date), MANIFEST)
        raw = self._get_bytes(path, missing_ok=True)
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise StoreError(f"{self.display(path)}: corrupt manifest ({exc})") from exc

    def list_tables(self) -> list[str]:
        """Tables with at least one committed partition, sorted."""
        return [t for t in self._table_dirs() if self.list_dates(t)]

    def _table_dirs(self) -> list[str]:
        infos = self._ls(self.root)
        return sorted(
            i.base_name.split("=", 1)[1]
            for i in infos
            if i.type == pafs.FileType.Directory and i.base_name.startswith("table=")
        )

    def list_dates(
        self, table: str, start: dt.date | str | None = None, end: dt.date | str | None = None
    ) -> list[dt.date]:
        """Committed partition dates of ``table`` in [start, end] (inclusive), sorted.

        One recursive listing (a few paged LIST requests on S3) rather than a request per date.
        """
        tdir = self._path(f"table={table}")
        lo = _date(start) if start is not None else None
        hi = _date(end) if end is not None else None
        out = []
        for i in self._ls(tdir, recursive=True):
            if i.type != pafs.FileType.File or i.base_name != MANIFEST:
                continue
            parent = posixpath.dirname(i.path)
            if posixpath.dirname(parent) != tdir or not posixpath.basename(parent).startswith("date="):
                continue
            try:
                d = _date(posixpath.basename(parent).split("=", 1)[1])
            except ValueError:  # not a directory this store wrote
                continue
            if (lo and d < lo) or (hi and d > hi):
                continue
            out.append(d)
        return sorted(out)

    def read_partition(
        self,
        table: str,
        date: dt.date | str,
        *,
        columns: Sequence[str] | None = None,
        symbols: Sequence[str] | None = None,
    ) -> pa.Table:
        """Read one committed partition (only manifest-listed files), projecting ``columns`` and
        filtering ``symbols`` (pushed down to Parquet row groups)."""
        man = self.read_manifest(table, date)
        if man is None:
            raise StoreError(f"{self.display(self.partition_path(table, date))}: no committed partition")
        pdir = self.partition_path(table, date)
        paths = [posixpath.join(pdir, f["name"]) for f in man["files"]]
        cols = list(columns) if columns is not None else None
        known = [name for name, _ in man.get("schema", [])]
        if not known and man["rows"] == 0:  # empty partition committed without a schema
            return pa.table({})
        wanted = [*(cols or []), *(["symbol"] if symbols is not None else [])]
        unknown = [c for c in dict.fromkeys(wanted) if c not in known]
        if unknown:
            raise ValueError(f"{self.display(pdir)}: no column(s) {unknown}; the partition has {known}")
        if symbols is not None and cols is not None and "symbol" not in cols:
            read_cols = [*cols, "symbol"]
        else:
            read_cols = cols
        filt = pc.field("symbol").isin(list(symbols)) if symbols is not None else None
        parts = []
        for p in paths:
            try:
                t = pq.read_table(p, filesystem=self.fs, columns=read_cols, filters=filt)
            except (OSError, pa.ArrowException) as exc:  # missing, truncated or corrupt (ArrowInvalid)
                raise StoreError(f"{self.display(p)}: cannot read committed part ({exc})") from exc
            parts.append(t)
        tbl = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
        if read_cols is not None and cols is not None and read_cols != cols:
            tbl = tbl.select(cols)
        return tbl

    def iter_partitions(
        self,
        table: str,
        start: dt.date | str | None = None,
        end: dt.date | str | None = None,
        *,
        columns: Sequence[str] | None = None,
        symbols: Sequence[str] | None = None,
    ) -> Iterator[tuple[dt.date, pa.Table]]:
        """Stream committed partitions in date order: memory stays bounded by one date."""
        for d in self.list_dates(table, start, end):
            yield d, self.read_partition(table, d, columns=columns, symbols=symbols)

    def read(
        self,
        table: str,
        start: dt.date | str | None = None,
        end: dt.date | str | None = None,
        *,
        columns: Sequence[str] | None = None,
        symbols: Sequence[str] | None = None,
    ) -> pa.Table:
        """Read a date range [start, end] of ``table`` into one Arrow table."""
        parts = [t for _, t in self.iter_partitions(table, start, end, columns=columns, symbols=symbols)]
        if not parts:
            raise StoreError(f"{self.display(self._path(f'table={table}'))}: no committed partitions in range")
        return pa.concat_tables(parts, promote_options="default")

    # -------------------------------------------------------------- artifacts
    def write_bytes(self, relpath: str, payload: bytes) -> str:
        """Write an artifact (report, manifest) atomically at ``relpath`` under the root; returns its location."""
        path = self._path(relpath)
        self._mkdir(posixpath.dirname(path))
        self._put_bytes(path, payload, atomic=True)
        return self.display(path)

    def write_json(self, relpath: str, obj) -> str:
        return self.write_bytes(relpath, _json_bytes(obj))

    def read_bytes(self, relpath: str) -> bytes:
        path = self._path(relpath)
        raw = self._get_bytes(path, missing_ok=True)
        if raw is None:
            raise StoreError(f"{self.display(path)}: not found")
        return raw

    def read_json(self, relpath: str):
        return json.loads(self.read_bytes(relpath))

    def exists(self, relpath: str) -> bool:
        return self._exists(self._path(relpath))

    def list_files(self, prefix: str) -> list[str]:
        """Relative paths of the files under ``prefix`` (recursive, sorted); empty when there is none."""
        base = self._path(prefix)
        infos = self._ls(base, recursive=True)
        root = self.root + "/"
        return sorted(i.path.removeprefix(root) for i in infos if i.type == pafs.FileType.File)

    def location(self, relpath: str = "") -> str:
        return self.display(self._path(relpath)) if relpath else self.uri

    def gc(self, *, older_than_s: float = 3600.0) -> list[str]:
        """Delete part and temporary files that no manifest lists (left by crashed or replaced writes).

        Only files last modified at least ``older_than_s`` seconds ago are removed, because a write in
        progress has parts that no manifest lists yet; deleting them would commit a partition whose
        files are gone. Use ``older_than_s=0`` only when no writer is running. Returns the removed
        locations.
        """
        removed = []
        now = time.time()
        for table in self._table_dirs():
            for i in self._ls(self._path(f"table={table}")):
                if i.type != pafs.FileType.Directory or not i.base_name.startswith("date="):
                    continue
                man_path = posixpath.join(i.path, MANIFEST)
                man_raw = self._get_bytes(man_path, missing_ok=True)
                try:
                    listed = {f["name"] for f in json.loads(man_raw)["files"]} if man_raw else set()
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    # Deleting against an unreadable manifest could remove committed data.
                    raise StoreError(f"{self.display(man_path)}: corrupt manifest, gc stopped ({exc})") from exc
                for f in self._ls(i.path):
                    orphan = f.base_name.startswith("part-") or f.base_name.startswith(MANIFEST + _TMP)
                    if f.type != pafs.FileType.File or not orphan or f.base_name in listed:
                        continue
                    if older_than_s > 0 and (f.mtime is None or now - f.mtime.timestamp() < older_than_s):
                        continue
                    self._delete(f.path)
                    removed.append(self.display(f.path))
        return removed

    # -------------------------------------------------------------- internals
    def _wrap(self, path: str, exc: Exception) -> StoreError:
        return StoreError(f"{self.display(path)}: {exc}")

    def _mkdir(self, path: str) -> None:
        if self._is_local:
            self.fs.create_dir(path, recursive=True)

    def _ls(self, path: str, *, recursive: bool = False) -> list[pafs.FileInfo]:
        try:
            return self.fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=recursive))
        except OSError as exc:
            raise self._wrap(path, exc) from exc

    def _exists(self, path: str) -> bool:
        try:
            return self.fs.get_file_info(path).type == pafs.FileType.File
        except OSError as exc:
            raise self._wrap(path, exc) from exc

    def _get_bytes(self, path: str, *, missing_ok: bool) -> bytes | None:
        try:
            with self.fs.open_input_stream(path) as f:
                return f.read()
        except FileNotFoundError:
            if missing_ok:
                return None
            raise StoreError(f"{self.display(path)}: not found") from None
        except OSError as exc:
            msg = str(exc)
            if missing_ok and ("NoSuchKey" in msg or "Path does not exist" in msg or "does not exist" in msg):
                return None
            raise self._wrap(path, exc) from exc

    def _put_bytes(self, path: str, payload: bytes, *, atomic: bool) -> None:
        try:
            if self._is_local and atomic:
                tmp = f"{path}{_TMP}{uuid.uuid4().hex}"
                try:
                    with self.fs.open_output_stream(tmp) as f:
                        f.write(payload)
                    _fsync_path(tmp)
                    self.fs.move(tmp, path)  # rename(2): atomic on POSIX
                except BaseException:
                    self._delete(tmp)
                    raise
                _fsync_path(posixpath.dirname(path))  # make the rename itself durable
            else:
                with self.fs.open_output_stream(path) as f:  # S3: one PUT, visible whole or not at all
                    f.write(payload)
        except OSError as exc:
            raise self._wrap(path, exc) from exc

    def _delete(self, path: str) -> None:
        try:
            self.fs.delete_file(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise self._wrap(path, exc) from exc

    def _remove_unlisted(self, pdir: str, names: list[str]) -> None:
        try:
            man_raw = self._get_bytes(posixpath.join(pdir, MANIFEST), missing_ok=True)
            listed = {f["name"] for f in json.loads(man_raw)["files"]} if man_raw else set()
            for n in names:
                if n not in listed:
                    self._delete(posixpath.join(pdir, n))
        except Exception:  # cleanup is best effort; gc() removes what is left
            pass


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _to_parquet_bytes(tbl: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(tbl, sink, compression="zstd", row_group_size=256_000, write_statistics=True)
    return sink.getvalue()


def _json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode()


def _schema_fingerprint(schema: pa.Schema | None) -> list[list[str]]:
    return [] if schema is None else [[f.name, str(f.type)] for f in schema]


def _enforce_schema(tbl: pa.Table, schema: pa.Schema, table: str, date: dt.date) -> pa.Table:
    if tbl.schema.equals(schema, check_metadata=False):
        # A table built with a non-nullable schema is not validated by Arrow; Parquet would refuse it.
        for field in schema:
            if not field.nullable and tbl.column(field.name).null_count:
                raise ValueError(f"table={table}/date={date}: non-nullable column {field.name!r} has nulls")
        return tbl
    missing = [n for n in schema.names if n not in tbl.column_names]
    extra = [n for n in tbl.column_names if n not in schema.names]
    if missing or extra:
        raise ValueError(
            f"table={table}/date={date}: columns do not match the schema (missing {missing}, unexpected {extra})"
        )
    try:
        return tbl.select(schema.names).cast(schema)
    # ArrowInvalid is a ValueError, ArrowTypeError a TypeError; nulls in a non-nullable field raise a
    # plain ValueError.
    except (ValueError, TypeError, pa.ArrowNotImplementedError) as exc:
        raise ValueError(f"table={table}/date={date}: cannot cast to the schema: {exc}") from exc
