"""One shipped kernel build, identified exactly.

``uname_r`` alone is not an identity: Debian rebuilds the same ABI (``6.1.0-56-amd64``)
with new package versions, so the distro build version (``6.1.192-2``, which ``uname -v``
shows) is part of the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Family = Literal["deb", "rpm"]
FAMILIES: tuple[Family, ...] = ("deb", "rpm")


@dataclass(frozen=True, order=True)
class PackageRef:
    """A package by exact name and version, optionally with the repository's checksum."""

    name: str
    version: str
    sha256: str | None = None
    # Where the file lives below the repository root (Debian ``Filename``, RPM location).
    filename: str | None = None
    # The package's own architecture as its repository names it (amd64, all, x86_64,
    # noarch): a multi-arch repository holds one name at one version several times.
    arch: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "sha256": self.sha256,
            "filename": self.filename,
            "arch": self.arch,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PackageRef:
        """The inverse of to_json, for documents livegraft wrote itself."""
        return cls(data["name"], data["version"], data["sha256"], data["filename"], data["arch"])


@dataclass(frozen=True)
class KernelBuild:
    uname_r: str
    family: Family
    # The distro's build version of this exact kernel (deb: 6.1.192-2; rpm: 5.14.0-362.8.1.el9_3).
    package_version: str
    # The upstream kernel.org version the build is based on (6.1.192).
    upstream_version: str
    flavour: str
    # Machine architecture as ``uname -m`` prints it.
    arch: str
    # Distribution release the build ships in (bookworm, el9).
    dist: str
    # Distro source package (linux, linux-6.12, kernel): backport data is keyed by it.
    source_package: str
    headers: tuple[PackageRef, ...] = ()
    image: PackageRef | None = None
    # "apt" (the machine's apt configuration) or a repository base URL.
    origin: str = "apt"
    # Optional suite names the build was seen in (bookworm-security …).
    suites: tuple[str, ...] = field(default=())

    @property
    def key(self) -> str:
        """Unique key of the exact build: uname -r plus the distro build version."""
        return f"{self.uname_r}@{self.package_version}"

    def identity(self) -> dict[str, Any]:
        """What makes this build this build; goes into content ids."""
        return {
            "uname_r": self.uname_r,
            "family": self.family,
            "package_version": self.package_version,
            "arch": self.arch,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "uname_r": self.uname_r,
            "family": self.family,
            "package_version": self.package_version,
            "upstream_version": self.upstream_version,
            "flavour": self.flavour,
            "arch": self.arch,
            "dist": self.dist,
            "source_package": self.source_package,
            "headers": [h.to_json() for h in self.headers],
            "image": self.image.to_json() if self.image else None,
            "origin": self.origin,
            "suites": list(self.suites),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KernelBuild:
        """The inverse of to_json, for documents livegraft wrote itself."""
        family = data["family"]
        if family not in FAMILIES:
            raise ValueError(f"family {family!r}")
        return cls(
            uname_r=data["uname_r"],
            family=family,
            package_version=data["package_version"],
            upstream_version=data["upstream_version"],
            flavour=data["flavour"],
            arch=data["arch"],
            dist=data["dist"],
            source_package=data["source_package"],
            headers=tuple(PackageRef.from_json(h) for h in data["headers"]),
            image=PackageRef.from_json(data["image"]) if data["image"] else None,
            origin=data["origin"],
            suites=tuple(data["suites"]),
        )
