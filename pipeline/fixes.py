"""Livepatch sources: one folder per fix, combined into one cumulative module per build.

Layout of a fix folder (the folder's name is the fix id)::

    fixes/<id>/fix.toml     what the fix is (see FIX_KEYS below)
    fixes/<id>/livepatch.c  the replacement functions, non-static, no module_init
    fixes/<id>/check.sh     optional: run by busybox sh in the booted guest after loading;
                            exit 0 means the fix is in effect
    fixes/<id>/fix.patch    instead of livepatch.c: the fix as a kernel source diff, which
                            kpatch-build turns into a module; ``functions`` is then optional

Several fixes combine because the build stage, not the fix, owns the module: it
compiles every fix's ``livepatch.c`` as its own object of one module and generates the
single ``klp_patch`` (``.replace = true``) whose ``klp_func`` tables list every fix's
functions grouped by patched object. Hence the rules checked here: replacement symbols
are unique across fixes, and a function is replaced by at most one fix per build unless
one fix names the other in ``supersedes``.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import check_keys
from .errors import InputError
from .kernels.model import FAMILIES, KernelBuild
from .versions.kernel import KernelVersion

FIX_FILE = "fix.toml"
SOURCE_FILE = "livepatch.c"
PATCH_FILE = "fix.patch"
CHECK_FILE = "check.sh"

SEVERITIES = ("low", "moderate", "important", "critical")

FIX_KEYS = {
    "id": "the fix id; must equal the folder name",
    "title": "one line saying what the fix does",
    "description": "longer text for advisories",
    "cves": "the vulnerabilities it fixes (ids as the errata name them)",
    "severity": f"one of {', '.join(SEVERITIES)}",
    "sample": "true for illustrative fixes that are not security fixes",
    "supersedes": "ids of fixes this one replaces on the builds it applies to",
    "functions": "[[functions]]: the kernel functions it replaces",
    "applies": "[applies]: constraints on the builds it applies to",
    "state": "[state]: klp_state id and version, for fixes that change system state",
}
FUNCTION_KEYS = {
    "object": "vmlinux or the name of the module that holds the function",
    "name": "the function replaced",
    "replacement": "the symbol in livepatch.c that replaces it",
    "sympos": "position among same-named local symbols (0 = unique)",
}
APPLIES_KEYS = {
    "families": f"package families ({', '.join(FAMILIES)})",
    "arches": "machine architectures as uname -m prints them",
    "flavours": "globs over kernel flavours (amd64, cloud-amd64, …)",
    "uname_r": "globs over uname -r",
    "upstream": 'upstream version bounds, e.g. ">= 6.1, < 6.12"',
}
STATE_KEYS = {"id": "klp_state id (1-65535)", "version": "klp_state version (>= 1)"}

_C_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_FIX_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
_BOUND = re.compile(r"\s*(>=|<=|==|!=|>|<)\s*(\S+)\s*\Z")


@dataclass(frozen=True)
class PatchedFunction:
    object: str
    name: str
    replacement: str
    sympos: int = 0


@dataclass(frozen=True)
class VersionBound:
    op: str
    version: KernelVersion

    def admits(self, version: KernelVersion) -> bool:
        match self.op:
            case ">=":
                return version >= self.version
            case "<=":
                return version <= self.version
            case ">":
                return version > self.version
            case "<":
                return version < self.version
            case "==":
                return version == self.version
            case _:
                return version != self.version


@dataclass(frozen=True)
class Applies:
    families: tuple[str, ...] = ()
    arches: tuple[str, ...] = ()
    flavours: tuple[str, ...] = ()
    uname_r: tuple[str, ...] = ()
    upstream: tuple[VersionBound, ...] = ()

    def admits(self, build: KernelBuild) -> str | None:
        """None if the build is admitted, else the reason it is not."""
        if self.families and build.family not in self.families:
            return f"family {build.family} not in {list(self.families)}"
        if self.arches and build.arch not in self.arches:
            return f"arch {build.arch} not in {list(self.arches)}"
        if self.flavours and not any(fnmatch.fnmatchcase(build.flavour, g) for g in self.flavours):
            return f"flavour {build.flavour} not in {list(self.flavours)}"
        if self.uname_r and not any(fnmatch.fnmatchcase(build.uname_r, g) for g in self.uname_r):
            return f"uname -r {build.uname_r} matches none of {list(self.uname_r)}"
        if self.upstream:
            version = KernelVersion.parse(build.upstream_version)
            for bound in self.upstream:
                if not bound.admits(version):
                    return f"upstream {build.upstream_version} not {bound.op} {bound.version}"
        return None


@dataclass(frozen=True)
class Fix:
    id: str
    folder: Path
    title: str
    description: str
    cves: tuple[str, ...]
    severity: str
    sample: bool
    supersedes: tuple[str, ...]
    functions: tuple[PatchedFunction, ...]
    applies: Applies
    state: tuple[int, int] | None
    has_check: bool
    # sha256 over every file of the folder: any edit to the fix changes the plan cells.
    digest: str
    # Given as a source diff (fix.patch, built by kpatch-build) instead of livepatch.c.
    diff: bool = False

    @property
    def source(self) -> Path:
        return self.folder / SOURCE_FILE

    @property
    def patch(self) -> Path:
        return self.folder / PATCH_FILE

    @property
    def check(self) -> Path | None:
        return self.folder / CHECK_FILE if self.has_check else None

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "cves": list(self.cves),
            "severity": self.severity,
            "sample": self.sample,
            "digest": self.digest,
        }


def _strings(path: Path, field: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise InputError(path, field, "expected a list of non-empty strings")
    return tuple(value)


def _text(path: Path, table: Mapping[str, Any], key: str, *, required: bool) -> str:
    if key not in table:
        if required:
            raise InputError(path, key, "missing (expected a string)")
        return ""
    value = table[key]
    if not isinstance(value, str) or (required and not value.strip()):
        raise InputError(path, key, "expected a non-empty string")
    return value


def _parse_bounds(path: Path, text: Any) -> tuple[VersionBound, ...]:
    if not isinstance(text, str) or not text.strip():
        raise InputError(path, "applies.upstream", 'expected bounds such as ">= 6.1, < 6.12"')
    bounds = []
    for part in text.split(","):
        m = _BOUND.match(part)
        if not m:
            raise InputError(
                path,
                "applies.upstream",
                f"{part.strip()!r}: expected OP VERSION (OP: >= <= > < == !=)",
            )
        bounds.append(
            VersionBound(
                m.group(1), KernelVersion.parse(m.group(2), path=path, field="applies.upstream")
            )
        )
    return tuple(bounds)


def _parse_applies(path: Path, raw: Any) -> Applies:
    if not isinstance(raw, dict):
        raise InputError(path, "applies", "expected a table")
    check_keys(path, "applies", raw, APPLIES_KEYS)
    families = _strings(path, "applies.families", raw.get("families", []))
    for family in families:
        if family not in FAMILIES:
            raise InputError(
                path, "applies.families", f"{family!r}: expected one of {list(FAMILIES)}"
            )
    return Applies(
        families=families,
        arches=_strings(path, "applies.arches", raw.get("arches", [])),
        flavours=_strings(path, "applies.flavours", raw.get("flavours", [])),
        uname_r=_strings(path, "applies.uname_r", raw.get("uname_r", [])),
        upstream=_parse_bounds(path, raw["upstream"]) if "upstream" in raw else (),
    )


def _parse_functions(path: Path, raw: Any, source: str | None) -> tuple[PatchedFunction, ...]:
    if not isinstance(raw, list) or not raw or not all(isinstance(t, dict) for t in raw):
        raise InputError(path, "functions", "expected at least one [[functions]] table")
    functions = []
    for i, table in enumerate(raw):
        where = f"functions[{i}]"
        check_keys(path, where, table, FUNCTION_KEYS)
        values = {}
        for key in ("object", "name", "replacement"):
            value = table.get(key)
            if not isinstance(value, str) or not _C_IDENT.match(value.replace("-", "_")):
                raise InputError(path, f"{where}.{key}", "expected a C identifier")
            values[key] = value
        if not _C_IDENT.match(values["name"]) or not _C_IDENT.match(values["replacement"]):
            raise InputError(path, f"{where}.name", "expected a C identifier")
        sympos = table.get("sympos", 0)
        if not isinstance(sympos, int) or isinstance(sympos, bool) or sympos < 0:
            raise InputError(path, f"{where}.sympos", "expected an integer >= 0")
        # A cheap guard against a fix whose source lost its replacement: the compile
        # would catch it too, but only per build and much later.
        if source is not None and not re.search(
            rf"\b{re.escape(values['replacement'])}\s*\(", source
        ):
            raise InputError(
                path.with_name(SOURCE_FILE),
                f"{where}.replacement",
                f"function {values['replacement']!r} is not defined in {SOURCE_FILE}",
            )
        functions.append(
            PatchedFunction(values["object"], values["name"], values["replacement"], sympos)
        )
    return tuple(functions)


def _parse_state(path: Path, raw: Any) -> tuple[int, int]:
    if not isinstance(raw, dict):
        raise InputError(path, "state", "expected a table")
    check_keys(path, "state", raw, STATE_KEYS)
    sid, version = raw.get("id"), raw.get("version", 1)
    if not isinstance(sid, int) or isinstance(sid, bool) or not 1 <= sid <= 65535:
        raise InputError(path, "state.id", "expected an integer from 1 to 65535")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise InputError(path, "state.version", "expected an integer >= 1")
    return sid, version


def _folder_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(f.relative_to(folder).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def load_fix(folder: Path) -> Fix:
    path = folder / FIX_FILE
    if not path.is_file():
        raise InputError(path, None, f"missing: every fix folder needs {FIX_FILE}")
    source_path = folder / SOURCE_FILE
    diff = (folder / PATCH_FILE).is_file()
    if diff and source_path.is_file():
        raise InputError(folder, None, f"expected {SOURCE_FILE} or {PATCH_FILE}, not both")
    if not diff and not source_path.is_file():
        raise InputError(
            source_path,
            None,
            f"missing: every fix folder needs its {SOURCE_FILE} "
            f"(or a source diff in {PATCH_FILE} for kpatch-build)",
        )
    if diff:
        source_path = folder / PATCH_FILE
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
        source = source_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, None, f"cannot read ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(path, None, f"not valid TOML ({exc})") from None
    check_keys(path, "", raw, FIX_KEYS)
    fix_id = _text(path, raw, "id", required=True)
    if not _FIX_ID.match(fix_id):
        raise InputError(path, "id", "expected letters, digits, '.', '_' or '-' (at most 64)")
    if fix_id != folder.name:
        raise InputError(path, "id", f"expected {folder.name!r}, the folder's name")
    severity = _text(path, raw, "severity", required=True)
    if severity not in SEVERITIES:
        raise InputError(path, "severity", f"expected one of {', '.join(SEVERITIES)}")
    cves = _strings(path, "cves", raw.get("cves"))
    if not cves:
        raise InputError(path, "cves", "expected at least one vulnerability id")
    sample = raw.get("sample", False)
    if not isinstance(sample, bool):
        raise InputError(path, "sample", "expected true or false")
    if not diff and ("module_init" in source or re.search(r"\bstruct\s+klp_patch\b", source)):
        raise InputError(
            source_path,
            None,
            "must hold only replacement functions: the build generates the module",
        )
    return Fix(
        id=fix_id,
        folder=folder,
        title=_text(path, raw, "title", required=True),
        description=_text(path, raw, "description", required=False),
        cves=cves,
        severity=severity,
        sample=sample,
        supersedes=_strings(path, "supersedes", raw.get("supersedes", [])),
        # kpatch-build finds the changed functions in the diff itself; listed ones
        # still let the plan refuse two fixes of one function.
        functions=(
            ()
            if diff and "functions" not in raw
            else _parse_functions(path, raw.get("functions"), None if diff else source)
        ),
        applies=_parse_applies(path, raw.get("applies", {})),
        state=_parse_state(path, raw["state"]) if "state" in raw else None,
        has_check=(folder / CHECK_FILE).is_file(),
        digest=_folder_digest(folder),
        diff=diff,
    )


def load_fixes(root: Path) -> tuple[Fix, ...]:
    """Every fix below root, validated alone and together; sorted by id."""
    if not root.is_dir():
        raise InputError(root, None, "livepatch sources folder not found")
    fixes = tuple(
        load_fix(d) for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")
    )
    check_together(root, fixes)
    return fixes


def check_together(root: Path, fixes: Sequence[Fix]) -> None:
    """What no single fix can show: unknown supersedes, clashing replacement symbols."""
    ids = {f.id for f in fixes}
    owner: dict[str, str] = {}
    states: dict[int, str] = {}
    for fix in fixes:
        for other in fix.supersedes:
            if other not in ids:
                raise InputError(
                    fix.folder / FIX_FILE, "supersedes", f"{other!r} is not a fix in {root}"
                )
        for fn in fix.functions:
            if fn.replacement in owner and owner[fn.replacement] != fix.id:
                raise InputError(
                    fix.folder / FIX_FILE,
                    "functions.replacement",
                    f"{fn.replacement!r} is also defined by {owner[fn.replacement]}: "
                    "replacement symbols share one module and must be unique",
                )
            owner[fn.replacement] = fix.id
        if fix.state:
            if fix.state[0] in states:
                raise InputError(
                    fix.folder / FIX_FILE,
                    "state.id",
                    f"{fix.state[0]} is also used by {states[fix.state[0]]}",
                )
            states[fix.state[0]] = fix.id


def combine(fixes: Iterable[Fix]) -> tuple[Fix, ...]:
    """The fixes that go into one cumulative module: superseded ones dropped.

    Raises InputError when two remaining fixes replace the same function, since one
    klp_patch cannot hold two replacements of one function.
    """
    chosen = list(fixes)
    superseded = {s for f in chosen for s in f.supersedes}
    chosen = [f for f in chosen if f.id not in superseded]
    seen: dict[tuple[str, str, int], str] = {}
    for fix in chosen:
        for fn in fix.functions:
            key = (fn.object, fn.name, fn.sympos)
            if key in seen:
                raise InputError(
                    fix.folder / FIX_FILE,
                    "functions",
                    f"{fn.object}:{fn.name} is also replaced by {seen[key]}; "
                    f"one of them must list the other in supersedes",
                )
            seen[key] = fix.id
    return tuple(sorted(chosen, key=lambda f: f.id))
