"""``livegraft kernels …``: see which kernel builds a distribution ships."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Sequence
from typing import Any

from rich.table import Table

from ..console import console
from .apt_source import discover_apt
from .filters import Filters
from .matrix import ordered
from .model import KernelBuild
from .rpm_source import discover_rpm


def register(sub: argparse._SubParsersAction[Any]) -> None:
    kernels = sub.add_parser(
        "kernels", help="the shipped-kernel matrix", description="The shipped-kernel matrix."
    )
    commands = kernels.add_subparsers(dest="kernels_command", required=True, metavar="COMMAND")
    discover = commands.add_parser(
        "discover",
        help="list the kernel builds apt's package lists or an RPM repository offer",
        description=(
            "List every kernel build (linux-headers-<abi>-<flavour> in apt's package lists, "
            "or kernel*-devel in an RPM repository's primary metadata) with its package "
            "version, upstream base, flavour, arch and where its packages come from."
        ),
    )
    discover.add_argument(
        "--from",
        dest="source",
        choices=("apt", "rpm"),
        default="apt",
        help="apt: the machine's apt configuration (APT_CONFIG honoured); rpm: --url",
    )
    discover.add_argument("--url", help="RPM repository: a folder, file:// or http(s):// URL")
    discover.add_argument(
        "--dist", action="append", default=[], help="keep this release (repeatable)"
    )
    discover.add_argument(
        "--arch",
        action="append",
        default=[],
        help="keep this arch, uname -m or dpkg name (repeatable)",
    )
    discover.add_argument(
        "--flavour",
        action="append",
        default=[],
        metavar="GLOB",
        help="keep flavours matching GLOB (repeatable)",
    )
    discover.add_argument(
        "--uname-r",
        action="append",
        default=[],
        metavar="GLOB",
        help="keep uname -r matching GLOB (repeatable)",
    )
    discover.add_argument("--json", action="store_true", help="print a JSON array of builds")
    discover.set_defaults(func=functools.partial(_discover, parser=discover))


def _discover(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.source == "rpm" and not args.url:
        parser.error("--from rpm needs --url")
    if args.source == "apt" and args.url:
        parser.error("--url goes with --from rpm; apt reads its own sources")
    filters = Filters(
        arch=tuple(args.arch),
        dist=tuple(args.dist),
        flavour=tuple(args.flavour),
        uname_r=tuple(args.uname_r),
    )
    found = discover_rpm(args.url, filters) if args.url else discover_apt(filters)
    builds = ordered(found)
    if args.json:
        json.dump([b.to_json() for b in builds], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _print_table(builds)
    return 0


def _print_table(builds: Sequence[KernelBuild]) -> None:
    out = console()
    plural = "" if len(builds) == 1 else "s"
    table = Table(title=f"{len(builds)} kernel build{plural}", title_justify="left")
    for column in (
        "uname -r",
        "package version",
        "upstream",
        "flavour",
        "arch",
        "dist",
        "source",
        "from",
    ):
        table.add_column(column, no_wrap=True)
    for b in builds:
        where = ", ".join(b.suites) if b.suites else b.origin
        table.add_row(
            b.uname_r,
            b.package_version,
            b.upstream_version,
            b.flavour,
            b.arch,
            b.dist,
            b.source_package,
            where,
        )
    out.print(table)
