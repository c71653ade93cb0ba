"""Streaming, strictly checked CSV reading with errors that name the file, line and problem.

The fast path is pyarrow's streaming CSV reader with explicit column types and only the needed columns;
it never holds more than one block of the file. pyarrow's own errors do not say which line failed, so
on any parse or conversion error the file is re-scanned line by line (slow, error path only) from the
first line of the failing block to find and describe the first bad line.

Line numbers count every line of the file from 1, the header included. Records spanning lines (quoted
newlines) are not supported by the vendor formats here and are refused as malformed. Blank lines are
not skipped (that would shift line numbers): they arrive as all-null rows, which the loaders refuse.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv

from l2vol.data.loaders.errors import IngestError

#: Bytes per block read by pyarrow; also the granularity of streaming (one block in memory at a time).
BLOCK_SIZE = 4 << 20
_HEAD_LIMIT = 1 << 20


def check_not_empty_and_complete(path: Path, display: str) -> None:
    """Refuse an empty file and a file whose last line has no line terminator (a partial last line)."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise IngestError(display, None, f"cannot read the file ({exc.strerror})") from exc
    if size == 0:
        raise IngestError(display, 1, "empty file (0 bytes): expected a header line and data")
    with open(path, "rb") as f:
        f.seek(size - 1)
        last = f.read(1)
    if last != b"\n":
        lines = _count_lines(path)
        raise IngestError(
            display,
            lines,
            "last line has no line terminator: the file looks truncated (partial last line); "
            "re-fetch it, or end it with a newline if it is complete",
        )


def _count_lines(path: Path) -> int:
    n = 0
    last = b""
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (1 if last and last != b"\n" else 0)


def read_head(path: Path, display: str, encoding: str, delimiter: str, lines: int = 2) -> list[list[str]]:
    """The first ``lines`` lines, decoded and split into fields (header first). Blank files are refused."""
    with open(path, "rb") as f:
        raw = f.read(_HEAD_LIMIT)
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    parts = raw.split(b"\n", lines)[:lines]
    if len(parts) < lines and len(raw) == _HEAD_LIMIT:
        raise IngestError(display, 1, f"no line break in the first {_HEAD_LIMIT} bytes: not a line-based CSV file")
    out = []
    for i, part in enumerate(parts, start=1):
        try:
            text = part.decode(encoding).rstrip("\r")
        except UnicodeDecodeError as exc:
            raise IngestError(display, i, _encoding_problem(encoding, exc)) from exc
        if i == 1 and not text.strip():
            raise IngestError(display, 1, "empty header line: expected column names")
        out.append(next(csv.reader([text], delimiter=delimiter)) if text else [])
    return out


def _encoding_problem(encoding: str, exc: UnicodeDecodeError) -> str:
    return (
        f"not valid {encoding} text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start} of the line): "
        f"wrong encoding? the vendor profile expects {encoding}"
    )


def stream(
    path: Path,
    display: str,
    *,
    names: Sequence[str],
    has_header: bool,
    types: dict[str, pa.DataType],
    encoding: str = "utf-8",
    delimiter: str = ",",
    block_size: int = BLOCK_SIZE,
) -> Iterator[tuple[int, pa.RecordBatch]]:
    """Yield ``(line of the batch's first row, batch)`` with exactly the columns in ``types``.

    ``names`` are the file's column names (the header's, or given ones for headerless files). Empty
    fields become nulls; everything else must convert to its type or an :class:`IngestError` names the
    line, column and value.
    """
    read_opts = pacsv.ReadOptions(
        block_size=block_size,
        encoding=encoding,
        column_names=None if has_header else list(names),
        autogenerate_column_names=False,
    )
    parse_opts = pacsv.ParseOptions(delimiter=delimiter, ignore_empty_lines=False, newlines_in_values=False)
    convert_opts = pacsv.ConvertOptions(
        include_columns=list(types),
        column_types=types,
        null_values=[""],
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
        check_utf8=True,
    )
    line = 2 if has_header else 1
    try:
        reader = pacsv.open_csv(
            str(path), read_options=read_opts, parse_options=parse_opts, convert_options=convert_opts
        )
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            yield line, batch
            line += batch.num_rows
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise diagnose(
            path,
            display,
            exc,
            start_line=line,
            names=names,
            has_header=has_header,
            types=types,
            encoding=encoding,
            delimiter=delimiter,
        ) from exc


_INT = re.compile(r"[+-]?\d+")


def _value_ok(kind: pa.DataType, v: str) -> bool:
    if v == "":
        return True
    if pa.types.is_integer(kind):
        return _INT.fullmatch(v) is not None
    if pa.types.is_floating(kind):
        if "_" in v:
            return False
        try:
            float(v)
        except ValueError:
            return False
        return True
    if pa.types.is_timestamp(kind):
        try:
            dt.datetime.fromisoformat(v)
        except ValueError:
            return False
        return True
    return True


def _describe(kind: pa.DataType) -> str:
    if pa.types.is_integer(kind):
        return "an integer"
    if pa.types.is_floating(kind):
        return "a number"
    if pa.types.is_timestamp(kind):
        return "a date-time (YYYY-MM-DD HH:MM:SS[.fff])"
    return str(kind)


def diagnose(
    path: Path,
    display: str,
    exc: Exception,
    *,
    start_line: int,
    names: Sequence[str],
    has_header: bool,
    types: dict[str, pa.DataType],
    encoding: str,
    delimiter: str,
) -> IngestError:
    """Find and describe the first bad line at or after ``start_line`` (the slow, error-only path)."""
    index = {n: i for i, n in enumerate(names)}
    checks = [(index[n], n, t) for n, t in types.items() if n in index]
    expected = len(names)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if lineno < start_line or (has_header and lineno == 1):
                continue
            last = f.tell() == size
            if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]
            try:
                text = raw.decode(encoding).rstrip("\r\n")
            except UnicodeDecodeError as uexc:
                return IngestError(display, lineno, _encoding_problem(encoding, uexc))
            fields = next(csv.reader([text], delimiter=delimiter)) if text else []
            if len(fields) != expected:
                what = "(the header's)" if has_header else "(the format's)"
                problem = f"expected {expected} fields {what}, found {len(fields)}"
                if not text:
                    problem += " (empty line)"
                elif last:
                    problem += ": the file looks truncated (partial last line)"
                return IngestError(display, lineno, problem)
            for i, name, kind in checks:
                v = fields[i]
                if not _value_ok(kind, v):
                    return IngestError(display, lineno, f"column {name}: {v!r} is not {_describe(kind)}")
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return IngestError(display, None, f"cannot parse at or after line {start_line}: {msg}")
