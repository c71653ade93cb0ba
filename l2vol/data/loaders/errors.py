"""The one error type loaders raise for bad input files."""

from __future__ import annotations

from pathlib import Path


class IngestError(ValueError):
    """A source file that cannot be ingested: names the file, the row and the problem.

    ``row`` is the 1-based line in the file, header included, for CSV files (``unit="line"``), the
    1-based row for Parquet files (``unit="row"``), or None when the problem is the whole file.
    """

    def __init__(self, file: str | Path, row: int | None, problem: str, *, unit: str = "line"):
        self.file = str(file)
        self.row = row
        self.problem = problem
        where = self.file if row is None else f"{self.file}, {unit} {row}"
        super().__init__(f"{where}: {problem}")


class RowError(Exception):
    """Raised by vectorized conversions: ``index`` is the 0-based row in the batch being converted.

    Loaders turn it into an :class:`IngestError` with the line number in the file.
    """

    def __init__(self, index: int, problem: str):
        super().__init__(problem)
        self.index = int(index)
        self.problem = problem
