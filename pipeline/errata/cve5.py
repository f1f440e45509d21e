"""CVE JSON 5 records: the kernel CNA's (vulns.git) and other CNAs' (cvelistV5).

Version ranges are evaluated as the CVE schema defines it: within one ``affected``
product the first ``versions`` entry that matches decides (``changes`` refine a range),
else ``defaultStatus``, else "unknown". Versions are compared as kernel.org versions
(``6.9-rc3 < 6.9``), whatever the versionType says, when they parse as such; an entry
that cannot be evaluated (git commits, rpm versions, free text such as ``Linux Kernel
5.17 rc6``) makes a version it might cover "unknown" rather than ``defaultStatus``.

The kernel CNA writes two products: one of git ranges (with semver ranges for bugs
brought into a stable branch by a backport) whose ``defaultStatus`` speaks of commits,
and one of semver ranges. They are combined so that a product saying "affected" wins,
which is how the git block's backport ranges override the semver block's
``0 lessThan 6.5: unaffected``. When the ``.dyad`` beside the record exists, its
per-branch history replaces both (see branches.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import InputError
from ..versions.kernel import Bound, KernelVersion, at_most, below, try_parse_bound
from . import commits
from .branches import judge
from .jsonfields import Field
from .model import (
    PRECEDENCE_BRANCHES,
    PRECEDENCE_CVE_RANGES,
    UNKNOWN,
    Cvss,
    Record,
    Verdict,
)
from .sidecars import Sidecars

STATUSES = ("affected", "unaffected", "unknown")
STATES = ("PUBLISHED", "REJECTED")
# The schema's documented examples, hg (which its versions guide names beside git) and
# the kernel CNA's own type for the mainline fix. Any other type is bad input.
VERSION_TYPES = (
    "custom",
    "git",
    "hg",
    "maven",
    "original_commit_for_fix",
    "python",
    "rpm",
    "semver",
)
# Types whose versions are compared as kernel versions when they parse as such.
_VERSION_ORDERED = {None, "custom", "semver", "original_commit_for_fix"}
_COMMIT_TYPES = {"git", "hg"}
_CVE_ID = re.compile(r"CVE-[0-9]{4}-[0-9]{4,}")
# Newest CVSS first: the most precise assessment a record carries.
_CVSS_KEYS = (("cvssV4_0", "4.0"), ("cvssV3_1", "3.1"), ("cvssV3_0", "3.0"), ("cvssV2_0", "2.0"))


@dataclass(frozen=True)
class Change:
    at: KernelVersion
    status: str


@dataclass(frozen=True)
class Entry:
    """One ``versions`` entry; ``start`` is None when it is not a kernel version."""

    status: str
    start: KernelVersion | None
    # None for a single-version entry.
    end: Bound | None
    inclusive: bool
    changes: tuple[Change, ...]
    evaluable: bool

    def status_at(self, version: KernelVersion) -> str | None:
        """The status this entry gives ``version``, or None when it does not cover it."""
        if self.start is None:
            return None
        if self.end is None:
            return self.status if version == self.start else None
        within = at_most(version, self.end) if self.inclusive else below(version, self.end)
        if not (self.start <= version and within):
            return None
        status = self.status
        for change in sorted(self.changes, key=lambda c: c.at):
            if change.at <= version:
                status = change.status
        return status


@dataclass(frozen=True)
class Product:
    """One ``affected`` item: its entries and ``defaultStatus`` (None when absent)."""

    default: str | None
    entries: tuple[Entry, ...]

    def status_at(self, version: KernelVersion) -> str:
        uncertain = False
        for entry in self.entries:
            if not entry.evaluable:
                uncertain = True
                continue
            status = entry.status_at(version)
            if status is not None:
                return status
        if uncertain:
            return "unknown"
        return self.default or "unknown"


@dataclass(frozen=True)
class CveRanges:
    """The ``affected`` products of a record and the fix versions they name."""

    products: tuple[Product, ...]
    fixes: tuple[KernelVersion, ...]

    def evaluate(self, version: KernelVersion) -> Verdict:
        statuses = {p.status_at(version) for p in self.products}
        if "affected" in statuses:
            return judge(version, True, self.fixes)
        if "unaffected" in statuses:
            return judge(version, False, self.fixes)
        return UNKNOWN


def is_cve5(root: Field) -> bool:
    """Whether parsed JSON looks like a CVE JSON 5 record (it is then read strictly)."""
    value = root.value
    return isinstance(value, dict) and (
        value.get("dataType") == "CVE_RECORD" or "cveMetadata" in value
    )


def is_rejected(root: Field) -> bool:
    meta = root.value.get("cveMetadata") if isinstance(root.value, dict) else None
    return isinstance(meta, dict) and meta.get("state") == "REJECTED"


def parse_cve5(root: Field, sidecars: Sidecars) -> Record | None:
    """The record in ``root``, or None when it is REJECTED. Raises InputError."""
    root.object()
    root.require("dataType").choice(("CVE_RECORD",))
    root.require("dataVersion").nonempty_string()
    meta = root.require("cveMetadata").object()
    state = meta.require("state").choice(STATES)
    cve_id = _cve_id(meta)
    if state == "REJECTED":
        return None
    meta.require("assignerOrgId").nonempty_string()
    containers = root.require("containers").object()
    cna = containers.require("cna").object()
    cna.require("providerMetadata").object().require("orgId").nonempty_string()

    title_field = cna.get("title")
    title = title_field.string().strip() if title_field else ""
    description = _description(cna.require("descriptions"))
    references = tuple(
        item.object().require("url").nonempty_string().strip()
        for item in cna.require("references").items()
    )
    cvss = _cvss(cna)
    if cvss is None:
        adp = containers.get("adp")
        for container in adp.items() if adp else ():
            cvss = _cvss(container.object())
            if cvss is not None:
                break

    affected = cna.require("affected").items()
    if not affected:
        raise cna.require("affected").error("expected at least one affected product")
    products: list[Product] = []
    fixes: set[KernelVersion] = set()
    fix_commits: set[str] = set(sidecars.fix_commits)
    introduced_commits: set[str] = set(sidecars.introduced_commits)
    for item in affected:
        product = _product(item.object(), fixes, fix_commits, introduced_commits)
        if product is not None:
            products.append(product)

    ranges = CveRanges(tuple(products), tuple(sorted(fixes)))
    if sidecars.dyad is not None:
        # The per-branch history replaces the record's ranges: it is what they were
        # written from, and it knows about backports the semver block cannot express.
        fix_commits |= sidecars.dyad.fix_commits
        introduced_commits |= sidecars.dyad.introduced_commits
    return Record(
        id=cve_id,
        kind="cve5",
        source=root.file,
        title=title,
        description=description,
        cvss=cvss,
        references=references,
        fix_commits=frozenset(fix_commits),
        introduced_commits=frozenset(introduced_commits),
        upstream=sidecars.dyad.history if sidecars.dyad is not None else ranges,
        precedence=PRECEDENCE_BRANCHES if sidecars.dyad is not None else PRECEDENCE_CVE_RANGES,
    )


def _cve_id(meta: Field) -> str:
    # Records the kernel CNA published in early 2024 spell the key "cveID".
    field = meta.get("cveId") or meta.get("cveID") or meta.require("cveId")
    cve_id = field.string().strip()
    if not _CVE_ID.fullmatch(cve_id):
        raise field.error(f"expected a CVE id such as CVE-2024-26925, got {cve_id!r}")
    return cve_id


def _description(descriptions: Field) -> str:
    items = descriptions.items()
    if not items:
        raise descriptions.error("expected at least one description")
    texts: list[tuple[str, str]] = []
    for item in items:
        item.object()
        lang = item.require("lang").string()
        texts.append((lang, item.require("value").string()))
    english = [text for lang, text in texts if lang.lower().startswith("en")]
    return (english or [texts[0][1]])[0].strip()


def _cvss(container: Field) -> Cvss | None:
    metrics = container.get("metrics")
    if metrics is None:
        return None
    found: dict[str, Field] = {}
    for metric in metrics.items():
        metric.object()
        for key, version in _CVSS_KEYS:
            member = metric.get(key)
            if member is not None and version not in found:
                found[version] = member.object()
    for _, version in _CVSS_KEYS:
        if version in found:
            cvss = found[version]
            score = cvss.get("baseScore")
            severity = cvss.get("baseSeverity")
            vector = cvss.get("vectorString")
            return Cvss(
                version=version,
                score=score.number() if score else None,
                severity=severity.string().upper() if severity else None,
                vector=vector.string() if vector else None,
            )
    return None


def _product(
    item: Field,
    fixes: set[KernelVersion],
    fix_commits: set[str],
    introduced_commits: set[str],
) -> Product | None:
    """One affected product, or None when it is not the kernel (it is still checked).

    The fix versions and commits a kernel product names are added to the sets.
    """
    default_field = item.get("defaultStatus")
    default = default_field.choice(STATUSES) if default_field else None
    versions = item.get("versions")
    if versions is None and default is None:
        raise InputError(
            item.file, f"{item.path}.versions", "required when defaultStatus is absent"
        )
    ours = _is_kernel(item)
    if not ours:
        # Read for validity only: another product's versions say nothing about Linux.
        fixes, fix_commits, introduced_commits = set(), set(), set()
    entries = [
        _entry(v.object(), fixes, fix_commits, introduced_commits)
        for v in (versions.items() if versions else ())
    ]
    return Product(default, tuple(entries)) if ours else None


def _is_kernel(item: Field) -> bool:
    """Whether a product names the Linux kernel, or names nothing (MITRE's "n/a")."""
    names = []
    for key in ("vendor", "product", "packageName", "collectionURL"):
        member = item.get(key)
        if member is not None:
            names.append(member.string().strip().lower())
    cpes = item.get("cpes")
    names.extend(cpe.string().lower() for cpe in (cpes.items() if cpes else ()))
    meaningful = [n for n in names if n not in ("", "n/a", "unknown", "unspecified")]
    return not meaningful or any("linux" in n or "kernel" in n for n in meaningful)


def _entry(
    item: Field,
    fixes: set[KernelVersion],
    fix_commits: set[str],
    introduced_commits: set[str],
) -> Entry:
    version_text = item.require("version").string()
    status = item.require("status").choice(STATUSES)
    type_field = item.get("versionType")
    version_type = _version_type(type_field) if type_field else None
    less_than = item.get("lessThan")
    less_equal = item.get("lessThanOrEqual")
    end_field = less_than or less_equal
    end_text = end_field.string() if end_field else None
    if less_equal is not None:
        less_equal.string()
    if end_field is not None and version_type is None:
        raise InputError(
            item.file,
            f"{item.path}.versionType",
            "required for a range (an entry with lessThan or lessThanOrEqual)",
        )
    changes: list[tuple[str, str]] = []
    changes_field = item.get("changes")
    for change in changes_field.items() if changes_field else ():
        change.object()
        changes.append((change.require("at").string(), change.require("status").choice(STATUSES)))

    if version_type in _COMMIT_TYPES:
        _note_commits(
            version_text,
            end_text,
            less_than is not None,
            status,
            changes,
            fix_commits,
            introduced_commits,
        )
        return Entry(status, None, None, False, (), evaluable=False)
    if version_type == "original_commit_for_fix":
        commit = commits.normalise(version_text)
        if commit is not None:
            fix_commits.add(commit)
            return Entry(status, None, None, False, (), evaluable=False)
    if version_type not in _VERSION_ORDERED:
        # rpm, maven, python: an order we cannot apply to kernel.org versions.
        return Entry(status, None, None, False, (), evaluable=False)

    start = KernelVersion.try_parse(version_text)
    end = try_parse_bound(end_text) if end_text is not None else None
    parsed_changes = [(KernelVersion.try_parse(at), st) for at, st in changes]
    if (
        start is None
        or (end_text is not None and end is None)
        or any(at is None for at, _ in parsed_changes)
    ):
        return Entry(status, None, None, False, (), evaluable=False)
    entry = Entry(
        status,
        start,
        end,
        inclusive=less_than is None,
        changes=tuple(Change(at, st) for at, st in parsed_changes if at is not None),
        evaluable=True,
    )
    fixes.update(_fix_points(entry, version_type))
    return entry


def _version_type(field: Field) -> str:
    text = field.string()
    lowered = text.strip().lower()
    if lowered not in VERSION_TYPES:
        raise field.error(f"expected a versionType among {', '.join(VERSION_TYPES)}, got {text!r}")
    return lowered


def _fix_points(entry: Entry, version_type: str | None) -> list[KernelVersion]:
    """The versions at which this entry says a fix arrived."""
    points: list[KernelVersion] = []
    if entry.start is None:
        return points
    if version_type == "original_commit_for_fix" and not entry.start.is_zero:
        points.append(entry.start)
    if entry.end is not None and entry.status == "unaffected" and not entry.start.is_zero:
        points.append(entry.start)
    if (
        entry.end is not None
        and entry.status == "affected"
        and not entry.inclusive
        and isinstance(entry.end, KernelVersion)
        # "6.4.13 lessThan 6.5": a bug backported into the 6.4 branch ends with that
        # branch, it is not fixed by 6.5.
        and not (entry.start.is_stable and not entry.start.same_branch(entry.end))
    ):
        points.append(entry.end)
    points.extend(c.at for c in entry.changes if c.status == "unaffected")
    return points


def _note_commits(
    version: str,
    end: str | None,
    end_exclusive: bool,
    status: str,
    changes: list[tuple[str, str]],
    fix_commits: set[str],
    introduced_commits: set[str],
) -> None:
    """Record the commits of a git range: its start introduces, its lessThan fixes."""
    start = commits.normalise(version)
    if start is not None and status == "affected":
        introduced_commits.add(start)
    limit = commits.normalise(end) if end is not None else None
    if limit is not None and end_exclusive and status == "affected":
        fix_commits.add(limit)
    for at, change_status in changes:
        commit = commits.normalise(at)
        if commit is not None:
            (fix_commits if change_status == "unaffected" else introduced_commits).add(commit)
