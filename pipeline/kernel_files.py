"""A kernel build's packages: fetched, checked against the repository, unpacked per build.

Nothing is installed on the host. Each build gets its own tree in the cache, because a
build whose headers are also installed on the host would otherwise silently compile
against the host's copy: Debian's flavour Makefile includes its ``-common`` tree by an
absolute ``/usr/src`` path, which is rewritten to point into the build's own tree.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests
from debian import deb822

from .errors import InputError, WorkError
from .kernels.apt_source import discover_apt
from .kernels.filters import Filters
from .kernels.model import KernelBuild, PackageRef
from .proc import run

DOWNLOAD_TIMEOUT = 120


@dataclass(frozen=True)
class KernelTree:
    """Where one build's unpacked files are."""

    build: KernelBuild
    root: Path
    # ``make -C`` here to build external modules.
    headers: Path

    @property
    def scripts(self) -> Path:
        return self.headers / "scripts"

    @property
    def sign_file(self) -> Path:
        return self.scripts / "sign-file"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+_-]", "_", text)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextmanager
def _staging(final: Path) -> Iterator[Path]:
    """A temporary sibling of ``final`` that becomes it only if the block succeeds."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}."))
    try:
        yield tmp
        try:
            os.replace(tmp, final)
        except OSError:
            # Another process staged the same content first (a directory cannot be
            # replaced once it has files): theirs is as good as ours.
            if not final.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _apt_checksum(ref: PackageRef) -> tuple[str, str]:
    """(sha256, Filename) of a package version as the machine's apt indexes list it."""
    out = run(["apt-cache", "show", f"{ref.name}={ref.version}"], check=False)
    for para in deb822.Deb822.iter_paragraphs(out.stdout.splitlines()):
        if para.get("Package") == ref.name and para.get("Version") == ref.version:
            return para["SHA256"], para.get("Filename", "")
    raise InputError(
        None, f"{ref.name}={ref.version}", "a package version the machine's apt sources offer"
    )


def _download_apt(ref: PackageRef, into: Path) -> Path:
    # The sandbox user cannot write into our cache as root; the download is checked
    # against the index's sha256 below, which is what the sandbox would protect.
    run(
        ["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", f"{ref.name}={ref.version}"],
        cwd=into,
        timeout=DOWNLOAD_TIMEOUT * 5,
    )
    files = [p for p in into.iterdir() if p.suffix == ".deb"]
    if len(files) != 1:
        raise WorkError(f"apt-get download {ref.name}={ref.version}: expected one .deb")
    return files[0]


def _download_url(base: str, ref: PackageRef, into: Path) -> Path:
    if not ref.filename:
        raise InputError(None, ref.name, f"no file name known below {base}")
    url = base.rstrip("/") + "/" + ref.filename.lstrip("/")
    target = into / Path(ref.filename).name
    if url.startswith("file://"):
        shutil.copyfile(url[len("file://") :], target)
        return target
    try:
        with requests.get(url, stream=True, timeout=DOWNLOAD_TIMEOUT) as r:
            r.raise_for_status()
            with target.open("wb") as f:
                for chunk in r.iter_content(1 << 20):
                    f.write(chunk)
    except requests.RequestException as exc:
        raise WorkError(f"{url}: download failed ({exc.__class__.__name__})") from None
    return target


def fetch_package(build: KernelBuild, ref: PackageRef, cache: Path) -> Path:
    """The package file, downloaded once and checked against the repository's sha256."""
    expected = ref.sha256
    if expected is None and build.origin == "apt":
        expected, _ = _apt_checksum(ref)
    if expected is None:
        raise InputError(None, ref.name, "a sha256 from the repository index to check it against")
    final = cache / "packages" / f"{_slug(ref.name)}_{_slug(ref.version)}_{expected[:16]}"
    pkg = final / "pkg"
    if pkg.is_file():
        return pkg
    with _staging(final) as tmp:
        got = (
            _download_apt(ref, tmp)
            if build.origin == "apt"
            else _download_url(build.origin, ref, tmp)
        )
        actual = _sha256(got)
        if actual != expected:
            raise WorkError(
                f"{ref.name}={ref.version}: sha256 {actual} "
                f"does not match the repository's {expected}"
            )
        got.rename(tmp / "pkg")
    return pkg


