"""Small real package repositories for the kernel-matrix tests.

- ``make_apt_root``: a Debian-style archive on disk (hand-written Packages and Release
  files laid out as Debian lays them out) plus an isolated apt root whose sources point
  at it, filled by a real ``apt-get update``; returns the file for ``APT_CONFIG``.
- ``make_rpm_repo``: metadata-only kernel RPMs built with rpmbuild, indexed by
  createrepo_c, with the Provides the real kernel spec file declares.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import subprocess
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Deb:
    """One Packages stanza (a package that exists only as metadata)."""

    name: str
    version: str
    arch: str = "amd64"
    source: str = "linux"
    depends: str = ""
    pool: str = "main/l/linux"

    @property
    def filename(self) -> str:
        version = self.version.split(":")[-1]
        return f"pool/{self.pool}/{self.name}_{version}_{self.arch}.deb"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(f"{self.name} {self.version} {self.arch}".encode()).hexdigest()

    def stanza(self) -> str:
        lines = [
            f"Package: {self.name}",
            f"Source: {self.source}" if self.source != self.name else "",
            f"Version: {self.version}",
            "Installed-Size: 4150",
            "Maintainer: Debian Kernel Team <debian-kernel@lists.debian.org>",
            f"Architecture: {self.arch}",
            f"Depends: {self.depends}" if self.depends else "",
            f"Description: {self.name}",
            "Section: kernel",
            "Priority: optional",
            f"Filename: {self.filename}",
            "Size: 1841552",
            f"SHA256: {self.sha256}",
        ]
        return "\n".join(line for line in lines if line) + "\n"


@dataclass(frozen=True)
class Suite:
    """A dists/<name> tree: Release fields as Debian's archive sets them."""

    name: str
    codename: str
    suite: str
    packages: Sequence[Deb] = field(default_factory=tuple)


def _write_suite(repo: Path, suite: Suite, archs: Sequence[str]) -> None:
    dist = repo / "dists" / suite.name
    entries = []
    for arch in archs:
        folder = dist / "main" / f"binary-{arch}"
        folder.mkdir(parents=True, exist_ok=True)
        # Like dak: arch-specific packages in their own index, arch:all ones in every one.
        text = "\n".join(p.stanza() for p in suite.packages if p.arch in (arch, "all"))
        data = text.encode()
        for name, content in (("Packages", data), ("Packages.gz", gzip.compress(data, mtime=0))):
            (folder / name).write_bytes(content)
            entries.append((f"main/binary-{arch}/{name}", content))
    release = [
        "Origin: Debian",
        "Label: Debian",
        f"Suite: {suite.suite}",
        f"Codename: {suite.codename}",
        f"Architectures: {' '.join(archs)}",
        "Components: main",
        "Date: Sat, 01 Nov 2025 00:00:00 UTC",
        "SHA256:",
        *(f" {hashlib.sha256(c).hexdigest()} {len(c):8d} {n}" for n, c in entries),
    ]
    (dist / "Release").write_text("\n".join(release) + "\n")


