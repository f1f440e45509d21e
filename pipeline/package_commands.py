"""``livegraft package``: each verified cell's module as the RPM and/or DEB the config asks.

The cells are the plan ``build`` and ``verify`` work on (``build_commands.current_plan``).
Formats: ``[packages] formats`` in the config, else each build's own family (a DEB for a
Debian kernel, an RPM for an RPM kernel). Packages go to ``<work_dir>/packages/``, their
records beside them (``package.records``: what ``livegraft index`` reads). RPMs are
signed by the archive key (``signing.gpg``), loaded only when an RPM is to be built.
The client packages (``livegraft-client``, for RPM the dnf plugin, for DEB the apt hook)
are built from the source tree once per format that some cell is packaged in, and listed
last.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from livegraft.signing.certificate import Certificate
from livegraft.signing.gpg import ArchiveSigner, load_archive_signer
from livegraft.signing.module_key import configured_certificate
from rich.table import Table

from .build.runner import default_jobs
from .build_commands import current_plan, open_store
from .console import console
from .package.records import packages_dir
from .package.stage import Packager, PackageResult
from .plan_commands import _common


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "package", help="package every verified cell's module as RPM and/or DEB, RPMs signed"
    )
    _common(p)
    p.add_argument("--json", action="store_true", help="print one JSON object per package")
    p.set_defaults(func=cmd_package)


def cmd_package(args: argparse.Namespace) -> int:
    config, plan = current_plan(args, None)

    def signer() -> ArchiveSigner:
        return load_archive_signer(config.signing, config.work_dir, name=config.name)

    def certificate() -> Certificate | None:
        return configured_certificate(config.signing, config.work_dir)

    packager = Packager(
        store=open_store(config),
        work_dir=config.work_dir,
        settings=config.packages,
        vendor=config.packages.vendor or config.name,
        signer=signer,
        certificate=certificate,
        jobs=default_jobs(),
    )
    try:
        results = packager.package(plan.cells)
    finally:
        packager.close()
    if args.json:
        sys.stdout.write(json.dumps([r.to_json() for r in results], indent=1) + "\n")
    else:
        _print_results(results, str(packages_dir(config.work_dir)))
    return 0


def _print_results(results: list[PackageResult], where: str) -> None:
    out = console()
    table = Table(title="package")
    for column in ("kernel build", "level", "format", "status"):
        table.add_column(column, no_wrap=True)
    table.add_column("package / reason", overflow="fold")
    styles = {"built": "green", "cached": "cyan", "skipped": "yellow"}
    for r in results:
        detail = r.reason if r.status == "skipped" else (r.path.name if r.path else "")
        if r.cell is None:
            # A client package: no kernel build; its revision stands where a level would.
            what, level = f"client: {r.name}", f"r{r.revision}"
        else:
            what = f"{r.cell.build.uname_r} ({r.cell.build.package_version})"
            level = str(r.cell.level)
        table.add_row(
            what,
            level,
            r.type,
            f"[{styles[r.status]}]{r.status}[/]",
            detail,
        )
    out.print(table)
    counts = {s: sum(1 for r in results if r.status == s) for s in styles}
    out.print(
        f"{counts['built']} built, {counts['cached']} cached, {counts['skipped']} skipped "
        f"(only verified modules are packaged); packages in {where}",
        highlight=False,
    )
