"""Kernel builds in an RPM repository, read from its primary metadata.

A build is a -devel package that provides ``<its name>-uname-r`` (``kernel-devel`` provides
``kernel-devel-uname-r = 5.14.0-362.8.1.el9_3.x86_64``, ``kernel-rt-devel`` the same
with ``+rt``): the kernel spec file states the exact ``uname -r`` there, so nothing is
guessed from names, and packages such as ``kernel-devel-matched`` or
``kernel-tools-libs-devel`` are not mistaken for builds. The image is the package that
provides ``kernel-uname-r`` with the same value (``kernel-core``, or ``kernel`` where
there is no -core split).
"""

from __future__ import annotations

import hashlib
import logging
import re
import tempfile
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlparse

import createrepo_c as cr
import requests

from ..errors import InputError, WorkError
from ..versions import rpm as rpmver
from .filters import Filters
from .model import KernelBuild, PackageRef

log = logging.getLogger("livegraft.kernels.rpm")

REPOMD = "repodata/repomd.xml"
# The last release token shaped like a dist tag (el9_3, fc39, amzn2); "_3" is the
# minor release, which the errata and the matrix key on the major only.
_DIST_TAG = re.compile(r"(?P<dist>[a-z]+[0-9]+)(?:_[0-9]+)*")
_CHUNK = 1 << 16


def discover_rpm(
    url: str, filters: Filters | None = None, *, timeout: float = 60.0
) -> tuple[KernelBuild, ...]:
    """Every kernel build in the repository at ``url`` (a folder, file:// or http(s)://)."""
    filters = filters or Filters()
    with tempfile.TemporaryDirectory(prefix="livegraft-rpm-") as tmp:
        repo = _Repository(url, Path(tmp), timeout)
        packages = repo.primary_packages()
    return tuple(b for b in builds_from_packages(packages, repo.origin) if filters.admits(b))


class _Repository:
    """Fetches a repository's metadata files, local or over HTTP, checksummed."""

    def __init__(self, url: str, tmp: Path, timeout: float) -> None:
        self.url = url
        self.tmp = tmp
        self.timeout = timeout
        parsed = urlparse(url)
        self.http = parsed.scheme in ("http", "https")
        if self.http:
            self.origin = url.rstrip("/")
            self.root = Path()
        elif parsed.scheme in ("file", ""):
            self.root = Path(unquote(parsed.path) if parsed.scheme else url).resolve()
            self.origin = self.root.as_uri()
        else:
            raise InputError(url, None, "a folder, file:// or http(s):// repository URL")

    def fetch(self, href: str) -> Path:
        if not self.http:
            path = self.root / href
            if not path.is_file():
                raise InputError(self.url, href, "not found: is this an RPM repository?")
            return path
        target = self.tmp / Path(href).name
        try:
            with requests.get(self.address(href), stream=True, timeout=self.timeout) as r:
                if r.status_code == 404:
                    raise InputError(
                        self.url, href, "not found (HTTP 404): is this an RPM repository?"
                    )
                r.raise_for_status()
                with target.open("wb") as out:
                    for chunk in r.iter_content(_CHUNK):
                        out.write(chunk)
        except requests.RequestException as exc:
            raise WorkError(f"{self.address(href)}: {exc}") from None
        return target

    def address(self, href: str) -> str:
        return urljoin(self.origin + "/", href)

    def primary_packages(self) -> list[Any]:
        repomd_path = self.fetch(REPOMD)
        # createrepo_c reports malformed XML through glib's log as well as by raising;
        # checking well-formedness first keeps bad input to our one-line error.
        try:
            ET.parse(repomd_path)
        except ET.ParseError as exc:
            raise InputError(self.url, REPOMD, f"well-formed repomd.xml ({exc})") from None
        repomd = cr.Repomd(str(repomd_path))
        primary = next((r for r in repomd.records if r.type == "primary"), None)
        if primary is None:
            raise InputError(self.url, REPOMD, "a 'primary' record")
        path = self.fetch(primary.location_href)
        _verify(
            path, primary.checksum_type, primary.checksum, f"{self.url}: {primary.location_href}"
        )
        packages: list[Any] = []

        def keep(pkg: Any) -> bool:
            packages.append(pkg)
            return True

        try:
            cr.xml_parse_primary(str(path), pkgcb=keep, do_files=False)
        except cr.CreaterepoCError as exc:
            raise InputError(
                self.url, primary.location_href, f"valid primary metadata ({exc})"
            ) from None
        return packages


