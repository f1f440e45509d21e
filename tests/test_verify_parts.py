"""Verify's parts without booting a kernel: the initramfs, the /init script, the console
parser and judge, the KVM probe guest, bad input."""

from __future__ import annotations

import gzip
import shutil
import subprocess
from pathlib import Path

import pytest
from livegraft.pipeline.errors import InputError
from livegraft.pipeline.verify import engine, guest, qemu
from livegraft.pipeline.verify.initramfs import BUSYBOX, Initramfs, base_image
from livegraft.signing.module_signature import SIGNATURE_MARKER

needs_busybox = pytest.mark.skipif(not BUSYBOX.is_file(), reason="busybox-static is not installed")
needs_qemu = pytest.mark.skipif(
    shutil.which(qemu.QEMU) is None, reason="qemu-system-x86 is not installed"
)

PLAN = guest.GuestPlan(
    module="lg_a_l1", next_module="lg_a_l2", refuse_unsigned=True, checks=("FIX-1", "FIX-2")
)


def _listing(archive: bytes) -> list[str]:
    cp = subprocess.run(
        [str(BUSYBOX), "cpio", "-t"], input=archive, capture_output=True, check=True
    )
    return cp.stdout.decode().split()


@needs_busybox
def test_initramfs_is_deterministic_and_readable_by_cpio() -> None:
    def make() -> bytes:
        image = base_image()
        image.add_file("/init", b"#!/bin/sh\n", 0o755)
        image.add_file("/livegraft/modules/a.ko", b"x" * 5)
        return image.gzipped()

    first, second = make(), make()
    assert first == second
    names = _listing(gzip.decompress(first))
    for expected in ("init", "bin/busybox", "bin/sh", "bin/insmod", "dev/console"):
        assert expected in names
    # Folders come before what they hold, as the kernel's unpacker needs.
    assert names.index("livegraft") < names.index("livegraft/modules")
    assert names.index("livegraft/modules") < names.index("livegraft/modules/a.ko")


@needs_busybox
def test_initramfs_members_keep_their_bytes_and_modes(tmp_path: Path) -> None:
    image = Initramfs()
    image.add_file("/a/odd", b"123", 0o755)  # a length that needs padding
    image.add_symlink("/a/link", "odd")
    subprocess.run([str(BUSYBOX), "cpio", "-id"], input=image.cpio(), cwd=tmp_path, check=True)
    assert (tmp_path / "a" / "odd").read_bytes() == b"123"
    assert (tmp_path / "a" / "odd").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "a" / "link").readlink() == Path("odd")


def test_initramfs_rejects_relative_paths() -> None:
    with pytest.raises(ValueError):
        Initramfs().add_file("init", b"")


@needs_busybox
def test_init_script_parses_in_busybox_sh(tmp_path: Path) -> None:
    for plan in (PLAN, guest.GuestPlan("lg_a_l1", None, refuse_unsigned=False, checks=())):
        script = tmp_path / "init"
        script.write_text(guest.init_script(plan), encoding="utf-8")
        subprocess.run([str(BUSYBOX), "sh", "-n", str(script)], check=True)


def test_plan_lists_every_step_in_order() -> None:
    assert PLAN.steps() == (
        "load:lg_a_l1",
        "transition:lg_a_l1",
        "enabled:lg_a_l1",
        "check:FIX-1",
        "check:FIX-2",
        "load:lg_a_l2",
        "transition:lg_a_l2",
        "enabled:lg_a_l2",
        "replaced:lg_a_l1",
        "unload:lg_a_l1",
        "disable:lg_a_l2",
        "unload:lg_a_l2",
        "sig-enforce",
        "refuse-unsigned",
    )


@pytest.mark.parametrize(
    ("module", "next_module", "checks"),
    [
        ("lg-a", None, ()),
        ("lg_a", "lg_a", ()),
        ("lg_a", None, ("a b",)),
        ("lg_a", None, ("A", "A")),
    ],
)
def test_plan_rejects_names_the_markers_cannot_carry(
    module: str, next_module: str | None, checks: tuple[str, ...]
) -> None:
    with pytest.raises(InputError):
        guest.GuestPlan(module, next_module, refuse_unsigned=False, checks=checks)


def _console(*lines: str) -> str:
    return "\r\n".join(lines) + "\r\n"


BOOTED = (
    "[    0.000000] Linux version 6.1.0-56-amd64",
    "LIVEGRAFT-BEGIN",
    "LIVEGRAFT-KERNEL 6.1.0-56-amd64",
    "LIVEGRAFT-KERNEL-VERSION #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2 (2026-11-16)",
    "LIVEGRAFT-INFO uptime-at-init 1.70",
)
SMALL = guest.GuestPlan("lg_a_l1", None, refuse_unsigned=False, checks=("FIX-1",))


