"""The Debian security tracker's text lists: ``data/CVE/list`` and the DSA / DLA lists.

``data/CVE/list`` has one stanza per CVE, its lines indented (a TAB in the real file,
spaces in some quotations of it)::

    CVE-2024-38550 (In the Linux kernel, the following vulnerability has been ...)
            - linux 6.8.12-1
            [bookworm] - linux 6.1.94-1
            [bullseye] - linux <not-affected> (Vulnerable code not present)
            NOTE: https://git.kernel.org/linus/ea60ab95723f5738e7737b56dda95e6feefa5b50 (6.10-rc1)

A line without ``[suite]`` speaks of unstable (sid). The DSA and DLA lists have one
stanza per advisory: ``[date] DSA-NNNN-N package - …``, the CVEs it fixes in braces,
then the fixed version per suite (``[bullseye] - linux 5.10.162-1``; LTS advisories
also name versioned source packages such as linux-5.10).

The result is, per (CVE, suite, source package), the fixed package version, or
not-affected, or open (``<unfixed>``, ``<no-dsa>``, ``<ignored>``, ``<postponed>``,
``<end-of-life>``). ``<removed>``, ``<itp>`` and ``<undetermined>`` say nothing about
the package's state and are dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import InputError
from ..versions import debian
from ..versions.kernel import KernelVersion
from . import commits

Format = Literal["cve-list", "advisories"]
DistroState = Literal["fixed", "not-affected", "open"]

_ID = r"(?:CVE-[0-9]{4}-[0-9]{4,}|TEMP-[0-9]+-[0-9A-Fa-f]+)"
_CVE_ID = re.compile(r"CVE-[0-9]{4}-[0-9]{4,}")
# Old advisories also list CAN- candidates and TEMP- entries: ids, though not CVE ones.
_ANY_ID = re.compile(r"[A-Z][A-Z0-9]*-[0-9]+-[0-9A-Za-z]+")
_CVE_HEADER = re.compile(rf"(?P<id>{_ID})(?:\s+(?P<text>.*))?")
_ADVISORY_HEADER = re.compile(
    r"\[(?P<date>[^\]]*)\]\s+(?P<id>(?:DSA|DLA|DTSA)-[0-9]+(?:-[0-9]+)?)(?:\s+(?P<text>.*))?"
)
_PACKAGE_LINE = re.compile(
    r"(?:\[(?P<suite>[A-Za-z0-9.+-]+)\]\s+)?-\s+(?P<package>[a-z0-9][a-z0-9+.-]*)"
    r"(?:\s+(?P<rest>.*))?"
)
_TAGGED = re.compile(r"<(?P<tag>[a-z-]+)>(?:\s+\((?P<why>.*)\))?")
_VERSIONED = re.compile(r"(?P<version>[^\s(<]+)(?:\s+\((?P<why>.*)\))?")
_CVE_SET = re.compile(r"\{(?P<ids>[^{}]*)\}")
_ANNOTATION = re.compile(r"[A-Z][A-Z-]*:(?:\s.*)?|RESERVED|REJECTED|HELD")
_LINUS_FIX = re.compile(
    r"NOTE:\s+https?://git\.kernel\.org/linus/(?P<sha>[0-9a-fA-F]{12,40})"
    r"(?:\s+\((?P<version>[^()]*)\))?\s*"
)
_KERNEL_PACKAGE = re.compile(r"linux(?:-[0-9][0-9.]*)?")

_OPEN_TAGS = {"unfixed", "no-dsa", "ignored", "postponed", "end-of-life"}
_SILENT_TAGS = {"removed", "itp", "undetermined"}
_SUITE_ALIASES = {"unstable": "sid"}
LINE_EXPECTED = (
    "a package line such as '[bookworm] - linux 6.1.94-1' or "
    "'[bullseye] - linux <not-affected> (reason)', a NOTE: line or a {CVE-…} list"
)


def normalise_suite(suite: str) -> str:
    """``bookworm-security`` and ``bookworm`` are one suite to the tracker; unstable is sid."""
    name = suite.strip().lower()
    for pocket in ("-security", "-updates", "-proposed-updates"):
        name = name.removesuffix(pocket)
    return _SUITE_ALIASES.get(name, name)


def is_kernel_package(package: str) -> bool:
    """linux and its versioned LTS siblings (linux-5.10, linux-4.19, linux-2.6)."""
    return _KERNEL_PACKAGE.fullmatch(package) is not None


@dataclass(frozen=True)
class DistroEntry:
    """What the tracker says about one CVE in one suite's source package."""

    cve: str
    suite: str
    package: str
    state: DistroState
    # The fixed package version when state is "fixed".
    version: str | None
    # The advisory, tag and reason this comes from (``DSA-5092-1``, ``no-dsa: Minor issue``).
    detail: str
    source: str
    # data/CVE/list is the tracker's own record; the DSA/DLA lists are derived from it.
    from_cve_list: bool


