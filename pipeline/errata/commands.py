"""CLI subcommands (being written)."""

import argparse
from typing import Any


def register(sub: "argparse._SubParsersAction[Any]") -> None:
    return None
