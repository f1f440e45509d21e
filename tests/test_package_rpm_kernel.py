"""The RPM of an RPM kernel's build: the hard ``Requires`` tie RHEL's kpatch-patch has,
and the ``Supplements`` that makes plain dnf (no plugin, or dnf 5) pull it in.

No RHEL kernel can be built or booted here, so the builder is given a stand-in module
(any bytes ending with the signature marker): what is under test is the package, read
back with rpm, installed into an empty root next to a metadata-only kernel RPM, and
pulled in by real dnf installing that kernel from a repository holding both.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest
from livegraft.pipeline.kernels.model import KernelBuild
from livegraft.pipeline.package.info import INFO_NAME
from livegraft.pipeline.package.item import PackageItem
from livegraft.pipeline.package.rpm import build_rpm
from livegraft.pipeline.proc import CommandError, run
from livegraft.signing.module_signature import SIGNATURE_MARKER
from repo_support import DnfRoot

UNAME_R = "5.14.0-362.8.1.el9_3.x86_64"
NAME = "kpatch-patch-5_14_0-362_8_1"

BUILD = KernelBuild(
    uname_r=UNAME_R,
    family="rpm",
    package_version="5.14.0-362.8.1.el9_3",
    upstream_version="5.14.0",
    flavour="default",
    arch="x86_64",
    dist="el9",
    source_package="kernel",
)


def rpm(*argv: str | Path, home: Path) -> str:
    return run(["rpm", *argv], env={"HOME": str(home)}).stdout


def item(module: Path, title: str) -> PackageItem:
    data = b"\x7fELF stand-in module" + SIGNATURE_MARKER
    module.write_bytes(data)
    return PackageItem(
        type="rpm",
        name=NAME,
        version="3",
        release="1",
        arch="x86_64",
        build=BUILD,
        module=module,
        module_file="livegraft_5_14_0_362_8_1_el9_3_x86_64_l3.ko",
        sha256=hashlib.sha256(data).hexdigest(),
        info=b'{"format": 1}\n',
        summary="Livepatch for Linux 5.14.0-362.8.1.el9_3.x86_64, level 3",
        description=("Fixes:", f"  LGSA-1 (high): {title}"),
        maintainer="Ops <ops@example.org>",
        vendor="100% Example",
        epoch=1700000000,
    )


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("rpm-kernel")
    # A title with spec syntax in it stays text: no macro expands, no section starts.
    title = "%{buildroot} and %(echo injected) %%description"
    return build_rpm(item(work / "module.ko", title), work / "build", None)


def test_an_rpm_kernel_is_required_exactly_and_provided_as_rhel_does(
    package: Path, tmp_path: Path
) -> None:
    said = rpm(
        "-qp", "--queryformat",
        "%{NAME}-%{VERSION}-%{RELEASE}.%{ARCH}|%{VENDOR}\n"
        "[P %{PROVIDENAME} %{PROVIDEVERSION}\n][R %{REQUIRENAME} %{REQUIREVERSION}\n]"
        "[E %{ENHANCENAME}\n][S %{SUPPLEMENTNAME}\n]",
        package, home=tmp_path,
    ).splitlines()  # fmt: skip
    assert said[0] == f"{NAME}-3-1.x86_64|100% Example"
    assert f"P kpatch-patch {UNAME_R}" in said
    assert [s for s in said if s.startswith("R ") and "rpmlib(" not in s] == [
        f"R kernel-uname-r {UNAME_R}"
    ]
    assert not [s for s in said if s.startswith("E ")]
    # The weak reverse tie names the same kernel build as the Requires, as it is.
    assert rpm("-qp", "--supplements", package, home=tmp_path) == f"kernel-uname-r = {UNAME_R}\n"
    description = rpm("-qp", "--queryformat", "%{DESCRIPTION}", package, home=tmp_path)
    assert description == (
        "Fixes:\n  LGSA-1 (high): %{buildroot} and %(echo injected) %%description"
    )
    files = rpm("-qp", "--list", package, home=tmp_path).split()
    assert files[-1] == f"/usr/lib/livegraft/{UNAME_R}/{INFO_NAME}"


def test_it_installs_only_beside_its_kernel(package: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    rpm("--root", root, "--initdb", home=tmp_path)
    with pytest.raises(CommandError, match="exited 1"):
        rpm("--root", root, "-i", package, home=tmp_path)
    kernel = _kernel_core(tmp_path)
    rpm("--root", root, "-i", kernel, package, home=tmp_path)
    assert rpm("--root", root, "-q", NAME, home=tmp_path).strip() == f"{NAME}-3-1.x86_64"
    ko = root / f"usr/lib/livegraft/{UNAME_R}/livegraft_5_14_0_362_8_1_el9_3_x86_64_l3.ko"
    assert ko.read_bytes().endswith(SIGNATURE_MARKER)


def _kernel_core(tmp_path: Path) -> Path:
    """A metadata-only kernel-core RPM that provides kernel-uname-r as RHEL's does."""
    top = tmp_path / "kernel"
    spec = top / "kernel-core.spec"
    top.mkdir()
    spec.write_text(
        "Name: kernel-core\nVersion: 5.14.0\nRelease: 362.8.1.el9_3\nSummary: stand-in\n"
        f"License: GPL-2.0-only\nProvides: kernel-uname-r = {UNAME_R}\n"
        "%description\nstand-in\n%files\n",
        encoding="utf-8",
    )
    run(
        ["rpmbuild", "-bb", "--target", "x86_64", "--define", f"_topdir {top}", spec],
        env={"HOME": str(tmp_path)},
    )
    (found,) = (top / "RPMS" / "x86_64").glob("kernel-core-*.rpm")
    return found


@pytest.mark.skipif(shutil.which("dnf") is None, reason="dnf is not installed")
def test_plain_dnf_pulls_it_in_with_its_kernel(package: Path, tmp_path: Path) -> None:
    """No livegraft plugin here: the Supplements tag alone brings the patch with the kernel."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for rpm_file in (package, _kernel_core(tmp_path)):
        shutil.copy(rpm_file, repo)
    subprocess.run(["createrepo_c", "-q", str(repo)], check=True, capture_output=True)
    dnf = DnfRoot(
        tmp_path / "dnf",
        f"[t]\nname=t\nbaseurl={repo.as_uri()}\nenabled=1\ngpgcheck=0\nrepo_gpgcheck=0\n",
    )
    dnf("install", "kernel-core")
    assert dnf.installed() == ["kernel-core-5.14.0-362.8.1.el9_3.x86_64", f"{NAME}-3-1.x86_64"]
