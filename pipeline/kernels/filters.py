"""Which discovered kernel builds to keep: the same selection for the CLI and the config."""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from .arch import uname_machine
from .model import KernelBuild


@dataclass(frozen=True)
class Filters:
    """Each field admits a build when empty or when one of its entries matches.

    ``arch`` and ``dist`` match exactly (arch in ``uname -m`` or dpkg spelling);
    ``flavour`` and ``uname_r`` are shell globs.
    """

    arch: tuple[str, ...] = ()
    dist: tuple[str, ...] = ()
    flavour: tuple[str, ...] = ()
    uname_r: tuple[str, ...] = ()

    def admits(self, build: KernelBuild) -> bool:
        return (
            (not self.arch or build.arch in {uname_machine(a) for a in self.arch})
            and (not self.dist or build.dist in self.dist)
            and (not self.flavour or any(fnmatchcase(build.flavour, g) for g in self.flavour))
            and (not self.uname_r or any(fnmatchcase(build.uname_r, g) for g in self.uname_r))
        )
