#!/usr/bin/python3 -I
"""livegraft's apt hook: ``apt upgrade`` and unattended-upgrades livepatch the running kernel.

Installed as ``/usr/libexec/livegraft/apt-hook`` by apt-livegraft; ``20livegraft`` in
``/etc/apt/apt.conf.d`` calls it, a thin layer over the client core:

- ``pre-install`` (``DPkg::Pre-Install-Pkgs``, protocol version 3 on stdin): records which
  livepatch packages the transaction installs, upgrades or removes. Nothing else.
- ``post-invoke`` (``DPkg::Post-Invoke``, once dpkg is done): when the running build's
  livepatch package was installed or upgraded, the client loads it and one line of
  outcome is printed. A package the transaction removed is remembered as declined.
- ``post-update`` (``APT::Update::Post-Invoke-Success``, auto mode): when the repository
  offers the livepatch package of the running build or an installed kernel and it is not
  installed (nor declined), it is installed — never by running apt from inside apt, whose
  lock is held: a ``systemd-run --no-block`` oneshot runs ``sync``, which waits for the
  lock; without systemd, the one command to run is printed.
- ``sync``: installs those packages (apt-get, waiting for the lock).
- ``dpkg-trigger``: apt-livegraft's trigger on /usr/lib/livegraft, so a plain ``dpkg -i``
  of a livepatch package applies it too (under apt, ``post-invoke`` does).

Every mode exits 0 whatever happens (a failure is printed and recorded): livegraft never
makes apt fail. It does nothing when apt or dpkg work on another root than the running
system (``Dir``, ``DPkg::Chroot-Directory``, ``DPKG_ROOT``), unless that root is
``LIVEGRAFT_ROOT`` (a test setting).
"""

from __future__ import annotations

import json
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

PREFIX = "livepatch-"
PENDING = "/run/livegraft/apt-pending.json"
KERNEL_PREFIX = "linux-image-"


def say(text: str) -> None:
    print(f"livegraft: {text}", flush=True)


def client_path() -> str:
    here = os.path.dirname(os.path.realpath(__file__))
    # /usr/libexec/livegraft/apt-hook → /usr/share/livegraft/python
    default = os.path.join(os.path.dirname(os.path.dirname(here)), "share", "livegraft", "python")
    return os.environ.get("LIVEGRAFT_CLIENT_PATH") or default


def client() -> Any:
    path = client_path()
    if path not in sys.path:
        sys.path.insert(0, path)
    import livegraft.client.apply as apply

    return apply


def _same(a: str, b: str) -> bool:
    return os.path.realpath(a or "/") == os.path.realpath(b or "/")


def on_target(apt_dir: str | None, chroot: str | None) -> bool:
    """True when apt/dpkg work on the system the client looks after."""
    wanted = os.environ.get("LIVEGRAFT_ROOT") or "/"
    dpkg_root = os.environ.get("DPKG_ROOT") or ""
    if dpkg_root and not _same(dpkg_root, wanted):
        return False
    if chroot and not _same(chroot, "/"):
        return False
    return apt_dir is None or _same(apt_dir, wanted)


def apt_config() -> tuple[str, str]:
    """apt's ``Dir`` and ``DPkg::Chroot-Directory`` (python-apt reads APT_CONFIG too)."""
    import apt_pkg

    apt_pkg.init_config()
    return apt_pkg.config.find_dir("Dir", "/"), apt_pkg.config.find("DPkg::Chroot-Directory", "")


# -- pre-install: what the transaction does --------------------------------------------


class ProtocolError(Exception):
    pass


