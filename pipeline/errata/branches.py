"""How introductions and fixes spread over the kernel's stable branches.

The kernel CNA describes a vulnerability as the versions that introduced it and the
versions that fixed it, one pair per stable branch (its ``.dyad`` files). A version at
which something happened applies like this:

* a stable version X.Y.Z (Z > 0) applies to branch X.Y only, from X.Y.Z on: a bug
  backported into 6.1.56 is not in 6.2, and a fix backported into 5.4.274 is not in 5.5;
* a mainline version (X.Y or X.Y-rcN) applies to every version at or above it: every
  later release, and every stable update of later branches, descends from it.

A version is affected when some introduction applies and no fix does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..versions.kernel import KernelVersion
from .model import Verdict


def applies(point: KernelVersion, version: KernelVersion) -> bool:
    """Whether what happened at ``point`` (an introduction or a fix) is in ``version``."""
    if point.is_stable:
        return point.same_branch(version) and point <= version
    return point <= version


def fix_in(version: KernelVersion, fixes: Iterable[KernelVersion]) -> KernelVersion | None:
    """The fix ``version`` already contains: its branch's stable fix, else a mainline one."""
    present = [f for f in fixes if applies(f, version)]
    stable = [f for f in present if f.is_stable]
    if stable:
        return min(stable)
    return min(present, default=None)


def fix_due(version: KernelVersion, fixes: Iterable[KernelVersion]) -> KernelVersion | None:
    """The first fix ``version``'s own branch gets after it, or None if the branch has none.

    A stable fix on the branch, else a mainline fix that is a release (candidate) of the
    same branch (6.9 for 6.9-rc2). A mainline fix of a later branch is not offered: 6.7.5
    is not fixed by moving to 6.9, it is on a branch that never got the fix.
    """
    later = [f for f in fixes if f.same_branch(version) and f > version]
    stable = [f for f in later if f.is_stable]
    if stable:
        return min(stable)
    return min(later, default=None)


def judge(version: KernelVersion, vulnerable: bool, fixes: Iterable[KernelVersion]) -> Verdict:
    """The verdict for a version known (not) to be affected, with the fix that applies.

    ``vulnerable`` says whether ``version`` is affected by the evaluated ranges; when it
    is not, a fix it contains makes it "fixed" and otherwise it was never vulnerable.
    """
    points = tuple(fixes)
    if vulnerable:
        return Verdict("affected", fix_due(version, points))
    present = fix_in(version, points)
    return Verdict("fixed", present) if present else Verdict("unaffected", None)


@dataclass(frozen=True)
class BranchHistory:
    """Introductions and fixes per branch, as the kernel CNA's ``.dyad`` lists them."""

    introductions: tuple[KernelVersion, ...]
    fixes: tuple[KernelVersion, ...]

    def evaluate(self, version: KernelVersion) -> Verdict:
        if not any(applies(i, version) for i in self.introductions):
            return Verdict("unaffected", None)
        present = fix_in(version, self.fixes)
        if present is not None:
            return Verdict("fixed", present)
        return Verdict("affected", fix_due(version, self.fixes))


@dataclass(frozen=True)
class KnownFix:
    """Only the release a fix arrived in (a distro tracker's note): no introduction known.

    A version that contains the fix is "fixed"; about any other nothing can be said.
    """

    version: KernelVersion

    def evaluate(self, version: KernelVersion) -> Verdict:
        if applies(self.version, version):
            return Verdict("fixed", self.version)
        return Verdict("unknown", None)
