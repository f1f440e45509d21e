"""The livepatch a package installed for one kernel build, read from its info file.

``/usr/lib/livegraft/<uname -r>/livepatch.json`` beside ``<module>.ko`` (written by the
pipeline's package stage). Only the running build's folder is ever considered for
loading; the others are listed, so status can say they exist and are ignored.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .names import INFO_NAME, INSTALL_ROOT

_MODULE_NAME = re.compile(r"[A-Za-z0-9_]+")
_MODULE_FILE = re.compile(r"[A-Za-z0-9_]+\.ko")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class InfoError(Exception):
    """A malformed info file: names the file, the field and what was expected."""

    def __init__(self, path: Path, field: str | None, expected: str) -> None:
        self.path, self.field, self.expected = path, field, expected
        where = f"{path}: {field}" if field else str(path)
        super().__init__(f"{where}: {expected}")


@dataclass(frozen=True)
class Fix:
    id: str
    title: str
    cves: tuple[str, ...]
    severity: str


@dataclass(frozen=True)
class Installed:
    info_path: Path
    module_path: Path
    module: str
    level: int
    sha256: str
    uname_r: str
    package_version: str
    package: str
    fixes: tuple[Fix, ...]
    cves: tuple[str, ...]
    # The module-signing certificate: what /proc/keys names it by, and what the
    # module's PKCS#7 signature names it by.
    signer_subject: str
    signer_key_id: str | None
    signer_serial: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.info_path),
            "module": self.module,
            "level": self.level,
            "package": self.package,
            "uname_r": self.uname_r,
            "package_version": self.package_version,
            "fixes": [f.id for f in self.fixes],
            "cves": list(self.cves),
        }


def install_dir(root: Path, uname_r: str) -> Path:
    return root / INSTALL_ROOT.lstrip("/") / uname_r


def other_builds(root: Path, uname_r: str) -> list[str]:
    """Builds other than ``uname_r`` with an info file installed (never loaded here)."""
    base = root / INSTALL_ROOT.lstrip("/")
    try:
        return sorted(
            p.name for p in base.iterdir() if p.name != uname_r and (p / INFO_NAME).is_file()
        )
    except OSError:
        return []


def find_installed(root: Path, uname_r: str) -> Installed | None:
    """The running build's livepatch, None when none is installed; InfoError when its
    info file cannot be used."""
    folder = install_dir(root, uname_r)
    path = folder / INFO_NAME
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InfoError(path, None, f"a readable file ({exc})") from None
    except json.JSONDecodeError as exc:
        raise InfoError(
            path, None, f"valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg})"
        ) from None
    return parse_info(path, doc, uname_r)


def _field(path: Path, doc: Any, dotted: str, kind: type, what: str) -> Any:
    value = doc
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise InfoError(path, dotted, f"{what} (missing)")
        value = value[part]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InfoError(path, dotted, f"{what}, not {json.dumps(value)}")
    return value


def parse_info(path: Path, doc: Any, uname_r: str) -> Installed:
    if not isinstance(doc, dict):
        raise InfoError(path, None, "a JSON object")
    fmt = _field(path, doc, "format", int, "an info file format number")
    if fmt not in (1, 2):
        raise InfoError(path, "format", f"format 1 or 2 (this client's), not {fmt}")
    module = _field(path, doc, "module", str, "the module's name")
    if not _MODULE_NAME.fullmatch(module):
        raise InfoError(path, "module", f"a module name (letters, digits, _), not {module!r}")
    file = _field(path, doc, "file", str, "the module's file name")
    if not _MODULE_FILE.fullmatch(file):
        raise InfoError(path, "file", f"a module file name (name.ko), not {file!r}")
    level = _field(path, doc, "level", int, "the level, an integer")
    if level < 1:
        raise InfoError(path, "level", f"a level of 1 or more, not {level}")
    sha256 = _field(path, doc, "sha256", str, "the module's sha256")
    if not _SHA256.fullmatch(sha256):
        raise InfoError(path, "sha256", f"64 lowercase hex digits, not {sha256!r}")
    built_for = _field(path, doc, "build.uname_r", str, "the kernel build's uname -r")
    if built_for != uname_r:
        raise InfoError(
            path, "build.uname_r", f"{uname_r!r} (the folder it is installed in), not {built_for!r}"
        )
    package_version = _field(path, doc, "build.package_version", str, "the build's version")
    package = _field(path, doc, "package.name", str, "the package's name")
    fixes = []
    for i, fix in enumerate(_field(path, doc, "fixes", list, "a list of fixes")):
        where = f"fixes[{i}]"
        fixes.append(
            Fix(
                id=_field(path, {where: fix}, f"{where}.id", str, "the fix's id"),
                title=str(fix.get("title", "")) if isinstance(fix, dict) else "",
                cves=tuple(str(c) for c in fix.get("cves", [])) if isinstance(fix, dict) else (),
                severity=str(fix.get("severity", "")) if isinstance(fix, dict) else "",
            )
        )
    cves = _field(path, doc, "cves", list, "a list of CVE ids")
    raw_signer = doc.get("signer")
    signer: dict[str, Any] = raw_signer if isinstance(raw_signer, dict) else {}
    key_id = signer.get("subject_key_id")
    serial = signer.get("serial")
    return Installed(
        info_path=path,
        module_path=path.parent / file,
        module=module,
        level=level,
        sha256=sha256,
        uname_r=uname_r,
        package_version=package_version,
        package=package,
        fixes=tuple(fixes),
        cves=tuple(str(c) for c in cves),
        signer_subject=str(signer.get("subject") or ""),
        signer_key_id=str(key_id).lower().replace(":", "") if key_id else None,
        signer_serial=str(serial).lower().lstrip("0") or "0" if serial else None,
    )
