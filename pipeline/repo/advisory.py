"""Advisories: what a package version fixes, as both repository formats publish it.

An advisory names its packages by file name (the basename in a pool), so one advisory
can list the RPM and the DEB of the same level; each repository takes the files that are
in its own pool and leaves the rest to the others.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from ..errors import InputError
from ..fixes import SEVERITIES

ReferenceType = Literal["cve", "self", "bugzilla", "other"]
REFERENCE_TYPES: tuple[ReferenceType, ...] = ("cve", "self", "bugzilla", "other")
ADVISORY_TYPES = ("security", "bugfix", "enhancement")

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}$")
_CVE = re.compile(r"^CVE-\d{4}-\d{4,}$")
# What a pool file may be called: no path separator, nothing a URL or an index must quote
# beyond "+" and "~", which every apt and dnf handles.
POOL_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~^-]*\.(rpm|deb)$")


def cve_url(cve: str) -> str:
    return f"https://www.cve.org/CVERecord?id={cve}"


@dataclass(frozen=True)
class Reference:
    url: str
    type: ReferenceType = "other"
    id: str = ""
    title: str = ""


@dataclass(frozen=True)
class Advisory:
    """One advisory. ``packages``: pool file names (``kpatch-patch-…rpm``, ``livepatch-…deb``)."""

    id: str
    title: str
    severity: str
    description: str
    issued: datetime
    cves: tuple[str, ...] = ()
    references: tuple[Reference, ...] = ()
    packages: tuple[str, ...] = ()
    type: str = "security"
    updated: datetime | None = None

    def __post_init__(self) -> None:
        where = f"advisory {self.id!r}"
        if not _ID.match(self.id):
            raise InputError(None, f"{where}: id", "letters, digits and ._:+- (max 128)")
        if not self.title.strip() or "\n" in self.title:
            raise InputError(None, f"{where}: title", "one non-empty line")
        if self.severity.lower() not in SEVERITIES:
            raise InputError(None, f"{where}: severity", f"one of {', '.join(SEVERITIES)}")
        if self.type not in ADVISORY_TYPES:
            raise InputError(None, f"{where}: type", f"one of {', '.join(ADVISORY_TYPES)}")
        for cve in self.cves:
            if not _CVE.match(cve):
                raise InputError(None, f"{where}: cves", f"CVE-YYYY-NNNN ids, not {cve!r}")
        for ref in self.references:
            if ref.type not in REFERENCE_TYPES:
                raise InputError(
                    None, f"{where}: references", f"types {', '.join(REFERENCE_TYPES)}"
                )
        for name in self.packages:
            if not POOL_FILE_NAME.match(name):
                raise InputError(
                    None, f"{where}: packages", f"pool file names (.rpm/.deb), not {name!r}"
                )
        if self.issued.tzinfo is None:
            raise InputError(None, f"{where}: issued", "a time with a time zone")

    @property
    def severity_title(self) -> str:
        """As dnf's ``--sec-severity`` and RHEL's updateinfo spell it: ``Important``."""
        return self.severity.lower().capitalize()

    def all_references(self) -> tuple[Reference, ...]:
        """The given references plus one ``cve`` reference per CVE that lacks one."""
        have = {r.id for r in self.references if r.type == "cve"}
        extra = tuple(
            Reference(url=cve_url(c), type="cve", id=c, title=c) for c in self.cves if c not in have
        )
        return self.references + extra

    def summary(self) -> dict[str, Any]:
        """Canonical-JSON form: what a repository's content hash is computed over."""
        return {
            "id": self.id,
            "title": self.title,
            "severity": self.severity.lower(),
            "description": self.description,
            "issued": iso(self.issued),
            "updated": iso(self.updated) if self.updated else None,
            "type": self.type,
            "cves": list(self.cves),
            "references": [
                {"url": r.url, "type": r.type, "id": r.id, "title": r.title}
                for r in self.all_references()
            ],
            "packages": sorted(self.packages),
        }


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def for_pool(
    advisories: Iterable[Advisory], files: Mapping[str, Any] | Sequence[str]
) -> list[tuple[Advisory, list[str]]]:
    """The advisories that name files of this pool, each with those files, sorted by id."""
    present = set(files)
    chosen = []
    seen: set[str] = set()
    for adv in advisories:
        if adv.id in seen:
            raise InputError(None, f"advisory {adv.id!r}", "advisory ids must be unique")
        seen.add(adv.id)
        mine = sorted(p for p in adv.packages if p in present)
        if mine:
            chosen.append((adv, mine))
    return sorted(chosen, key=lambda pair: pair[0].id)
