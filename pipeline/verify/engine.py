"""Verify one cell: boot its real kernel, load its module, run its checks, judge the log.

The host decides pass or fail from the serial console alone (see ``guest`` for the
markers). Besides what the guest reports, the host checks what the kernel does not:
that the booted kernel is the expected build, and that each module was built for it —
a module built for a sibling build with matching symbol CRCs loads without complaint.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from livegraft.signing.module_signature import is_signed

from ..errors import InputError
from ..files import write_atomic
from ..modinfo import module_name, read_modinfo, vermagic_release
from . import guest, qemu
from .initramfs import base_image

Status = Literal["verified", "failed"]

CONSOLE_LOG = "console.log"
INITRAMFS = "initramfs.img"
# oops=panic: an oops in patched code ends the boot at once instead of hanging it.
KERNEL_ARGS = "console=ttyS0 panic=-1 oops=panic quiet"
# Module info the build stage records: the exact build, ``<uname -r>@<package version>``.
BUILD_KEY = "livegraft_build"

_PREFIX = "LIVEGRAFT-"
# What follows each marker word.
_STEP = re.compile(r"(\S+) (ok|fail)(?: (.*))?")
_OUT = re.compile(r"(\S+) (.*)")
_INFO = re.compile(r"(\S+) ?(.*)")
_PANIC = re.compile(r"Kernel panic - not syncing: ?(.*)$")


@dataclass(frozen=True)
class Step:
    name: str
    ok: bool
    detail: str = ""
    # What a check printed, line by line.
    output: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "output": self.output}


@dataclass(frozen=True)
class VerifyResult:
    status: Status
    # The first failing step and its detail; None when verified.
    reason: str | None
    # Host-side steps (boot, kernel, build:<m>) then the guest's, in the order run.
    steps: tuple[Step, ...]
    # The full serial console of the boot, kernel log included.
    log: Path
    # ``uname -r`` and ``uname -v`` as the booted kernel reported them.
    kernel_release: str | None
    kernel_version: str | None
    accel: qemu.Accel
    # Wall time of the QEMU run, boot to power-off.
    seconds: float
    # Guest facts that are not pass/fail (tainted, signed-under-enforce, uptime-at-init).
    info: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "verified"

    def step(self, name: str) -> Step | None:
        return next((s for s in self.steps if s.name == name), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "reason": self.reason,
            "steps": [s.to_json() for s in self.steps],
            "log": str(self.log),
            "kernel_release": self.kernel_release,
            "kernel_version": self.kernel_version,
            "accel": self.accel,
            "seconds": round(self.seconds, 3),
            "info": self.info,
        }


@dataclass
class _Console:
    """What the serial log says."""

    began: bool = False
    done: bool = False
    release: str | None = None
    version: str | None = None
    steps: list[Step] = field(default_factory=list)
    info: dict[str, str] = field(default_factory=dict)
    panic: str | None = None
    last_line: str = ""


def parse_console(text: str) -> _Console:
    """Read the markers off the console.

    A line's marker is the first ``LIVEGRAFT-`` on it: kernel output may precede it on
    the same line, and what follows it (a check's output, an error message) may itself
    contain marker-like text that must not count as a marker.
    """
    con = _Console()
    outputs: dict[str, list[str]] = {}
    in_dmesg = False
    for raw in text.splitlines():
        line = raw.rstrip()
        if line.strip():
            con.last_line = line.strip()
        at = line.find(_PREFIX)
        if at < 0 or in_dmesg:
            if panic := _PANIC.search(line):
                con.panic = con.panic or panic.group(1).strip() or "Kernel panic"
            # The kernel log dump repeats the boot's lines; only its end matters.
            if at >= 0 and line[at:] == guest.DMESG_END:
                in_dmesg = False
            continue
        kind, _, rest = line[at:].partition(" ")
        if kind == guest.DMESG_BEGIN:
            in_dmesg = True
        elif kind == guest.BEGIN:
            con.began = True
        elif kind == guest.DONE:
            con.done = True
        elif kind == guest.KERNEL:
            con.release = rest.strip()
        elif kind == guest.KERNEL_VERSION:
            con.version = rest.strip()
        elif kind == guest.STEP and (m := _STEP.fullmatch(rest)):
            name, status, detail = m.group(1), m.group(2), (m.group(3) or "").strip()
            con.steps.append(Step(name, status == "ok", detail, tuple(outputs.pop(name, []))))
        elif kind == guest.OUT and (m := _OUT.fullmatch(rest)):
            outputs.setdefault(m.group(1), []).append(m.group(2))
        elif kind == guest.INFO and (m := _INFO.fullmatch(rest)):
            con.info[m.group(1)] = m.group(2).strip()
    return con


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise InputError(path, None, f"{what} (no such file)")


def _guest_timeouts(timeout: float) -> tuple[int, int]:
    """Transition and check limits that leave the guest time to report before the host
    gives up on it."""
    limit = max(1, min(30, int(timeout // 4)))
    return limit, limit


def verify_cell(
    vmlinuz: Path,
    module: Path,
    next_level_module: Path | None,
    unsigned_module: Path | None,
    checks: Sequence[tuple[str, Path]],
    work: Path,
    timeout: float,
    *,
    expect_release: str | None = None,
    expect_build_version: str | None = None,
    accel: qemu.Accel | None = None,
    memory_mib: int = 512,
) -> VerifyResult:
    """Boot ``vmlinuz`` in QEMU and prove ``module`` works on it.

    ``next_level_module`` (level N+1 of the same build, another module name) proves
    atomic replace; ``unsigned_module`` (an unsigned copy) proves the kernel refuses it
    once signatures are enforced. Either may be None to skip that proof. ``checks`` are
    (name, script) pairs run by busybox sh in the guest after loading; a non-zero exit
    fails the cell. ``expect_release`` / ``expect_build_version`` are matched against
    the guest's ``uname -r`` / ``uname -v`` (Debian puts the package version there).
    ``work`` receives the initramfs and the console log; ``timeout`` bounds the boot.
    Bad input (missing files, a signed "unsigned" module) raises InputError; everything
    the kernel does is reported in the result.
    """
    _require_file(vmlinuz, "a kernel image to boot")
    _require_file(module, "the livepatch module to verify")
    if next_level_module is not None:
        _require_file(next_level_module, "the next level's livepatch module")
    if unsigned_module is not None:
        _require_file(unsigned_module, "an unsigned copy of the module")
        if is_signed(unsigned_module):
            raise InputError(unsigned_module, None, "an unsigned module (this one is signed)")
    for name, script in checks:
        _require_file(script, f"the check script of {name}")

    transition_timeout, check_timeout = _guest_timeouts(timeout)
    names = {module: module_name(module)}
    if next_level_module is not None:
        names[next_level_module] = module_name(next_level_module)
    plan = guest.GuestPlan(
        module=names[module],
        next_module=names.get(next_level_module) if next_level_module else None,
        refuse_unsigned=unsigned_module is not None,
        checks=tuple(name for name, _ in checks),
        transition_timeout=transition_timeout,
        check_timeout=check_timeout,
    )

    image = base_image()
    image.add_file("/init", guest.init_script(plan).encode(), 0o755)
    for path, name in names.items():
        image.add_file(plan.module_file(name), path.read_bytes())
    if unsigned_module is not None:
        image.add_file(guest.UNSIGNED_FILE, unsigned_module.read_bytes())
    for index, (_, script) in enumerate(checks):
        image.add_file(plan.check_file(index), script.read_bytes(), 0o755)
    initramfs = work / INITRAMFS
    write_atomic(initramfs, image.gzipped())

    log = work / CONSOLE_LOG
    # Chosen before the clock starts: the first choice in a process probes KVM.
    chosen = accel or qemu.accelerator()
    started = time.monotonic()
    run = qemu.boot(
        vmlinuz, initramfs, KERNEL_ARGS, log, timeout, memory_mib=memory_mib, accel=chosen
    )
    con = parse_console(run.console)
    steps, reason = _judge(con, run, plan, names, timeout, expect_release, expect_build_version)
    return VerifyResult(
        status="failed" if reason else "verified",
        reason=reason,
        steps=steps,
        log=log,
        kernel_release=con.release,
        kernel_version=con.version,
        accel=run.accel,
        seconds=time.monotonic() - started,
        info=con.info,
    )


def _shows_version(con: _Console, version: str) -> bool:
    """Whether the booted kernel names this distro build version: Debian puts it in
    ``uname -v`` (``… Debian 6.1.192-2 (…)``), RPM kernels at the start of ``uname -r``."""
    return bool(version) and (
        version in (con.version or "").split() or (con.release or "").startswith(f"{version}.")
    )


def _build_mismatch(module: Path, con: _Console) -> str | None:
    """Why ``module`` is not for the booted build, or None.

    vermagic names only ``uname -r``, which Debian keeps across rebuilds of one ABI;
    the module's ``livegraft_build`` (``<uname -r>@<package version>``) names the exact
    build.
    """
    built_for = vermagic_release(module)
    if built_for != con.release:
        return f"{module.name} was built for {built_for}, the booted kernel is {con.release}"
    labels = read_modinfo(module).get(BUILD_KEY)
    if not labels:
        return None
    release, _, version = labels[0].partition("@")
    if release != con.release or not _shows_version(con, version):
        return (
            f"{module.name} is for {labels[0]}, the booted kernel is {con.release} ({con.version})"
        )
    return None


def _not_booted(con: _Console, run: qemu.Boot, timeout: float) -> str:
    if run.returncode not in (None, 0) and run.stderr.strip():
        why = run.stderr.strip().splitlines()[-1]
    elif con.panic:
        why = f"kernel panic: {con.panic}"
    elif run.timed_out:
        why = f"/init not reached within {timeout:g} s"
    elif con.last_line:
        why = f"the guest stopped before /init ran; last console line: {con.last_line}"
    else:
        why = "the guest reset before printing anything (not a bootable kernel image?)"
    return f"did not boot: {why}"


def _judge(
    con: _Console,
    run: qemu.Boot,
    plan: guest.GuestPlan,
    names: dict[Path, str],
    timeout: float,
    expect_release: str | None,
    expect_build_version: str | None,
) -> tuple[tuple[Step, ...], str | None]:
    if not con.began:
        reason = _not_booted(con, run, timeout)
        return (Step("boot", False, reason),), reason

    host = [Step("boot", True, f"/init reached after {con.info.get('uptime-at-init', '?')} s")]
    identity = f"{con.release} {con.version}"
    if expect_release is not None and con.release != expect_release:
        host.append(Step("kernel", False, f"booted {identity}, expected {expect_release}"))
    elif expect_build_version is not None and not _shows_version(con, expect_build_version):
        host.append(
            Step("kernel", False, f"booted {identity}, expected build {expect_build_version}")
        )
    else:
        host.append(Step("kernel", True, identity))
    seen = {s.name: s for s in con.steps}
    for path, name in names.items():
        problem = _build_mismatch(path, con)
        if problem is None:
            labels = read_modinfo(path).get(BUILD_KEY)
            host.append(
                Step(f"build:{name}", True, f"built for {labels[0] if labels else con.release}")
            )
            continue
        loaded = seen.get(f"load:{name}")
        if loaded is not None and loaded.ok:
            problem += " (the kernel loaded it all the same)"
        host.append(Step(f"build:{name}", False, problem))

    steps = tuple(host) + tuple(con.steps)
    for failed in host:
        if not failed.ok:
            return steps, f"{failed.name}: {failed.detail}"
    for name in plan.steps():
        step = seen.get(name)
        if step is None:
            if con.panic:
                return steps, f"{name}: kernel panic before it finished: {con.panic}"
            if run.timed_out:
                return steps, f"{name}: no result within {timeout:g} s (the guest hung)"
            return steps, f"{name}: the guest stopped without reporting it"
        if not step.ok:
            return steps, f"{name}: {step.detail}" if step.detail else name
    if not con.done:
        if run.timed_out:
            return steps, f"the guest did not power off within {timeout:g} s"
        return steps, "the guest stopped before reporting LIVEGRAFT-DONE"
    return steps, None
