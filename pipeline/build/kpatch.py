"""The kpatch-build backend: fixes given as kernel source diffs (``fix.patch``).

kpatch-build compiles the build's kernel source twice, with and without the diffs, and
turns the changed functions into a livepatch module (``.replace`` on by default). It
needs what kbuild against headers does not: the build's exact source tree and its
vmlinux with debug info. For Debian builds those are ``linux-source-<major.minor>`` and
``linux-image-<uname -r>-dbg`` at the build's own version, fetched through apt and
checked like the headers. One kpatch-build run makes the cell's whole cumulative
module from all its diffs; a cell cannot mix diffs with livepatch.c fixes, since one
module is made by one backend.

The module kpatch-build writes is then finished like any other (strip, sign, modinfo
checks). It carries kpatch's own init, not ours: the exact-build check that main.c
makes for kbuild modules is left to verify and to the client for these.

kpatch-build is not packaged for Debian 12; where it is missing the cell fails with a
clear reason and the other cells still build.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tarfile
import time
from pathlib import Path

from ..errors import LivegraftError
from ..kernel_files import KernelTree, fetch_package
from ..kernels.model import KernelBuild, PackageRef
from ..plan import Cell
from ..proc import run
from .kbuild import BuildFailed, Log

KPATCH_BUILD = "kpatch-build"
KPATCH_TIMEOUT = 4 * 3600
NOT_INSTALLED = (
    "kpatch-build is not installed: fixes given as a source diff (fix.patch) need it "
    "(install kpatch-build, or give the fix as livepatch.c)"
)


def uses_kpatch(cell: Cell) -> bool:
    return any(f.diff for f in cell.fixes)


def kpatch_build() -> str:
    exe = shutil.which(KPATCH_BUILD)
    if exe is None:
        raise BuildFailed(NOT_INSTALLED)
    return exe


def tool_identity() -> str:
    """What identifies the installed kpatch-build, for the artifact id: its script's sha256."""
    return hashlib.sha256(Path(kpatch_build()).resolve().read_bytes()).hexdigest()


def _unpacked(build: KernelBuild, ref: PackageRef, cache: Path, into: Path) -> Path:
    if not into.is_dir():
        pkg = fetch_package(build, ref, cache)
        tmp = into.with_name(f".{into.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        run(["dpkg-deb", "-x", pkg, tmp])
        tmp.rename(into)
    return into


def _deb_inputs(build: KernelBuild, cache: Path) -> tuple[Path, Path]:
    """(kernel source tree, debug vmlinux) of a Debian build."""
    m = re.match(r"(\d+\.\d+)", build.upstream_version)
    if m is None:
        raise BuildFailed(f"cannot tell the source package of upstream {build.upstream_version}")
    key = re.sub(r"[^A-Za-z0-9.+_-]", "_", f"{build.uname_r}-{build.package_version}")
    root = cache / "kpatch" / key
    source_pkg = PackageRef(f"linux-source-{m.group(1)}", build.package_version)
    dbg_pkg = PackageRef(f"linux-image-{build.uname_r}-dbg", build.package_version)
    dbg = _unpacked(build, dbg_pkg, cache, root / "dbg")
    vmlinux = dbg / "usr" / "lib" / "debug" / "boot" / f"vmlinux-{build.uname_r}"
    if not vmlinux.is_file():
        raise BuildFailed(f"{dbg_pkg.name} holds no {vmlinux.name}")
    src = root / "src"
    if not src.is_dir():
        unpacked = _unpacked(build, source_pkg, cache, root / "source-pkg")
        tarballs = sorted((unpacked / "usr" / "src").glob("linux-source-*.tar.*"))
        if not tarballs:
            raise BuildFailed(f"{source_pkg.name} holds no source tarball")
        tmp = root / ".src.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        with tarfile.open(tarballs[0]) as tar:
            tar.extractall(tmp, filter="tar")
        tops = [p for p in tmp.iterdir() if p.is_dir()]
        if len(tops) != 1:
            raise BuildFailed(f"{tarballs[0].name}: expected one top folder")
        tops[0].rename(src)
        shutil.rmtree(tmp, ignore_errors=True)
    return src, vmlinux


def build_with_kpatch(cell: Cell, tree: KernelTree, moddir: Path, cache: Path, log: Log) -> Path:
    """The unsigned module kpatch-build makes from the cell's diffs."""
    exe = kpatch_build()
    livepatch_c = [f.id for f in cell.fixes if not f.diff]
    if livepatch_c:
        raise BuildFailed(
            f"the cell mixes source diffs with livepatch.c fixes ({', '.join(livepatch_c)}); "
            "one module is made by kbuild or by kpatch-build, not both"
        )
    if cell.build.family != "deb" or cell.build.origin != "apt":
        raise BuildFailed(
            "kpatch-build inputs (source tree, debug vmlinux) are fetched for Debian builds "
            "through apt only"
        )
    try:
        source, vmlinux = _deb_inputs(cell.build, cache)
    except BuildFailed:
        raise
    except LivegraftError as exc:
        raise BuildFailed(f"kpatch-build inputs: {exc}") from None
    out = moddir / "output"
    out.mkdir(parents=True, exist_ok=True)
    argv = [
        exe,
        "--sourcedir", str(source),
        "--config", str(tree.headers / ".config"),
        "--vmlinux", str(vmlinux),
        "--name", cell.module_name,
        "--output", str(out),
        *(str(f.patch) for f in cell.fixes),
    ]  # fmt: skip
    started = time.monotonic()
    result = run(
        argv,
        cwd=moddir,
        env={"CACHEDIR": str(moddir / "kpatch-cache"), "LC_ALL": "C"},
        check=False,
        timeout=KPATCH_TIMEOUT,
    )
    log.command(argv, time.monotonic() - started, result.stdout, result.stderr)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no message"]
        raise BuildFailed(f"kpatch-build failed: {tail[0]}", log.text())
    modules = sorted(out.glob("*.ko"))
    if len(modules) != 1:
        raise BuildFailed(f"kpatch-build wrote {len(modules)} modules, expected one", log.text())
    return modules[0]