@dataclass(frozen=True)
class CveNote:
    """The upstream facts a data/CVE/list stanza notes about a CVE."""

    cve: str
    description: str
    fix_commits: frozenset[str]
    # The mainline release the fix commits first appear in, e.g. 6.10-rc1.
    mainline_fix: KernelVersion | None
    # Whether a kernel source package (linux, linux-5.10) has a line in the stanza.
    kernel: bool
    source: str


@dataclass(frozen=True)
class TrackerData:
    entries: tuple[DistroEntry, ...]
    notes: tuple[CveNote, ...]


def sniff(text: str) -> Format | None:
    """Which tracker list ``text`` (its beginning is enough) is, or None.

    The first line must be a stanza header and the next one an indented line or another
    header, so that a note which merely starts with a CVE id is not taken for a list.
    """
    lines = [line.rstrip() for line in text.splitlines() if line.strip()][:2]
    if not lines:
        return None
    headers: tuple[tuple[Format, re.Pattern[str]], ...] = (
        ("cve-list", _CVE_HEADER),
        ("advisories", _ADVISORY_HEADER),
    )
    for kind, header in headers:
        if header.fullmatch(lines[0]) and (
            len(lines) == 1 or lines[1][0].isspace() or header.fullmatch(lines[1])
        ):
            return kind
    return None


def parse(path: Path, text: str, kind: Format) -> TrackerData:
    """Parse one tracker list; a line of neither form is an InputError naming it."""
    if kind == "cve-list":
        return _parse_cve_list(path, text)
    return _parse_advisories(path, text)


@dataclass
class _Stanza:
    id: str
    text: str
    entries: list[DistroEntry]
    fix_commits: set[str]
    fix_versions: list[KernelVersion]
    rejected: bool = False


def _parse_cve_list(path: Path, text: str) -> TrackerData:
    stanzas: list[_Stanza] = []
    for number, line in _lines(text):
        if not line[0].isspace():
            header = _CVE_HEADER.fullmatch(line.rstrip())
            if header is None:
                raise InputError(
                    path, f"line {number}", f"expected a CVE id starting a stanza, got {line!r}"
                )
            stanzas.append(_Stanza(header["id"], _unwrap(header["text"] or ""), [], set(), []))
            continue
        if not stanzas:
            raise InputError(path, f"line {number}", "expected a CVE id before indented lines")
        stanza = stanzas[-1]
        body = line.strip()
        if body == "REJECTED":
            stanza.rejected = True
        fix = _LINUS_FIX.fullmatch(body)
        if fix is not None:
            commit = commits.normalise(fix["sha"])
            if commit is not None:
                stanza.fix_commits.add(commit)
            version = KernelVersion.try_parse(fix["version"])
            if version is not None:
                stanza.fix_versions.append(version)
            continue
        if _skippable(body):
            continue
        entry = _package_line(path, number, body, stanza.id, "", True, suite_required=False)
        if entry is not None:
            stanza.entries.append(entry)

    entries: list[DistroEntry] = []
    notes: list[CveNote] = []
    for stanza in stanzas:
        if stanza.rejected or not stanza.id.startswith("CVE-"):
            continue
        entries.extend(stanza.entries)
        notes.append(
            CveNote(
                cve=stanza.id,
                description=stanza.text,
                fix_commits=frozenset(stanza.fix_commits),
                mainline_fix=max(stanza.fix_versions, default=None),
                kernel=any(is_kernel_package(e.package) for e in stanza.entries),
                source=str(path),
            )
        )
    return TrackerData(tuple(entries), tuple(notes))


