"""``livegraft run``: every stage for one config, in order.

Each stage is the same one its own command runs; ``run`` only composes them. A cell that
fails to build or verify does not stop the others: the report is still written, and the
exit status says something failed.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .build_commands import cmd_build
from .config import load_config
from .index_commands import cmd_index
from .package_commands import cmd_package
from .plan_commands import cmd_plan, cmd_report
from .verify_commands import DEFAULT_TIMEOUT, cmd_verify


def register(sub: argparse._SubParsersAction[Any]) -> None:
    r = sub.add_parser(
        "run",
        help="plan, build, verify, package, index and report for one config",
        description=(
            "The whole pipeline for one config: plan (levels recorded), build and sign "
            "every cell, verify each on its real kernel in QEMU, package every verified "
            "module (RPMs signed), index them into the published tree (<work_dir>/repo), "
            "then write the coverage report as HTML into the work dir."
        ),
    )
    r.add_argument("--config", type=Path, required=True, help="the pipeline's TOML config")
    r.add_argument(
        "--errata", type=Path, action="append", default=[], metavar="PATH",
        help="more errata files or folders, besides the config's (repeatable)",
    )  # fmt: skip
    r.add_argument("--jobs", type=int, metavar="N", help="compiles and guests at a time")
    r.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    common = {"config": args.config, "errata": args.errata, "json": False}
    status = cmd_plan(argparse.Namespace(**common))
    built = cmd_build(argparse.Namespace(**common, shard=None, jobs=args.jobs))
    verified = cmd_verify(
        argparse.Namespace(**common, shard=None, jobs=args.jobs, timeout=DEFAULT_TIMEOUT)
    )
    # Only verified modules are packaged: a cell that failed is skipped, not a failure here.
    packaged = cmd_package(argparse.Namespace(**common))
    # The published tree in <work_dir>/repo; its clients/ point at [publish] base_url, else
    # at the tree's own file:// URL, so the embedded default needs no server.
    indexed = cmd_index(argparse.Namespace(**common, base_url=None, out=None))
    report = config.work_dir / "report.html"
    cmd_report(argparse.Namespace(**{**common, "html": report}))
    return max(status, built, verified, packaged, indexed)
