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
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..files import write_atomic

RECORD_FORMAT = 1
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
    def fixes(self) -> list[dict[str, Any]]:
        """Each fix: id, title, description, severity, cves."""
        return list(self.document["fixes"])

    @property
    def cves(self) -> list[str]:
        return list(self.document["cves"])


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
    records.sort(key=lambda r: (r.type, r.name, r.level))
    return records


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