def _parse_advisories(path: Path, text: str) -> TrackerData:
    entries: list[DistroEntry] = []
    advisory: str | None = None
    cves: list[str] = []
    for number, line in _lines(text):
        if not line[0].isspace():
            header = _ADVISORY_HEADER.fullmatch(line.rstrip())
            if header is None:
                raise InputError(
                    path,
                    f"line {number}",
                    f"expected an advisory header such as '[23 Jan 2023] DSA-5324-1 linux - "
                    f"security update', got {line!r}",
                )
            advisory, cves = header["id"], []
            continue
        if advisory is None:
            raise InputError(path, f"line {number}", "expected an advisory before indented lines")
        body = line.strip()
        listed = _CVE_SET.fullmatch(body)
        if listed is not None:
            for word in listed["ids"].split():
                if not _ANY_ID.fullmatch(word):
                    raise InputError(
                        path, f"line {number}", f"expected CVE ids in braces, got {word!r}"
                    )
                if _CVE_ID.fullmatch(word):
                    cves.append(word)
            continue
        if _skippable(body):
            continue
        for cve in cves:
            entry = _package_line(path, number, body, cve, advisory, False, suite_required=True)
            if entry is not None:
                entries.append(entry)
        if not cves:
            # Still check the line: a regression update lists no CVEs but must be well formed.
            _package_line(path, number, body, "", advisory, False, suite_required=True)
    return TrackerData(tuple(entries), ())


def _package_line(
    path: Path,
    number: int,
    body: str,
    cve: str,
    advisory: str,
    from_cve_list: bool,
    *,
    suite_required: bool,
) -> DistroEntry | None:
    where = f"line {number}"
    match = _PACKAGE_LINE.fullmatch(body)
    if match is None or match["rest"] is None or (suite_required and match["suite"] is None):
        raise InputError(path, where, f"expected {LINE_EXPECTED}, got {body!r}")
    suite = normalise_suite(match["suite"] or "sid")
    package = match["package"]
    rest = match["rest"].strip()
    tagged = _TAGGED.fullmatch(rest)
    prefix = f"{advisory}: " if advisory else ""
    if tagged is not None:
        tag, why = tagged["tag"], (tagged["why"] or "").strip()
        detail = prefix + (f"{tag}: {why}" if why else tag)
        if tag == "not-affected":
            state: DistroState = "not-affected"
        elif tag in _OPEN_TAGS:
            state = "open"
        elif tag in _SILENT_TAGS:
            return None
        else:
            raise InputError(
                path, where, f"expected a known <tag> such as <not-affected>, got <{tag}>"
            )
        return DistroEntry(cve, suite, package, state, None, detail, str(path), from_cve_list)
    versioned = _VERSIONED.fullmatch(rest)
    if versioned is None:
        raise InputError(path, where, f"expected {LINE_EXPECTED}, got {body!r}")
    version = debian.validate(versioned["version"], path=path, field=where)
    detail = (advisory or "fixed") + (f" ({versioned['why'].strip()})" if versioned["why"] else "")
    return DistroEntry(cve, suite, package, "fixed", version, detail, str(path), from_cve_list)


def _lines(text: str) -> list[tuple[int, str]]:
    return [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]


def _skippable(body: str) -> bool:
    # NOTE:, TODO:, NOT-FOR-US:, RESERVED, {DSA-… DLA-…} cross references: nothing about
    # a package's state.
    if _ANNOTATION.fullmatch(body):
        return True
    listed = _CVE_SET.fullmatch(body)
    return listed is not None and not listed["ids"].lstrip().startswith(("CVE-", "TEMP-"))


def _unwrap(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and (text[0], text[-1]) in {("(", ")"), ("[", "]")}:
        return text[1:-1].strip()
    return text
