"""Vulnerabilities as livegraft sees them: records from several feeds, merged by id and fix.

One :class:`Record` is what one file says (a CVE JSON 5 record with its sidecars, an OSV
record, or the Debian security tracker's lines about one CVE). Records that share an id
or a fix commit describe one :class:`Vulnerability`; its primary id is the lowest CVE id
and the others are its aliases.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, Protocol

from ..versions.kernel import KernelVersion

# "fixed": the version contains the fix; "unaffected": it never had the bug.
Status = Literal["affected", "fixed", "unaffected", "unknown"]
# What `livegraft errata status` prints: "fixed" is reported as "unaffected".
ReportedStatus = Literal["affected", "unaffected", "unknown"]
RecordKind = Literal["cve5", "osv", "debian"]

# Which upstream data wins when records of one vulnerability disagree: the kernel CNA's
# per-branch history (.dyad) first, then CVE JSON 5 ranges, then OSV (converted from
# CVE JSON 5 and losing detail on the way), then the mainline fix a distro tracker notes.
PRECEDENCE_BRANCHES = 3
PRECEDENCE_CVE_RANGES = 2
PRECEDENCE_OSV = 1
PRECEDENCE_DISTRO_NOTE = 0


class Verdict(NamedTuple):
    """The status of one upstream version, and the fix that applies on its branch.

    ``fixed_version`` is the fix the version contains ("fixed") or the one its branch
    gets after it ("affected"); None when the branch has no fix or the version was
    never vulnerable.
    """

    status: Status
    fixed_version: KernelVersion | None = None

    @property
    def reported_status(self) -> ReportedStatus:
        """The status as `livegraft errata status` prints it ("fixed" → "unaffected")."""
        return "unaffected" if self.status == "fixed" else self.status


UNKNOWN = Verdict("unknown", None)


class Upstream(Protocol):
    """Upstream range data that can answer for a kernel.org version."""

    def evaluate(self, version: KernelVersion) -> Verdict: ...


@dataclass(frozen=True)
class Cvss:
    """A CVSS assessment as a record gives it (any part may be missing)."""

    version: str
    score: float | None
    severity: str | None
    vector: str | None

    def __str__(self) -> str:
        parts = [f"{self.score:g}" if self.score is not None else None, self.severity]
        text = " ".join(p for p in parts if p)
        return text or self.vector or f"CVSS {self.version}"


@dataclass(frozen=True)
class Record:
    """What one file says about one vulnerability."""

    id: str
    kind: RecordKind
    source: str
    aliases: tuple[str, ...] = ()
    title: str = ""
    description: str = ""
    cvss: Cvss | None = None
    references: tuple[str, ...] = ()
    # Commits as 12 lower-case hex digits (see commits.normalise).
    fix_commits: frozenset[str] = frozenset()
    introduced_commits: frozenset[str] = frozenset()
    upstream: Upstream | None = None
    precedence: int = PRECEDENCE_CVE_RANGES

    @property
    def ids(self) -> tuple[str, ...]:
        return (self.id, *self.aliases)


_CVE = re.compile(r"CVE-([0-9]{4})-([0-9]{4,})")


def id_order(vid: str) -> tuple[int, int, int, str]:
    """Sort key for ids: CVE ids by year and number (CVE-2024-1086 < CVE-2024-26609), first."""
    match = _CVE.fullmatch(vid)
    if match:
        return (0, int(match[1]), int(match[2]), vid)
    return (1, 0, 0, vid)


@dataclass(frozen=True)
class Vulnerability:
    """One vulnerability, from every record that describes it.

    ``id`` is the lowest CVE id among the records (or the lowest id when none is a CVE);
    ``aliases`` are the other ids, including those of records merged because they name
    the same fix commit (such as a rejected duplicate).
    """

    id: str
    aliases: tuple[str, ...]
    records: tuple[Record, ...] = field(repr=False)

    @property
    def ids(self) -> tuple[str, ...]:
        return (self.id, *self.aliases)

    @property
    def title(self) -> str:
        """A one-line title: the record's title, else the first line of its description."""
        for record in self.records:
            if record.title.strip():
                return record.title.strip()
        for record in self.records:
            for line in record.description.splitlines():
                if line.strip():
                    return _headline(line.strip())
        return ""

    @property
    def description(self) -> str:
        """The full description of the most authoritative record that has one."""
        return next((r.description for r in self.records if r.description.strip()), "")

    @property
    def cvss(self) -> Cvss | None:
        return next((r.cvss for r in self.records if r.cvss is not None), None)

    @property
    def severity(self) -> str | None:
        """CVSS base score and severity (``7.8 HIGH``) when a record has them."""
        cvss = self.cvss
        return str(cvss) if cvss is not None else None

    @property
    def references(self) -> tuple[str, ...]:
        """Reference URLs of every record, first seen first, without duplicates."""
        return tuple(dict.fromkeys(url for r in self.records for url in r.references))

    @property
    def fix_commits(self) -> tuple[str, ...]:
        """Fix commits (12 hex digits) named by any record, mainline and stable."""
        return tuple(sorted({c for r in self.records for c in r.fix_commits}))

    @property
    def introduced_commits(self) -> tuple[str, ...]:
        return tuple(sorted({c for r in self.records for c in r.introduced_commits}))

    @property
    def has_upstream_data(self) -> bool:
        """Whether some record has upstream ranges (else every status is "unknown")."""
        return any(r.upstream is not None for r in self.records)

    def status_at(self, upstream_version: KernelVersion | str) -> Verdict:
        """Status of a kernel.org version (e.g. "6.1.94") and the fix on its branch.

        Raises InputError for a string that is not a kernel version. The most
        authoritative data that can answer decides (see PRECEDENCE_*); records of equal
        standing are combined so that any "affected" wins, then "fixed", then
        "unaffected".
        """
        version = (
            upstream_version
            if isinstance(upstream_version, KernelVersion)
            else KernelVersion.parse(upstream_version, field="upstream version")
        )
        levels = sorted({r.precedence for r in self.records}, reverse=True)
        for level in levels:
            verdicts = [
                r.upstream.evaluate(version)
                for r in self.records
                if r.precedence == level and r.upstream is not None
            ]
            verdict = combine(verdicts)
            if verdict.status != "unknown":
                return verdict
        return UNKNOWN


_RANK: dict[Status, int] = {"affected": 0, "fixed": 1, "unaffected": 2, "unknown": 3}


def combine(verdicts: Iterable[Verdict]) -> Verdict:
    """One verdict from several of equal standing: affected > fixed > unaffected > unknown.

    Among verdicts of the winning status, one that names a fix version is preferred.
    """
    best = UNKNOWN
    for verdict in verdicts:
        rank, best_rank = _RANK[verdict.status], _RANK[best.status]
        if rank < best_rank or (
            rank == best_rank and best.fixed_version is None and verdict.fixed_version
        ):
            best = verdict
    return best


TITLE_MAX = 100


def _headline(text: str) -> str:
    """The first sentence of a description, cut at a word near TITLE_MAX characters.

    Other CNAs put a paragraph where the kernel CNA puts a subject line; a table cell
    or an advisory title needs the line.
    """
    sentence = text.split(". ", 1)[0]
    if len(sentence) <= TITLE_MAX:
        return sentence
    return sentence[:TITLE_MAX].rsplit(" ", 1)[0] + " …"
