"""``livegraft verify`` for real: the example plan built by ``livegraft build``, then each
cell's own Debian kernel booted in QEMU.

The config discovers two builds through the machine's apt sources (6.1.0-56-amd64 and
the newest 6.12 amd64 build) and keeps its kernel packages in the verify tests' cache
under /tmp, which already holds their header trees and kernel images, so a warm run
downloads nothing. One signing key, made once per session, signs every project's modules.
Each boot takes about 5 s under TCG; the whole module boots four times.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest
from cli_support import Run, livegraft
from conftest import REPO
from livegraft.pipeline.errors import InputError
from livegraft.pipeline.kernel_files import fetch_image, prepare
from livegraft.pipeline.kernels.apt_source import discover_apt
from livegraft.pipeline.kernels.filters import Filters
from livegraft.pipeline.kernels.matrix import ordered
from livegraft.pipeline.modinfo import read_modinfo
from livegraft.pipeline.proc import run as run_command
from livegraft.pipeline.verify import qemu, verified
from livegraft.pipeline.verify import runner as verify_runner
from livegraft.pipeline.verify.initramfs import BUSYBOX, base_image
from livegraft.signing.module_signature import SIGNATURE_MARKER, strip_signature

# The verify tests' cache: header trees for 6.1.0-55/-56 and the newest 6.12, and the
# kernel images of 6.1.0-56 and that 6.12 build.
CACHE = Path(tempfile.gettempdir()) / "livegraft-test-verify-cache"
MAIN = "6.1.0-56-amd64"
# Another ABI of the same upstream release: its symbol CRCs match MAIN's.
SIBLING = "6.1.0-55-amd64"
NEWER = "6.12.*+deb12-amd64"
TIMEOUT = "120"

pytestmark = [
    pytest.mark.skipif(shutil.which(qemu.QEMU) is None, reason="qemu-system-x86 not installed"),
    pytest.mark.skipif(not BUSYBOX.is_file(), reason="busybox-static not installed"),
]


@pytest.fixture(scope="module")
def newer() -> str:
    """uname -r of the newest 6.12 amd64 build the machine's apt sources offer."""
    found = discover_apt(Filters(uname_r=(NEWER,), flavour=("amd64",)))
    if not found:
        pytest.skip(f"the machine's apt sources offer no {NEWER}")
    return ordered(found)[-1].uname_r


@dataclass
class Project:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "livegraft.toml"

    @property
    def work(self) -> Path:
        return self.root / "work"

    def write_config(self, builds: list[str], key: tuple[Path, Path]) -> None:
        self.config.write_text(
            'name = "test"\nwork_dir = "work"\nerrata = ["errata"]\nfixes = "fixes"\n'
            f'[build]\ncache = "{CACHE}"\n'
            f'[signing]\nmodule_key = "{key[0]}"\nmodule_cert = "{key[1]}"\n'
            f'[[discover]]\nfrom = "apt"\nuname_r = {json.dumps(builds)}\n',
            encoding="utf-8",
        )

    def copy(self, root: Path) -> Project:
        shutil.copytree(self.root, root)
        return Project(root)


def build(project: Project) -> Run:
    run = livegraft("build", "--config", str(project.config), "--json")
    assert run.status == 0, run.out + run.err
    return run


def verify(project: Project) -> Run:
    return livegraft("verify", "--config", str(project.config), "--json", "--timeout", TIMEOUT)


def _must_not_run(*args: object, **kwargs: object) -> NoReturn:
    raise AssertionError("verify booted (or compiled) something it had verified already")


@contextlib.contextmanager
def nothing_boots() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(qemu, "boot", _must_not_run)
        mp.setattr(verify_runner, "make_module", _must_not_run)
        yield


def record(cell: dict[str, Any]) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(Path(cell["record"]).read_text(encoding="utf-8"))
    return value


def steps(cell: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in record(cell)["steps"]}


@dataclass
class First:
    project: Project
    built: Run
    verified: Run
    levels: bytes