def _verify(path: Path, kind: str, expected: str, what: str) -> None:
    """Refuse metadata whose checksum differs from the one repomd.xml gives for it."""
    try:
        digest = hashlib.new(kind)
    except ValueError:
        raise WorkError(f"{what}: unsupported checksum type {kind!r}") from None
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    if digest.hexdigest() != expected:
        raise WorkError(
            f"{what}: {kind} {digest.hexdigest()} does not match repomd.xml's {expected}"
        )


def builds_from_packages(packages: Iterable[Any], origin: str) -> list[KernelBuild]:
    """Kernel builds among createrepo_c packages (from primary.xml)."""
    packages = list(packages)
    # uname -r → packages that provide kernel-uname-r for it (the bootable images).
    images: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for pkg in packages:
        for value in _provided(pkg, "kernel-uname-r"):
            images[value, pkg.arch].append(pkg)
    builds = []
    for pkg in packages:
        # kernel-core and kernel-modules state their own <name>-uname-r as well: only
        # the -devel packages are what a module is built against.
        if not pkg.name.endswith("-devel"):
            continue
        for uname_r in _provided(pkg, f"{pkg.name}-uname-r"):
            build = _build_of(pkg, uname_r, images.get((uname_r, pkg.arch), []), origin)
            if build is not None:
                builds.append(build)
    return builds


def _provided(pkg: Any, capability: str) -> list[str]:
    """Versions at which pkg provides capability (rpm splits them into version/release)."""
    return [
        f"{version}-{release}" if release else version
        for name, _flags, _epoch, version, release, _pre in pkg.provides
        if name == capability and version
    ]


def _build_of(devel: Any, uname_r: str, images: list[Any], origin: str) -> KernelBuild | None:
    match = None
    for token in reversed(devel.release.split(".")):
        match = _DIST_TAG.fullmatch(token)
        if match:
            break
    if match is None:
        log.warning("skipping %s: release %r has no dist tag", devel.location_href, devel.release)
        return None
    # kernel-devel → default; kernel-rt-devel → rt; kernel-64k-debug-devel → 64k-debug.
    stem = devel.name.removesuffix("-devel")
    flavour = stem.removeprefix("kernel").strip("-") or "default"
    image = min(
        images,
        key=lambda p: (p.name != f"{stem}-core", p.name != stem, p.name),
        default=None,
    )
    return KernelBuild(
        uname_r=uname_r,
        family="rpm",
        package_version=rpmver.format_evr(devel.epoch, devel.version, devel.release),
        upstream_version=devel.version,
        flavour=flavour,
        arch=devel.arch,
        dist=match["dist"],
        source_package=_source_name(devel) or "kernel",
        headers=(_ref(devel),),
        image=_ref(image) if image is not None else None,
        origin=origin,
    )


def _source_name(pkg: Any) -> str | None:
    """``kernel`` from ``kernel-5.14.0-362.8.1.el9_3.src.rpm`` (name-version-release.src.rpm)."""
    srpm: str = pkg.rpm_sourcerpm or ""
    parts = srpm.removesuffix(".src.rpm").rsplit("-", 2)
    return parts[0] if len(parts) == 3 and parts[0] else None


def _ref(pkg: Any) -> PackageRef:
    href: str = pkg.location_href
    # An xml:base puts the file outside the repository; keep it reachable.
    filename = urljoin(pkg.location_base, href) if pkg.location_base else href
    return PackageRef(
        name=pkg.name,
        version=rpmver.format_evr(pkg.epoch, pkg.version, pkg.release),
        sha256=pkg.pkgId if pkg.checksum_type == "sha256" else None,
        filename=filename,
        arch=pkg.arch,
    )