def parse_v3(lines: Iterable[str]) -> tuple[dict[str, str], list[dict[str, str]]]:
    """apt's Pre-Install-Pkgs protocol 3: ``VERSION 3``, ``key=value`` config lines, a
    blank line, then ``name oldver oldarch oldMA op newver newarch newMA action`` each."""
    it = iter(lines)
    first = next(it, "").strip()
    if first != "VERSION 3":
        raise ProtocolError(f"expected 'VERSION 3' as the first line, got {first[:40]!r}")
    config: dict[str, str] = {}
    for line in it:
        line = line.rstrip("\n")
        if not line:
            break
        key, eq, value = line.partition("=")
        if eq:
            config[key] = value
    changes = []
    for number, line in enumerate(it, 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 9 or fields[4] not in ("<", ">", "=", "-"):
            raise ProtocolError(f"package line {number} has not the 9 fields of version 3")
        name, old, _, _, _, new, _, _, action = fields
        changes.append({"name": name, "old": old, "new": new, "action": action})
    return config, changes


def pending_path() -> str:
    # Cheap on purpose (no client import): every dpkg run under apt passes through here.
    return os.path.join(os.environ.get("LIVEGRAFT_ROOT") or "/", PENDING.lstrip("/"))


def pre_install(stdin: Iterable[str]) -> None:
    config, changes = parse_v3(stdin)
    ours = [c for c in changes if c["name"].split(":")[0].startswith(PREFIX)]
    if not ours or not on_target(config.get("Dir"), config.get("DPkg::Chroot-Directory")):
        return
    apply = client()
    roots = apply.Roots.from_environ()
    from livegraft.client.state import write_atomic

    path = roots.path(PENDING)
    pending: list[dict[str, str]] = []
    if path.exists():
        try:
            pending = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            pending = []
    write_atomic(path, (json.dumps(pending + ours) + "\n").encode())


# -- post-invoke: apply once dpkg is done ------------------------------------------------


def post_invoke(trigger: str = "apt") -> None:
    if trigger == "apt" and not os.path.exists(pending_path()):
        return  # no livepatch package in this dpkg run: nothing to load the client for
    apt_dir, chroot = apt_config() if trigger == "apt" else (None, None)
    if not on_target(apt_dir, chroot):
        return
    apply = client()
    roots = apply.Roots.from_environ()
    path = roots.path(PENDING)
    try:
        pending = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        pending = []
    except ValueError as exc:
        say(f"{path}: unreadable ({exc}); applying what is installed")
        pending = None
    from livegraft.client.state import load_state, locked

    c = apply.Client(roots)
    running = PREFIX + c.kernel.uname_r()
    if pending:
        with locked(roots):
            state = load_state(roots, move_aside=True)
            for change in pending:
                name = change["name"].split(":")[0]
                if change["action"] == "**REMOVE**":
                    state.decline(name)
                else:
                    state.accept(name)
            state.save()
    path.unlink(missing_ok=True)
    touched = pending is None or any(
        ch["name"].split(":")[0] == running and ch["action"] != "**REMOVE**" for ch in pending
    )
    if trigger != "apt" or touched:
        outcome = c.apply(trigger=trigger)
        if trigger != "apt" and outcome.state == "nothing-to-apply":
            return
        say(f"{outcome.state}: {outcome.message}")


# -- auto mode -----------------------------------------------------------------------


def wanted_packages() -> list[str]:
    """Livepatch packages the repository offers for the running build and every installed
    kernel, not installed and not declined by the user."""
    import apt_pkg

    apply = client()
    from livegraft.client.state import load_state

    roots = apply.Roots.from_environ()
    apt_pkg.init_config()
    apt_pkg.init_system()
    cache = apt_pkg.Cache(None)
    builds = {apply.Kernel(roots).uname_r()}
    for pkg in cache.packages:
        if pkg.name.startswith(KERNEL_PREFIX) and pkg.current_ver is not None:
            builds.add(pkg.name[len(KERNEL_PREFIX) :].removesuffix("-unsigned"))
    declined = set(load_state(roots).declined)
    found = []
    for build in sorted(builds):
        name = PREFIX + build
        try:
            pkg = cache[name]
        except KeyError:
            continue
        if pkg.current_ver is None and pkg.version_list and name not in declined:
            found.append(name)
    return found


def post_update() -> None:
    apt_dir, chroot = apt_config()
    if not on_target(apt_dir, chroot):
        return
    apply = client()
    roots = apply.Roots.from_environ()
    from livegraft.client.state import read_settings

    if not read_settings(roots).auto:
        return
    wanted = wanted_packages()
    if not wanted:
        return
    import shutil
    import subprocess

    names = " ".join(wanted)
    if roots.is_host and os.path.isdir("/run/systemd/system") and shutil.which("systemd-run"):
        cp = subprocess.run(
            ["systemd-run", "--no-block", "--collect", "--unit=livegraft-sync",
             "--description=Install livegraft livepatch packages", "livegraftctl", "sync"],
            capture_output=True, text=True, check=False, timeout=30,
        )  # fmt: skip
        if cp.returncode == 0:
            say(f"installing {names} once apt is done (livegraft-sync.service)")
            return
    say(f"{names} offered for this machine's kernels: run `livegraftctl sync` to install")


def sync() -> int:
    import subprocess

    wanted = wanted_packages()
    if not wanted:
        say("nothing to install")
        return 0
    # apt-get waits for the lock another apt holds (the run whose update started us).
    argv = ["apt-get", "-y", "-o", "DPkg::Lock::Timeout=600", "install", *wanted]
    say("installing " + " ".join(wanted))
    return subprocess.run(argv, check=False).returncode


def main(argv: list[str]) -> int:
    mode = argv[0] if argv else ""
    try:
        if mode == "pre-install":
            pre_install(sys.stdin)
        elif mode == "post-invoke":
            post_invoke()
        elif mode == "post-update":
            post_update()
        elif mode == "dpkg-trigger":
            post_invoke(trigger="dpkg")
        elif mode == "sync":
            return sync()
        else:
            say(f"apt hook: unknown mode {mode!r} (pre-install, post-invoke, post-update, "
                "dpkg-trigger, sync)")  # fmt: skip
    except ImportError as exc:
        what = "python3-apt" if "apt_pkg" in str(exc) else "the client core (livegraft-client)"
        say(f"apt hook skipped: {what} cannot be loaded ({exc})")
    except ProtocolError as exc:
        say(f"apt hook: Pre-Install-Pkgs input not understood: {exc}; nothing recorded")
        # Read what apt still sends, so that it never writes into a closed pipe.
        for _ in sys.stdin:
            pass
    except Exception as exc:  # never make apt fail over a livepatch
        say(f"apt hook failed: {type(exc).__name__}: {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
