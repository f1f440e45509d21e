"""What the report shows, computed once for every output format."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errata.load import ErrataSet
from ..fixes import Fix
from ..kernels.model import KernelBuild
from ..plan import Plan

# Order matters: it is the legend's order and the order of the counts.
STATUSES = ("fixed", "livepatched", "affected", "unaffected", "unknown")
LABELS = {
    "fixed": "fixed in the kernel",
    "livepatched": "livepatched",
    "affected": "affected, no livepatch",
    "unaffected": "unaffected",
    "unknown": "unknown",
}


@dataclass(frozen=True)
class VulnInfo:
    id: str
    title: str
    severity: str | None
    references: tuple[str, ...]
    aliases: tuple[str, ...]
    # Fixes of ours that name it.
    fixes: tuple[str, ...]


@dataclass(frozen=True)
class BuildRow:
    build: KernelBuild
    level: int | None
    module: str | None
    statuses: tuple[str, ...]  # one per vulnerability, in Matrix.vulns order

    @property
    def counts(self) -> dict[str, int]:
        c = Counter(self.statuses)
        return {s: c.get(s, 0) for s in STATUSES}


@dataclass(frozen=True)
class Matrix:
    name: str
    vulns: tuple[VulnInfo, ...]
    rows: tuple[BuildRow, ...]

    @property
    def totals(self) -> dict[str, int]:
        c: Counter[str] = Counter()
        for row in self.rows:
            c.update(row.statuses)
        return {s: c.get(s, 0) for s in STATUSES}

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "statuses": list(STATUSES),
            "vulnerabilities": [
                {
                    "id": v.id,
                    "title": v.title,
                    "severity": v.severity,
                    "aliases": list(v.aliases),
                    "references": list(v.references),
                    "fixes": list(v.fixes),
                }
                for v in self.vulns
            ],
            "builds": [
                {
                    "uname_r": r.build.uname_r,
                    "package_version": r.build.package_version,
                    "upstream_version": r.build.upstream_version,
                    "family": r.build.family,
                    "dist": r.build.dist,
                    "level": r.level,
                    "module": r.module,
                    "counts": r.counts,
                    "status": {v.id: s for v, s in zip(self.vulns, r.statuses, strict=True)},
                }
                for r in self.rows
            ],
            "totals": self.totals,
        }


def build_matrix(
    name: str, builds: Sequence[KernelBuild], fixes: Sequence[Fix], errata: ErrataSet, plan: Plan
) -> Matrix:
    by_fix: dict[str, list[str]] = {}
    for fix in fixes:
        for cve in fix.cves:
            by_fix.setdefault(cve, []).append(fix.id)
    # A vulnerability earns a row when something says how it stands on these builds:
    # upstream ranges, distro data for one of their suites, or a fix of ours. The
    # tracker's lists also name every CVE of other suites, which would only add noise.
    relevant = {
        v.id
        for v in errata.vulnerabilities()
        if v.has_upstream_data or any(errata.distro_entry(v.id, b) for b in builds)
    }
    ids = sorted(relevant | set(by_fix), key=_id_order)
    vulns = []
    for vid in ids:
        record = errata.get(vid)
        vulns.append(
            VulnInfo(
                id=vid,
                title=record.title if record else "(no errata record)",
                severity=record.severity if record else None,
                references=tuple(record.references) if record else (),
                aliases=tuple(record.aliases) if record else (),
                fixes=tuple(by_fix.get(vid, ())),
            )
        )
    cells = {c.build.key: c for c in plan.cells}
    rows = []
    for build in builds:
        cell = cells.get(build.key)
        covered = set(cell.cves) if cell else set()
        statuses = []
        for v in vulns:
            status: str = errata.status_for_build(v.id, build)
            if status == "affected" and v.id in covered:
                status = "livepatched"
            statuses.append(status)
        rows.append(
            BuildRow(
                build,
                cell.level if cell else None,
                cell.module_name if cell else None,
                tuple(statuses),
            )
        )
    return Matrix(name, tuple(vulns), tuple(rows))


def _id_order(vid: str) -> tuple[str, int, str]:
    """CVE-2024-1086 before CVE-2024-26581: numbers compared as numbers."""
    head, _, tail = vid.rpartition("-")
    return (head, int(tail), vid) if tail.isdigit() else (vid, 0, vid)
