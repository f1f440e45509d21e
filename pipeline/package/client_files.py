"""What the client packages install, read from the livegraft source tree.

``livegraft-client`` (RPM and DEB):

- every ``client/**/*.py`` under ``/usr/share/livegraft/python/livegraft/client/``: a
  private import path (``CLIENT_PYTHON_DIR``) the launcher puts first, so the client
  runs on the distribution's own Python whatever its site-packages are called. There is
  no ``livegraft/__init__.py``: ``livegraft`` is a namespace package, as in the pipeline;
- ``client/livegraftctl`` as ``/usr/bin/livegraftctl`` (0755);
- ``client/livegraft.service`` as ``/usr/lib/systemd/system/livegraft.service``, enabled
  by the vendor: the ``multi-user.target.wants`` symlink is in the package, because a
  scriptlet calling systemctl is exactly what no package here may have;
- the folders ``/var/lib/livegraft`` (0700: the client's state) and ``/etc/livegraft``.

``python3-dnf-plugin-livegraft`` (RPM only): ``plugins/dnf/livegraft.py`` in the hosts'
dnf pluginpath (``[packages] dnf_plugin_dir``) and ``plugins/dnf/livegraft.conf`` as
``/etc/dnf/plugins/livegraft.conf``, a config file the host's edits survive.

``apt-livegraft`` (DEB only): ``plugins/apt/apt_hook.py`` as
``/usr/libexec/livegraft/apt-hook`` (0755); ``plugins/apt/20livegraft`` and
``plugins/apt/51livegraft-unattended-upgrades`` in ``/etc/apt/apt.conf.d`` (conffiles);
and two control members: ``triggers`` (``plugins/apt/triggers``) and the ``postinst``
(``plugins/apt/postinst``) that dpkg runs when the trigger fires.

Every file named here must exist: a package missing its launcher or unit would install
a client that cannot run, so a missing one is an input error, never a placeholder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from livegraft.client.names import CLIENT_PYTHON_DIR

from ..errors import InputError

CLIENT_PACKAGE = "livegraft-client"
DNF_PLUGIN_PACKAGE = "python3-dnf-plugin-livegraft"
APT_HOOK_PACKAGE = "apt-livegraft"
LAUNCHER = PurePosixPath("/usr/bin/livegraftctl")
UNIT_DIR = PurePosixPath("/usr/lib/systemd/system")
UNIT = UNIT_DIR / "livegraft.service"
UNIT_ENABLED = UNIT_DIR / "multi-user.target.wants" / "livegraft.service"
STATE_DIR = PurePosixPath("/var/lib/livegraft")
CONFIG_DIR = PurePosixPath("/etc/livegraft")
DNF_PLUGIN_CONF = PurePosixPath("/etc/dnf/plugins/livegraft.conf")
# Where 20livegraft and the client's `livegraftctl sync` expect the hook.
APT_HOOK = PurePosixPath("/usr/libexec/livegraft/apt-hook")
APT_CONF_DIR = PurePosixPath("/etc/apt/apt.conf.d")
CLIENT_CODE = PurePosixPath(CLIENT_PYTHON_DIR) / "livegraft" / "client"
# The folders only this package puts files in (the rest belong to the system).
_OWN_ROOT = PurePosixPath("/usr/share/livegraft")
# What a spec file and a tar member may name as they are: no spaces, quotes or macros.
_SAFE_PATH = re.compile(r"[A-Za-z0-9._+/-]+")
_SOURCE_FIELD = "packages.client_source"

Kind = Literal["file", "dir", "symlink"]


@dataclass(frozen=True)
class Entry:
    """One path a package installs: a file (its bytes), a folder or a symlink."""

    path: PurePosixPath
    kind: Kind
    mode: int
    data: bytes = b""
    # A symlink's target, as written (relative).
    target: str = ""
    # A config file the host may edit: RPM %config(noreplace), a DEB conffile.
    config: bool = False


@dataclass(frozen=True)
class ControlMember:
    """A DEB control member beside ``control`` and ``md5sums`` (a script, triggers,
    conffiles): its name in ``DEBIAN/``, mode and bytes."""

    name: str
    mode: int
    data: bytes


def default_source() -> Path:
    """The source tree this livegraft runs from: the folder holding ``client/``.

    An editable install (or a checkout) has ``plugins/`` beside it; an installed wheel
    does not, and then ``[packages] client_source`` names a checkout.
    """
    import livegraft.client

    return Path(livegraft.client.__file__).resolve().parent.parent


def _required(source: Path, rel: str, what: str) -> bytes:
    path = source / rel
    try:
        return path.read_bytes()
    except OSError:
        raise InputError(
            path, _SOURCE_FIELD, f"{what} ({rel} in the livegraft source tree); not found"
        ) from None


def _checked(path: PurePosixPath) -> PurePosixPath:
    if not _SAFE_PATH.fullmatch(str(path)) or ".." in path.parts:
        raise InputError(
            None, _SOURCE_FIELD, f"file names of letters, digits and ._+- only, not {path}"
        )
    return path


def _folders(below: PurePosixPath, paths: list[PurePosixPath]) -> list[Entry]:
    """Every folder from ``below`` down to each path's parent, once, parents first."""
    found = {below}
    for path in paths:
        found.update(p for p in path.parents if p == below or below in p.parents)
    return [Entry(p, "dir", 0o755) for p in sorted(found)]


