"""The kernel matrix a config asks for: declared builds plus discovered ones.

Config shape (TOML, already parsed)::

    [[kernels]]                    # one declared build
    uname_r = "6.1.0-56-amd64"
    family = "deb"                 # or "rpm"
    package_version = "6.1.192-2"
    dist = "bookworm"
    # optional: upstream_version, flavour, arch, source_package,
    #           headers = ["name=version", …], image = "name=version", origin

    [[discover]]                   # builds found in package metadata
    from = "apt"                   # or "rpm", with url = "file:///…" or "https://…"
    dist = ["bookworm"]            # optional filters: exact names …
    arch = ["x86_64"]
    flavour = ["amd64", "rt-*"]    # … and globs
    uname_r = ["6.1.0-*"]

Everything is validated before any discovery runs, so a bad config costs nothing and
is reported as one line naming the file and the field.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import urlparse

from ..errors import InputError
from ..versions import debian
from ..versions import rpm as rpmver
from .apt_source import discover_apt
from .filters import Filters
from .model import FAMILIES, Family, KernelBuild, PackageRef
from .rpm_source import discover_rpm

DECLARED_KEYS = (
    "uname_r",
    "family",
    "package_version",
    "dist",
    "upstream_version",
    "flavour",
    "arch",
    "source_package",
    "headers",
    "image",
    "origin",
)
_REQUIRED = ("uname_r", "family", "package_version", "dist")
DISCOVER_KEYS = ("from", "url", "dist", "arch", "flavour", "uname_r")
Source = Literal["apt", "rpm"]

_UNAME_R = re.compile(r"[0-9][A-Za-z0-9._+~-]*")
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+~-]*")
_PACKAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9+._-]*")
_KERNEL_VERSION = re.compile(r"[0-9]+\.[0-9]+(?:\.[0-9]+)*(?:-rc[0-9]+)?")
# Debian's uname -r: the ABI (6.1.0-56, 6.12.117+deb12) then the flavour.
_DEB_UNAME_R = re.compile(
    r"[0-9]+\.[0-9]+(?:\.[0-9]+)*(?:-[0-9]+|\+[0-9A-Za-z.~]+)-(?P<flavour>[a-z].*)"
)
# RHEL's uname -r: V-R.arch, and +variant for rt, debug, 64k … builds.
_RPM_UNAME_R = re.compile(r".+\.(?P<arch>[a-z0-9_]+)(?:\+(?P<variant>[a-z0-9-]+))?")
_RPM_ARCHES = ("x86_64", "aarch64", "ppc64le", "s390x", "i686", "riscv64")
_DEFAULT_SOURCE: dict[Family, str] = {"deb": "linux", "rpm": "kernel"}


@dataclass(frozen=True)
class DiscoverRule:
    """One ``[[discover]]`` entry, validated; ``run()`` does the discovery."""

    source: Source
    filters: Filters
    # The repository for "rpm"; apt reads the machine's own sources instead.
    url: str | None = None

    def __post_init__(self) -> None:
        if (self.source == "rpm") != (self.url is not None):
            raise ValueError("an rpm rule needs a url and an apt rule takes none")

    def run(self) -> tuple[KernelBuild, ...]:
        if self.url is not None:
            return discover_rpm(self.url, self.filters)
        return discover_apt(self.filters)


class KernelConfig(Protocol):
    """What load_matrix reads of the pipeline's Config: its file and raw kernel tables."""

    @property
    def path(self) -> Path: ...
    @property
    def kernels(self) -> Sequence[Mapping[str, Any]]: ...
    @property
    def discover(self) -> Sequence[Mapping[str, Any]]: ...


def load_matrix(config: KernelConfig) -> tuple[KernelBuild, ...]:
    """The matrix of a loaded config (see load_kernels_from_config)."""
    table = {"kernels": list(config.kernels), "discover": list(config.discover)}
    return load_kernels_from_config(table, config.path)


def load_kernels_from_config(
    table: Mapping[str, Any], path: str | os.PathLike[str]
) -> tuple[KernelBuild, ...]:
    """The config's kernel matrix: declared builds, then discovered ones, ordered.

    ``table`` is the whole parsed config; only ``kernels`` and ``discover`` are read.
    A build both declared and discovered keeps its declaration.
    """
    declared = [
        parse_declared(entry, f"kernels[{i}]", path)
        for i, entry in enumerate(_tables(table, "kernels", path))
    ]
    rules = [
        parse_discover(entry, f"discover[{i}]", path)
        for i, entry in enumerate(_tables(table, "discover", path))
    ]
    discovered = [build for rule in rules for build in rule.run()]
    return ordered([*declared, *discovered])


