"""Debian package versions: parsing, dpkg's ordering, and the upstream kernel base.

Ordering is apt's own ``version_compare`` (python3-apt), so it cannot drift from what
dpkg and apt decide; the parser exists because apt compares anything, even garbage,
and a version that dpkg would refuse must be reported as bad input instead.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import apt_pkg

from ..errors import InputError

# Debian policy 5.6.12: [epoch:]upstream_version[-debian_revision]. The upstream part
# starts with a digit; a hyphen in it is only possible when a revision follows (the
# revision is split off at the last hyphen), a colon only when an epoch precedes.
_EPOCH = re.compile(r"[0-9]+")
_UPSTREAM = re.compile(r"[0-9][A-Za-z0-9.+~:-]*")
_REVISION = re.compile(r"[A-Za-z0-9.+~]+")
_MAX_EPOCH = 2**31 - 1
# What remains of a Debian kernel's upstream part once repack and backport markers
# are gone: kernel.org's own spelling, with Debian's "~rcN" turned back into "-rcN".
_KERNEL_UPSTREAM = re.compile(r"(?P<base>[0-9]+\.[0-9]+(?:\.[0-9]+)?)(?:~(?P<rc>rc[0-9]+))?")


@dataclass(frozen=True)
class DebVersion:
    epoch: int
    upstream: str
    # Empty for a native package (no hyphen in the version).
    revision: str

    def __str__(self) -> str:
        text = f"{self.epoch}:{self.upstream}" if self.epoch else self.upstream
        return f"{text}-{self.revision}" if self.revision else text


@functools.cache
def _init_apt() -> None:
    # version_compare needs apt's versioning system, which init_system selects from
    # the configuration; doing it once per process is enough and cheap.
    apt_pkg.init_config()
    apt_pkg.init_system()


def parse(
    version: str,
    *,
    path: str | os.PathLike[str] | None = None,
    field: str | None = None,
) -> DebVersion:
    """Split a Debian version into its parts, or raise InputError naming path and field."""

    def bad(why: str) -> InputError:
        return InputError(path, field, f"{why} in Debian version {version!r}")

    if not isinstance(version, str) or not version:
        raise InputError(path, field, "a Debian version such as 6.1.192-2")
    rest = version
    epoch = 0
    if ":" in rest:
        epoch_text, rest = rest.split(":", 1)
        if not _EPOCH.fullmatch(epoch_text):
            raise bad("epoch is not a number")
        epoch = int(epoch_text)
        # dpkg keeps the epoch in a C int and refuses larger ones.
        if epoch > _MAX_EPOCH:
            raise bad("epoch is too big")
    revision = ""
    if "-" in rest:
        rest, revision = rest.rsplit("-", 1)
        if not _REVISION.fullmatch(revision):
            raise bad("invalid revision")
    if not _UPSTREAM.fullmatch(rest):
        raise bad("upstream version must start with a digit and use only A-Za-z0-9.+~-:")
    return DebVersion(epoch, rest, revision)


def validate(
    version: str,
    *,
    path: str | os.PathLike[str] | None = None,
    field: str | None = None,
) -> str:
    """Return the version unchanged if dpkg would accept it, else raise InputError."""
    parse(version, path=path, field=field)
    return version


def compare(a: str, b: str) -> int:
    """dpkg's order: -1, 0 or 1 as a is older than, equal to or newer than b."""
    _init_apt()
    result: int = apt_pkg.version_compare(a, b)
    return (result > 0) - (result < 0)


sort_key: Callable[[str], Any] = functools.cmp_to_key(compare)


def upstream_of(
    deb_version: str,
    *,
    path: str | os.PathLike[str] | None = None,
    field: str | None = None,
) -> str:
    """The kernel.org version a Debian kernel package version is built from.

    ``6.1.192-2`` → ``6.1.192``; ``6.12.117-1~deb12u1`` → ``6.12.117``;
    ``6.12.57-1~bpo12+1`` → ``6.12.57``; ``6.13~rc7-1~exp1`` → ``6.13-rc7``.
    """
    parsed = parse(deb_version, path=path, field=field)
    match = _KERNEL_UPSTREAM.match(parsed.upstream)
    # Anything after the kernel version in the upstream part must be a repack or
    # backport marker (``+dfsg``, ``~bpo``); other text means this is not a kernel.
    if match is None or parsed.upstream[match.end() :][:1] not in ("", "+", "~"):
        raise InputError(
            path, field, f"a kernel package version such as 6.1.192-2, not {deb_version!r}"
        )
    base, rc = match["base"], match["rc"]
    return f"{base}-{rc}" if rc else base