def client_payload(source: Path) -> tuple[Entry, ...]:
    """livegraft-client's files from ``source``, sorted by path."""
    code = source / "client"
    if not code.is_dir():
        raise InputError(code, _SOURCE_FIELD, "the client's code (client/ in the source tree)")
    _required(source, "client/__init__.py", "the client package's __init__.py")
    files = []
    for path in sorted(code.rglob("*.py")):
        rel = path.relative_to(code)
        # Byte code and hidden files are the build machine's, not the client's.
        if any(part == "__pycache__" or part.startswith(".") for part in rel.parts):
            continue
        files.append(
            Entry(_checked(CLIENT_CODE / rel.as_posix()), "file", 0o644, path.read_bytes())
        )
    entries = [
        *_folders(_OWN_ROOT, [f.path for f in files]),
        *files,
        Entry(LAUNCHER, "file", 0o755, _required(source, "client/livegraftctl", "the launcher")),
        Entry(UNIT, "file", 0o644, _required(source, "client/livegraft.service", "the unit")),
        Entry(UNIT_ENABLED, "symlink", 0o777, target=f"../{UNIT.name}"),
        Entry(STATE_DIR, "dir", 0o700),
        Entry(CONFIG_DIR, "dir", 0o755),
    ]
    return tuple(sorted(entries, key=lambda e: e.path))


def dnf_plugin_payload(source: Path, plugin_dir: str) -> tuple[Entry, ...]:
    """python3-dnf-plugin-livegraft's two files; the folders are dnf's."""
    plugin = _required(source, "plugins/dnf/livegraft.py", "the dnf plugin")
    conf = _required(source, "plugins/dnf/livegraft.conf", "the dnf plugin's config")
    return (
        Entry(DNF_PLUGIN_CONF, "file", 0o644, conf, config=True),
        Entry(_checked(PurePosixPath(plugin_dir) / "livegraft.py"), "file", 0o644, plugin),
    )


def apt_hook_payload(source: Path) -> tuple[Entry, ...]:
    """apt-livegraft's three files, sorted by path; the folders are apt's and the system's."""
    hook = _required(source, "plugins/apt/apt_hook.py", "the apt hook")
    conf = _required(source, "plugins/apt/20livegraft", "the apt hook's apt.conf.d lines")
    unattended_name = "51livegraft-unattended-upgrades"
    unattended = _required(
        source, f"plugins/apt/{unattended_name}", "the apt hook's unattended-upgrades drop-in"
    )
    return (
        Entry(APT_CONF_DIR / "20livegraft", "file", 0o644, conf, config=True),
        Entry(APT_CONF_DIR / unattended_name, "file", 0o644, unattended, config=True),
        Entry(APT_HOOK, "file", 0o755, hook),
    )


def apt_hook_scripts(source: Path) -> tuple[ControlMember, ...]:
    """apt-livegraft's trigger on /usr/lib/livegraft and the postinst it runs: a plain
    ``dpkg -i`` of a livepatch package applies it too (under apt, the hook does)."""
    triggers = _required(source, "plugins/apt/triggers", "the apt hook's dpkg triggers")
    postinst = _required(source, "plugins/apt/postinst", "the apt hook's postinst")
    return (ControlMember("postinst", 0o755, postinst), ControlMember("triggers", 0o644, triggers))