def ordered(builds: Iterable[KernelBuild]) -> tuple[KernelBuild, ...]:
    """Deduplicate by (uname_r, package_version), first wins; sort deterministically.

    Order: family, dist, the family's own version order of package_version, uname_r.
    """
    unique: dict[tuple[str, str], KernelBuild] = {}
    for build in builds:
        unique.setdefault((build.uname_r, build.package_version), build)
    return tuple(sorted(unique.values(), key=functools.cmp_to_key(_compare)))


def compare_package_versions(family: Family, a: str, b: str) -> int:
    """Order two package versions of one family: dpkg's rules or rpmvercmp."""
    return debian.compare(a, b) if family == "deb" else rpmver.compare(a, b)


def _compare(a: KernelBuild, b: KernelBuild) -> int:
    for x, y in ((a.family, b.family), (a.dist, b.dist)):
        if x != y:
            return -1 if x < y else 1
    by_version = compare_package_versions(a.family, a.package_version, b.package_version)
    if by_version:
        return by_version
    return (a.uname_r > b.uname_r) - (a.uname_r < b.uname_r)


def parse_declared(entry: Any, where: str, path: str | os.PathLike[str]) -> KernelBuild:
    """One ``[[kernels]]`` table → KernelBuild; ``where`` (kernels[2]) prefixes fields."""
    entry = _checked_table(entry, where, DECLARED_KEYS, path)
    for key in _REQUIRED:
        if key not in entry:
            raise InputError(path, f"{where}.{key}", "required key is missing")
    uname_r = _string(
        entry, "uname_r", where, path, _UNAME_R, "a kernel release as `uname -r` prints it"
    )
    family_text = _string(entry, "family", where, path)
    if family_text not in FAMILIES:
        raise InputError(path, f"{where}.family", f"one of {', '.join(FAMILIES)}")
    family: Family = "deb" if family_text == "deb" else "rpm"
    version_field = f"{where}.package_version"
    package_version = _string(entry, "package_version", where, path)
    if family == "deb":
        debian.validate(package_version, path=path, field=version_field)
    else:
        rpmver.validate(package_version, path=path, field=version_field)

    upstream = entry.get("upstream_version")
    if upstream is None:
        upstream = (
            debian.upstream_of(package_version, path=path, field=version_field)
            if family == "deb"
            else rpmver.parse_evr(package_version).version
        )
    else:
        upstream = _string(
            entry,
            "upstream_version",
            where,
            path,
            _KERNEL_VERSION,
            "a kernel.org version such as 6.1.192",
        )

    flavour = (
        _string(entry, "flavour", where, path, _WORD, "a flavour name such as amd64")
        if "flavour" in entry
        else _derived_flavour(family, uname_r, where, path)
    )
    arch = _arch(entry, family, uname_r, where, path)
    source_package = (
        _string(entry, "source_package", where, path, _PACKAGE, "a source package name")
        if "source_package" in entry
        else _DEFAULT_SOURCE[family]
    )
    headers: tuple[PackageRef, ...]
    if "headers" in entry:
        items = entry["headers"]
        if not isinstance(items, list) or not items:
            raise InputError(path, f"{where}.headers", 'a non-empty list of "name=version" strings')
        headers = tuple(
            _package_ref(item, family, f"{where}.headers[{j}]", path)
            for j, item in enumerate(items)
        )
    else:
        # The headers package's name is fixed by each family's packaging; its own
        # dependencies (-common, kbuild) are resolved when it is fetched.
        name = f"linux-headers-{uname_r}" if family == "deb" else _rpm_stem(flavour) + "-devel"
        headers = (PackageRef(name, package_version),)
    image = (
        _package_ref(entry["image"], family, f"{where}.image", path) if "image" in entry else None
    )
    origin = _origin(entry, family, where, path)
    return KernelBuild(
        uname_r=uname_r,
        family=family,
        package_version=package_version,
        upstream_version=upstream,
        flavour=flavour,
        arch=arch,
        dist=_string(entry, "dist", where, path, _WORD, "a release name such as bookworm or el9"),
        source_package=source_package,
        headers=headers,
        image=image,
        origin=origin,
    )


def parse_discover(entry: Any, where: str, path: str | os.PathLike[str]) -> DiscoverRule:
    """One ``[[discover]]`` table → DiscoverRule (nothing is fetched yet)."""
    entry = _checked_table(entry, where, DISCOVER_KEYS, path)
    if "from" not in entry:
        raise InputError(path, f"{where}.from", 'required key is missing ("apt" or "rpm")')
    source = entry["from"]
    if source not in ("apt", "rpm"):
        raise InputError(path, f"{where}.from", '"apt" or "rpm"')
    url: str | None = None
    if source == "rpm":
        if "url" not in entry:
            raise InputError(path, f"{where}.url", 'a repository URL (required with from = "rpm")')
        url = _repository_url(_string(entry, "url", where, path), f"{where}.url", path)
    elif "url" in entry:
        raise InputError(
            path, f"{where}.url", 'no url with from = "apt" (apt uses its own sources)'
        )
    filters = Filters(
        **{key: _strings(entry, key, where, path) for key in ("dist", "arch", "flavour", "uname_r")}
    )
    return DiscoverRule("rpm" if source == "rpm" else "apt", filters, url)


