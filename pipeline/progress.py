"""Per-cell progress of a stage on stderr, so that stdout stays the stage's result."""

from __future__ import annotations

import sys
import threading
from typing import Any, Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

from .plan import Cell


class Outcome(Protocol):
    """What a stage reports about one cell."""

    @property
    def cell(self) -> Cell: ...
    @property
    def status(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def seconds(self) -> float: ...


class Reporter:
    """A live bar on a terminal, one line per cell otherwise (CI logs)."""

    def __init__(self, total: int, stage: str = "build") -> None:
        self.total = total
        self.stage = stage
        self.count = 0
        self._lock = threading.Lock()
        self._progress: Progress | None = None
        self._task: Any = None
        if sys.stderr.isatty():
            self._progress = Progress(
                TextColumn(f"[bold]{stage}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
            )

    def __enter__(self) -> Reporter:
        if self._progress is not None:
            self._progress.start()
            self._task = self._progress.add_task("", total=self.total)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def done(self, r: Outcome) -> None:
        with self._lock:
            self.count += 1
            line = f"{r.status} {r.cell.build.uname_r} ({r.seconds:.1f} s)"
            if r.reason:
                line += f": {r.reason}"
            if self._progress is not None:
                self._progress.update(self._task, advance=1, description=r.cell.build.uname_r)
                if r.status == "failed":
                    self._progress.console.print(f"[red]{line}[/red]", highlight=False)
            else:
                print(f"livegraft: [{self.count}/{self.total}] {line}", file=sys.stderr)


class TransferReporter:
    """A live bar of objects and bytes sent, on a terminal only: in a log, the summary
    line that follows says it all (and errors stay one line)."""

    def __init__(self, stage: str = "publish") -> None:
        self.stage = stage
        self._lock = threading.Lock()
        self._progress: Progress | None = None
        self._task: Any = None
        self._count = 0
        self._total = 0
        if sys.stderr.isatty():
            self._progress = Progress(
                TextColumn(f"[bold]{stage}"),
                BarColumn(),
                TextColumn("{task.description}"),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
            )

    def __enter__(self) -> TransferReporter:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def plan(self, count: int, size: int) -> None:
        with self._lock:
            self._total = count
            if self._progress is not None:
                self._task = self._progress.add_task(f"0/{count} objects", total=size)

    def sent(self, size: int) -> None:
        with self._lock:
            self._count += 1
            if self._progress is not None and self._task is not None:
                self._progress.update(
                    self._task, advance=size, description=f"{self._count}/{self._total} objects"
                )
