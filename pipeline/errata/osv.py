"""OSV records for the ``Linux`` ecosystem (osv.dev's conversion of kernel CVEs).

Evaluation follows the OSV schema: a version is affected when it is listed in
``versions`` or lies in an ECOSYSTEM/SEMVER range (events walked in version order,
``limit`` bounding the range); otherwise it is not. GIT ranges cannot be evaluated
against a version number: their commits are kept as fix and introducing commits, which
is what merges an OSV record with the CVE record it came from.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..versions.kernel import Bound, KernelVersion, below, try_parse_bound
from . import commits
from .branches import judge
from .jsonfields import Field
from .model import PRECEDENCE_OSV, UNKNOWN, Cvss, Record, Verdict

RANGE_TYPES = ("ECOSYSTEM", "SEMVER", "GIT")
EVENT_KINDS = ("introduced", "fixed", "last_affected", "limit")
ECOSYSTEM = "Linux"
# At equal versions an introduction is walked before the fix, so a bug introduced and
# fixed by the same release leaves it unaffected.
_WALK_ORDER = {"introduced": 0, "fixed": 1, "last_affected": 1}


@dataclass(frozen=True)
class EventRange:
    # (kind, version) without the limits; limits apart.
    events: tuple[tuple[str, KernelVersion], ...]
    limits: tuple[Bound, ...]

    def includes(self, version: KernelVersion) -> bool:
        if self.limits and not any(below(version, limit) for limit in self.limits):
            return False
        vulnerable = False
        for kind, point in sorted(self.events, key=lambda e: (e[1], _WALK_ORDER[e[0]])):
            if kind == "introduced" and version >= point:
                vulnerable = True
            elif (kind == "fixed" and version >= point) or (
                kind == "last_affected" and version > point
            ):
                vulnerable = False
        return vulnerable


@dataclass(frozen=True)
class OsvRanges:
    ranges: tuple[EventRange, ...]
    versions: frozenset[KernelVersion]
    fixes: tuple[KernelVersion, ...]
    # Some range or listed version of the Linux package is not a kernel version.
    uncertain: bool

    def evaluate(self, version: KernelVersion) -> Verdict:
        if version in self.versions or any(r.includes(version) for r in self.ranges):
            return judge(version, True, self.fixes)
        if self.uncertain:
            return UNKNOWN
        return judge(version, False, self.fixes)


def is_osv(root: Field) -> bool:
    """Whether parsed JSON looks like an OSV record (it is then read strictly)."""
    value = root.value
    return (
        isinstance(value, dict)
        and "id" in value
        and any(key in value for key in ("modified", "schema_version", "affected"))
    )


def parse_osv(root: Field) -> Record | None:
    """The record in ``root``, or None when it is withdrawn. Raises InputError."""
    root.object()
    osv_id = root.require("id").nonempty_string().strip()
    root.require("modified").string()
    withdrawn = root.get("withdrawn")
    if withdrawn is not None:
        withdrawn.string()
        return None
    aliases_field = root.get("aliases")
    aliases = tuple(
        a.nonempty_string().strip() for a in (aliases_field.items() if aliases_field else ())
    )
    summary = root.get("summary")
    details = root.get("details")
    references = root.get("references")
    urls = tuple(
        r.object().require("url").nonempty_string().strip()
        for r in (references.items() if references else ())
    )

    ranges: list[EventRange] = []
    versions: set[KernelVersion] = set()
    fixes: set[KernelVersion] = set()
    fix_commits: set[str] = set()
    introduced_commits: set[str] = set()
    uncertain = False
    evaluable = False
    affected = root.get("affected")
    for item in affected.items() if affected else ():
        item.object()
        package = item.get("package")
        ours = True
        if package is not None:
            package.object()
            ecosystem = package.require("ecosystem").string()
            package.require("name").string()
            ours = ecosystem.strip().lower() == ECOSYSTEM.lower()
        ranges_field = item.get("ranges")
        for range_field in ranges_field.items() if ranges_field else ():
            kind, events = _range(range_field.object())
            if not ours:
                continue
            if kind == "GIT":
                _note_commits(events, fix_commits, introduced_commits)
                continue
            evaluable = True
            parsed = _event_range(events)
            if parsed is None:
                uncertain = True
                continue
            ranges.append(parsed)
            fixes.update(point for k, point in parsed.events if k == "fixed")
        versions_field = item.get("versions")
        for listed in versions_field.items() if versions_field else ():
            text = listed.string()
            if not ours:
                continue
            evaluable = True
            version = KernelVersion.try_parse(text)
            if version is None:
                uncertain = True
            else:
                versions.add(version)

    upstream = (
        OsvRanges(tuple(ranges), frozenset(versions), tuple(sorted(fixes)), uncertain)
        if evaluable
        else None
    )
    return Record(
        id=osv_id,
        kind="osv",
        source=root.file,
        aliases=tuple(a for a in dict.fromkeys(aliases) if a != osv_id),
        title=summary.string().strip() if summary else "",
        description=details.string().strip() if details else "",
        cvss=_cvss(root),
        references=urls,
        fix_commits=frozenset(fix_commits),
        introduced_commits=frozenset(introduced_commits),
        upstream=upstream,
        precedence=PRECEDENCE_OSV,
    )


def _range(field: Field) -> tuple[str, list[tuple[str, str]]]:
    kind = field.require("type").choice(RANGE_TYPES)
    if kind == "GIT":
        field.require("repo").nonempty_string()
    events_field = field.require("events")
    events: list[tuple[str, str]] = []
    for event in events_field.items():
        members = event.object().value
        if len(members) != 1 or next(iter(members)) not in EVENT_KINDS:
            raise event.error(f"expected an object with exactly one of {', '.join(EVENT_KINDS)}")
        name = next(iter(members))
        events.append((name, event.require(name).nonempty_string().strip()))
    if not any(name == "introduced" for name, _ in events):
        raise events_field.error("expected at least one introduced event")
    return kind, events


def _event_range(events: list[tuple[str, str]]) -> EventRange | None:
    """The range as kernel versions, or None when an event is not one."""
    points: list[tuple[str, KernelVersion]] = []
    limits: list[Bound] = []
    for kind, text in events:
        if kind == "limit":
            bound = try_parse_bound(text)
            if bound is None:
                return None
            limits.append(bound)
            continue
        version = KernelVersion.try_parse(text)
        if version is None:
            return None
        points.append((kind, version))
    return EventRange(tuple(points), tuple(limits))


def _note_commits(
    events: list[tuple[str, str]], fix_commits: set[str], introduced_commits: set[str]
) -> None:
    for kind, text in events:
        commit = commits.normalise(text)
        if commit is None:
            continue
        if kind == "fixed":
            fix_commits.add(commit)
        elif kind == "introduced":
            introduced_commits.add(commit)


def _cvss(root: Field) -> Cvss | None:
    severity = root.get("severity")
    vectors: dict[str, str] = {}
    for item in severity.items() if severity else ():
        item.object()
        vectors[item.require("type").string()] = item.require("score").string()
    specific = root.get("database_specific")
    label = specific.get("severity") if specific is not None and specific.is_object() else None
    level = label.value.upper() if label is not None and isinstance(label.value, str) else None
    for kind, version in (("CVSS_V4", "4.0"), ("CVSS_V3", "3.x"), ("CVSS_V2", "2.0")):
        if kind in vectors:
            return Cvss(version, None, level, vectors[kind])
    return Cvss("", None, level, None) if level else None