@pytest.fixture(scope="module")
def first(
    tmp_path_factory: pytest.TempPathFactory, newer: str, signing_key: tuple[Path, Path]
) -> First:
    """The example plan for MAIN and the newest 6.12 build: built, then verified."""
    project = Project(tmp_path_factory.mktemp("verify") / "project")
    project.root.mkdir()
    shutil.copytree(REPO / "examples" / "fixes", project.root / "fixes")
    shutil.copytree(REPO / "examples" / "errata", project.root / "errata")
    project.write_config([MAIN, newer], signing_key)
    built = build(project)
    levels = (project.work / "levels.json").read_bytes()
    return First(project, built, verify(project), levels)


def test_build_then_verify_proves_every_cell_on_its_own_kernel(first: First, newer: str) -> None:
    run = first.verified
    assert run.status == 0, run.out + run.err
    assert sorted(c["uname_r"] for c in run.cells) == sorted([MAIN, newer])
    for cell in run.cells:
        built = first.built.cell(cell["uname_r"])
        assert set(cell) >= {
            "uname_r", "package_version", "level", "status", "reason", "module", "path",
            "sha256", "artifact", "log",
        }  # fmt: skip
        assert cell["status"] == "verified" and cell["reason"] == ""
        for key in ("package_version", "level", "module", "path", "sha256", "artifact"):
            assert cell[key] == built[key], key
        rec = record(cell)
        assert rec["status"] == "verified" and rec["artifact"] == cell["artifact"]
        assert rec["kernel_release"] == cell["uname_r"]
        assert f"Debian {cell['package_version']} " in rec["kernel_version"]
        assert Path(cell["record"]) == first.project.work / "verify" / f"{cell['artifact']}.json"
        assert Path(cell["log"]) == Path(cell["record"]).with_suffix(".log") == Path(rec["log"])
        console = Path(cell["log"]).read_text(encoding="utf-8", errors="replace")
        assert "LIVEGRAFT-DONE" in console
        assert verified(first.project.work, cell["artifact"], cell["sha256"])

        done = steps(cell)
        assert all(s["ok"] for s in done.values()), done
        # The sample checks ran where their fixes apply (0002 is for 6.1 builds only).
        assert "check:LGSA-SAMPLE-0001" in done
        assert ("check:LGSA-SAMPLE-0002" in done) == cell["uname_r"].startswith("6.1.")
        # Level N+1, made for the probe under its own name, replaced level N.
        level, probe = cell["module"], re.sub(r"_l1$", "_l2", cell["module"])
        assert cell["level"] == 1 and rec["next_level"]["module"] == probe
        for name in (f"build:{probe}", f"load:{probe}", f"enabled:{probe}", f"replaced:{level}"):
            assert name in done, name
        assert f"'{probe}': starting patching transition" in console
        # The unsigned copy was refused for lacking a signature.
        assert "Loading of unsigned module is rejected" in done["refuse-unsigned"]["detail"]
    # The probes were thrown away: nothing of them in the store or the level ledger.
    work = first.project.work
    assert len([p for p in (work / "store").iterdir() if len(p.name) == 64]) == 2
    assert not list(work.rglob("*_l2.ko"))
    assert (work / "levels.json").read_bytes() == first.levels
    assert "livegraft: [2/2] verified" in run.err
    assert not verified(work, "0" * 64)


def test_a_second_run_is_cached_and_boots_nothing(first: First) -> None:
    records = sorted((first.project.work / "verify").glob("*.json"))
    before = {p: p.read_bytes() for p in records}
    with nothing_boots():
        again = verify(first.project)
    assert again.status == 0, again.out + again.err
    assert [c["status"] for c in again.cells] == ["cached", "cached"]
    for cell, earlier in zip(again.cells, first.verified.cells, strict=True):
        assert cell["reason"] == ""
        for key in ("artifact", "sha256", "path", "log", "record"):
            assert cell[key] == earlier[key], key
    assert {p: p.read_bytes() for p in records} == before
    assert again.seconds < 10, again.seconds


