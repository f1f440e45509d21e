"""The kernel CNA's files beside a CVE record: ``.dyad``, ``.sha1`` and ``.vulnerable``.

They share the record's stem (``CVE-2024-26925.json`` → ``CVE-2024-26925.dyad``):

* ``.dyad``: one line per stable branch, ``vuln_ver:vuln_sha:fix_ver:fix_sha``, where
  ``0:0`` in the fix half means the branch is not fixed (and in the introduction half
  that the bug is as old as the history); ``#`` starts a comment line.
* ``.sha1``: the mainline fix commit(s).
* ``.vulnerable``: the commit(s) that introduced the bug, when set by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..versions.kernel import KernelVersion
from . import commits
from .branches import BranchHistory

DYAD_EXPECTED = "expected vuln_ver:vuln_sha:fix_ver:fix_sha (0:0 for none)"


@dataclass(frozen=True)
class Dyad:
    history: BranchHistory
    fix_commits: frozenset[str]
    introduced_commits: frozenset[str]


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(path, None, f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise InputError(path, None, f"expected UTF-8 text: {exc.reason}") from None


def parse_dyad(path: Path, text: str) -> Dyad:
    introductions: set[KernelVersion] = set()
    fixes: set[KernelVersion] = set()
    fix_commits: set[str] = set()
    introduced_commits: set[str] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"line {number}"
        parts = line.split(":")
        if len(parts) != 4:
            raise InputError(path, where, f"{DYAD_EXPECTED}, got {line!r}")
        vuln_ver, vuln_sha, fix_ver, fix_sha = (p.strip() for p in parts)
        vuln = _version(path, where, vuln_ver)
        fix = _version(path, where, fix_ver)
        vuln_commit = _commit(path, where, vuln_sha)
        fix_commit = _commit(path, where, fix_sha)
        # A 0 introduction means "since the beginning of history".
        introductions.add(vuln)
        if not fix.is_zero:
            fixes.add(fix)
        if fix_commit:
            fix_commits.add(fix_commit)
        if vuln_commit:
            introduced_commits.add(vuln_commit)
    return Dyad(
        BranchHistory(tuple(sorted(introductions)), tuple(sorted(fixes))),
        frozenset(fix_commits),
        frozenset(introduced_commits),
    )


def _version(path: Path, where: str, text: str) -> KernelVersion:
    version = KernelVersion.try_parse(text)
    if version is None or (version.is_zero and text != "0"):
        raise InputError(path, where, f"{DYAD_EXPECTED}: {text!r} is not a kernel version")
    return version


def _commit(path: Path, where: str, text: str) -> str | None:
    if text == "0":
        return None
    commit = commits.normalise(text)
    if commit is None:
        raise InputError(path, where, f"{DYAD_EXPECTED}: {text!r} is not a commit id")
    return commit


def parse_commit_list(path: Path, text: str) -> frozenset[str]:
    """The commits of a ``.sha1`` or ``.vulnerable`` file (white-space separated)."""
    found: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip().startswith("#"):
            continue
        for word in line.split():
            commit = commits.normalise(word)
            if commit is None:
                raise InputError(path, f"line {number}", f"expected git commit ids, got {word!r}")
            found.add(commit)
    return frozenset(found)


@dataclass(frozen=True)
class Sidecars:
    dyad: Dyad | None
    fix_commits: frozenset[str]
    introduced_commits: frozenset[str]


def read_sidecars(record: Path) -> Sidecars:
    """The sidecars beside ``record`` (a ``.json`` file); absent ones are simply missing."""
    stem = record.with_suffix("")
    dyad_path = stem.with_name(stem.name + ".dyad")
    sha1_path = stem.with_name(stem.name + ".sha1")
    vulnerable_path = stem.with_name(stem.name + ".vulnerable")
    dyad = parse_dyad(dyad_path, read_text(dyad_path)) if dyad_path.is_file() else None
    fixes = parse_commit_list(sha1_path, read_text(sha1_path)) if sha1_path.is_file() else None
    introduced = (
        parse_commit_list(vulnerable_path, read_text(vulnerable_path))
        if vulnerable_path.is_file()
        else None
    )
    return Sidecars(dyad, fixes or frozenset(), introduced or frozenset())
