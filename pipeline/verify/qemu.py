"""Booting a kernel image in QEMU with the serial console captured to a file.

The console goes to a file rather than a pipe so that whatever the guest printed
survives a timeout (the kill takes the pipe's buffer with it) and so that a kernel's
non-UTF-8 bytes cannot break the capture.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import WorkError
from ..proc import CommandTimeout, run

QEMU = "qemu-system-x86_64"
QEMU_PACKAGE = "qemu-system-x86"
KVM_DEVICE = Path("/dev/kvm")
# A working KVM runs the probe in well under a second; a /dev/kvm that accepts ioctls
# but never runs a guest (a nested or paravirtual host) would hang it forever.
KVM_PROBE_TIMEOUT = 3.0
# isa-debug-exit turns a guest's write of V to this port into QEMU's exit status 2V+1.
_DEBUG_EXIT_PORT = 0xF4

Accel = Literal["kvm", "tcg"]


@dataclass(frozen=True)
class Boot:
    """What one QEMU run left behind."""

    console: str
    # None when QEMU was killed at the timeout.
    returncode: int | None
    stderr: str
    seconds: float
    accel: Accel

    @property
    def timed_out(self) -> bool:
        return self.returncode is None


def qemu_binary() -> str:
    found = shutil.which(QEMU)
    if found is None:
        raise WorkError(f"{QEMU}: not installed (Debian package {QEMU_PACKAGE})")
    return found


# The probe guest, assembled once with GNU as (--32, then objcopy -O binary) and kept as
# bytes so that verifying needs no assembler. It sits at the start of a 64 KiB BIOS
# (physical 0xF0000); the reset vector far-jumps to it. It does what every Linux boot
# does first: real mode -> protected mode -> long mode with paging, then writes 0 to the
# isa-debug-exit port. A real-mode-only probe is not enough: the KVM seen on these
# machines runs real mode and then hangs at the switch.
#
#   .code16
#   cli; lgdtl %cs:(gdtr-_start); movl %cr0,%eax; orb $1,%al; movl %eax,%cr0
#   ljmpl $0x08, $(0xF0000+pm32-_start)
#   .code32
#   pm32: movw $0x10,%ax; movw %ax,%ds; movw %ax,%es; movw %ax,%ss
#   movl $0x1000,%edi; movl $3072,%ecx; xorl %eax,%eax; rep stosl     # 3 zeroed pages
#   movl $0x2003,0x1000; movl $0x3003,0x2000; movl $0x83,0x3000       # identity 2 MiB
#   movl %cr4,%eax; orl $0x20,%eax; movl %eax,%cr4                      # PAE
#   movl $0x1000,%eax; movl %eax,%cr3
#   movl $0xC0000080,%ecx; rdmsr; orl $0x100,%eax; wrmsr              # EFER.LME
#   movl %cr0,%eax; orl $0x80000000,%eax; movl %eax,%cr0               # paging on
#   ljmp $0x18, $(0xF0000+lm64-_start)
#   .code64
#   lm64: movb $0,%al; outb %al,$0xf4; 1: hlt; jmp 1b
#   .p2align 3
#   gdt: .quad 0, 0x00CF9A000000FFFF, 0x00CF92000000FFFF, 0x00AF9A000000FFFF
#   gdtr: .word gdtr-gdt-1; .long 0xF0000+gdt-_start
_PROBE_CODE = bytes.fromhex(
    "fa2e660f0116a8000f20c00c010f22c066ea18000f00080066b810008ed88ec0"
    "8ed0bf00100000b9000c000031c0f3abc7050010000003200000c70500200000"
    "03300000c70500300000830000000f20e083c8200f22e0b8001000000f22d8b9"
    "800000c00f320d000100000f300f20c00d000000800f22c0ea7f000f001800b0"
    "00e6f4f4ebfd66900000000000000000ffff0000009acf00ffff00000092cf00"
    "ffff0000009aaf001f0088000f00"
)
# ljmp $0xF000, $0x0000
_RESET_JUMP = bytes([0xEA, 0x00, 0x00, 0x00, 0xF0])


def _probe_bios() -> bytes:
    """A 64 KiB BIOS that enters long mode and asks QEMU to exit with status 1."""
    image = bytearray(b"\xf4" * 0x10000)
    image[: len(_PROBE_CODE)] = _PROBE_CODE
    # The CPU starts 16 bytes below the top of the BIOS.
    image[0xFFF0 : 0xFFF0 + len(_RESET_JUMP)] = _RESET_JUMP
    return bytes(image)


def probe(accel: Accel) -> bool:
    """True if QEMU with ``accel`` runs the probe guest to its end."""
    with tempfile.TemporaryDirectory(prefix="livegraft-probe-") as tmp:
        bios = Path(tmp) / "probe.bin"
        bios.write_bytes(_probe_bios())
        argv = [
            qemu_binary(),
            "-accel",
            accel,
            "-machine",
            "pc",
            "-nodefaults",
            "-display",
            "none",
            "-bios",
            str(bios),
            "-device",
            f"isa-debug-exit,iobase={_DEBUG_EXIT_PORT:#x},iosize=1",
        ]
        try:
            return run(argv, check=False, timeout=KVM_PROBE_TIMEOUT).returncode == 1
        except CommandTimeout:
            return False


@functools.cache
def kvm_usable() -> bool:
    """True if QEMU can actually run a kernel under KVM here.

    Opening /dev/kvm is not enough: some hosts hand out a KVM that creates VMs and
    vCPUs but never runs an ordinary guest, so the probe guest is run as the proof.
    """
    return os.access(KVM_DEVICE, os.R_OK | os.W_OK) and probe("kvm")


def accelerator() -> Accel:
    return "kvm" if kvm_usable() else "tcg"


def _chardev_path(path: Path) -> str:
    # QEMU's option parser splits on commas; a doubled comma is a literal one.
    return str(path).replace(",", ",,")


def boot(
    kernel: Path,
    initrd: Path,
    append: str,
    console_log: Path,
    timeout: float,
    *,
    memory_mib: int = 512,
    accel: Accel | None = None,
) -> Boot:
    """Boot ``kernel`` with ``initrd`` until the guest powers off, panics or times out.

    ``-no-reboot`` turns every reset (a ``panic=-1`` reboot, a triple fault in a broken
    image) into QEMU exiting, so only a hung guest costs the whole timeout.
    """
    chosen = accel or accelerator()
    cpu = ["-cpu", "host"] if chosen == "kvm" else ["-cpu", "max"]
    console_log.parent.mkdir(parents=True, exist_ok=True)
    console_log.unlink(missing_ok=True)
    argv = [
        qemu_binary(),
        "-accel",
        chosen,
        *cpu,
        "-m",
        str(memory_mib),
        "-smp",
        "1",
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
        "-chardev",
        f"file,id=console,path={_chardev_path(console_log)}",
        "-serial",
        "chardev:console",
        "-kernel",
        str(kernel),
        "-initrd",
        str(initrd),
        "-append",
        append,
    ]
    started = time.monotonic()
    returncode: int | None
    stderr = ""
    try:
        done = run(argv, check=False, timeout=timeout)
        returncode, stderr = done.returncode, done.stderr
    except CommandTimeout:
        # run() killed QEMU: the guest hung or never reached /init.
        returncode = None
    seconds = time.monotonic() - started
    console = console_log.read_bytes().decode("utf-8", "replace") if console_log.is_file() else ""
    return Boot(console, returncode, stderr, seconds, chosen)
