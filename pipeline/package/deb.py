"""The DEB of one kernel build's module: ``livepatch-<uname -r>``, version N.

Contents: ``/usr/lib/livegraft/<uname -r>/<module>.ko`` and its ``livepatch.json``, with
``DEBIAN/md5sums``. Ties to the kernel: ``Enhances: linux-image-<uname -r>`` only, so
installing it never pulls a kernel (and removing the kernel never removes it by force).

No maintainer scripts: loading, replacing and reverting the module is the client's job
(the apt hook and ``livegraftctl``), which logs its failures and never fails an apt
run; a postinst that loads a module could fail ``apt upgrade`` on every host at once.
With none, dpkg only unpacks files, which cannot fail for reasons of ours.

Reproducible: every mtime is SOURCE_DATE_EPOCH, modes and owners are fixed
(``--root-owner-group``), dpkg-deb sorts entries and takes the ar member times from
SOURCE_DATE_EPOCH, and xz runs single-threaded: the same item gives the same bytes.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from debian.deb822 import Deb822

from ..errors import WorkError
from ..proc import run
from .item import PackageItem

SECTION = "kernel"
PRIORITY = "optional"


def image_package(item: PackageItem) -> str:
    return f"linux-image-{item.build.uname_r}"


def control(item: PackageItem, installed_kib: int) -> Deb822:
    fields = Deb822()
    fields["Package"] = item.name
    fields["Version"] = item.version
    fields["Architecture"] = item.arch
    fields["Maintainer"] = item.maintainer
    fields["Installed-Size"] = str(installed_kib)
    enhances = [image_package(item)]
    # Debian also ships the unsigned build of the same kernel under its own name.
    if item.build.image is not None and item.build.image.name not in enhances:
        enhances.append(item.build.image.name)
    fields["Enhances"] = ", ".join(enhances)
    fields["Section"] = SECTION
    fields["Priority"] = PRIORITY
    fields["Description"] = description_field(item.summary, item.description)
    return fields


def description_field(summary: str, description: tuple[str, ...]) -> str:
    """Debian's Description: the summary, then each line indented, a blank one as ``.``."""
    body = [f" {line}" if line.strip() else " ." for line in description]
    return "\n".join([summary, *body])


def build_deb(item: PackageItem, work: Path) -> Path:
    """Build ``item`` in the empty folder ``work``; return the checked .deb inside it."""
    root = work / "root"
    files = {
        item.module_path: item.module.read_bytes(),
        item.info_path: item.info,
    }
    for path, data in files.items():
        target = root / path.relative_to("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    meta = root / "DEBIAN"
    meta.mkdir()
    md5sums = "".join(
        f"{hashlib.md5(data).hexdigest()}  {path.relative_to('/')}\n"
        for path, data in sorted(files.items())
    )
    (meta / "md5sums").write_text(md5sums, encoding="utf-8")
    (meta / "control").write_text(control(item, installed_kib(root, meta)).dump(), encoding="utf-8")
    _normalize(root, item.epoch)
    out = work / item.filename
    dpkg_deb_build(root, out, item.epoch)
    check_deb(out, item, work / "check")
    return out


def dpkg_deb_build(root: Path, out: Path, epoch: int) -> None:
    """The package of the tree ``root`` (with its ``DEBIAN/``), reproducibly."""
    run(
        ["dpkg-deb", "--root-owner-group", "-Zxz", "--threads-max=1", "--build", root, out],
        env={"SOURCE_DATE_EPOCH": str(epoch), "TZ": "UTC", "LC_ALL": "C.UTF-8"},
    )


def installed_kib(root: Path, skip: Path) -> int:
    """Installed-Size as dpkg-gencontrol counts it: KiB per file, rounded up, one per folder
    or symlink."""
    total = 0
    for folder, dirs, names in os.walk(root):
        if Path(folder) == skip:
            dirs[:] = []
            continue
        total += 1 if Path(folder) != root else 0
        for n in names:
            path = Path(folder) / n
            total += 1 if path.is_symlink() else -(-path.stat().st_size // 1024)
    return total


def _normalize(root: Path, epoch: int) -> None:
    for folder, _, names in os.walk(root):
        os.chmod(folder, 0o755)
        for n in names:
            os.chmod(Path(folder) / n, 0o644)
    set_times(root, epoch)


def set_times(root: Path, epoch: int) -> None:
    """Every mtime below ``root`` (symlinks' own, not their targets') set to ``epoch``."""
    # Files first, then folders deepest first: touching a file changes its folder's mtime.
    for folder, dirs, names in sorted(os.walk(root), key=lambda w: -len(Path(w[0]).parts)):
        # os.walk lists a symlink to a folder among the folders.
        for n in [*names, *(d for d in dirs if (Path(folder) / d).is_symlink())]:
            os.utime(Path(folder) / n, (epoch, epoch), follow_symlinks=False)
        os.utime(folder, (epoch, epoch))


def read_control(package: Path) -> Deb822:
    return Deb822(run(["dpkg-deb", "--field", package]).stdout)


def check_deb(package: Path, item: PackageItem, scratch: Path) -> None:
    """Read the package back with dpkg-deb: its fields, its file list, the module's bytes."""
    fields = read_control(package)
    for key, value in (
        ("Package", item.name),
        ("Version", item.version),
        ("Architecture", item.arch),
    ):
        if fields.get(key) != value:
            raise WorkError(f"{package}: {key} is {fields.get(key)!r}, expected {value!r}")
    scratch.mkdir()
    run(["dpkg-deb", "--extract", package, scratch])
    found = sorted("/" + str(p.relative_to(scratch)) for p in scratch.rglob("*") if not p.is_dir())
    expected = sorted([str(item.module_path), str(item.info_path)])
    if found != expected:
        raise WorkError(f"{package}: holds {found}, expected {expected}")
    item.check_payload(
        package,
        (scratch / item.module_path.relative_to("/")).read_bytes(),
        (scratch / item.info_path.relative_to("/")).read_bytes(),
    )
    meta = scratch / "DEBIAN"
    run(["dpkg-deb", "--control", package, meta])
    control_files = sorted(p.name for p in meta.iterdir())
    if control_files != ["control", "md5sums"]:
        raise WorkError(f"{package}: control members {control_files}, expected control, md5sums")
