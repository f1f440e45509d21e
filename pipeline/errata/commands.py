"""``livegraft errata …``: what the loaded errata say about an upstream kernel version."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from ..console import console
from ..errors import InputError
from ..versions.kernel import EXPECTED, KernelVersion
from .load import load_errata
from .model import Verdict, Vulnerability

_STYLES = {"affected": "bold red", "unaffected": "green", "unknown": "yellow"}


def register(sub: argparse._SubParsersAction[Any]) -> None:
    errata = sub.add_parser(
        "errata",
        help="read vulnerability records (CVE JSON 5, OSV, Debian security tracker)",
        description="Read vulnerability records: CVE JSON 5, OSV, Debian security tracker.",
    )
    commands = errata.add_subparsers(dest="errata_command", required=True, metavar="COMMAND")
    status = commands.add_parser(
        "status",
        help="is an upstream kernel version affected by each vulnerability?",
        description=(
            "For every vulnerability in PATH: is the kernel.org version V affected, and "
            "which version fixes it on V's branch? PATH: CVE JSON 5 records (with their "
            ".dyad/.sha1/.vulnerable sidecars beside them), OSV records, Debian security "
            "tracker lists, or folders of them (searched recursively). Rejected and "
            "withdrawn records are skipped; records sharing a fix commit are one "
            "vulnerability."
        ),
    )
    status.add_argument(
        "--upstream-version",
        required=True,
        metavar="V",
        help="kernel.org version such as 6.1.94, 6.9 or 6.9-rc3",
    )
    status.add_argument(
        "--json",
        action="store_true",
        help="print a JSON array: id, upstream_version, status, fixed_version, aliases",
    )
    status.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    status.set_defaults(func=_status)


@dataclass(frozen=True)
class _Row:
    vuln: Vulnerability
    verdict: Verdict

    def to_json(self, given: str) -> dict[str, Any]:
        fixed = self.verdict.fixed_version
        return {
            "id": self.vuln.id,
            "upstream_version": given,
            "status": self.verdict.reported_status,
            "fixed_version": str(fixed) if fixed is not None else None,
            "aliases": list(self.vuln.aliases),
        }


def _status(args: argparse.Namespace) -> int:
    given: str = args.upstream_version
    version = KernelVersion.try_parse(given)
    if version is None:
        raise InputError(
            "command line", "--upstream-version", f"expected {EXPECTED}, got {given!r}"
        )
    # Everything is read and judged before anything is printed: a bad record further
    # down must not leave half a table behind.
    errata = load_errata(args.paths)
    rows = [
        _Row(vuln, vuln.status_at(version))
        for vuln in sorted(errata.vulnerabilities(), key=lambda v: v.id)
    ]
    if args.json:
        sys.stdout.write(json.dumps([row.to_json(given) for row in rows], indent=2) + "\n")
        return 0
    table = Table(title=f"Linux {given}: {len(rows)} vulnerabilities")
    table.add_column("id", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("fixed in", no_wrap=True)
    table.add_column("aliases")
    table.add_column("title", overflow="ellipsis", no_wrap=True)
    for row in rows:
        status = row.verdict.reported_status
        fixed = row.verdict.fixed_version
        # Text cells: titles may contain [brackets] that rich would read as markup.
        table.add_row(
            Text(row.vuln.id),
            Text(status, style=_STYLES[status]),
            Text(str(fixed) if fixed is not None else "-"),
            Text(", ".join(row.vuln.aliases)),
            Text(row.vuln.title),
        )
    console().print(table)
    return 0
