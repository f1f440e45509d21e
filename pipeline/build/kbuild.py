"""Compiling one module with kbuild against its build's headers, then finishing it:
strip debug info, sign, and check what the ELF says about itself.

Reproducible by construction: the compiler is the one the build names, the locale is C,
and ``-ffile-prefix-map`` maps both the module folder and the tree's root away, so the
same cell gives the same bytes in any folder and on any machine with the same toolchain.
Debug info is stripped before signing, since stripping afterwards would cut the
signature off the end of the file.

The toolchain identity is made from cheap facts (a small file of the tree, each tool's
``--version`` once per process), so deciding that a cell is already built costs neither
a hash over the tree nor a run of make.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from livegraft.signing.module_key import ModuleKey
from livegraft.signing.module_signature import SIGNATURE_MARKER

from ..errors import InputError, WorkError
from ..kernel_files import KernelTree
from ..kernels.model import KernelBuild
from ..modinfo import read_modinfo
from ..proc import CommandError, run

MAKE_TIMEOUT = 900
# An external-module build is one small module: make's own job server stays at one,
# since the runner already runs one compile per core.
# The kernel's Makefile unexports LC_ALL, so the C locale is asked for variable by variable:
# compiler messages (a failed cell's reason) then read the same on every machine.
_MAKE_ENV = {
    "LC_ALL": "C",
    "LANG": "C",
    "LC_CTYPE": "C",
    "LC_MESSAGES": "C",
    "MAKEFLAGS": "",
    "MAKELEVEL": "",
}
_CC_VERSION_TEXT = re.compile(r'^CONFIG_CC_VERSION_TEXT="(.*)"$', re.M)
_BTF_MODULES = re.compile(r"^CONFIG_DEBUG_INFO_BTF_MODULES=y$", re.M)
_COMPILER = re.compile(r"(?P<prefix>(?:\S+-)?)(?:gcc|clang)(?:-[0-9.]+)?")
_ERROR_LINE = re.compile(r"(?:\b(?:fatal )?error:|^ERROR:|undefined!)", re.I)


class BuildFailed(WorkError):
    """The cell's module could not be made; ``reason`` is one line, the log has the rest."""

    def __init__(self, reason: str, log: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.log = log


@dataclass(frozen=True)
class Toolchain:
    # The compiler command the build names (from its CONFIG_CC_VERSION_TEXT) …
    compiler: str
    # … its ``--version`` on this machine, and what built the kernel.
    compiler_version: str
    kernel_compiler: str
    binutils: str
    # pahole writes the module's BTF when the build generates module BTF.
    pahole: str | None
    # name=version of every package the tree was unpacked from (kbuild included).
    headers: tuple[str, ...]

    @property
    def prefix(self) -> str:
        """The cross prefix of the binutils that go with the compiler."""
        m = _COMPILER.fullmatch(self.compiler)
        return m["prefix"] if m else ""

    def identity(self) -> dict[str, Any]:
        return {
            "compiler": self.compiler_version,
            "kernel_compiler": self.kernel_compiler,
            "binutils": self.binutils,
            "pahole": self.pahole,
            "headers": list(self.headers),
        }


_versions: dict[str, str] = {}
_versions_lock = threading.Lock()


def tool_version(tool: str) -> str:
    """First line of ``tool --version``, asked once per process."""
    with _versions_lock:
        if tool not in _versions:
            try:
                out = run([tool, "--version"])
            except CommandError as exc:
                raise WorkError(f"{tool} --version failed: {exc}") from None
            except WorkError:
                raise WorkError(f"{tool} is not installed (the build needs it)") from None
            _versions[tool] = (out.stdout.strip().splitlines() or [""])[0].strip()
        return _versions[tool]


def toolchain_of(tree: KernelTree) -> Toolchain:
    config_path = tree.headers / ".config"
    try:
        config = config_path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise WorkError(f"{config_path}: cannot read the build's kernel config ({exc})") from None
    m = _CC_VERSION_TEXT.search(config)
    if not m or not m.group(1).split():
        raise WorkError(f"{config_path}: names no compiler (CONFIG_CC_VERSION_TEXT)")
    kernel_compiler = m.group(1)
    compiler = kernel_compiler.split()[0]
    if not _COMPILER.fullmatch(compiler):
        raise WorkError(f"{config_path}: unknown compiler {compiler!r} in CONFIG_CC_VERSION_TEXT")
    prefix = _COMPILER.fullmatch(compiler)["prefix"]  # type: ignore[index]
    btf = bool(_BTF_MODULES.search(config)) and (tree.headers / "vmlinux").is_file()
    return Toolchain(
        compiler=compiler,
        compiler_version=tool_version(compiler),
        kernel_compiler=kernel_compiler,
        binutils=tool_version(f"{prefix}ld"),
        pahole=tool_version("pahole") if btf else None,
        headers=tuple(f"{h.name}={h.version}" for h in tree.build.headers),
    )


def make_command(tree: KernelTree, moddir: Path, toolchain: Toolchain) -> list[str]:
    """The one make invocation (the benchmark's floor runs exactly this, too)."""
    kcflags = f"-ffile-prefix-map={moddir}=/build -ffile-prefix-map={tree.root}/=/"
    argv = ["make", "-C", str(tree.headers), f"M={moddir}", f"KCFLAGS={kcflags}"]
    if toolchain.pahole is not None:
        # The kernel runs pahole with -j, whose threads order the module's BTF types
        # differently from run to run (seen with pahole 1.24 on 6.12 builds); these flags
        # come last on pahole's command line, and its last -j wins.
        argv.append("MODULE_PAHOLE_FLAGS=-j1")
    return [*argv, "modules"]


def make_env() -> dict[str, str]:
    return dict(_MAKE_ENV)


def _reason(output: str, moddir: Path) -> str:
    """The compiler's (or modpost's) first error, with the module folder cut away."""
    text = output.replace(f"{moddir}/", "")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if _ERROR_LINE.search(line) and not line.startswith("make"):
            return line
    return lines[-1] if lines else "make failed without a message"


class Log:
    """The build log: every command, its output and its time, in order."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def add(self, text: str) -> None:
        self.parts.append(text if text.endswith("\n") else text + "\n")

    def command(self, argv: list[str], seconds: float, out: str, err: str) -> None:
        self.add(f"$ {shlex.join(argv)}    # {seconds:.2f} s")
        if out.strip():
            self.add(out)
        if err.strip():
            self.add(err)

    def text(self) -> str:
        return "".join(self.parts)


def compile_module(
    tree: KernelTree, toolchain: Toolchain, moddir: Path, name: str, log: Log
) -> Path:
    argv = make_command(tree, moddir, toolchain)
    started = time.monotonic()
    out = run(argv, env=make_env(), check=False, timeout=MAKE_TIMEOUT)
    log.command(argv, time.monotonic() - started, out.stdout, out.stderr)
    if out.returncode != 0:
        raise BuildFailed(_reason(out.stderr or out.stdout, moddir), log.text())
    ko = moddir / f"{name}.ko"
    if not ko.is_file():
        raise BuildFailed(f"make succeeded but wrote no {ko.name}", log.text())
    return ko


def _step(argv: list[str], log: Log, what: str, env: Mapping[str, str] | None = None) -> None:
    started = time.monotonic()
    out = run(argv, env=env, check=False)
    log.command(argv, time.monotonic() - started, out.stdout, out.stderr)
    if out.returncode != 0:
        tail = (out.stderr or out.stdout).strip().splitlines()[-1:] or ["no message"]
        raise BuildFailed(f"{what} failed: {tail[0]}", log.text())


@dataclass(frozen=True)
class Finished:
    ko: Path
    sha256: str
    srcversion: str
    vermagic: str
    modinfo: dict[str, list[str]]


def check_modinfo(info: Mapping[str, list[str]], build: KernelBuild) -> tuple[str, str]:
    """(vermagic, srcversion) when the module is a livepatch for this build, else BuildFailed."""
    vermagic = (info.get("vermagic") or [""])[0]
    if vermagic.split()[:1] != [build.uname_r]:
        raise BuildFailed(f"vermagic {vermagic!r} is not for {build.uname_r}")
    if info.get("livepatch") != ["Y"]:
        raise BuildFailed("the module does not carry livepatch=Y in its modinfo")
    return vermagic, (info.get("srcversion") or [""])[0]


def check_own_modinfo(info: Mapping[str, list[str]], cell_label: str) -> None:
    """What main.c puts there: the exact build, and a version so modpost adds srcversion."""
    if info.get("livegraft_build") != [cell_label]:
        raise BuildFailed(f"livegraft_build is {info.get('livegraft_build')}, not {cell_label}")
    if not (info.get("srcversion") or [""])[0]:
        raise BuildFailed("modpost recorded no srcversion")


def finish_module(
    ko: Path, tree: KernelTree, toolchain: Toolchain, key: ModuleKey, log: Log
) -> Finished:
    """Strip, sign, and check the module in place."""
    _step([f"{toolchain.prefix}strip", "--strip-debug", str(ko)], log, "strip")
    _step(
        [str(tree.sign_file), "sha256", str(key.key), str(key.cert), str(ko)],
        log,
        "sign-file",
        env=key.sign_env(),
    )
    data = ko.read_bytes()
    if not data.endswith(SIGNATURE_MARKER):
        raise BuildFailed("sign-file left the module unsigned", log.text())
    try:
        info = read_modinfo(ko)
        vermagic, srcversion = check_modinfo(info, tree.build)
    except InputError as exc:
        raise BuildFailed(str(exc), log.text()) from None
    except BuildFailed as exc:
        raise BuildFailed(exc.reason, log.text()) from None
    log.add(f"modinfo: vermagic={vermagic!r} srcversion={srcversion}")
    return Finished(ko, hashlib.sha256(data).hexdigest(), srcversion, vermagic, info)
