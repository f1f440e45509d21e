"""The terminal console for tables and progress."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table


def console() -> Console:
    # Piped output has no width; rich would assume 80 columns and cut kernel names,
    # which are exactly what a reader greps for.
    return Console() if sys.stdout.isatty() else Console(width=240)


def print_cells(
    title: str, detail: str, rows: Sequence[tuple[str, int, str, str]], *, done: str, tail: str
) -> None:
    """A stage's outcome per cell (kernel build, level, status, detail), then the counts.

    Build and verify print the same shape; ``done`` is the stage's word for success.
    """
    out = console()
    table = Table(title=title)
    for column in ("kernel build", "level", "status"):
        table.add_column(column, no_wrap=True)
    # Paths and compiler messages are what a reader copies: folded, never cut.
    table.add_column(detail, overflow="fold")
    styles = {done: "green", "cached": "cyan", "failed": "red"}
    for build, level, status, text in rows:
        table.add_row(build, str(level), f"[{styles[status]}]{status}[/]", text)
    out.print(table)
    counts = {s: sum(1 for row in rows if row[2] == s) for s in styles}
    out.print(
        f"{counts[done]} {done}, {counts['cached']} cached, {counts['failed']} failed; {tail}",
        highlight=False,
    )
