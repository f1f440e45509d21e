"""The level ledger: the cumulative level N of each livepatch package, kept across runs.

A package (one per kernel build's uname -r and package family) must only ever move up:
clients upgrade to the highest version, so re-using a level for different content would
leave hosts on the old module. The ledger records, per package, the digest of what
its current level contains; a new digest gets the next level, the same digest keeps it.
The client packages' revisions are kept the same way (``package.client_item``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from .errors import InputError
from .files import write_atomic

LEDGER_FORMAT = 1


@dataclass(frozen=True)
class Entry:
    level: int
    digest: str
    package_version: str
    fixes: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "digest": self.digest,
            "package_version": self.package_version,
            "fixes": list(self.fixes),
        }


class Ledger:
    # What the file is called in errors (a subclass keeps other numbers the same way).
    what = "level ledger"

    def __init__(self, path: Path, entries: Mapping[str, Entry]) -> None:
        self.path = path
        self._entries = dict(entries)
        # Whether assign gave out a new entry since the ledger was loaded.
        self.changed = False

    @classmethod
    def load(cls, path: Path) -> Self:
        if not path.exists():
            return cls(path, {})
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(path, None, f"{cls.what} unreadable ({exc})") from None
        if not isinstance(raw, dict) or raw.get("format") != LEDGER_FORMAT:
            raise InputError(path, "format", f"expected a {cls.what} of format {LEDGER_FORMAT}")
        packages = raw.get("packages")
        if not isinstance(packages, dict):
            raise InputError(path, "packages", "expected an object")
        entries = {}
        for key, value in packages.items():
            try:
                entries[key] = Entry(
                    level=int(value["level"]),
                    digest=str(value["digest"]),
                    package_version=str(value["package_version"]),
                    fixes=tuple(str(f) for f in value["fixes"]),
                )
            except (KeyError, TypeError, ValueError):
                raise InputError(
                    path, f"packages.{key}", "expected level, digest, package_version, fixes"
                ) from None
            if entries[key].level < 1:
                raise InputError(path, f"packages.{key}.level", "expected an integer >= 1")
        return cls(path, entries)

    def get(self, key: str) -> Entry | None:
        return self._entries.get(key)

    def assign(self, key: str, digest: str, package_version: str, fixes: tuple[str, ...]) -> Entry:
        """The entry for this content: the current one if unchanged, else the next level."""
        current = self._entries.get(key)
        if current and current.digest == digest:
            return current
        entry = Entry((current.level + 1) if current else 1, digest, package_version, fixes)
        self._entries[key] = entry
        self.changed = True
        return entry

    def save(self) -> None:
        """Atomically: a crash leaves the old ledger, never half of a new one."""
        data = {
            "format": LEDGER_FORMAT,
            "packages": {k: e.to_json() for k, e in sorted(self._entries.items())},
        }
        write_atomic(self.path, json.dumps(data, indent=1, sort_keys=True) + "\n")
