"""``livegraft``: the pipeline's command line. Stages live elsewhere; this only composes them."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from . import (
    build_commands,
    index_commands,
    keys_commands,
    package_commands,
    plan_commands,
    publish_commands,
    run_command,
    verify_commands,
)
from .errata import commands as errata_commands
from .errors import LivegraftError
from .kernels import commands as kernel_commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="livegraft",
        description="Turn kernel errata into signed livepatch packages for every shipped build.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every step")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    errata_commands.register(sub)
    kernel_commands.register(sub)
    plan_commands.register(sub)
    build_commands.register(sub)
    verify_commands.register(sub)
    package_commands.register(sub)
    index_commands.register(sub)
    publish_commands.register(sub)
    keys_commands.register(sub)
    run_command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="livegraft: %(message)s",
    )
    # The one error handler: every expected failure is one line on stderr and an exit
    # status (2 bad input, 1 failed work); anything else is a bug and keeps its traceback.
    try:
        status: int = args.func(args)
    except LivegraftError as exc:
        print(f"livegraft: error: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print("livegraft: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
