"""``livegraft run``: every stage for one config, in order.

Each stage is the same one its own command runs; ``run`` only composes them. A cell that
fails to build or verify does not stop the others: what passed is packaged and published,
the report is still written, and the exit status says something failed. Only a failure
to assemble the tree itself keeps it from being published.
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
from .publish_commands import cmd_publish, default_args
from .verify_commands import DEFAULT_TIMEOUT, cmd_verify


def register(sub: argparse._SubParsersAction[Any]) -> None:
    r = sub.add_parser(
        "run",
        help="plan, build, verify, package, index, publish and report for one config",
        description=(
            "The whole pipeline for one config: plan (levels recorded), build and sign "
            "every cell, verify each on its real kernel in QEMU, package every verified "
            "module (RPMs signed), index them into the tree (<work_dir>/repo), publish it "
            "(--to, else [publish] to, else the folder <work_dir>/public), then write the "
            "coverage report as HTML into the work dir."
        ),
    )
    r.add_argument("--config", type=Path, required=True, help="the pipeline's TOML config")
    r.add_argument(
        "--errata", type=Path, action="append", default=[], metavar="PATH",
        help="more errata files or folders, besides the config's (repeatable)",
    )  # fmt: skip
    r.add_argument("--jobs", type=int, metavar="N", help="compiles and guests at a time")
    r.add_argument(
        "--to", metavar="DEST",
        help="publish to this folder or s3://bucket/prefix instead of [publish] to",
    )  # fmt: skip
    r.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    dest = args.to or config.publish_to
    # Before any work: a bucket with no base URL for its clients is refused now, not
    # after an hour of builds.
    url = config.publish_url(dest)
    common = {"config": args.config, "errata": args.errata, "json": False}
    status = cmd_plan(argparse.Namespace(**common))
    built = cmd_build(argparse.Namespace(**common, shard=None, jobs=args.jobs))
    verified = cmd_verify(
        argparse.Namespace(**common, shard=None, jobs=args.jobs, timeout=DEFAULT_TIMEOUT)
    )
    # Only verified modules are packaged: a cell that failed is skipped, not a failure here.
    packaged = cmd_package(argparse.Namespace(**common))
    # The tree in <work_dir>/repo; its clients/ point at where it is published.
    indexed = cmd_index(argparse.Namespace(**common, base_url=url, out=None))
    published = cmd_publish(default_args(args.config, dest)) if indexed == 0 else indexed
    report = config.work_dir / "report.html"
    cmd_report(argparse.Namespace(**{**common, "html": report}))
    return max(status, built, verified, packaged, indexed, published)
