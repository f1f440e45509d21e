"""The pipeline's config file (TOML), validated strictly: an unknown key is an error.

Paths in the file are relative to the file's own folder, so a config means the same
thing whatever directory livegraft is started from.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InputError

TOP_LEVEL_KEYS = {
    "name": "a short name for this pipeline (string)",
    "work_dir": "where state, plans and reports go (path)",
    "errata": "errata files or folders (list of paths)",
    "fixes": "the livepatch sources folder (path)",
    "kernels": "declared kernel builds ([[kernels]] tables)",
    "discover": "kernel discovery sources ([[discover]] tables)",
}


@dataclass(frozen=True)
class Config:
    path: Path
    name: str
    work_dir: Path
    errata: tuple[Path, ...]
    fixes_dir: Path
    # Kept raw: the kernel matrix validates these itself, with this file's name in errors.
    kernels: tuple[Mapping[str, Any], ...]
    discover: tuple[Mapping[str, Any], ...]

    @property
    def levels_file(self) -> Path:
        return self.work_dir / "levels.json"


def check_keys(path: Path, where: str, table: Mapping[str, Any], known: Mapping[str, str]) -> None:
    """Refuse keys we do not know: a typo must not silently change what gets built."""
    for key in table:
        if key not in known:
            field = f"{where}.{key}" if where else key
            raise InputError(path, field, f"unknown key (expected one of: {', '.join(known)})")


def _str(path: Path, table: Mapping[str, Any], key: str, default: str) -> str:
    value = table.get(key, default)
    if not isinstance(value, str) or not value:
        raise InputError(path, key, "expected a non-empty string")
    return value


def _tables(path: Path, table: Mapping[str, Any], key: str) -> tuple[Mapping[str, Any], ...]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise InputError(path, key, f"expected an array of tables ([[{key}]])")
    return tuple(value)


def load_config(path: Path) -> Config:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, None, "config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, None, f"cannot read config ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(path, None, f"not valid TOML ({exc})") from None
    check_keys(path, "", raw, TOP_LEVEL_KEYS)
    base = path.resolve().parent

    errata = raw.get("errata", [])
    if not isinstance(errata, list) or not all(isinstance(p, str) and p for p in errata):
        raise InputError(path, "errata", "expected a list of paths")
    errata_paths = tuple(base / p for p in errata)
    for rel, full in zip(errata, errata_paths, strict=True):
        if not full.exists():
            raise InputError(path, "errata", f"{rel!r} does not exist")

    fixes_dir = base / _str(path, raw, "fixes", "fixes")
    kernels = _tables(path, raw, "kernels")
    discover = _tables(path, raw, "discover")
    if not kernels and not discover:
        raise InputError(path, "kernels", "expected [[kernels]] or [[discover]] entries")
    return Config(
        path=path,
        name=_str(path, raw, "name", base.name),
        work_dir=(base / _str(path, raw, "work_dir", ".livegraft")).resolve(),
        errata=errata_paths,
        fixes_dir=fixes_dir,
        kernels=kernels,
        discover=discover,
    )