def _unpack(build: KernelBuild, pkg: Path, into: Path) -> None:
    if build.family == "deb":
        run(["dpkg-deb", "-x", pkg, into])
        return
    # rpm2archive writes the payload as <file>.tgz whatever the payload's compression.
    run(["rpm2archive", pkg])
    tgz = Path(f"{pkg}.tgz")
    try:
        with tarfile.open(tgz) as tar:
            tar.extractall(into, filter="tar")
    finally:
        tgz.unlink(missing_ok=True)


def _point_at_own_tree(root: Path, headers: Path) -> None:
    """Debian's flavour Makefile includes the -common tree by an absolute path.

    ``root`` is where the tree will live once staged, ``headers`` where it is now.
    """
    makefile = headers / "Makefile"
    text = makefile.read_text(encoding="utf-8")
    fixed = re.sub(
        r"^include (/usr/src/\S+)$", lambda m: f"include {root}{m.group(1)}", text, flags=re.M
    )
    makefile.write_text(fixed, encoding="utf-8")


def _tree_key(build: KernelBuild) -> str:
    return "-".join(_slug(p) for p in (build.family, build.uname_r, build.package_version))


def complete_from_apt(build: KernelBuild) -> KernelBuild:
    """A declared Debian build with the packages discovery would have found for it.

    A config may declare a build by uname -r and version alone; its headers package
    then needs the ``-common`` tree and the kbuild package it depends on, and
    booting needs the image: the machine's apt lists say which, with their checksums.
    """
    names = {ref.name for ref in build.headers}
    complete = any("-common" in n for n in names) and any("kbuild" in n for n in names)
    if build.family != "deb" or build.origin != "apt" or (complete and build.image):
        return build
    offered = [
        b
        for b in discover_apt(Filters(uname_r=(build.uname_r,)))
        if b.package_version == build.package_version
    ]
    if not offered:
        wanted = build.headers[0].name if build.headers else f"linux-headers-{build.uname_r}"
        raise InputError(
            None,
            f"{wanted}={build.package_version}",
            "a kernel build the machine's apt sources offer (see livegraft kernels discover)",
        )
    found = offered[0]
    return dataclasses.replace(
        build,
        headers=build.headers if complete else found.headers,
        image=build.image or found.image,
    )


def prepare(build: KernelBuild, cache: Path) -> KernelTree:
    """Fetch and unpack the build's headers once; later calls reuse the tree."""
    if not build.headers:
        raise InputError(None, f"{build.uname_r}: headers", "the headers packages to build against")
    final = cache / "trees" / _tree_key(build)
    if not final.is_dir():
        build = complete_from_apt(build)
        packages = [fetch_package(build, ref, cache) for ref in build.headers]
        with _staging(final) as tmp:
            for pkg in packages:
                _unpack(build, pkg, tmp)
            _point_at_own_tree(final, _headers_dir(build, tmp))
    return KernelTree(build, final, _headers_dir(build, final))


def fetch_image(build: KernelBuild, cache: Path) -> Path:
    """The build's bootable kernel image (vmlinuz), unpacked from its image package once."""
    final = cache / "images" / _tree_key(build)
    if not final.is_dir():
        build = complete_from_apt(build)
        if build.image is None:
            raise InputError(None, f"{build.uname_r}: image", "the kernel image package to boot")
        pkg = fetch_package(build, build.image, cache)
        with _staging(final) as tmp:
            _unpack(build, pkg, tmp)
            # Only the image is kept: the modules are not needed to boot into a livepatch
            # test (livepatch is built in) and are most of the package's size.
            for sub in ("lib", "usr"):
                shutil.rmtree(tmp / sub, ignore_errors=True)
    for candidate in (final / "boot").glob("vmlinuz-*"):
        return candidate
    raise WorkError(f"{build.uname_r}: the image package holds no boot/vmlinuz-*")


def _headers_dir(build: KernelBuild, root: Path) -> Path:
    candidates = [
        root / "usr" / "src" / f"linux-headers-{build.uname_r}",
        root / "usr" / "src" / "kernels" / build.uname_r,
    ]
    for path in candidates:
        if (path / "Makefile").is_file():
            return path
    raise WorkError(f"{build.uname_r}: the headers packages hold no kbuild tree for it")