def make_apt_root(
    tmp: Path,
    suites: Sequence[Suite],
    *,
    archs: Sequence[str] = ("amd64",),
    installed: Sequence[Deb] = (),
) -> Path:
    """Archive + isolated apt root under tmp; returns the APT_CONFIG file to use."""
    repo = tmp / "archive"
    for suite in suites:
        _write_suite(repo, suite, archs)
    root = tmp / "root"
    for folder in (
        "etc/apt/apt.conf.d",
        "etc/apt/preferences.d",
        "etc/apt/sources.list.d",
        "etc/apt/trusted.gpg.d",
        "var/lib/apt/lists/partial",
        "var/cache/apt/archives/partial",
        "var/lib/dpkg",
        "var/log/apt",
    ):
        (root / folder).mkdir(parents=True, exist_ok=True)
    # dpkg's status file: an installed package that no list offers any more.
    status = "\n".join(
        p.stanza().replace("Package:", "Status: install ok installed\nPackage:", 1)
        for p in installed
    )
    (root / "var/lib/dpkg/status").write_text(status)
    (root / "etc/apt/sources.list.d/test.sources").write_text(
        textwrap.dedent(
            f"""\
            Types: deb
            URIs: file:{repo}
            Suites: {" ".join(s.name for s in suites)}
            Components: main
            Trusted: yes
            """
        )
    )
    config = root / "apt.conf"
    arch_list = " ".join(f'"{a}";' for a in archs)
    config.write_text(
        textwrap.dedent(
            f"""\
            Dir "{root}/";
            Dir::State::status "{root}/var/lib/dpkg/status";
            Dir::Bin::Methods "/usr/lib/apt/methods";
            APT::Architecture "{archs[0]}";
            APT::Architectures {{ {arch_list} }};
            APT::Sandbox::User "root";
            Acquire::Languages "none";
            Acquire::GzipIndexes "true";
            """
        )
    )
    subprocess.run(
        ["apt-get", "update", "-q"],
        env={**os.environ, "APT_CONFIG": str(config)},
        check=True,
        capture_output=True,
        text=True,
    )
    return config


@dataclass(frozen=True)
class Rpm:
    """A subpackage of one test spec: its name and the capabilities it provides."""

    name: str
    provides: Sequence[str] = ()


@dataclass(frozen=True)
class Srpm:
    """One rpmbuild run: a source package whose subpackages hold metadata only."""

    source: str
    version: str
    release: str
    packages: Sequence[Rpm]
    arch: str = "x86_64"
    epoch: int | None = None


def build_rpms(out: Path, srpm: Srpm) -> None:
    top = out.parent / f".rpmbuild-{srpm.source}-{srpm.version}-{srpm.release}-{srpm.arch}"
    (top / "SPECS").mkdir(parents=True, exist_ok=True)
    main = "".join(
        f"Provides: {p}\n" for pkg in srpm.packages if pkg.name == srpm.source for p in pkg.provides
    )
    subs = []
    for pkg in srpm.packages:
        if pkg.name == srpm.source:
            # The source's own name is the main package (el7's "kernel" image).
            subs.append("%files\n")
            continue
        provides = "".join(f"Provides: {p}\n" for p in pkg.provides)
        subs.append(
            f"%package -n {pkg.name}\nSummary: {pkg.name}\n{provides}"
            f"%description -n {pkg.name}\nmetadata only\n%files -n {pkg.name}\n"
        )
    spec = top / "SPECS" / f"{srpm.source}.spec"
    spec.write_text(
        f"Name: {srpm.source}\nVersion: {srpm.version}\nRelease: {srpm.release}\n"
        + (f"Epoch: {srpm.epoch}\n" if srpm.epoch is not None else "")
        + main
        + "Summary: test\nLicense: GPL-2.0-only\n%description\ntest\n"
        + "".join(subs)
    )
    subprocess.run(
        [
            "rpmbuild",
            "-bb",
            "--quiet",
            "--target",
            srpm.arch,
            "--define",
            f"_topdir {top}",
            "--define",
            f"_rpmdir {out}",
            spec,
        ],
        check=True,
        capture_output=True,
        text=True,
    )


def kernel_rpms(uname_r: str, variant: str | None = None) -> list[Rpm]:
    """kernel[-variant]-devel and -core with the uname-r Provides kernel.spec gives them."""
    stem = f"kernel-{variant}" if variant else "kernel"
    return [
        Rpm(f"{stem}-devel", (f"{stem}-devel-uname-r = {uname_r}",)),
        Rpm(f"{stem}-core", (f"kernel-uname-r = {uname_r}", f"{stem}-core-uname-r = {uname_r}")),
    ]


def make_rpm_repo(out: Path, srpms: Sequence[Srpm]) -> Path:
    """Build every source package into out and index the folder with createrepo_c."""
    out.mkdir(parents=True, exist_ok=True)
    for srpm in srpms:
        build_rpms(out, srpm)
    subprocess.run(["createrepo_c", "-q", str(out)], check=True, capture_output=True)
    return out
