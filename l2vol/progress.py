"""Progress reporting for long work, decoupled from the terminal.

Library functions take ``progress: Progress | None`` and call ``task(...)``/``advance(...)``; the CLI
passes a rich progress bar (:func:`l2vol.cli`), tests and pipelines pass nothing.
"""

from __future__ import annotations

from typing import Protocol


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
