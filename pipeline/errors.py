"""The two kinds of failure the CLI tells apart: bad input (exit 2) and failed work (exit 1)."""

from __future__ import annotations

import os


class LivegraftError(Exception):
    """Base of every error the CLI reports in one line without a traceback."""

    exit_status = 1


class InputError(LivegraftError):
    """Input that cannot be used: names the file, the field and what was expected."""

    exit_status = 2

    def __init__(
        self, path: str | os.PathLike[str] | None, field: str | None, expected: str
    ) -> None:
        self.path = os.fspath(path) if path is not None else None
        self.field = field
        self.expected = expected
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.path or "<input>"
        if self.field:
            where += f": {self.field}"
        return f"{where}: {self.expected}"


class WorkError(LivegraftError):
    """The input was fine but the work failed (a tool failed, a build broke)."""

    exit_status = 1
