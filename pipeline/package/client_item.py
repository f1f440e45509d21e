"""The client packages' inputs: names, versions, dependencies and files, one per format.

- RPM: ``livegraft-client`` (noarch; ``Recommends: python3, kmod``, nothing required, so
  it installs into any root) and ``python3-dnf-plugin-livegraft`` (noarch; ``Requires:
  livegraft-client = V-R``, the exact build it was made with).
- DEB: ``livegraft-client`` (all; ``Depends: python3 (>= 3.9), kmod``; no control
  member but ``control`` and ``md5sums``) and ``apt-livegraft`` (all; ``Depends:
  livegraft-client (= V-N), python3-apt``; ``conffiles``, ``triggers``, ``postinst``).

Versions: the project's version (its installed metadata, from pyproject) and a revision
N. RPM: Version = the project's version, Release = N; DEB: Version = ``<version>-N``. N
comes from the revision ledger (``<work_dir>/client-revisions.json``, the level ledger's
format with N as the level): the same content keeps N, new content (a source file, a
dependency, the maintainer, the builder) gets N+1 and never a number used before, so a
host upgrades to it; a new project version starts again at 1.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import re
import tarfile
import textwrap
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

from ..canonical import content_id
from ..config import PackageSettings
from ..errors import InputError, WorkError
from ..levels import Ledger
from .client_files import (
    APT_HOOK_PACKAGE,
    CLIENT_PACKAGE,
    DNF_PLUGIN_PACKAGE,
    ControlMember,
    Entry,
    apt_hook_payload,
    apt_hook_scripts,
    client_payload,
    default_source,
    dnf_plugin_payload,
)
from .info import PackageType
from .names import deb_filename, rpm_filename

# Bump when a client builder changes what it writes for the same files: the content
# digest changes with it, so the packages get a new revision instead of being refused.
CLIENT_BUILDER_VERSION = 1
REVISIONS_FILE = "client-revisions.json"
# A project version both rpm (no "-") and dpkg (digits first) take as it is.
_PROJECT_VERSION = re.compile(r"[0-9][A-Za-z0-9.+~]*")
# Debian's description lines: at most 80 columns with the leading space.
_WIDTH = 72
DESCRIPTION = tuple(
    textwrap.wrap(
        "livegraft's on-host client: finds the livepatch installed for the running kernel "
        "build, checks its build identity, sha256 and signer, loads it and waits for the "
        "livepatch transition (livegraftctl status, apply, revert). A unit applies it at "
        "boot.",
        _WIDTH,
    )
)
PLUGIN_DESCRIPTION = tuple(
    textwrap.wrap(
        "Makes dnf install the livepatch package for every kernel build installed, and "
        "apply the one for the running kernel after each transaction (through "
        "livegraft-client).",
        _WIDTH,
    )
)
APT_HOOK_DESCRIPTION = tuple(
    textwrap.wrap(
        "Makes apt and unattended-upgrades install the livepatch package for the running "
        "kernel build and every installed kernel, and apply the running one's after each "
        "dpkg run, or when a plain dpkg -i installs one (through livegraft-client).",
        _WIDTH,
    )
)


class RevisionLedger(Ledger):
    what = "client revision ledger"


def revisions_file(work_dir: Path) -> Path:
    return work_dir / REVISIONS_FILE


def project_version() -> str:
    """The version this livegraft was installed as (pyproject's ``version``)."""
    try:
        version = importlib.metadata.version("livegraft")
    except importlib.metadata.PackageNotFoundError:
        raise WorkError(
            "livegraft is not installed (no package metadata names its version)"
        ) from None
    if not _PROJECT_VERSION.fullmatch(version):
        raise InputError(
            None,
            "pyproject.toml: version",
            f"a version rpm and dpkg both take (digits first, then A-Za-z0-9.+~), not {version!r}",
        )
    return version


@dataclass(frozen=True)
class ClientItem:
    type: PackageType
    name: str
    project_version: str
    # 0 until the ledger assigns one (the content digest leaves it out).
    revision: int
    # noarch (RPM) or all (DEB).
    arch: str
    payload: tuple[Entry, ...]
    # (field, value): RPM preamble tags or DEB control fields, in order.
    relations: tuple[tuple[str, str], ...]
    summary: str
    description: tuple[str, ...]
    maintainer: str
    vendor: str
    epoch: int
    # A DEB's control members beside control and md5sums, sorted by name (none for RPM).
    control: tuple[ControlMember, ...] = ()

    @property
    def version(self) -> str:
        if self.type == "deb":
            return f"{self.project_version}-{self.revision}"
        return self.project_version

    @property
    def release(self) -> str:
        return "" if self.type == "deb" else str(self.revision)

    @property
    def filename(self) -> str:
        if self.type == "deb":
            return deb_filename(self.name, self.version, self.arch)
        return rpm_filename(self.name, self.version, self.release, self.arch)

    def content_digest(self) -> str:
        """Everything the package's bytes depend on except its revision."""
        document: dict[str, Any] = {
            "stage": "client-package",
            "builder": CLIENT_BUILDER_VERSION,
            "type": self.type,
            "name": self.name,
            "project_version": self.project_version,
            "arch": self.arch,
            "payload": [_entry_json(e) for e in self.payload],
            "relations": [list(r) for r in self.relations],
            "summary": self.summary,
            "description": list(self.description),
            "maintainer": self.maintainer,
            "vendor": self.vendor,
            "epoch": self.epoch,
        }
        # Only when there are any: a package without them keeps the digest (and so the
        # revision) it had before control members were part of an item.
        if self.control:
            document["control"] = [
                [m.name, m.mode, hashlib.sha256(m.data).hexdigest()] for m in self.control
            ]
        return content_id(document)

    def input_id(self) -> str:
        return content_id({"content": self.content_digest(), "revision": self.revision})


def _entry_json(e: Entry) -> list[Any]:
    return [str(e.path), e.kind, e.mode, hashlib.sha256(e.data).hexdigest(), e.target, e.config]


def client_items(
    kind: PackageType,
    settings: PackageSettings,
    vendor: str,
    ledger: RevisionLedger,
    version: str,
) -> list[ClientItem]:
    """The client packages of one format, their revisions assigned in ``ledger``."""
    source = settings.client_source or default_source()
    common: dict[str, Any] = {
        "type": kind,
        "project_version": version,
        "revision": 0,
        "arch": "all" if kind == "deb" else "noarch",
        "maintainer": settings.maintainer,
        # A DEB has no Vendor: changing it must not give the DEB a new revision.
        "vendor": vendor if kind == "rpm" else "",
        "epoch": settings.source_date_epoch,
    }
    relations: tuple[tuple[str, str], ...] = (("Depends", "python3 (>= 3.9), kmod"),)
    if kind == "rpm":
        # Weak only: a root whose repositories offer no python3 (an installroot with
        # only livegraft's) could not install it otherwise; a real host has both anyway.
        relations = (("Recommends", "python3"), ("Recommends", "kmod"))
    payload = client_payload(source)
    client = _assigned(
        ClientItem(
            name=CLIENT_PACKAGE,
            payload=payload,
            relations=relations,
            summary="livegraft kernel livepatch client",
            description=DESCRIPTION,
            # No scripts: the unit is enabled by a symlink in the package.
            control=deb_members(payload, ()) if kind == "deb" else (),
            **common,
        ),
        ledger,
    )
    if kind == "deb":
        payload = apt_hook_payload(source)
        hook = ClientItem(
            name=APT_HOOK_PACKAGE,
            payload=payload,
            # Exactly the client it was built with, as the dnf plugin: the hook imports it.
            relations=(("Depends", f"{CLIENT_PACKAGE} (= {client.version}), python3-apt"),),
            summary="apt hook for livegraft kernel livepatches",
            description=APT_HOOK_DESCRIPTION,
            control=deb_members(payload, apt_hook_scripts(source)),
            **common,
        )
        return [client, _assigned(hook, ledger)]
    plugin = ClientItem(
        name=DNF_PLUGIN_PACKAGE,
        payload=dnf_plugin_payload(source, settings.dnf_plugin_dir),
        # Exactly the client it was built with: the plugin imports that client's code.
        relations=(("Requires", f"{CLIENT_PACKAGE} = {client.version}-{client.release}"),),
        summary="dnf plugin for livegraft kernel livepatches",
        description=PLUGIN_DESCRIPTION,
        **common,
    )
    return [client, _assigned(plugin, ledger)]


def deb_members(
    payload: tuple[Entry, ...], scripts: tuple[ControlMember, ...]
) -> tuple[ControlMember, ...]:
    """``scripts`` and, when the payload has config files, ``conffiles`` naming them."""
    config = sorted(str(e.path) for e in payload if e.config)
    members = list(scripts)
    if config:
        members.append(
            ControlMember("conffiles", 0o644, "".join(f"{p}\n" for p in config).encode())
        )
    return tuple(sorted(members, key=lambda m: m.name))


def _assigned(item: ClientItem, ledger: RevisionLedger) -> ClientItem:
    key = f"{item.type}:{item.name}:{item.project_version}"
    entry = ledger.assign(key, item.content_digest(), item.project_version, ())
    return replace(item, revision=entry.level)


def check_tree(package: Path, tar_path: Path, payload: tuple[Entry, ...]) -> None:
    """The package's payload (as a tar) holds exactly ``payload``: paths, kinds, modes,
    bytes and link targets. Other folders may appear only as parents (mode 0755)."""
    expected = {str(e.path): e for e in payload}
    parents = {str(p) for e in payload for p in e.path.parents}
    seen = set()
    with tarfile.open(tar_path) as tar:
        for member in tar:
            path = str(PurePosixPath("/", member.name.removeprefix(".")))
            if path == "/":
                continue
            entry = expected.get(path)
            mode = member.mode & 0o7777
            if entry is None:
                if not (member.isdir() and path in parents and mode == 0o755):
                    raise WorkError(f"{package}: holds {path}, which it should not")
                continue
            seen.add(path)
            kind = "dir" if member.isdir() else "symlink" if member.issym() else "file"
            if kind != entry.kind or (kind != "symlink" and mode != entry.mode):
                raise WorkError(
                    f"{package}: {path} is a {kind} of mode {mode:o}, expected a {entry.kind} "
                    f"of mode {entry.mode:o}"
                )
            if kind == "symlink" and member.linkname != entry.target:
                raise WorkError(f"{package}: {path} points at {member.linkname}")
            if kind == "file":
                f = tar.extractfile(member)
                if f is None or f.read() != entry.data:
                    raise WorkError(f"{package}: {path} is not the file given")
    missing = sorted(set(expected) - seen)
    if missing:
        raise WorkError(f"{package}: lacks {', '.join(missing)}")
