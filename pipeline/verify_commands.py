"""``livegraft verify``: boot each plan cell's real kernel and prove its module there.

The cells are the plan ``livegraft build`` works on (``build_commands.current_plan``),
so ``--shard I/N`` verifies exactly the cells that shard built. Verify never builds: a
cell with no module in the store fails as "not built". What each cell needs and what
one boot proves is in ``verify.runner`` and ``verify.engine``; results are recorded
per artifact in ``<work_dir>/verify/`` (``verify.records``), which is what the package
stage reads.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from livegraft.signing.module_key import ModuleKey, load_module_key

from .build.runner import default_jobs, parse_shard, shard_cells
from .build_commands import current_plan, open_store
from .console import print_cells
from .errors import InputError
from .plan_commands import _common
from .progress import Reporter
from .verify.records import records_dir
from .verify.runner import CellOutcome, Verifier

DEFAULT_TIMEOUT = 180.0


def register(sub: argparse._SubParsersAction[Any]) -> None:
    v = sub.add_parser(
        "verify", help="boot each cell's real kernel in QEMU and prove its module there"
    )
    _common(v)
    v.add_argument("--shard", metavar="I/N", help="verify only shard I of N (1 <= I <= N)")
    v.add_argument(
        "--jobs",
        type=int,
        metavar="N",
        help="QEMU guests at a time (default and most: one per core)",
    )
    v.add_argument("--json", action="store_true", help="print one JSON object per cell")
    v.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="S",
        help=f"seconds one boot may take, checks included (default {DEFAULT_TIMEOUT:g})",
    )
    v.set_defaults(func=cmd_verify)


def cmd_verify(args: argparse.Namespace) -> int:
    shard = parse_shard(args.shard) if args.shard else None
    if args.jobs is not None and args.jobs < 1:
        raise InputError(None, "--jobs", "an integer >= 1")
    if not args.timeout > 0:
        raise InputError(None, "--timeout", "a number of seconds > 0")
    config, plan = current_plan(args, shard)
    cells = shard_cells(plan.cells, shard)
    verifier = Verifier(
        store=open_store(config),
        cache=config.cache_dir,
        work_dir=config.work_dir,
        timeout=args.timeout,
    )

    def key() -> ModuleKey:
        return load_module_key(
            config.signing, config.work_dir, config_path=config.path, name=config.name
        )

    # TCG guests are CPU-bound: more of them than cores only makes each one slower,
    # and a slow guest is one that times out.
    jobs = min(args.jobs or default_jobs(), default_jobs())
    with Reporter(len(cells), "verify") as reporter:
        results = verifier.verify(cells, jobs, key, reporter.done)
    if args.json:
        sys.stdout.write(json.dumps([r.to_json() for r in results], indent=1) + "\n")
    else:
        _print_results(results, shard, str(records_dir(config.work_dir)))
    return 1 if any(r.status == "failed" for r in results) else 0


def _print_results(results: list[CellOutcome], shard: tuple[int, int] | None, where: str) -> None:
    print_cells(
        "verify" + (f" (shard {shard[0]}/{shard[1]})" if shard else ""),
        "console log / reason",
        [
            (
                f"{r.cell.build.uname_r} ({r.cell.build.package_version})",
                r.cell.level,
                r.status,
                r.reason if r.status == "failed" else str(r.log or ""),
            )
            for r in results
        ],
        done="verified",
        tail=f"records in {where}",
    )
