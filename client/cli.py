"""``livegraftctl``: status, apply, revert and auto mode on the host.

Exit status: 0 the running kernel is covered (or has nothing to apply, or the command
did what it said), 1 a patch is installed but not in effect (or the work failed),
2 bad usage or bad input (a malformed livepatch.json, a bad setting).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from . import state as st
from .apply import Client, settle
from .kernel import Kernel, Roots
from .status import exit_status, render, status

# apt-livegraft's hook (plugins/apt/apt_hook.py as installed).
APT_HOOK = "/usr/libexec/livegraft/apt-hook"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="livegraftctl", description="Livepatch the running kernel with livegraft."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    show = sub.add_parser("status", help="what runs, what is in effect, and why not")
    show.add_argument("--json", action="store_true", help="one JSON object (stable keys)")
    apply = sub.add_parser("apply", help="load the livepatch installed for the running build")
    apply.add_argument(
        "--allow-downgrade", action="store_true", help="load even when a higher level is in effect"
    )
    apply.add_argument(
        "--force",
        action="store_true",
        help="complete a stalled transition with 'force' (the module can "
        "never be unloaded afterwards)",
    )
    apply.add_argument("--boot", action="store_true", help=argparse.SUPPRESS)
    apply.add_argument("--json", action="store_true", help="the outcome as JSON")
    sub.add_parser("revert", help="disable every livegraft patch and unload it")
    sub.add_parser(
        "sync", help="install the livepatch packages offered for this machine's kernels (apt)"
    )
    auto = sub.add_parser("auto", help="install livepatch packages for kernels automatically")
    auto.add_argument("mode", choices=["on", "off"])
    settle_cmd = sub.add_parser("settle", help=argparse.SUPPRESS)
    settle_cmd.add_argument("--wait", action="store_true")
    settle_cmd.add_argument("--shutdown", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    roots = Roots.from_environ()
    try:
        settings = st.read_settings(roots)
        client = Client(roots, settings)
        if args.command == "status":
            doc = status(client.kernel, settings)
            print(json.dumps(doc, indent=1, sort_keys=True) if args.json else render(doc))
            return exit_status(doc)
        if args.command == "apply":
            outcome = client.apply(
                trigger="boot" if args.boot else "manual",
                allow_downgrade=args.allow_downgrade,
                force=args.force,
            )
            print(json.dumps(outcome.to_json(), sort_keys=True) if args.json else outcome.line())
            return outcome.exit_status
        if args.command == "revert":
            outcome = client.revert()
            print(outcome.line())
            return outcome.exit_status
        if args.command == "auto":
            path = st.set_auto(roots, args.mode == "on")
            print(f"livegraft: auto mode {args.mode} ({path})")
            return 0
        if args.command == "sync":
            return _sync(roots)
        if args.command == "settle":
            if args.wait:
                time.sleep(settings.grace + 0.5)
            settle(Kernel(roots), settings, shutdown=args.shutdown)
            return 0
    except st.SettingsError as exc:
        print(f"livegraftctl: {exc}", file=sys.stderr)
        return 2
    except (st.Busy, OSError) as exc:
        print(f"livegraftctl: {exc}", file=sys.stderr)
        return 1
    return 2


def _sync(roots: Roots) -> int:
    """Hand over to apt-livegraft's hook, which has apt's view (python-apt); dnf hosts need
    no sync, since the plugin adds the packages on every dnf run."""
    hook = os.environ.get("LIVEGRAFT_APT_HOOK") or APT_HOOK
    if not os.access(hook, os.X_OK):
        print(
            f"livegraftctl: sync: {hook} not found: install apt-livegraft (on dnf hosts the "
            "plugin installs livepatch packages on every dnf run)",
            file=sys.stderr,
        )
        return 2
    return subprocess.run([hook, "sync"], check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
