"""Running ``livegraft`` in the test process and reading what it printed."""

from __future__ import annotations

import contextlib
import io
import json
import time
from dataclasses import dataclass
from typing import Any

from livegraft.pipeline.cli import main


@dataclass
class Run:
    status: int
    out: str
    err: str
    seconds: float

    @property
    def items(self) -> list[dict[str, Any]]:
        """The JSON array a ``--json`` stage prints: one object per cell or package."""
        value: list[dict[str, Any]] = json.loads(self.out)
        return value

    @property
    def cells(self) -> list[dict[str, Any]]:
        return self.items

    def cell(self, uname_r: str) -> dict[str, Any]:
        return next(c for c in self.items if c["uname_r"] == uname_r)

    @property
    def packages(self) -> list[dict[str, Any]]:
        return self.items

    def package(self, kind: str) -> dict[str, Any]:
        return next(p for p in self.items if p["format"] == kind)


def livegraft(*argv: str) -> Run:
    """``livegraft ARGV`` in this process (its own output captured), timed."""
    out, err = io.StringIO(), io.StringIO()
    started = time.monotonic()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(argv))
    return Run(status, out.getvalue(), err.getvalue(), time.monotonic() - started)