def _tables(table: Mapping[str, Any], key: str, path: str | os.PathLike[str]) -> list[Any]:
    value = table.get(key, [])
    if not isinstance(value, list):
        raise InputError(path, key, f"an array of tables ([[{key}]])")
    return value


def _checked_table(
    entry: Any, where: str, keys: Sequence[str], path: str | os.PathLike[str]
) -> Mapping[str, Any]:
    if not isinstance(entry, Mapping):
        raise InputError(path, where, "a table")
    for key in entry:
        if key not in keys:
            raise InputError(
                path, f"{where}.{key}", f"unknown key (expected one of {', '.join(keys)})"
            )
    return entry


def _string(
    entry: Mapping[str, Any],
    key: str,
    where: str,
    path: str | os.PathLike[str],
    pattern: re.Pattern[str] | None = None,
    expected: str = "a non-empty string",
) -> str:
    value = entry[key]
    if not isinstance(value, str) or not value or (pattern and not pattern.fullmatch(value)):
        shown = f", not {value!r}" if isinstance(value, str) else f", not a {type(value).__name__}"
        raise InputError(path, f"{where}.{key}", f"{expected}{shown}")
    return value


def _strings(
    entry: Mapping[str, Any], key: str, where: str, path: str | os.PathLike[str]
) -> tuple[str, ...]:
    value = entry.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise InputError(path, f"{where}.{key}", "a list of non-empty strings")
    return tuple(value)


def _derived_flavour(family: Family, uname_r: str, where: str, path: str | os.PathLike[str]) -> str:
    if family == "rpm":
        rpm_match = _RPM_UNAME_R.fullmatch(uname_r)
        variant: str | None = rpm_match["variant"] if rpm_match else None
        return variant or "default"
    match = _DEB_UNAME_R.fullmatch(uname_r)
    if match is None:
        raise InputError(
            path,
            f"{where}.flavour",
            f"given explicitly: cannot derive it from uname_r {uname_r!r} "
            "(expected ABI-flavour, such as 6.1.0-56-amd64)",
        )
    return match["flavour"]


def _arch(
    entry: Mapping[str, Any], family: Family, uname_r: str, where: str, path: str | os.PathLike[str]
) -> str:
    # An RPM kernel's uname -r ends in its architecture; it must agree with arch.
    match = _RPM_UNAME_R.fullmatch(uname_r) if family == "rpm" else None
    from_uname = match["arch"] if match and match["arch"] in _RPM_ARCHES else None
    if "arch" not in entry:
        return from_uname or "x86_64"
    arch = _string(entry, "arch", where, path, _WORD, "a machine name as `uname -m` prints it")
    if from_uname and arch != from_uname:
        raise InputError(path, f"{where}.arch", f"{from_uname!r}, as uname_r {uname_r!r} says")
    return arch


def _rpm_stem(flavour: str) -> str:
    return "kernel" if flavour == "default" else f"kernel-{flavour}"


def _package_ref(item: Any, family: Family, field: str, path: str | os.PathLike[str]) -> PackageRef:
    name, sep, version = item.partition("=") if isinstance(item, str) else ("", "", "")
    if not sep or not _PACKAGE.fullmatch(name):
        raise InputError(path, field, f'"name=version", not {item!r}')
    if family == "deb":
        debian.validate(version, path=path, field=field)
    else:
        rpmver.validate(version, path=path, field=field)
    return PackageRef(name, version)


def _origin(
    entry: Mapping[str, Any], family: Family, where: str, path: str | os.PathLike[str]
) -> str:
    if "origin" not in entry:
        if family == "rpm":
            # No apt for RPMs: without a repository nothing could fetch the packages.
            raise InputError(path, f"{where}.origin", "a repository URL (required for rpm builds)")
        return "apt"
    origin = _string(entry, "origin", where, path)
    if origin == "apt" and family == "deb":
        return origin
    return _repository_url(origin, f"{where}.origin", path)


def _repository_url(url: str, field: str, path: str | os.PathLike[str]) -> str:
    """An http(s) or file URL; a bare path is taken relative to the config's folder."""
    parsed = urlparse(url)
    if parsed.scheme in ("http", "https") and parsed.netloc:
        return url
    if parsed.scheme == "file" and parsed.path.startswith("/"):
        return url
    if not parsed.scheme:
        return (Path(path).parent / url).resolve().as_uri()
    raise InputError(path, field, f"an http(s):// or file:// URL or a folder, not {url!r}")
