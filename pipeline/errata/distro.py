"""Distribution backport data, looked up by (CVE, suite, source package).

Distributions backport fixes without moving to the upstream release that has them
(Debian shipped the Dirty Pipe fix in 5.10.92-2, upstream fixed it in 5.10.102), so
for a build of theirs their word overrides the upstream ranges.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ..versions import debian
from .debian_tracker import DistroEntry, normalise_suite

_STATE_ORDER = {"fixed": 0, "not-affected": 1, "open": 2}


@dataclass(frozen=True)
class DistroData:
    """The tracker entries of every loaded file, one decision per key.

    data/CVE/list wins over the DSA/DLA lists (it is the tracker's own record, and the
    lists are derived from it); among entries of equal standing a fixed version wins
    (the lowest, i.e. the first upload that had the fix), then not-affected, then open.
    """

    entries: tuple[DistroEntry, ...] = ()
    _chosen: dict[tuple[str, str, str], DistroEntry] = field(
        init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        chosen: dict[tuple[str, str, str], DistroEntry] = {}
        for entry in self.entries:
            key = (entry.cve, entry.suite, entry.package)
            current = chosen.get(key)
            if current is None or _better(entry, current):
                chosen[key] = entry
        object.__setattr__(self, "_chosen", chosen)

    def lookup(self, ids: Iterable[str], dist: str, package: str) -> DistroEntry | None:
        """The entry for the first of ``ids`` the tracker has for (dist, package)."""
        suite = normalise_suite(dist)
        for vid in ids:
            entry = self._chosen.get((vid, suite, package))
            if entry is not None:
                return entry
        return None

    def cves(self) -> frozenset[str]:
        return frozenset(e.cve for e in self.entries)


def _better(new: DistroEntry, old: DistroEntry) -> bool:
    if new.from_cve_list != old.from_cve_list:
        return new.from_cve_list
    if new.state != old.state:
        return _STATE_ORDER[new.state] < _STATE_ORDER[old.state]
    if new.state == "fixed" and new.version is not None and old.version is not None:
        return debian.compare(new.version, old.version) < 0
    return False
