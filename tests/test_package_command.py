"""``livegraft package`` for real: one Debian kernel build's module, built and verified
in QEMU, packaged as a DEB and as a signed RPM, then read back with the real tools
(``rpm``, ``rpm -K``, ``dpkg-deb``, ``dpkg --root``).

The project is the example's fixes and errata for 6.1.0-56-amd64 alone, with the verify
tests' warm cache under /tmp (headers tree and kernel image), so a warm run downloads
nothing; ``[packages] formats`` asks for both formats, which proves the RPM path on the
Debian kernel this machine can boot. The client packages built beside them come from a
copy of the source tree (``client_source``); test_package_client.py looks at them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from cli_support import Run, livegraft
from client_source import client_source
from conftest import REPO
from livegraft.pipeline.build_commands import current_plan, open_store
from livegraft.pipeline.config import SigningSettings, load_config
from livegraft.pipeline.errors import InputError
from livegraft.pipeline.package import advisories, load_records
from livegraft.pipeline.package.stage import Packager
from livegraft.pipeline.proc import run
from livegraft.pipeline.verify import qemu
from livegraft.pipeline.verify.initramfs import BUSYBOX
from livegraft.signing.gpg import load_archive_signer
from livegraft.signing.module_signature import SIGNATURE_MARKER, strip_signature

CACHE = Path(tempfile.gettempdir()) / "livegraft-test-verify-cache"
MAIN = "6.1.0-56-amd64"
RPM_NAME = "kpatch-patch-6_1_0-56-amd64"
DEB_NAME = f"livepatch-{MAIN}"
INSTALL_DIR = f"/usr/lib/livegraft/{MAIN}"

pytestmark = [
    pytest.mark.skipif(shutil.which(qemu.QEMU) is None, reason="qemu-system-x86 not installed"),
    pytest.mark.skipif(not BUSYBOX.is_file(), reason="busybox-static not installed"),
]


@dataclass
class Project:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "livegraft.toml"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def packages(self) -> Path:
        return self.work / "packages"

    def write_config(self, key: tuple[Path, Path], packages: str) -> None:
        self.config.write_text(
            'name = "test"\nwork_dir = "work"\nerrata = ["errata"]\nfixes = "fixes"\n'
            f'[build]\ncache = "{CACHE}"\n'
            f'[signing]\nmodule_key = "{key[0]}"\nmodule_cert = "{key[1]}"\n'
            f"[packages]\n{packages}\n"
            f'[[discover]]\nfrom = "apt"\nuname_r = ["{MAIN}"]\n',
            encoding="utf-8",
        )

    def copy(self, root: Path, *, packages: bool = True) -> Project:
        ignore = None if packages else shutil.ignore_patterns("packages")
        # The gnupg home holds the agent's sockets: never copied, made anew beside the keys.
        shutil.copytree(
            self.root,
            root,
            ignore=lambda d, names: {
                *(ignore(d, names) if ignore else set()),
                *({"gnupg"} & set(names)),
            },
        )
        return Project(root)


def package(project: Project) -> Run:
    return livegraft("package", "--config", str(project.config), "--json")


def rpm(*argv: str | Path, home: Path, check: bool = True) -> str:
    # A private HOME: on Debian rpm keeps its default database in ~/.rpmdb.
    return run(["rpm", *argv], env={"HOME": str(home)}, check=check).stdout


def dpkg_deb(*argv: str | Path) -> str:
    return run(["dpkg-deb", *argv]).stdout


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(folder: Path) -> dict[str, tuple[int, str]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, sha256(p))
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@dataclass
class Packaged:
    project: Project
    built: dict[str, Any]
    run: Run
    public_key: bytes

    @property
    def deb(self) -> Path:
        return Path(self.run.package("deb")["path"])

    @property
    def rpm(self) -> Path:
        return Path(self.run.package("rpm")["path"])

    @property
    def build_info(self) -> dict[str, Any]:
        artifact = self.built["artifact"]
        value: dict[str, Any] = json.loads(
            (self.project.work / "store" / artifact / "build.json").read_text(encoding="utf-8")
        )
        return value


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory, signing_key: tuple[Path, Path]) -> Packaged:
    """MAIN built, verified in QEMU, then packaged in both formats."""
    project = Project(tmp_path_factory.mktemp("package") / "project")
    project.root.mkdir()
    shutil.copytree(REPO / "examples" / "fixes", project.root / "fixes")
    shutil.copytree(REPO / "examples" / "errata", project.root / "errata")
    client_source(project.root / "source")
    project.write_config(signing_key, 'formats = ["deb", "rpm"]\nclient_source = "source"')
    config = str(project.config)
    built = livegraft("build", "--config", config, "--json")
    assert built.status == 0, built.out + built.err
    verified = livegraft("verify", "--config", config, "--json", "--timeout", "120")
    assert verified.status == 0, verified.out + verified.err
    done = package(project)
    assert done.status == 0, done.out + done.err
    cfg = load_config(project.config)
    with load_archive_signer(cfg.signing, cfg.work_dir, name=cfg.name) as signer:
        public = signer.public_asc()
    return Packaged(project, json.loads(built.out)[0], done, public)


def livepatches(run: Run) -> list[dict[str, Any]]:
    return [p for p in run.packages if p["kind"] == "livepatch"]


def test_one_deb_and_one_signed_rpm_per_verified_cell(packaged: Packaged) -> None:
    run = packaged.run
    assert [(p["kind"], p["format"], p["status"]) for p in run.packages] == [
        ("livepatch", "deb", "built"),
        ("livepatch", "rpm", "built"),
        # Once per run and format: the client, for DEB the apt hook, for RPM the dnf plugin.
        ("client", "deb", "built"),
        ("client", "deb", "built"),
        ("client", "rpm", "built"),
        ("client", "rpm", "built"),
    ]
    for p in livepatches(run):
        assert p["uname_r"] == MAIN and p["version"] == "1" and p["level"] == 1
        assert p["artifact"] == packaged.built["artifact"] and p["reason"] == ""
        assert sha256(Path(p["path"])) == p["sha256"]
    assert packaged.deb == packaged.project.packages / "deb" / f"{DEB_NAME}_1_amd64.deb"
    assert packaged.rpm == packaged.project.packages / "rpm" / f"{RPM_NAME}-1-1.x86_64.rpm"
    assert run.package("deb")["name"] == DEB_NAME and run.package("rpm")["name"] == RPM_NAME
    # What livegraft index reads: every package, and one advisory per fix.
    records = [r for r in load_records(packaged.project.work) if not r.is_client]
    assert [(r.type, r.name, r.version, r.path) for r in records] == [
        ("deb", DEB_NAME, "1", packaged.deb),
        ("rpm", RPM_NAME, "1", packaged.rpm),
    ]
    assert {r.sha256 for r in records} == {p["sha256"] for p in livepatches(run)}
    found = advisories(records)
    assert [a.id for a in found] == ["LGSA-SAMPLE-0001", "LGSA-SAMPLE-0002"]
    assert found[0].cves == ("LIVEGRAFT-SAMPLE-0001",) and found[0].severity == "low"
    assert "cmdline_proc_show" in found[0].description
    assert [p.type for p in found[1].packages] == ["deb", "rpm"]


def test_rpm_name_version_ties_and_files(packaged: Packaged, tmp_path: Path) -> None:
    said = rpm(
        "-qp", "--nosignature", "--queryformat",
        "%{NAME}|%{VERSION}|%{RELEASE}|%{ARCH}|%{BUILDTIME}|%{BUILDHOST}\n"
        "[P %{PROVIDENAME} %{PROVIDEFLAGS:depflags} %{PROVIDEVERSION}\n]"
        "[R %{REQUIRENAME}\n][E %{ENHANCENAME} %{ENHANCEFLAGS:depflags} %{ENHANCEVERSION}\n]"
        "[S %{SUPPLEMENTNAME} %{SUPPLEMENTFLAGS:depflags} %{SUPPLEMENTVERSION}\n]"
        "[C %{CONFLICTNAME}\n][O %{OBSOLETENAME}\n]",
        packaged.rpm, home=tmp_path,
    ).splitlines()  # fmt: skip
    assert said[0] == f"{RPM_NAME}|1|1|x86_64|1704067200|livegraft"
    assert "P kpatch-patch = 6.1.0-56_amd64" in said
    # A Debian kernel: no RPM provides it, so only weak ties, and no kernel is required.
    assert [line for line in said if line[:2] in ("E ", "S ", "C ", "O ")] == [
        "E kernel-uname-r = 6.1.0-56_amd64",
        "S kernel-uname-r = 6.1.0-56_amd64",
    ]
    assert all(line.startswith("R rpmlib(") for line in said if line.startswith("R "))
    files = rpm("-qp", "--nosignature", "--list", packaged.rpm, home=tmp_path).split()
    module = packaged.build_info["file"]
    assert files == [
        "/usr/lib/livegraft",
        INSTALL_DIR,
        f"{INSTALL_DIR}/{module}",
        f"{INSTALL_DIR}/livepatch.json",
    ]
    assert rpm("-qp", "--nosignature", "--scripts", "--triggers", packaged.rpm, home=tmp_path) == ""
    signature = rpm(
        "-qp", "--nosignature", "--queryformat", "%{RSAHEADER:pgpsig}", packaged.rpm, home=tmp_path
    )
    assert signature.startswith("RSA/SHA256, "), signature


def _keyring(folder: Path, key: bytes | None) -> Path:
    folder.mkdir()
    rpm("--dbpath", folder / "db", "--initdb", home=folder)
    if key is not None:
        (folder / "key.asc").write_bytes(key)
        rpm("--dbpath", folder / "db", "--import", folder / "key.asc", home=folder)
    return folder / "db"


def test_rpm_K_passes_with_the_archive_key_only(packaged: Packaged, tmp_path: Path) -> None:
    def check(db: Path) -> tuple[int, str]:
        done = run(["rpm", "--dbpath", db, "-K", packaged.rpm], env={"HOME": str(tmp_path)},
                   check=False)  # fmt: skip
        return done.returncode, done.stdout.strip()

    good = _keyring(tmp_path / "good", packaged.public_key)
    assert check(good) == (0, f"{packaged.rpm}: digests signatures OK")
    no_key = (1, f"{packaged.rpm}: digests SIGNATURES NOT OK")
    assert check(_keyring(tmp_path / "none", None)) == no_key
    with load_archive_signer(SigningSettings(), tmp_path / "other", name="wrong") as other:
        wrong = _keyring(tmp_path / "wrong", other.public_asc())
    assert check(wrong) == no_key


def test_module_signature_and_info_survive_in_the_installed_rpm(
    packaged: Packaged, tmp_path: Path
) -> None:
    # Installed for real into an empty root: that root has no /bin/sh, so this also
    # proves the package runs no scriptlet.
    root = tmp_path / "root"
    root.mkdir()
    rpm("--root", root, "--initdb", home=tmp_path)
    rpm("--root", root, "--nosignature", "-i", packaged.rpm, home=tmp_path)
    info = packaged.build_info
    ko = root / INSTALL_DIR.lstrip("/") / info["file"]
    data = ko.read_bytes()
    assert data.endswith(SIGNATURE_MARKER)
    assert hashlib.sha256(data).hexdigest() == info["sha256"] == packaged.built["sha256"]
    document = json.loads((ko.parent / "livepatch.json").read_text(encoding="utf-8"))
    expect_info(document, packaged, "rpm", RPM_NAME)
    rpm("--root", root, "-e", RPM_NAME, home=tmp_path)
    assert not ko.exists()


def expect_info(document: dict[str, Any], packaged: Packaged, kind: str, name: str) -> None:
    info = packaged.build_info
    record = json.loads(
        (packaged.project.work / "verify" / f"{info['artifact']}.json").read_text(encoding="utf-8")
    )
    assert set(info["signer"]) == {"fingerprint", "subject", "subject_key_id", "serial", "issuer"}
    assert document == {
        "format": 2,
        "package": {"name": name, "version": "1", "type": kind},
        "level": 1,
        "module": info["module"],
        "file": info["file"],
        "path": f"{INSTALL_DIR}/{info['file']}",
        "sha256": info["sha256"],
        "srcversion": info["srcversion"],
        "vermagic": info["vermagic"],
        "build": {
            "uname_r": MAIN,
            "package_version": info["package_version"],
            "family": "deb",
            "arch": "x86_64",
            "dist": "bookworm",
        },
        "fixes": [
            {
                "id": "LGSA-SAMPLE-0001",
                "title": "SAMPLE: /proc/cmdline reports that the kernel is livepatched",
                "cves": ["LIVEGRAFT-SAMPLE-0001"],
                "severity": "low",
            },
            {
                "id": "LGSA-SAMPLE-0002",
                "title": "SAMPLE: /proc/version names the livepatch in effect",
                "cves": ["LIVEGRAFT-SAMPLE-0002"],
                "severity": "moderate",
            },
        ],
        "cves": info["cves"],
        "signer": info["signer"],
        "artifact": info["artifact"],
        "verification": {
            "status": "verified",
            "kernel_release": MAIN,
            "kernel_version": record["kernel_version"],
        },
    }
    assert [f["id"] for f in document["fixes"]] == info["fixes"]


def test_deb_fields_and_contents(packaged: Packaged, tmp_path: Path) -> None:
    field = {
        key: dpkg_deb("--field", packaged.deb, key).strip()
        for key in ("Package", "Version", "Architecture", "Enhances", "Section", "Maintainer")
    }
    assert field == {
        "Package": DEB_NAME,
        "Version": "1",
        "Architecture": "amd64",
        "Enhances": f"linux-image-{MAIN}, linux-image-{MAIN}-unsigned",
        "Section": "kernel",
        "Maintainer": "livegraft <livegraft@localhost.invalid>",
    }
    control = dpkg_deb("--field", packaged.deb)
    for pulls in ("Depends", "Pre-Depends", "Recommends", "Suggests", "Breaks", "Conflicts"):
        assert f"\n{pulls}:" not in f"\n{control}", pulls
    listing = [line.split() for line in dpkg_deb("--contents", packaged.deb).splitlines()]
    module = packaged.build_info["file"]
    assert [(e[0], e[1], e[3], e[4], e[5]) for e in listing] == [
        ("drwxr-xr-x", "root/root", "2024-01-01", "00:00", path)
        for path in ("./", "./usr/", "./usr/lib/", "./usr/lib/livegraft/", f".{INSTALL_DIR}/")
    ] + [
        ("-rw-r--r--", "root/root", "2024-01-01", "00:00", f".{INSTALL_DIR}/{name}")
        for name in (module, "livepatch.json")
    ]
    # No maintainer scripts: the control archive holds control and md5sums only.
    dpkg_deb("--control", packaged.deb, tmp_path / "DEBIAN")
    assert sorted(p.name for p in (tmp_path / "DEBIAN").iterdir()) == ["control", "md5sums"]
    dpkg_deb("--extract", packaged.deb, tmp_path / "x")
    ko = tmp_path / "x" / INSTALL_DIR.lstrip("/") / module
    assert ko.read_bytes().endswith(SIGNATURE_MARKER)
    assert sha256(ko) == packaged.build_info["sha256"]
    document = json.loads((ko.parent / "livepatch.json").read_text(encoding="utf-8"))
    expect_info(document, packaged, "deb", DEB_NAME)


def test_deb_installs_and_purges_in_an_isolated_dpkg_root(
    packaged: Packaged, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    admin = root / "var/lib/dpkg"
    (admin / "info").mkdir(parents=True)
    (admin / "updates").mkdir()
    (admin / "status").touch()
    dpkg = [
        "dpkg", f"--root={root}", f"--admindir={admin}", "--force-script-chrootless",
        f"--log={tmp_path / 'dpkg.log'}",
    ]  # fmt: skip
    run([*dpkg, "--install", packaged.deb])
    installed = root / INSTALL_DIR.lstrip("/")
    assert sorted(p.name for p in installed.iterdir()) == sorted(
        [packaged.build_info["file"], "livepatch.json"]
    )
    status = run([*dpkg, "--status", DEB_NAME]).stdout
    assert "Status: install ok installed" in status
    run([*dpkg, "--purge", DEB_NAME])
    assert not (root / "usr").exists()
    log = (tmp_path / "dpkg.log").read_text(encoding="utf-8")
    assert f"status installed {DEB_NAME}:amd64 1" in log
    assert f"status not-installed {DEB_NAME}:amd64 <none>" in log


def test_a_rerun_is_cached_and_writes_nothing(packaged: Packaged) -> None:
    before = snapshot(packaged.project.packages)
    again = package(packaged.project)
    assert again.status == 0, again.out + again.err
    assert [p["status"] for p in again.packages] == ["cached"] * 6
    assert [p["sha256"] for p in again.packages] == [p["sha256"] for p in packaged.run.packages]
    assert snapshot(packaged.project.packages) == before
    assert not [p for p in packaged.project.packages.iterdir() if p.name.startswith(".")]


def test_two_builds_of_the_same_input_are_identical(packaged: Packaged, tmp_path: Path) -> None:
    other = packaged.project.copy(tmp_path / "project", packages=False)
    again = package(other)
    assert again.status == 0, again.out + again.err
    assert [p["status"] for p in livepatches(again)] == ["built", "built"]
    assert Path(again.package("deb")["path"]).read_bytes() == packaged.deb.read_bytes()
    # An RPM's OpenPGP signature carries the time it was made; the rest is identical.
    header = "%{SHA256HEADER} %{PAYLOADSHA256}"
    mine, theirs = (
        rpm("-qp", "--nosignature", "--queryformat", header, path, home=tmp_path)
        for path in (packaged.rpm, Path(again.package("rpm")["path"]))
    )
    assert mine == theirs


def test_an_unsigned_module_is_refused_and_nothing_written(
    packaged: Packaged, tmp_path: Path
) -> None:
    project = packaged.project.copy(tmp_path / "project", packages=False)
    module = project.work / "store" / packaged.built["artifact"] / packaged.build_info["file"]
    module.write_bytes(strip_signature(module.read_bytes(), module))
    refused = package(project)
    assert refused.status == 2, refused.out + refused.err
    assert refused.out == ""
    assert refused.err.startswith(f"livegraft: error: {module}: signature: a module signed by ")
    assert refused.err.endswith("found no appended signature\n") and refused.err.count("\n") == 1
    assert not project.packages.exists()


def test_the_same_version_with_other_bytes_is_refused(packaged: Packaged, tmp_path: Path) -> None:
    project = packaged.project.copy(tmp_path / "project")
    before = snapshot(project.packages)
    text = project.config.read_text(encoding="utf-8")
    project.config.write_text(
        text.replace("[packages]\n", '[packages]\nmaintainer = "Other <other@example.org>"\n'),
        encoding="utf-8",
    )
    refused = package(project)
    assert refused.status == 2, refused.out + refused.err
    deb = project.packages / "deb" / packaged.deb.name
    assert refused.err == (
        f"livegraft: error: {deb}: {DEB_NAME} 1 was already produced with other content; a "
        "level's package never changes (remove it only if it was never published)\n"
    )
    assert snapshot(project.packages) == before
    assert not [p for p in project.packages.iterdir() if p.name.startswith(".")]


def test_unverified_cells_are_skipped_never_packaged(packaged: Packaged, tmp_path: Path) -> None:
    project = packaged.project.copy(tmp_path / "project", packages=False)
    record = project.work / "verify" / f"{packaged.built['artifact']}.json"
    document = json.loads(record.read_text(encoding="utf-8"))
    record.write_text(
        json.dumps({**document, "status": "failed", "reason": "check:X: exit status 3"}),
        encoding="utf-8",
    )
    failed = package(project)
    assert failed.status == 0, failed.out + failed.err
    assert [(p["format"], p["status"], p["reason"]) for p in failed.packages] == [
        (kind, "skipped", "verification failed: check:X: exit status 3") for kind in ("deb", "rpm")
    ]
    assert [p["name"] for p in failed.packages] == [DEB_NAME, RPM_NAME]
    assert all(p["path"] is None and p["sha256"] is None for p in failed.packages)
    record.unlink()
    unverified = package(project)
    assert [p["reason"] for p in unverified.packages] == ["not verified", "not verified"]
    assert not project.packages.exists()


def test_a_name_with_a_path_separator_writes_nothing(packaged: Packaged, tmp_path: Path) -> None:
    project = packaged.project.copy(tmp_path / "project", packages=False)
    config, plan = current_plan(argparse.Namespace(config=project.config, errata=[]), None)
    (cell,) = plan.cells
    bad = replace(cell, build=replace(cell.build, uname_r=f"{MAIN}/../../etc"))
    packager = Packager(
        store=open_store(config),
        work_dir=config.work_dir,
        settings=config.packages,
        vendor="test",
        signer=lambda: pytest.fail("no signer is needed to refuse a name"),
    )
    with pytest.raises(InputError, match=r"uname_r: a kernel release that is one safe path"):
        packager.package([bad])
    assert not project.packages.exists()


def test_lost_records_are_rewritten_and_the_packages_kept(
    packaged: Packaged, tmp_path: Path
) -> None:
    project = packaged.project.copy(tmp_path / "project")
    records = project.packages / "records"
    original = snapshot(records)
    shutil.rmtree(records)
    pools = {kind: snapshot(project.packages / kind) for kind in ("deb", "rpm")}
    again = package(project)
    assert again.status == 0, again.out + again.err
    # Rebuilt to compare, found the same, kept: the signed RPM is the one published before.
    assert [p["status"] for p in again.packages] == ["cached"] * 6
    assert [p["sha256"] for p in again.packages] == [p["sha256"] for p in packaged.run.packages]
    assert {kind: snapshot(project.packages / kind) for kind in ("deb", "rpm")} == pools
    assert {k: v[1] for k, v in snapshot(records).items()} == {k: v[1] for k, v in original.items()}
