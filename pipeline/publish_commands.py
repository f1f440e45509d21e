"""``livegraft publish``: the indexed tree to a folder or an S3 bucket, transactionally."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from .config import ADDRESSING, PublishSettings, load_config
from .console import console
from .errors import InputError
from .progress import TransferReporter
from .publish.folder_store import FolderStore
from .publish.publisher import Publisher, scan
from .publish.s3_store import S3Location, S3Options, S3Store
from .publish.storage import Storage
from .repo.tree import CLIENTS, indexed_base_url

# What publish does when not told otherwise; ``livegraft run`` publishes with these.
# 16 uploads at a time: packages are small, so a publish waits on round trips, not on
# bandwidth, and S3 takes thousands of writes a second per prefix.
DEFAULTS: dict[str, Any] = {
    "tree": None, "endpoint": None, "region": None, "addressing": None,
    "jobs": 16, "timeout": 60.0, "retries": 5, "retention_hours": None,
    "break_lock": False, "recheck": False, "dry_run": False, "json": False,
}  # fmt: skip


def default_args(config: Path, to: str | None) -> argparse.Namespace:
    return argparse.Namespace(**DEFAULTS, config=config, to=to)


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "publish",
        help="upload the indexed tree: content first, roots last, old generations collected",
    )
    p.add_argument("--config", type=Path, required=True, help="the pipeline's TOML config")
    p.add_argument(
        "--to",
        metavar="DEST",
        help="a folder or s3://bucket/prefix (default: [publish] to, else <work_dir>/public)",
    )
    p.add_argument(
        "--from", dest="tree", type=Path, metavar="DIR",
        help="the tree to publish (default <work_dir>/repo, as index writes it)",
    )  # fmt: skip
    p.add_argument(
        "--endpoint", metavar="URL", help="an S3-compatible endpoint (default: [publish] endpoint)"
    )
    p.add_argument("--region", help="the S3 region (default: [publish] region)")
    p.add_argument(
        "--addressing", choices=ADDRESSING,
        help="S3 bucket addressing, path for most S3-compatible stores "
        "(default: [publish] addressing, else auto)",
    )  # fmt: skip
    p.add_argument(
        "--jobs", type=int, default=DEFAULTS["jobs"], metavar="N", help="uploads at a time"
    )
    p.add_argument(
        "--timeout", type=float, default=DEFAULTS["timeout"], metavar="S",
        help="S3: seconds to wait for an answer before a request is retried (default 60)",
    )  # fmt: skip
    p.add_argument(
        "--retries", type=int, default=DEFAULTS["retries"], metavar="N",
        help="S3: retries of a failed request, with backoff, before giving up (default 5)",
    )  # fmt: skip
    p.add_argument(
        "--retention-hours", type=float, metavar="H",
        help="keep objects older generations named for this long "
        "(default: [publish] retention_hours, else 48)",
    )  # fmt: skip
    p.add_argument(
        "--break-lock", action="store_true",
        help="take over the lock of another publisher known to be gone (one on another "
        "machine; a dead one on this machine, or an expired lock, is taken over anyway)",
    )  # fmt: skip
    p.add_argument(
        "--recheck", action="store_true",
        help="look at every object in the store instead of trusting the publish manifest "
        "(after the store was changed by other hands)",
    )  # fmt: skip
    p.add_argument("--dry-run", action="store_true", help="say what would be put and deleted")
    p.add_argument("--json", action="store_true", help="print what was done as JSON")
    p.set_defaults(func=cmd_publish)


def open_destination(dest: str, args: argparse.Namespace, settings: PublishSettings) -> Storage:
    if dest.startswith("s3://"):
        store = S3Store(
            S3Location.parse(dest),
            S3Options(
                endpoint_url=args.endpoint or settings.endpoint,
                region=args.region or settings.region,
                addressing=args.addressing or settings.addressing,
                max_attempts=args.retries,
                connect_timeout=min(10.0, args.timeout),
                read_timeout=args.timeout,
                max_pool_connections=max(10, args.jobs),
            ),
        )
        store.check_bucket()
        return store
    if "://" in dest:
        raise InputError(None, "--to", f"a folder or s3://bucket/prefix, not {dest!r}")
    return FolderStore(Path(dest))


def check_served_at(tree: Path, dest: str) -> None:
    """Refuse a tree whose clients and metalinks could not reach ``dest``: they carry
    absolute URLs, so a tree indexed for one place is broken anywhere else."""
    url = indexed_base_url(tree)
    if url is None or not url.startswith("file://"):
        return  # http(s): served from wherever the operator put it; nothing to compare
    where = tree / CLIENTS
    if dest.startswith("s3://"):
        raise InputError(
            where, "base URL",
            f"an http(s) URL clients can read {dest} at, not {url} (set [publish] "
            "base_url, or pass livegraft index --base-url, and index again)",
        )  # fmt: skip
    expected = Path(dest).resolve().as_uri()
    if url != expected:
        raise InputError(
            where, "base URL",
            f"{expected} (where it is published), not {url} (run "
            "livegraft index again for this destination, or publish to the folder it names)",
        )  # fmt: skip


def cmd_publish(args: argparse.Namespace) -> int:
    if args.jobs < 1:
        raise InputError(None, "--jobs", "an integer >= 1")
    if args.timeout <= 0:
        raise InputError(None, "--timeout", "a number of seconds > 0")
    if args.retries < 0:
        raise InputError(None, "--retries", "an integer >= 0")
    if args.retention_hours is not None and args.retention_hours < 0:
        raise InputError(None, "--retention-hours", "a number of hours >= 0")
    config = load_config(args.config)
    tree = args.tree or config.work_dir / "repo"
    dest = args.to or config.publish_to
    retention = (
        config.publish.retention_hours if args.retention_hours is None else args.retention_hours
    )
    objects = scan(tree)
    check_served_at(tree, dest)
    store = open_destination(dest, args, config.publish)
    with TransferReporter("publish") as progress:
        publisher = Publisher(
            store,
            jobs=args.jobs,
            retention=timedelta(hours=retention),
            on_plan=progress.plan,
            on_put=lambda obj: progress.sent(obj.size),
            recheck=args.recheck,
        )
        report = publisher.publish(objects, dry_run=args.dry_run, break_lock=args.break_lock)
    if args.json:
        json.dump({**report.to_json(), "dry_run": args.dry_run}, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    verb = "would put" if args.dry_run else "put"
    out = console()
    if report.took_over:
        out.print(f"{store.describe()}: {report.took_over}", highlight=False)
    if args.dry_run:
        for key in report.put:
            out.print(f"put {key}", highlight=False)
        for key in report.deleted:
            out.print(f"delete {key}", highlight=False)
    out.print(
        f"{store.describe()}: {verb} {len(report.put)} objects ({report.bytes_put} bytes), "
        f"{len(report.skipped)} already there, "
        f"{'would delete' if args.dry_run else 'deleted'} {len(report.deleted)}",
        highlight=False,
    )
    return 0
