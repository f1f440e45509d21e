"""The terminal console for tables and progress."""

from __future__ import annotations

import sys

from rich.console import Console


def console() -> Console:
    # Piped output has no width; rich would assume 80 columns and cut kernel names,
    # which are exactly what a reader greps for.
    return Console() if sys.stdout.isatty() else Console(width=240)
