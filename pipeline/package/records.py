"""What the package stage produced, read back: the list ``livegraft index`` publishes.

Layout, below ``<work_dir>/packages/``::

    deb/<name>_<N>_<arch>.deb          the packages, one file per name and version
    rpm/<name>-<N>-<release>.<arch>.rpm
    records/<package file name>.json   one record per package (``PackageRecord``)

A package file never changes once written (a level's package is immutable; the stage
refuses to produce different bytes under the same name and version). The record is
written after its package, so a record always names a complete package file.

For ``livegraft index``: ``load_records(work_dir)`` gives every package with its path,
checksum, kernel build, level and fixes; ``advisories(records)`` groups them by fix, one
advisory per fix with its CVEs, severity, description and the packages carrying it.

Two kinds of record (``kind``): ``livepatch`` (one kernel build's module: ``build``,
``level``, ``module``, ``fixes``, ``cves``; a record written before kinds existed is one)
and ``client`` (``livegraft-client``, the dnf plugin, the apt hook: ``project_version``
and ``revision`` instead, no build and no fixes, so it belongs to every repository and to no
advisory).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..files import write_atomic
from ..versions import debian as debian_versions
from ..versions import rpm as rpm_versions

RECORD_FORMAT = 1
LIVEPATCH_KIND = "livepatch"
CLIENT_KIND = "client"
PACKAGES_DIR = "packages"
RECORDS_DIR = "records"


def packages_dir(work_dir: Path) -> Path:
    return work_dir / PACKAGES_DIR


def record_path(work_dir: Path, filename: str) -> Path:
    return packages_dir(work_dir) / RECORDS_DIR / f"{filename}.json"


@dataclass(frozen=True)
class PackageRecord:
    # The whole record as stored (see ``Packager``): what callers read beyond the fields.
    document: dict[str, Any]
    path: Path

    @property
    def type(self) -> str:
        return str(self.document["type"])

    @property
    def kind(self) -> str:
        return str(self.document.get("kind", LIVEPATCH_KIND))

    @property
    def is_client(self) -> bool:
        return self.kind == CLIENT_KIND

    @property
    def name(self) -> str:
        return str(self.document["name"])

    @property
    def version(self) -> str:
        return str(self.document["version"])

    @property
    def release(self) -> str:
        return str(self.document["release"])

    @property
    def arch(self) -> str:
        return str(self.document["arch"])

    @property
    def filename(self) -> str:
        return str(self.document["filename"])

    @property
    def sha256(self) -> str:
        return str(self.document["sha256"])

    @property
    def size(self) -> int:
        return int(self.document["size"])

    @property
    def uname_r(self) -> str:
        return str(self.document["build"]["uname_r"])

    @property
    def level(self) -> int:
        return int(self.document["level"])

    @property
    def revision(self) -> int:
        """A client package's revision (its RPM Release, its DEB version's last part)."""
        return int(self.document["revision"])

    @property
    def fixes(self) -> list[dict[str, Any]]:
        """Each fix: id, title, description, severity, cves (none for a client package)."""
        return list(self.document.get("fixes", []))

    @property
    def cves(self) -> list[str]:
        return list(self.document.get("cves", []))

    def newer_than(self, other: PackageRecord) -> bool:
        """Of two records of one package name: whether this one is the later version."""
        if self.is_client:
            return version_compare(self.type, self.version, self.release, other) > 0
        return self.level > other.level


def save_record(work_dir: Path, document: dict[str, Any]) -> Path:
    path = record_path(work_dir, str(document["filename"]))
    write_atomic(path, json.dumps(document, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    return path


def read_record(work_dir: Path, filename: str) -> dict[str, Any] | None:
    """The stored record for a package file name, or None when there is none this reads."""
    try:
        document = json.loads(record_path(work_dir, filename).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(document, dict) or document.get("format") != RECORD_FORMAT:
        return None
    return document


def load_records(work_dir: Path) -> list[PackageRecord]:
    """Every package the stage produced, sorted by format, name and level.

    A record whose package file is missing is an error, not a silent gap: the index
    would otherwise publish metadata naming a file it cannot serve.
    """
    folder = packages_dir(work_dir) / RECORDS_DIR
    if not folder.is_dir():
        return []
    records = []
    for path in sorted(folder.glob("*.json")):
        document = read_record(work_dir, path.name.removesuffix(".json"))
        if document is None:
            raise InputError(path, "format", f"a package record of format {RECORD_FORMAT}")
        package = packages_dir(work_dir) / str(document["path"])
        if not package.is_file():
            raise InputError(path, "path", f"names {package}, which does not exist")
        records.append(PackageRecord(document, package))
    records.sort(key=lambda r: (r.type, r.kind, r.name, *_order(r)))
    return records


def _order(r: PackageRecord) -> tuple[int, str, int]:
    # Client packages by revision within a version (versions only need a stable order
    # here: the index picks the newest with newer_than).
    if r.is_client:
        return (0, r.version, r.revision)
    return (r.level, "", 0)


def version_compare(kind: str, version: str, release: str, other: PackageRecord) -> int:
    """dpkg's or rpm's order of (version, release) against ``other``'s: -1, 0 or 1."""
    if kind == "deb":
        return debian_versions.compare(version, other.version)
    return rpm_versions.compare(f"{version}-{release}", f"{other.version}-{other.release}")


@dataclass(frozen=True)
class Advisory:
    """One fix as an advisory: every package (of every format) that carries it."""

    id: str
    title: str
    description: str
    severity: str
    cves: tuple[str, ...]
    packages: tuple[PackageRecord, ...]


def advisories(records: Iterable[PackageRecord]) -> list[Advisory]:
    """One advisory per fix id, its packages in the order given; sorted by id."""
    found: dict[str, tuple[dict[str, Any], list[PackageRecord]]] = {}
    for record in records:
        if record.is_client:
            continue
        for fix in record.fixes:
            found.setdefault(str(fix["id"]), (fix, []))[1].append(record)
    return [
        Advisory(
            id=fix_id,
            title=str(fix["title"]),
            description=str(fix["description"]),
            severity=str(fix["severity"]),
            cves=tuple(fix["cves"]),
            packages=tuple(packages),
        )
        for fix_id, (fix, packages) in sorted(found.items())
    ]
