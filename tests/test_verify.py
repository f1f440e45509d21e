"""Verify on real Debian kernels booted in QEMU, with livepatch modules built here.

Each test boots once (about 5 s under TCG); the kernel packages are fetched through the
machine's apt sources into a cache under /tmp that outlives the session, so reruns only
compile the small test modules.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

import pytest
from livegraft.pipeline import kernel_files
from livegraft.pipeline.kernels.apt_source import discover_apt
from livegraft.pipeline.kernels.filters import Filters
from livegraft.pipeline.kernels.model import KernelBuild
from livegraft.pipeline.proc import run
from livegraft.pipeline.verify import VerifyResult, engine, guest, qemu, verify_cell
from livegraft.pipeline.verify.initramfs import BUSYBOX
from livegraft.pipeline.versions import debian

CACHE = Path(tempfile.gettempdir()) / "livegraft-test-verify-cache"
MAIN = "6.1.0-56-amd64"
# Another ABI of the same upstream release: its symbol CRCs match MAIN's.
SIBLING = "6.1.0-55-amd64"
NEWER = "6.12.*+deb12-amd64"
TIMEOUT = 120.0

pytestmark = [
    pytest.mark.skipif(shutil.which(qemu.QEMU) is None, reason="qemu-system-x86 not installed"),
    pytest.mark.skipif(not BUSYBOX.is_file(), reason="busybox-static not installed"),
]

LIVEPATCH_C = """\
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/livepatch.h>
#include <linux/seq_file.h>

static int lgtest_cmdline_proc_show(struct seq_file *m, void *v)
{
	seq_puts(m, "livegraft test level %(level)d\\n");
	return 0;
}

static struct klp_func funcs[] = {
	{ .old_name = "cmdline_proc_show", .new_func = lgtest_cmdline_proc_show, },
	{ }
};
static struct klp_object objs[] = { { .funcs = funcs, }, { } };
static struct klp_patch patch = { .mod = THIS_MODULE, .objs = objs, .replace = true, };

