"""Kernel builds that the machine's apt sources offer, read from apt's package lists.

The lists are read through python-apt, the same code apt itself uses, so whatever
apt can read (lz4, gzip, by-hash, several suites) we read too, and ``APT_CONFIG``
points discovery at another root exactly as it points apt there.

A build is a ``linux-headers-<abi>-<flavour>`` package that depends on its own
``linux-headers-<abi>-common`` (``-common-rt`` for the rt flavour; Ubuntu's layout,
a plain ``linux-headers-<abi>``, is the same idea). That dependency is what tells a
build from a metapackage (``linux-headers-amd64``, ``linux-headers-6.12-amd64``) and
where the ABI ends and the flavour begins (``6.12.117+deb12`` / ``cloud-amd64``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator

import apt_pkg

from ..errors import InputError, WorkError
from ..versions import debian
from .arch import uname_machine
from .filters import Filters
from .model import KernelBuild, PackageRef

log = logging.getLogger("livegraft.kernels.apt")

HEADERS_PREFIX = "linux-headers-"
_COMMON = re.compile(r"linux-headers-(?P<abi>[0-9].*?)(?:-common(?:-rt)?)?")


def discover_apt(filters: Filters | None = None) -> tuple[KernelBuild, ...]:
    """Every kernel build, at every version, in the package lists apt is configured with."""
    filters = filters or Filters()
    cache = _open_cache()
    records = apt_pkg.PackageRecords(cache)
    found: list[KernelBuild] = []
    for package in cache.packages:
        if not package.name.startswith(HEADERS_PREFIX):
            continue
        for version in package.version_list:
            build = _build_of(cache, records, version)
            if build is not None and filters.admits(build):
                found.append(build)
    return tuple(found)


def _open_cache() -> apt_pkg.Cache:
    # apt_pkg holds one process-wide configuration and reads APT_CONFIG only while
    # initialising it: start from an empty one so each call honours the environment
    # of that moment. One thing this cannot reset: libapt computes the list of
    # architectures once per process, so a later call with another APT::Architectures
    # still sees the first one.
    # (keys(), not iteration: Configuration only looks like a Mapping to type checkers.)
    roots = {key.split("::", 1)[0] for key in apt_pkg.config.keys()}  # noqa: SIM118
    for root in roots:
        apt_pkg.config.clear(root)
    apt_pkg.init_config()
    apt_pkg.init_system()
    # Build the cache in memory: discovery only reads, and must neither need write
    # access to apt's cache files nor replace them under a running apt.
    apt_pkg.config.set("Dir::Cache::pkgcache", "")
    apt_pkg.config.set("Dir::Cache::srcpkgcache", "")
    try:
        return apt_pkg.Cache(None)
    except SystemError as exc:
        raise WorkError(f"apt: cannot read the package lists: {exc}") from None


def _source_files(version: apt_pkg.Version) -> list[tuple[apt_pkg.PackageFile, int]]:
    """The repository indexes offering this version (not dpkg's status file)."""
    return [(pf, index) for pf, index in version.file_list if not pf.not_source]


def _build_of(
    cache: apt_pkg.Cache, records: apt_pkg.PackageRecords, version: apt_pkg.Version
) -> KernelBuild | None:
    name: str = version.parent_pkg.name
    files = _source_files(version)
    if not files:
        return None
    common_dep: apt_pkg.Dependency | None = None
    kbuild_dep: apt_pkg.Dependency | None = None
    abi = ""
    for dep in _depends(version):
        target: str = dep.target_pkg.name
        match = _COMMON.fullmatch(target)
        if (
            match
            and common_dep is None
            and name.startswith(f"linux-headers-{match['abi']}-")
            and target != name
        ):
            common_dep, abi = dep, match["abi"]
        elif target.startswith("linux-kbuild-") and kbuild_dep is None:
            kbuild_dep = dep
    if common_dep is None:
        return None
    uname_r = name[len(HEADERS_PREFIX) :]
    flavour = uname_r[len(abi) + 1 :]
    if flavour in ("common", "common-rt"):
        return None
    package_version: str = version.ver_str
    try:
        upstream = debian.upstream_of(package_version, path="apt", field=name)
    except InputError as exc:
        log.warning("skipping %s %s: %s", name, package_version, exc)
        return None
    dists = sorted({_dist_of(pf) for pf, _ in files} - {""})
    if not dists:
        log.warning("skipping %s %s: its list names no release", name, package_version)
        return None
    headers = [_ref(records, version)]
    for needed in (common_dep, kbuild_dep):
        if needed is not None:
            headers.append(_dependency_ref(records, needed, package_version))
    source = _record(records, version).source_pkg or name
    return KernelBuild(
        uname_r=uname_r,
        family="deb",
        package_version=package_version,
        upstream_version=upstream,
        flavour=flavour,
        arch=uname_machine(version.arch),
        # A version offered by two releases (rare: a package copied forward) is one
        # build; it goes under the first codename by name, so the result is stable.
        dist=dists[0],
        source_package=source,
        headers=tuple(headers),
        image=_image_ref(cache, records, uname_r, version),
        origin="apt",
        suites=tuple(sorted({_suite_of(pf) for pf, _ in files} - {""})),
    )


def _depends(version: apt_pkg.Version) -> Iterator[apt_pkg.Dependency]:
    for kind in ("PreDepends", "Depends"):
        for group in version.depends_list.get(kind, []):
            yield from group


def _record(records: apt_pkg.PackageRecords, version: apt_pkg.Version) -> apt_pkg.PackageRecords:
    records.lookup(_source_files(version)[0])
    return records


def _ref(records: apt_pkg.PackageRecords, version: apt_pkg.Version) -> PackageRef:
    rec = _record(records, version)
    try:
        sha256: str | None = rec.hashes.find("sha256").hashvalue
    except KeyError:
        sha256 = None
    return PackageRef(
        name=version.parent_pkg.name,
        version=version.ver_str,
        sha256=sha256,
        filename=rec.filename or None,
        arch=version.arch,
    )


def _dependency_ref(
    records: apt_pkg.PackageRecords, dep: apt_pkg.Dependency, build_version: str
) -> PackageRef:
    """The exact package a dependency of the headers resolves to.

    The build's own version when the index offers it (the same source upload);
    otherwise the oldest offered version that satisfies the dependency, the one
    nearest to the build (``linux-kbuild-6.1 (>= 6.1.170-3)`` may only be offered at
    later versions once the archive moved on).
    """
    target: str = dep.target_pkg.name
    offered = [v for v in dep.all_targets() if v.parent_pkg.name == target and _source_files(v)]
    exact = [v for v in offered if v.ver_str == build_version]
    chosen = exact or sorted(offered, key=lambda v: debian.sort_key(v.ver_str))
    if chosen:
        return _ref(records, chosen[0])
    # Not in the lists at all: still name what the build needs, without a checksum.
    return PackageRef(name=target, version=dep.target_ver or build_version)


def _image_ref(
    cache: apt_pkg.Cache, records: apt_pkg.PackageRecords, uname_r: str, headers: apt_pkg.Version
) -> PackageRef | None:
    # The unsigned image is what the signed one was made from, and the package whose
    # vmlinux/System.map match the headers; Debian's signed image only wraps it.
    for name in (f"linux-image-{uname_r}-unsigned", f"linux-image-{uname_r}"):
        if (name, headers.arch) not in cache:
            continue
        for version in _matching(cache[name, headers.arch].version_list, headers.ver_str):
            return _ref(records, version)
    return None


def _matching(versions: Iterable[apt_pkg.Version], ver_str: str) -> Iterator[apt_pkg.Version]:
    return (v for v in versions if v.ver_str == ver_str and _source_files(v))


def _dist_of(pf: apt_pkg.PackageFile) -> str:
    """The release a list belongs to: ``bookworm`` for bookworm, -updates and -security."""
    name: str = pf.codename or pf.archive or ""
    return name.split("-", 1)[0]


def _suite_of(pf: apt_pkg.PackageFile) -> str:
    # Debian names the security suite by its codename (Codename: bookworm-security,
    # Suite: oldstable-security); Ubuntu the other way round (Codename: jammy, Suite:
    # jammy-security). The name a sources entry uses is whichever extends the codename.
    dist = _dist_of(pf)
    names = [n for n in (pf.codename, pf.archive) if n and (n == dist or n.startswith(f"{dist}-"))]
    return max(names, key=len, default=pf.codename or pf.archive or "")
