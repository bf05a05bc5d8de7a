"""Progress reporting that the library can use without knowing about terminals.

Library functions take a :class:`Progress` (default :data:`SILENT`); the CLI passes :func:`rich_progress`, which
draws bars with counts, rates and an ETA.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class Task(Protocol):
    def advance(self, n: int = 1) -> None: ...


class Progress(Protocol):
    def task(self, description: str, total: int | None) -> Task: ...

    def log(self, message: str) -> None: ...


class _NullTask:
    def advance(self, n: int = 1) -> None:
        pass


class _Silent:
    def task(self, description: str, total: int | None) -> Task:
        return _NullTask()

    def log(self, message: str) -> None:
        pass


SILENT: Progress = _Silent()


class _RichTask:
    def __init__(self, bar, task_id) -> None:
        self._bar = bar
        self._id = task_id

    def advance(self, n: int = 1) -> None:
        self._bar.advance(self._id, n)


class _RichProgress:
    def __init__(self, bar, console) -> None:
        self._bar = bar
        self._console = console

    def task(self, description: str, total: int | None) -> Task:
        return _RichTask(self._bar, self._bar.add_task(description, total=total))

    def log(self, message: str) -> None:
        self._console.print(message)


@contextmanager
def rich_progress(console=None) -> Iterator[Progress]:
    """Progress bars on the given rich console (stderr by default)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import (
        Progress as Bars,
    )

    console = console or Console(stderr=True)
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Bars(*columns, console=console, transient=False) as bar:
        yield _RichProgress(bar, console)
