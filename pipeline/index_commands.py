"""``livegraft index``: the published tree from every package the package stage produced.

Reads ``<work_dir>/packages/records`` (``package.records``), puts the packages in the
pools of ``<work_dir>/repo`` (or ``--out``), writes apt and dnf metadata with one
advisory per fix, signed by the archive key(s), and the key and client files
(``repo.tree``). The base URL, for the metalinks and ``clients/``, is ``--base-url``,
else the config's ``[publish] base_url``, else the ``file://`` URL of the folder the tree is
published to (``Config.publish_url``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from livegraft.signing.gpg import load_archive_signer
from livegraft.signing.module_key import load_module_key

from .config import Config, load_config
from .console import console
from .package.records import advisories, load_records
from .repo.tree import TreeResult, assemble_tree, check_base_url, tree_state_dir

REPO_DIR = "repo"


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "index",
        help="assemble the published tree: signed apt and dnf repositories, keys, client files",
    )
    p.add_argument("--config", type=Path, required=True, help="the pipeline's TOML config")
    p.add_argument(
        "--base-url",
        metavar="URL",
        help="where the tree will be served (http(s):// or file:///); written into clients/ "
        "and the metalinks (default: [publish] base_url, else the file:// URL of the "
        "folder [publish] to names, <work_dir>/public by default)",
    )
    p.add_argument("--out", type=Path, metavar="DIR", help="the tree's folder (<work_dir>/repo)")
    p.add_argument("--json", action="store_true", help="print what was indexed as JSON")
    p.set_defaults(func=cmd_index)


def index_tree(
    config: Config, *, out: Path | None = None, base_url: str | None = None
) -> TreeResult:
    root = (out or config.work_dir / REPO_DIR).resolve()
    url = config.publish_url() if base_url is None else check_base_url(base_url)
    records = load_records(config.work_dir)
    module_key = load_module_key(
        config.signing, config.work_dir, config_path=config.path, name=config.name
    )
    with load_archive_signer(config.signing, config.work_dir, name=config.name) as signer:
        return assemble_tree(
            root,
            records=records,
            fixes=advisories(records),
            signer=signer,
            archive_asc=signer.public_asc(),
            archive_keyring=signer.public_keyring(),
            module_cert_der=module_key.cert_der(),
            base_url=url,
            state_dir=tree_state_dir(config.work_dir, root),
        )


def cmd_index(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    result = index_tree(config, out=getattr(args, "out", None), base_url=args.base_url)
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(result.to_json(), indent=1) + "\n")
    else:
        _print(result)
    return 0


def _print(result: TreeResult) -> None:
    out = console()
    for s in result.deb:
        out.print(
            f"deb  {s.suite} ({', '.join(s.architectures)}): {s.packages} packages, "
            f"{s.advisories} advisories{'' if s.changed else ' (unchanged)'}",
            highlight=False,
        )
    for r in result.rpm:
        out.print(
            f"rpm  {r.dist}/{r.arch}: generation {r.generation}, {r.packages} packages, "
            f"{r.advisories} advisories{'' if r.changed else ' (unchanged)'}",
            highlight=False,
        )
    state = "updated" if result.changed else "unchanged"
    out.print(f"tree {result.root} {state}; clients/ point at {result.base_url}", highlight=False)
