"""Upstream (kernel.org) Linux versions: parsing, order, branches and wildcard bounds.

The order is the one kernel.org releases follow: a release candidate comes before its
release and a stable update after the mainline release it branches from, so
``6.9-rc1 < 6.9-rc3 < 6.9 < 6.9.1 < 6.10-rc1``. A *branch* is what a stable series
grows from: ``6.1`` for ``6.1.94`` (``2.6.32`` for ``2.6.32.71``, since before 3.0 the
mainline releases had three numbers). ``X.Y`` and ``X.Y-rcN`` are mainline versions;
``X.Y.Z`` with ``Z > 0`` is a stable one.

Free text such as ``Linux Kernel 5.17 rc6`` is not a version: :meth:`KernelVersion.try_parse`
returns ``None`` for it, and :meth:`KernelVersion.parse` raises :class:`InputError`.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass

from ..errors import InputError

# Components are bounded so that absurd input cannot make int() refuse (or crawl over)
# a thousand-digit number; no kernel version comes near nine digits.
_VERSION = re.compile(r"v?(?P<numbers>[0-9]{1,9}(?:\.[0-9]{1,9}){0,3})(?:-rc(?P<rc>[0-9]{1,9}))?")
_WILDCARD = re.compile(r"v?(?P<prefix>(?:[0-9]{1,9}\.){0,3})\*")

EXPECTED = "an upstream kernel version such as 6.1.94, 6.9 or 6.9-rc3"


def _branch_length(major: int) -> int:
    # 2.6.32 was a mainline release and 2.6.32.71 its stable update; from 3.0 on,
    # mainline releases have two numbers.
    return 3 if 0 < major < 3 else 2


@functools.total_ordering
@dataclass(frozen=True, repr=False)
class KernelVersion:
    """One upstream kernel version; ``numbers`` never ends in a redundant ``.0``."""

    numbers: tuple[int, ...]
    # The N of -rcN, or None for a release.
    rc: int | None = None

    @classmethod
    def try_parse(cls, text: object) -> KernelVersion | None:
        """The version ``text`` spells (``6.1.94``, ``v6.9-rc3``, ``6.9.0``, ``0``), or None."""
        if not isinstance(text, str):
            return None
        match = _VERSION.fullmatch(text.strip())
        if match is None:
            return None
        numbers = tuple(int(n) for n in match["numbers"].split("."))
        rc = int(match["rc"]) if match["rc"] is not None else None
        if numbers == (0,):
            # "0" is the conventional "before everything" of CVE and OSV ranges.
            return None if rc is not None else cls((0,))
        if len(numbers) < 2 or numbers[0] == 0:
            return None
        length = _branch_length(numbers[0])
        # Before 3.0 a mainline release had three numbers: 2.6 is read as 2.6.0.
        numbers = numbers + (0,) * (length - len(numbers))
        # 6.9.0 is 6.9 (uname -r spells release candidates 6.9.0-rc3); a stable update
        # numbered .0 does not exist.
        if len(numbers) == length + 1 and numbers[-1] == 0:
            numbers = numbers[:-1]
        if len(numbers) > length + 1:
            return None
        if rc == 0:
            return None
        return cls(numbers, rc)

    @classmethod
    def parse(
        cls,
        text: object,
        *,
        path: str | os.PathLike[str] | None = None,
        field: str | None = None,
    ) -> KernelVersion:
        """Like :meth:`try_parse`, but raise InputError naming ``path`` and ``field``."""
        version = cls.try_parse(text)
        if version is None:
            raise InputError(path, field, f"expected {EXPECTED}, got {text!r}")
        return version

    @property
    def branch(self) -> tuple[int, ...]:
        """The mainline release this version's stable series grows from, as numbers."""
        return self.numbers[: _branch_length(self.numbers[0])]

    @property
    def branch_name(self) -> str:
        """``6.1`` for 6.1.94, 6.1 and 6.1-rc3."""
        return ".".join(str(n) for n in self.branch)

    @property
    def is_mainline(self) -> bool:
        """X.Y or X.Y-rcN (and the conventional 0): a release of Linus' tree."""
        return len(self.numbers) <= _branch_length(self.numbers[0])

    @property
    def is_stable(self) -> bool:
        """X.Y.Z with Z > 0: an update on the X.Y stable branch."""
        return not self.is_mainline

    @property
    def is_zero(self) -> bool:
        """The conventional ``0`` that sorts before every version."""
        return self.numbers == (0,)

    def same_branch(self, other: KernelVersion) -> bool:
        return self.branch == other.branch

    def _key(self) -> tuple[tuple[int, ...], int, int]:
        padded = self.numbers + (0,) * (4 - len(self.numbers))
        return (padded, 0 if self.rc is not None else 1, self.rc or 0)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, KernelVersion):
            return NotImplemented
        return self._key() < other._key()

    def __str__(self) -> str:
        text = ".".join(str(n) for n in self.numbers)
        return f"{text}-rc{self.rc}" if self.rc is not None else text

    def __repr__(self) -> str:
        return f"KernelVersion({str(self)!r})"


ZERO = KernelVersion((0,))


@dataclass(frozen=True)
class Wildcard:
    """An upper bound such as ``6.1.*`` (the whole 6.1 series) or ``*`` (no bound).

    As the CVE schema defines it, ``*`` stands for an arbitrarily large number, so
    ``lessThan: 6.1.*`` and ``lessThanOrEqual: 6.1.*`` both reach the end of the 6.1
    series.
    """

    prefix: tuple[int, ...]

    def covers(self, version: KernelVersion) -> bool:
        """Whether ``version`` lies at or below this bound."""
        head = version.numbers[: len(self.prefix)]
        head = head + (0,) * (len(self.prefix) - len(head))
        return head <= self.prefix

    def __str__(self) -> str:
        return "".join(f"{n}." for n in self.prefix) + "*"


Bound = KernelVersion | Wildcard


def try_parse_bound(text: object) -> Bound | None:
    """An upper bound: a version, or a wildcard such as ``6.1.*`` or ``*``; else None."""
    if isinstance(text, str):
        match = _WILDCARD.fullmatch(text.strip())
        if match is not None:
            prefix = match["prefix"].rstrip(".")
            return Wildcard(tuple(int(n) for n in prefix.split(".")) if prefix else ())
    return KernelVersion.try_parse(text)


def at_most(version: KernelVersion, bound: Bound) -> bool:
    """version <= bound."""
    if isinstance(bound, Wildcard):
        return bound.covers(version)
    return version <= bound


def below(version: KernelVersion, bound: Bound) -> bool:
    """version < bound (a wildcard bound includes its whole series, as the schema says)."""
    if isinstance(bound, Wildcard):
        return bound.covers(version)
    return version < bound