def test_a_failing_check_fails_its_cell_by_name(first: First, tmp_path: Path, newer: str) -> None:
    project = first.project.copy(tmp_path / "project")
    check = project.root / "fixes" / "LGSA-SAMPLE-0002" / "check.sh"
    check.write_text("echo still vulnerable\nexit 3\n", encoding="utf-8")
    built = build(project)
    # Only the 6.1 cell holds LGSA-SAMPLE-0002: it alone changed.
    assert built.cell(MAIN)["status"] == "built" and built.cell(MAIN)["level"] == 2
    assert built.cell(newer)["status"] == "cached"
    run = verify(project)
    assert run.status == 1, run.out + run.err
    failed = run.cell(MAIN)
    assert failed["status"] == "failed"
    assert failed["reason"] == "check:LGSA-SAMPLE-0002: exit status 3: still vulnerable"
    assert run.cell(newer)["status"] == "cached"
    done = steps(failed)
    assert done["check:LGSA-SAMPLE-0002"]["output"] == ["still vulnerable"]
    assert done["check:LGSA-SAMPLE-0001"]["ok"]
    assert record(failed)["status"] == "failed"
    assert not verified(project.work, failed["artifact"])
    assert "LIVEGRAFT-DONE" in Path(failed["log"]).read_text(encoding="utf-8", errors="replace")


@dataclass
class WithSibling:
    project: Project
    unbuilt: Run
    built: Run


@pytest.fixture(scope="module")
def with_sibling(
    first: First, tmp_path_factory: pytest.TempPathFactory, newer: str,
    signing_key: tuple[Path, Path],
) -> WithSibling:  # fmt: skip
    """The first project with SIBLING added: verified before it is built, then built."""
    project = first.project.copy(tmp_path_factory.mktemp("sibling") / "project")
    project.write_config([MAIN, newer, SIBLING], signing_key)
    with nothing_boots():
        unbuilt = verify(project)
    return WithSibling(project, unbuilt, build(project))


def test_a_cell_not_built_fails_and_verify_does_not_build_it(
    with_sibling: WithSibling, newer: str
) -> None:
    run = with_sibling.unbuilt
    assert run.status == 1, run.out + run.err
    missing = run.cell(SIBLING)
    assert missing["status"] == "failed"
    assert missing["reason"].startswith("not built")
    assert missing["path"] is missing["artifact"] is missing["log"] is None
    assert [run.cell(u)["status"] for u in (MAIN, newer)] == ["cached", "cached"]
    # The build afterwards compiled it: verify had not.
    assert with_sibling.built.cell(SIBLING)["status"] == "built"


GUARD_INIT = """#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# Keep kernel messages off the console while the markers print; dmesg has them all.
echo 1 > /proc/sys/kernel/printk
echo "GUARD-KERNEL $(uname -r)"
if out=$(insmod /guard/sibling.ko 2>&1); then echo GUARD-SIBLING loaded
else echo "GUARD-SIBLING refused $out"; fi
echo "GUARD-SYSFS $(ls /sys/kernel/livepatch | tr '\\n' ' ')"
echo "GUARD-MODULES $(cut -d ' ' -f 1 /proc/modules | tr '\\n' ' ')"
dmesg | grep 'refusing to load' | sed 's/^/GUARD-DMESG /'
if out=$(insmod /guard/own.ko 2>&1); then echo GUARD-OWN loaded
else echo "GUARD-OWN refused $out"; fi
echo "GUARD-SYSFS-AFTER-OWN $(ls /sys/kernel/livepatch | tr '\\n' ' ')"
echo GUARD-DONE
poweroff -f
"""


