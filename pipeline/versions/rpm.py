"""RPM versions: EVR parsing and rpmvercmp ordering through python3-rpm.

The ordering is rpm's own (``rpm.labelCompare`` runs rpmvercmp on each of epoch,
version and release), so it cannot drift from what rpm and dnf decide; the parser is
ours because rpm compares anything, and a version rpmbuild would refuse is bad input.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import rpm

from ..errors import InputError

# The characters rpmbuild accepts in Version and Release (besides macros, which are
# expanded by then): a hyphen is the version/release separator and never inside either.
_PART = re.compile(r"[A-Za-z0-9._+~^]+")
_EPOCH = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class EVR:
    # None when the string names no epoch; rpm orders a missing epoch as 0.
    epoch: int | None
    version: str
    # None when the string names no release (a bare version).
    release: str | None

    def __str__(self) -> str:
        text = f"{self.epoch}:{self.version}" if self.epoch is not None else self.version
        return f"{text}-{self.release}" if self.release is not None else text

    def label(self) -> tuple[str, str, str | None]:
        """The (epoch, version, release) triple rpm.labelCompare takes."""
        return (str(self.epoch or 0), self.version, self.release)


def parse_evr(
    text: str,
    *,
    path: str | os.PathLike[str] | None = None,
    field: str | None = None,
) -> EVR:
    """Parse ``[E:]V[-R]`` as rpm does (release after the last hyphen), strictly."""

    def bad(why: str) -> InputError:
        return InputError(path, field, f"{why} in RPM version {text!r}")

    if not isinstance(text, str) or not text:
        raise InputError(path, field, "an RPM version such as 5.14.0-362.8.1.el9_3")
    rest = text
    epoch: int | None = None
    if ":" in rest:
        epoch_text, rest = rest.split(":", 1)
        if not _EPOCH.fullmatch(epoch_text):
            raise bad("epoch is not a number")
        epoch = int(epoch_text)
    release: str | None = None
    if "-" in rest:
        rest, release = rest.rsplit("-", 1)
        if not _PART.fullmatch(release):
            raise bad("invalid release")
    if not _PART.fullmatch(rest) or "-" in rest:
        raise bad("invalid version (A-Za-z0-9._+~^ only)")
    return EVR(epoch, rest, release)


def format_evr(epoch: int | str | None, version: str, release: str | None) -> str:
    """``V-R``, with ``E:`` in front only when the epoch is non-zero (as rpm -q prints)."""
    text = f"{version}-{release}" if release is not None else version
    return f"{epoch}:{text}" if epoch not in (None, "", 0, "0") else text


def validate(
    text: str,
    *,
    path: str | os.PathLike[str] | None = None,
    field: str | None = None,
) -> str:
    """Return the EVR unchanged if it parses, else raise InputError."""
    parse_evr(text, path=path, field=field)
    return text


def vercmp(a: str, b: str) -> int:
    """rpmvercmp on two bare version (or release) strings: -1, 0 or 1."""
    result: int = rpm.labelCompare(("0", a, None), ("0", b, None))
    return (result > 0) - (result < 0)


def compare(a: str, b: str) -> int:
    """Order two ``[E:]V[-R]`` strings as rpm does: -1, 0 or 1.

    A missing release sorts before any release (``1.0`` < ``1.0-1``), which is what
    ``rpm.vercmp`` answers too; both strings must parse.
    """
    result: int = rpm.labelCompare(parse_evr(a).label(), parse_evr(b).label())
    return (result > 0) - (result < 0)


sort_key: Callable[[str], Any] = functools.cmp_to_key(compare)
