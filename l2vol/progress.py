"""Progress reporting for long work, decoupled from the terminal.

Library functions take ``progress: Progress | None`` and call ``task(...)``/``advance(...)``; the CLI
passes a rich progress bar (:func:`l2vol.cli`), tests and pipelines pass nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol


class Progress(Protocol):
    def task(self, name: str, total: int | None) -> None:
        """Start (or restart) a task of ``total`` units (None = unknown)."""

    def advance(self, name: str, n: int = 1, note: str = "") -> None:
        """Mark ``n`` more units of task ``name`` done; ``note`` says what was just done."""


class NullProgress:
    def task(self, name: str, total: int | None) -> None:
        pass

    def advance(self, name: str, n: int = 1, note: str = "") -> None:
        pass


def ensure(progress: Progress | None) -> Progress:
    return NullProgress() if progress is None else progress


class RichProgress:
    """:class:`Progress` on a rich progress bar (the CLIs draw it on stderr)."""

    def __init__(self, progress: Any):
        self._p = progress
        self._tasks: dict[str, int] = {}

    def task(self, name: str, total: int | None) -> None:
        if name in self._tasks:
            self._p.reset(self._tasks[name], total=total)
        else:
            self._tasks[name] = self._p.add_task(name, total=total)

    def advance(self, name: str, n: int = 1, note: str = "") -> None:
        if name not in self._tasks:
            self.task(name, None)
        desc = f"{name} [dim]{note}[/dim]" if note else name
        self._p.update(self._tasks[name], advance=n, description=desc)


@contextmanager
def rich_progress(console: Any, *, enabled: bool = True) -> Iterator[Progress]:
    """A :class:`RichProgress` drawn on ``console`` (a rich Console) while the block runs; a
    :class:`NullProgress` when not ``enabled`` (e.g. ``--json`` output)."""
    if not enabled:
        yield NullProgress()
        return
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as _Bar

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with _Bar(*columns, console=console, transient=False) as bar:
        yield RichProgress(bar)
