"""The report as a terminal table (rich): one row per build, one column per vulnerability."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from .html import SYMBOLS
from .matrix import LABELS, STATUSES, Matrix

STYLES = {
    "fixed": "bold white on green",
    "livepatched": "bold white on blue",
    "affected": "bold white on red",
    "unaffected": "dim",
    "unknown": "black on yellow",
}


def print_table(matrix: Matrix, console: Console) -> None:
    table = Table(title=f"livepatch coverage: {matrix.name}", show_lines=False)
    table.add_column("kernel build", no_wrap=True)
    table.add_column("level", justify="right")
    for status in STATUSES:
        table.add_column(SYMBOLS[status], justify="right", header_style=STYLES[status])
    for v in matrix.vulns:
        table.add_column(v.id, justify="center", overflow="fold")
    for row in matrix.rows:
        counts = row.counts
        table.add_row(
            f"{row.build.uname_r} ({row.build.package_version})",
            str(row.level) if row.level is not None else "-",
            *(str(counts[s]) for s in STATUSES),
            *(Text(SYMBOLS[s], style=STYLES[s]) for s in row.statuses),
        )
    console.print(table)
    legend = Text()
    for status in STATUSES:
        legend.append(f" {SYMBOLS[status]} ", style=STYLES[status])
        legend.append(f" {LABELS[status]} {matrix.totals[status]}   ")
    console.print(legend)
