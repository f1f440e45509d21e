"""``livegraft keys``: the signing keys a pipeline uses, created before any agent builds.

Every shard of a distributed build must sign with the same key (the signer is part of
each artifact's id), so the key is made once, up front, not by whichever agent builds
first.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from livegraft.signing.module_key import load_module_key

from .config import load_config


def register(sub: argparse._SubParsersAction[Any]) -> None:
    keys = sub.add_parser("keys", help="the pipeline's signing keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    init = keys_sub.add_parser(
        "init",
        help="check the configured module-signing key, or generate the example one",
        description=(
            "Check the module-signing key the config or LIVEGRAFT_MODULE_KEY / "
            "LIVEGRAFT_MODULE_CERT name (key matches certificate, passphrase opens it); "
            "without one, generate a key in the work dir on first use. Prints the "
            "signer identity every module will carry."
        ),
    )
    init.add_argument("--config", type=Path, required=True, help="the pipeline's TOML config")
    init.add_argument("--json", action="store_true", help="print the signer as JSON")
    init.set_defaults(func=cmd_init)


def cmd_init(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    key = load_module_key(
        config.signing, config.work_dir, config_path=config.path, name=config.name
    )
    signer = {**key.signer(), "certificate": str(key.cert), "generated": key.generated}
    if args.json:
        json.dump(signer, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(f"module signer: {key.subject}")
        print(f"  sha256 fingerprint {key.fingerprint}")
        print(f"  certificate {key.cert}{' (generated)' if key.generated else ''}")
    return 0
