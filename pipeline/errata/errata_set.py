"""Every loaded vulnerability plus distro backport data: the answers the plan and report use."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..kernels.model import KernelBuild
from ..versions import debian
from ..versions.kernel import KernelVersion
from .debian_tracker import DistroEntry
from .distro import DistroData
from .model import UNKNOWN, Status, Verdict, Vulnerability, id_order


@dataclass(frozen=True)
class ErrataSet:
    """Vulnerabilities (merged by id and fix commit) and the distro data beside them."""

    vulns: tuple[Vulnerability, ...] = ()
    distro: DistroData = field(default_factory=DistroData)
    _index: dict[str, Vulnerability] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.vulns, key=lambda v: id_order(v.id)))
        object.__setattr__(self, "vulns", ordered)
        object.__setattr__(self, "_index", {vid: v for v in ordered for vid in v.ids})

    def vulnerabilities(self) -> tuple[Vulnerability, ...]:
        """Every vulnerability, CVE ids in numeric order (CVE-2024-1086 < CVE-2024-26609)."""
        return self.vulns

    def __len__(self) -> int:
        return len(self.vulns)

    def get(self, vid: str) -> Vulnerability | None:
        """The vulnerability with this id or alias, or None."""
        return self._index.get(vid)

    def status_at(self, vid: str, upstream_version: KernelVersion | str) -> Verdict:
        """Upstream status of a kernel.org version; "unknown" for an id nothing describes."""
        vuln = self.get(vid)
        return vuln.status_at(upstream_version) if vuln is not None else UNKNOWN

    def distro_entry(self, vid: str, build: KernelBuild) -> DistroEntry | None:
        """The distro tracker's entry for this vulnerability in the build's suite and package."""
        if build.family != "deb":
            return None
        vuln = self.get(vid)
        ids = vuln.ids if vuln is not None else (vid,)
        return self.distro.lookup(ids, build.dist, build.source_package)

    def status_for_build(self, cve_id: str, build: KernelBuild) -> Status:
        """Is this shipped kernel build exposed to the vulnerability?

        * "fixed": the kernel itself contains the fix;
        * "affected": it is vulnerable;
        * "unaffected": it never was (or the distro says not-affected);
        * "unknown": nothing loaded can tell.

        The distro's backport data, when it has an entry for the build's (dist,
        source_package), decides: a package version at or past the listed fixed version
        is "fixed" even when its upstream base is below the upstream fix, and below it is
        "affected"; an open entry (<unfixed>, <no-dsa>, …) is "affected". Otherwise the
        build's upstream base version is evaluated against the upstream ranges.
        """
        entry = self.distro_entry(cve_id, build)
        if entry is not None:
            if entry.state == "not-affected":
                return "unaffected"
            if entry.state == "open" or entry.version is None:
                return "affected"
            newer = debian.compare(build.package_version, entry.version) >= 0
            return "fixed" if newer else "affected"
        vuln = self.get(cve_id)
        version = KernelVersion.try_parse(build.upstream_version)
        if vuln is None or version is None:
            return "unknown"
        return vuln.status_at(version).status