def test_the_module_of_a_sibling_build_refuses_itself_on_this_kernel(
    with_sibling: WithSibling, first: First, tmp_path: Path
) -> None:
    # The kernel would load SIBLING's module on MAIN (their symbol CRCs match: see
    # test_verify), and verify's host step would fail the cell before asking the
    # module; so this boot skips the engine and asks the module's own init alone, with a
    # control in the same boot: MAIN's own module loads there.
    sibling = Path(with_sibling.built.cell(SIBLING)["path"])
    own_cell = first.built.cell(MAIN)
    assert read_modinfo(sibling)["vermagic"][0].split()[0] == SIBLING
    (main_build,) = discover_apt(Filters(uname_r=(MAIN,), flavour=("amd64",)))
    image = base_image()
    image.add_file("/init", GUARD_INIT.encode(), 0o755)
    image.add_file("/guard/sibling.ko", sibling.read_bytes())
    image.add_file("/guard/own.ko", Path(own_cell["path"]).read_bytes())
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(image.gzipped())
    boot = qemu.boot(
        fetch_image(main_build, CACHE),
        initrd,
        "console=ttyS0 panic=-1 quiet",
        tmp_path / "console.log",
        float(TIMEOUT),
    )
    said: dict[str, list[str]] = {}
    for line in boot.console.splitlines():
        if line.startswith("GUARD-"):
            marker, _, rest = line.rstrip().partition(" ")
            said.setdefault(marker, []).append(rest)
    assert "GUARD-DONE" in said, boot.console[-2000:]
    assert said["GUARD-KERNEL"] == [MAIN]
    # insmod ran the module's init, which refused: no module, no livepatch.
    refused = said["GUARD-SIBLING"][0]
    assert refused.startswith("refused ") and "Invalid argument" in refused, refused
    assert said["GUARD-SYSFS"] == [""]
    sibling_name = read_modinfo(sibling)["name"][0]
    assert sibling_name not in said["GUARD-MODULES"][0].split()
    assert said["GUARD-DMESG"][0].endswith(
        f"{sibling_name}: built for kernel {SIBLING}, not {MAIN}: refusing to load"
    )
    # The control: this kernel's own module loads and its livepatch appears.
    assert said["GUARD-OWN"] == ["loaded"]
    assert said["GUARD-SYSFS-AFTER-OWN"] == [own_cell["module"]]


def test_the_unsigned_copy_is_the_module_as_signed(
    first: First, signing_key: tuple[Path, Path], tmp_path: Path
) -> None:
    """strip_signature undoes sign-file exactly, and refuses what the kernel would misread."""
    ko = Path(first.built.cell(MAIN)["path"])
    unsigned = strip_signature(ko.read_bytes(), ko)
    assert not unsigned.endswith(SIGNATURE_MARKER)
    assert read_modinfo(ko) == _modinfo_of(unsigned, tmp_path / "unsigned.ko")
    (main_build,) = discover_apt(Filters(uname_r=(MAIN,), flavour=("amd64",)))
    sign_file = prepare(main_build, CACHE).sign_file
    again = tmp_path / "again.ko"
    again.write_bytes(unsigned)
    run_command([sign_file, "sha256", *signing_key, again])
    assert strip_signature(again.read_bytes()) == unsigned
    # Signed twice (sign-file appends to a signed file): one cut leaves a signed module.
    run_command([sign_file, "sha256", *signing_key, again])
    with pytest.raises(InputError, match="two signatures"):
        strip_signature(again.read_bytes(), again)
    with pytest.raises(InputError, match="no appended signature"):
        strip_signature(unsigned, ko)


def _modinfo_of(data: bytes, path: Path) -> dict[str, list[str]]:
    path.write_bytes(data)
    return read_modinfo(path)


@pytest.mark.parametrize(
    ("option", "value"), [("--jobs", "0"), ("--timeout", "0"), ("--shard", "3/2")]
)
def test_bad_options_are_bad_usage(first: First, option: str, value: str) -> None:
    run = livegraft("verify", "--config", str(first.project.config), option, value)
    assert run.status == 2
    assert run.err.startswith(f"livegraft: error: <input>: {option}: "), run.err
