"""``livegraft build`` and ``livegraft store import``.

Which plan a build builds: the plan the inputs give now, computed exactly as
``livegraft plan`` computes it (same ledger, same levels) and saved the same way when it
changed, so ``plan.json`` on disk always describes what the store holds. A shard
(``--shard I/N``) is part of a plan made elsewhere: it needs that plan's ``plan.json``
(and ``levels.json``) in its work_dir, and refuses to build when the inputs now give a
different plan, since its modules would not merge into the others' store.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from livegraft.signing.module_key import load_module_key

from .build.runner import Builder, CellResult, default_jobs, parse_shard, shard_cells
from .build.store import Store
from .config import Config, load_config
from .console import print_cells
from .errors import InputError
from .files import write_atomic
from .plan import Plan
from .plan_commands import _common, _plan
from .progress import Reporter


def register(sub: argparse._SubParsersAction[Any]) -> None:
    b = sub.add_parser("build", help="build, strip and sign every plan cell's module")
    _common(b)
    b.add_argument("--shard", metavar="I/N", help="build only shard I of N (1 <= I <= N)")
    b.add_argument("--jobs", type=int, metavar="N", help="compiles at a time (default: cores)")
    b.add_argument("--json", action="store_true", help="print one JSON object per cell")
    b.set_defaults(func=cmd_build)

    s = sub.add_parser("store", help="the content-addressed artifact store")
    store_sub = s.add_subparsers(dest="store_command", required=True, metavar="COMMAND")
    i = store_sub.add_parser("import", help="merge other stores (shard outputs) into this one")
    i.add_argument("--config", type=Path, required=True, help="the pipeline's TOML config")
    i.add_argument(
        "sources", type=Path, nargs="+", metavar="DIR", help="a store, or a work_dir holding one"
    )
    i.set_defaults(func=cmd_store_import)


def open_store(config: Config) -> Store:
    """The config's artifact store: what verify and package read."""
    return Store(config.work_dir / "store")


def _plan_document(plan: Plan) -> str:
    return json.dumps(plan.to_json(), indent=1, sort_keys=True) + "\n"


def _saved_plan(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(path, None, f"unreadable plan ({exc})") from None


def current_plan(args: argparse.Namespace, shard: tuple[int, int] | None) -> tuple[Config, Plan]:
    """The plan the inputs give now (see the module's docstring), saved when it changed.

    ``build`` and ``verify`` both work on it, so they agree on the cells.
    """
    inputs, ledger, plan = _plan(args)
    config = inputs.config
    plan_file = config.work_dir / "plan.json"
    saved = _saved_plan(plan_file)
    document = _plan_document(plan)
    if shard is not None:
        if saved is None:
            raise InputError(
                plan_file, None, "a shard works on part of a saved plan: run livegraft plan first"
            )
        if saved != json.loads(document):
            raise InputError(
                plan_file,
                None,
                "differs from the plan the inputs give now (other fixes, errata, builds or "
                "levels.json): run livegraft plan again and give every shard its result",
            )
    elif saved != json.loads(document):
        write_atomic(plan_file, document)
        ledger.save()
    return config, plan


def cmd_build(args: argparse.Namespace) -> int:
    shard = parse_shard(args.shard) if args.shard else None
    if args.jobs is not None and args.jobs < 1:
        raise InputError(None, "--jobs", "an integer >= 1")
    config, plan = current_plan(args, shard)
    key = load_module_key(
        config.signing, config.work_dir, config_path=config.path, name=config.name
    )
    cells = shard_cells(plan.cells, shard)
    store = open_store(config)
    builder = Builder(
        store=store,
        key=key,
        cache=config.cache_dir,
        scratch=config.work_dir / "tmp",
        failed_logs=config.work_dir / "failed",
    )
    jobs = args.jobs or config.build.jobs or default_jobs()
    with Reporter(len(cells)) as reporter:
        results = builder.build(cells, jobs, reporter.done)
    if args.json:
        sys.stdout.write(json.dumps([r.to_json() for r in results], indent=1) + "\n")
    else:
        _print_results(results, store, key.subject, shard)
    return 1 if any(r.status == "failed" for r in results) else 0


def _print_results(
    results: list[CellResult], store: Store, signer: str, shard: tuple[int, int] | None
) -> None:
    print_cells(
        "build" + (f" (shard {shard[0]}/{shard[1]})" if shard else ""),
        "module / reason",
        [
            (
                f"{r.cell.build.uname_r} ({r.cell.build.package_version})",
                r.cell.level,
                r.status,
                r.reason if r.status == "failed" else str(r.artifact.module if r.artifact else ""),
            )
            for r in results
        ],
        done="built",
        tail=f"signed by {signer}; store {store.root}",
    )


def cmd_store_import(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    store = open_store(config)
    for source in args.sources:
        root = source / "store" if (source / "store").is_dir() else source
        if not root.is_dir():
            raise InputError(source, None, "a store folder, or a work_dir holding store/")
        if root.resolve() == store.root.resolve():
            raise InputError(source, None, "is this config's own store")
        result = store.import_from(Store(root))
        print(
            f"{root}: {len(result.added)} artifacts added, {len(result.present)} already "
            f"present, {result.cells} cells linked"
        )
    return 0