def _judge(text: str, returncode: int | None = 0, stderr: str = "") -> str | None:
    run = qemu.Boot(text, returncode, stderr, 1.0, "tcg")
    _, reason = engine._judge(engine.parse_console(text), run, SMALL, {}, 60, None, None)
    return reason


def test_console_parser_collects_steps_outputs_and_info() -> None:
    text = _console(
        *BOOTED,
        "LIVEGRAFT-STEP load:lg_a_l1 ok",
        "LIVEGRAFT-OUT check:FIX-1 want X",
        "LIVEGRAFT-OUT check:FIX-1 got Y",
        # A check's output cannot pose as a marker.
        "LIVEGRAFT-OUT check:FIX-1 LIVEGRAFT-STEP sig-enforce ok",
        "LIVEGRAFT-OUT check:FIX-1 LIVEGRAFT-DONE",
        "[    2.1] some kernel noise LIVEGRAFT-STEP check:FIX-1 fail exit status 1: want X got Y",
        "LIVEGRAFT-DMESG-BEGIN",
        "[    0.1] LIVEGRAFT-STEP fake ok",
        "LIVEGRAFT-DMESG-END",
        "LIVEGRAFT-DONE",
    )
    con = engine.parse_console(text)
    assert con.began and con.done
    assert con.release == "6.1.0-56-amd64"
    assert con.version is not None and "6.1.192-2" in con.version
    assert con.info == {"uptime-at-init": "1.70"}
    assert [(s.name, s.ok) for s in con.steps] == [("load:lg_a_l1", True), ("check:FIX-1", False)]
    assert con.steps[1].output == (
        "want X",
        "got Y",
        "LIVEGRAFT-STEP sig-enforce ok",
        "LIVEGRAFT-DONE",
    )
    assert not engine.parse_console(_console(*BOOTED, "LIVEGRAFT-OUT x LIVEGRAFT-DONE")).done


def test_judge_reports_a_panic_during_a_step() -> None:
    text = _console(
        *BOOTED,
        "LIVEGRAFT-STEP load:lg_a_l1 ok",
        "[    2.0] Kernel panic - not syncing: Fatal exception",
    )
    assert _judge(text) == "transition:lg_a_l1: kernel panic before it finished: Fatal exception"


def test_judge_reports_a_hang() -> None:
    reason = _judge(_console(*BOOTED, "LIVEGRAFT-STEP load:lg_a_l1 ok"), returncode=None)
    assert reason == "transition:lg_a_l1: no result within 60 s (the guest hung)"


@pytest.mark.parametrize(
    ("text", "returncode", "stderr", "expected"),
    [
        ("", 1, "qemu: linux kernel too old to load a ram disk\n", "linux kernel too old"),
        ("", 0, "", "reset before printing anything"),
        ("[ 1.0] Kernel panic - not syncing: VFS: Unable to mount root\n", 0, "", "VFS"),
        ("Probing EDD (edd=off to disable)... ok\n", None, "", "/init not reached within 60 s"),
    ],
)
def test_judge_reports_a_kernel_that_did_not_boot(
    text: str, returncode: int | None, stderr: str, expected: str
) -> None:
    reason = _judge(text, returncode, stderr)
    assert reason is not None and reason.startswith("did not boot: ")
    assert expected in reason


@needs_qemu
def test_kvm_probe_guest_reaches_long_mode_under_tcg() -> None:
    # Proves the probe itself is sound, so a False from kvm_usable() means KVM.
    assert qemu.probe("tcg")


def test_bad_input_is_refused_before_booting(tmp_path: Path) -> None:
    kernel = tmp_path / "vmlinuz"
    module = tmp_path / "m.ko"
    with pytest.raises(InputError, match="kernel image"):
        engine.verify_cell(kernel, module, None, None, (), tmp_path / "w", 10)
    kernel.write_bytes(b"not a kernel")
    module.write_bytes(b"not an ELF file")
    with pytest.raises(InputError, match="ELF"):
        engine.verify_cell(kernel, module, None, None, (), tmp_path / "w", 10)
    signed = tmp_path / "signed.ko"
    signed.write_bytes(b"\x7fELF" + SIGNATURE_MARKER)
    with pytest.raises(InputError, match="unsigned"):
        engine.verify_cell(kernel, module, None, signed, (), tmp_path / "w", 10)
