"""``livegraft plan`` and ``livegraft report``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.table import Table

from .console import console
from .errors import InputError
from .files import write_atomic
from .inputs import Inputs, load_inputs
from .levels import Ledger
from .plan import Plan, make_plan
from .report.html import render_html
from .report.matrix import build_matrix
from .report.terminal import print_table


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="the pipeline's TOML config")
    parser.add_argument(
        "--errata",
        type=Path,
        action="append",
        default=[],
        metavar="PATH",
        help="more errata files or folders, besides the config's (repeatable)",
    )


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("plan", help="decide which fixes go into each build's cumulative module")
    _common(p)
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(func=cmd_plan)

    r = sub.add_parser("report", help="kernel builds × vulnerabilities coverage")
    _common(r)
    fmt = r.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print the matrix as JSON")
    fmt.add_argument("--html", type=Path, metavar="FILE", help="write one self-contained HTML page")
    r.set_defaults(func=cmd_report)


def _plan(args: argparse.Namespace) -> tuple[Inputs, Ledger, Plan]:
    for path in args.errata:
        if not path.exists():
            raise InputError(path, None, "errata path does not exist")
    inputs = load_inputs(args.config, args.errata)
    ledger = Ledger.load(inputs.config.levels_file)
    return inputs, ledger, make_plan(inputs.builds, inputs.fixes, inputs.errata, ledger)


def cmd_plan(args: argparse.Namespace) -> int:
    inputs, ledger, plan = _plan(args)
    document = json.dumps(plan.to_json(), indent=1, sort_keys=True) + "\n"
    # Only now, with the whole plan made, is anything written: the plan, then the levels.
    write_atomic(inputs.config.work_dir / "plan.json", document)
    ledger.save()
    if args.json:
        sys.stdout.write(document)
        return 0
    table = Table(title=f"plan: {inputs.config.name}")
    for column in ("kernel build", "package version", "level", "module", "fixes"):
        table.add_column(column, no_wrap=column != "fixes")
    for cell in plan.cells:
        table.add_row(
            cell.build.uname_r,
            cell.build.package_version,
            str(cell.level),
            cell.module_name,
            ", ".join(f.id for f in cell.fixes),
        )
    out = console()
    out.print(table)
    out.print(
        f"{len(plan.cells)} cells, {len(plan.idle)} builds with no applicable fix, "
        f"{len(plan.superseded)} superseded builds; plan in {inputs.config.work_dir / 'plan.json'}"
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    # The report shows levels as a plan would assign them now, without recording them.
    inputs, _, plan = _plan(args)
    matrix = build_matrix(inputs.config.name, inputs.builds, inputs.fixes, inputs.errata, plan)
    if args.json:
        sys.stdout.write(json.dumps(matrix.to_json(), indent=1, sort_keys=True) + "\n")
    elif args.html:
        write_atomic(args.html, render_html(matrix))
        print(f"wrote {args.html}")
    else:
        print_table(matrix, console())
    return 0