static int lgtest_init(void) { return klp_enable_patch(&patch); }
static void lgtest_exit(void) { }
module_init(lgtest_init);
module_exit(lgtest_exit);
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
%(extra)s
"""


@functools.cache
def _offered() -> tuple[KernelBuild, ...]:
    return discover_apt(Filters(uname_r=(MAIN, SIBLING, NEWER), flavour=("amd64",)))


def _build(pattern: str) -> KernelBuild:
    """The newest build apt offers whose uname -r matches ``pattern``."""
    found = [b for b in _offered() if fnmatchcase(b.uname_r, pattern)]
    if not found:
        pytest.skip(f"the machine's apt sources offer no {pattern}")
    newest = found[0]
    for b in found[1:]:
        key = debian.compare(b.upstream_version, newest.upstream_version) or debian.compare(
            b.package_version, newest.package_version
        )
        if key > 0:
            newest = b
    return newest


@dataclass(frozen=True)
class Kit:
    build: KernelBuild
    vmlinuz: Path
    level1: Path
    level2: Path
    unsigned: Path


@pytest.fixture(scope="session")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("key")
    key, cert = folder / "key.pem", folder / "cert.der"
    argv = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key]
    run([*argv, "-outform", "DER", "-out", cert, "-days", "2", "-subj", "/CN=livegraft test"])
    return key, cert


def _compile(build: KernelBuild, folder: Path, name: str, level: int, label: bool = True) -> Path:
    """A livepatch module replacing cmdline_proc_show, compiled against ``build``."""
    tree = kernel_files.prepare(build, CACHE)
    folder.mkdir(parents=True)
    extra = f'MODULE_INFO(livegraft_build, "{build.key}");' if label else ""
    (folder / "Kbuild").write_text(f"obj-m := {name}.o\n", encoding="utf-8")
    (folder / f"{name}.c").write_text(
        LIVEPATCH_C % {"level": level, "extra": extra}, encoding="utf-8"
    )
    run(["make", "-C", tree.headers, f"M={folder}", "modules"], timeout=600)
    return folder / f"{name}.ko"


@pytest.fixture(scope="session")
def kit(
    tmp_path_factory: pytest.TempPathFactory, signing_key: tuple[Path, Path]
) -> Callable[[str], Kit]:
    """Per build: its image, two signed levels of a test livepatch and an unsigned copy."""
    kits: dict[str, Kit] = {}

    def make(pattern: str) -> Kit:
        if pattern not in kits:
            build = _build(pattern)
            folder = tmp_path_factory.mktemp("kit")
            l1 = _compile(build, folder / "l1", "lgtest_l1", 1)
            l2 = _compile(build, folder / "l2", "lgtest_l2", 2)
            unsigned = folder / "unsigned.ko"
            shutil.copyfile(l1, unsigned)
            sign_file = kernel_files.prepare(build, CACHE).sign_file
            for ko in (l1, l2):
                run([sign_file, "sha256", *signing_key, ko])
            vmlinuz = kernel_files.fetch_image(build, CACHE)
            kits[pattern] = Kit(build, vmlinuz, l1, l2, unsigned)
        return kits[pattern]

    return make


def _script(folder: Path, name: str, text: str) -> tuple[str, Path]:
    path = folder / f"{name}.sh"
    path.write_text(text, encoding="utf-8")
    return name, path


CMDLINE_CHECK = "cat /proc/cmdline\ngrep -q '^livegraft test level 1$' /proc/cmdline\n"


def _assert_fully_verified(result: VerifyResult, k: Kit) -> None:
    assert result.status == "verified", result.reason
    assert result.reason is None
    assert [s.name for s in result.steps] == [
        "boot",
        "kernel",
        "build:lgtest_l1",
        "build:lgtest_l2",
        "load:lgtest_l1",
        "transition:lgtest_l1",
        "enabled:lgtest_l1",
        "check:cmdline",
        "load:lgtest_l2",
        "transition:lgtest_l2",
        "enabled:lgtest_l2",
        "replaced:lgtest_l1",
        "unload:lgtest_l1",
        "disable:lgtest_l2",
        "unload:lgtest_l2",
        "sig-enforce",
        "refuse-unsigned",
    ]
    assert all(s.ok for s in result.steps)
    assert result.kernel_release == k.build.uname_r
    assert result.kernel_version is not None
    assert f"Debian {k.build.package_version} " in result.kernel_version
    # The patched function ran: /proc/cmdline showed level 1's text.
    check = result.step("check:cmdline")
    assert check is not None and check.output == ("livegraft test level 1",)
    # One boot does it all: these kernels let sig_enforce be switched on at runtime.
    sig = result.step("sig-enforce")
    assert sig is not None and sig.detail == "switched on at runtime"
    refused = result.step("refuse-unsigned")
    assert refused is not None and "Loading of unsigned module is rejected" in refused.detail
    # Our throwaway key is not one the kernel trusts.
    assert result.info["signed-under-enforce"].startswith("refused")
    assert int(result.info["tainted"]) != 0
    log = result.log.read_text(encoding="utf-8", errors="replace")
    assert "LIVEGRAFT-DONE" in log and "livepatch: 'lgtest_l2': unpatching complete" in log
    assert result.seconds < TIMEOUT


def test_a_real_kernel_verifies_load_replace_unload_and_signature_refusal(
    kit: Callable[[str], Kit], tmp_path: Path
) -> None:
    k = kit(MAIN)
    result = verify_cell(
        k.vmlinuz,
        k.level1,
        k.level2,
        k.unsigned,
        [_script(tmp_path, "cmdline", CMDLINE_CHECK)],
        tmp_path / "work",
        TIMEOUT,
        expect_release=k.build.uname_r,
        expect_build_version=k.build.package_version,
    )
    _assert_fully_verified(result, k)
    assert result.log == tmp_path / "work" / "console.log"


def test_a_612_kernel_verifies_too(kit: Callable[[str], Kit], tmp_path: Path) -> None:
    k = kit(NEWER)
    result = verify_cell(
        k.vmlinuz,
        k.level1,
        k.level2,
        k.unsigned,
        [_script(tmp_path, "cmdline", CMDLINE_CHECK)],
        tmp_path / "work",
        TIMEOUT,
        expect_release=k.build.uname_r,
    )
    _assert_fully_verified(result, k)


def test_a_failing_check_fails_the_cell_and_names_the_check(
    kit: Callable[[str], Kit], tmp_path: Path
) -> None:
    k = kit(MAIN)
    checks = [
        _script(tmp_path, "cmdline", CMDLINE_CHECK),
        _script(tmp_path, "LGSA-TEST-0009", "echo still vulnerable\nexit 3\n"),
    ]
    result = verify_cell(k.vmlinuz, k.level1, None, None, checks, tmp_path / "w", TIMEOUT)
    assert result.status == "failed"
    assert result.reason == "check:LGSA-TEST-0009: exit status 3: still vulnerable"
    failed = result.step("check:LGSA-TEST-0009")
    assert failed is not None and failed.output == ("still vulnerable",)
    # The other check passed, and the guest still cleaned up after the failure.
    for name in ("check:cmdline", "disable:lgtest_l1", "unload:lgtest_l1"):
        step = result.step(name)
        assert step is not None and step.ok, name


def test_a_module_for_a_sibling_build_loads_so_the_build_check_is_ours(
    kit: Callable[[str], Kit], tmp_path: Path
) -> None:
    k = kit(MAIN)
    sibling = _compile(_build(SIBLING), tmp_path / "sib", "lgtest_l1", 1, label=False)
    checks = [_script(tmp_path, "cmdline", CMDLINE_CHECK)]
    result = verify_cell(k.vmlinuz, sibling, None, None, checks, tmp_path / "w", TIMEOUT)
    # What the kernel does: with matching symbol CRCs (CONFIG_MODVERSIONS) it ignores
    # the release in vermagic, loads the module and runs the patched code.
    for name in ("load:lgtest_l1", "transition:lgtest_l1", "enabled:lgtest_l1", "check:cmdline"):
        step = result.step(name)
        assert step is not None and step.ok, name
    # What verify does: refuses the cell.
    assert result.status == "failed"
    assert result.reason == (
        f"build:lgtest_l1: lgtest_l1.ko was built for {SIBLING}, the booted kernel is "
        f"{MAIN} (the kernel loaded it all the same)"
    )


def test_the_exact_build_is_checked_beyond_vermagic(kit: Callable[[str], Kit]) -> None:
    # Debian rebuilds one ABI (same uname -r, same vermagic) under new package versions;
    # the module's livegraft_build names the one it was built for. Judged from a console
    # as another rebuild of MAIN would print it, so no boot is needed.
    k = kit(MAIN)
    plan = guest.GuestPlan("lgtest_l1", None, refuse_unsigned=False, checks=())
    this = f"#1 SMP PREEMPT_DYNAMIC Debian {k.build.package_version} (2026-01-01)"
    rebuild = "#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-99 (2026-01-01)"
    for version, expected_ok in ((this, True), (rebuild, False)):
        console = f"LIVEGRAFT-BEGIN\nLIVEGRAFT-KERNEL {MAIN}\nLIVEGRAFT-KERNEL-VERSION {version}\n"
        boot = qemu.Boot(console, 0, "", 1.0, "tcg")
        names = {k.level1: "lgtest_l1"}
        steps, _ = engine._judge(engine.parse_console(console), boot, plan, names, 60, None, None)
        step = next(s for s in steps if s.name == "build:lgtest_l1")
        assert step.ok == expected_ok, step.detail
    assert (
        step.detail == f"lgtest_l1.ko is for {k.build.key}, the booted kernel is {MAIN} ({rebuild})"
    )


@pytest.mark.parametrize("damage", ["truncated", "not-a-kernel"])
def test_a_broken_kernel_image_did_not_boot(
    kit: Callable[[str], Kit], tmp_path: Path, damage: str
) -> None:
    k = kit(MAIN)
    vmlinuz = tmp_path / "vmlinuz"
    if damage == "truncated":
        vmlinuz.write_bytes(k.vmlinuz.read_bytes()[: k.vmlinuz.stat().st_size // 2])
    else:
        vmlinuz.write_bytes(b"\0" * 4096)
    timeout = 60.0
    result = verify_cell(vmlinuz, k.level1, None, None, (), tmp_path / "w", timeout)
    assert result.status == "failed"
    assert result.reason is not None and result.reason.startswith("did not boot: ")
    assert [s.name for s in result.steps] == ["boot"]
    assert result.seconds < timeout
