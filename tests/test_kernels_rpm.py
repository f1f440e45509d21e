"""Kernel discovery from an RPM repository's primary metadata, built with rpmbuild."""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from kernel_repos import Rpm, Srpm, kernel_rpms, make_rpm_repo
from livegraft.pipeline.errors import InputError, WorkError
from livegraft.pipeline.kernels.filters import Filters
from livegraft.pipeline.kernels.matrix import ordered
from livegraft.pipeline.kernels.model import KernelBuild
from livegraft.pipeline.kernels.rpm_source import discover_rpm

pytestmark = pytest.mark.skipif(
    shutil.which("rpmbuild") is None or shutil.which("createrepo_c") is None,
    reason="rpmbuild and createrepo_c are needed to build the test repository",
)

EL9_3 = "5.14.0-362.8.1.el9_3"
EL9_4 = "5.14.0-427.13.1.el9_4"
EL7 = "3.10.0-1160.el7"

SRPMS = [
    Srpm(
        "kernel",
        "5.14.0",
        "362.8.1.el9_3",
        [
            *kernel_rpms(f"{EL9_3}.x86_64"),
            # RHEL 9.3+ builds kernel-rt from the kernel source: uname -r gains "+rt".
            *kernel_rpms(f"{EL9_3}.x86_64+rt", "rt"),
            # Named like builds, but they are not: no <name>-uname-r provide, or not -devel.
            Rpm("kernel-devel-matched", ("kernel-devel-matched = 5.14.0",)),
            Rpm("kernel-tools-libs-devel"),
            Rpm("kernel-modules", (f"kernel-modules-uname-r = {EL9_3}.x86_64",)),
        ],
    ),
    Srpm("kernel", "5.14.0", "427.13.1.el9_4", kernel_rpms(f"{EL9_4}.x86_64")),
    Srpm("kernel", "5.14.0", "427.13.1.el9_4", kernel_rpms(f"{EL9_4}.aarch64"), arch="aarch64"),
    # el7 has no -core split: the image is the "kernel" package itself.
    Srpm(
        "kernel",
        "3.10.0",
        "1160.el7",
        [
            Rpm("kernel", (f"kernel-uname-r = {EL7}.x86_64",)),
            Rpm("kernel-devel", (f"kernel-devel-uname-r = {EL7}.x86_64",)),
        ],
    ),
    # A rebuild that carries an epoch: package versions must say it.
    Srpm("kernel", "5.14.0", "70.13.1.el9_0", kernel_rpms("5.14.0-70.13.1.el9_0.x86_64"), epoch=1),
    Srpm("hello", "2.10", "1.el9", [Rpm("hello-devel", ("hello-devel = 2.10",))]),
]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_rpm_repo(tmp_path_factory.mktemp("rpm") / "repo", SRPMS)


@pytest.fixture(scope="module")
def http_url(repo: Path) -> Iterator[str]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(repo.parent))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{repo.name}"
    finally:
        server.shutdown()
        server.server_close()


def _by_uname(builds: tuple[KernelBuild, ...]) -> dict[str, KernelBuild]:
    found = {b.uname_r: b for b in builds}
    assert len(found) == len(builds), "one build per uname -r in this repository"
    return found


def test_discovers_kernel_builds_only(repo: Path) -> None:
    builds = _by_uname(discover_rpm(str(repo)))
    assert set(builds) == {
        f"{EL9_3}.x86_64",
        f"{EL9_3}.x86_64+rt",
        f"{EL9_4}.x86_64",
        f"{EL9_4}.aarch64",
        f"{EL7}.x86_64",
        "5.14.0-70.13.1.el9_0.x86_64",
    }


def test_build_fields(repo: Path) -> None:
    builds = _by_uname(discover_rpm(repo.as_uri()))
    b = builds[f"{EL9_3}.x86_64"]
    assert (b.family, b.package_version, b.upstream_version) == ("rpm", EL9_3, "5.14.0")
    assert (b.flavour, b.arch, b.dist, b.source_package) == ("default", "x86_64", "el9", "kernel")
    assert b.origin == repo.as_uri()
    (devel,) = b.headers
    assert (devel.name, devel.version, devel.arch) == ("kernel-devel", EL9_3, "x86_64")
    assert devel.filename == f"x86_64/kernel-devel-{EL9_3}.x86_64.rpm"
    rpm_file = repo / devel.filename
    assert devel.sha256 == _sha256(rpm_file)
    assert b.image is not None
    assert (b.image.name, b.image.version) == ("kernel-core", EL9_3)
    assert b.image.sha256 == _sha256(repo / str(b.image.filename))

    rt = builds[f"{EL9_3}.x86_64+rt"]
    assert (rt.flavour, rt.package_version) == ("rt", EL9_3)
    assert [h.name for h in rt.headers] == ["kernel-rt-devel"]
    assert rt.image is not None and rt.image.name == "kernel-rt-core"

    arm = builds[f"{EL9_4}.aarch64"]
    assert arm.arch == "aarch64" and arm.headers[0].arch == "aarch64"
    assert arm.image is not None and arm.image.arch == "aarch64"

    el7 = builds[f"{EL7}.x86_64"]
    assert el7.dist == "el7"
    assert el7.image is not None and el7.image.name == "kernel"

    epoch = builds["5.14.0-70.13.1.el9_0.x86_64"]
    assert epoch.package_version == "1:5.14.0-70.13.1.el9_0"
    assert epoch.headers[0].version == "1:5.14.0-70.13.1.el9_0"


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_order(repo: Path) -> None:
    assert [b.uname_r for b in ordered(discover_rpm(str(repo)))] == [
        f"{EL7}.x86_64",
        f"{EL9_3}.x86_64",
        f"{EL9_3}.x86_64+rt",
        f"{EL9_4}.aarch64",
        f"{EL9_4}.x86_64",
        # Epoch 1 outranks every later version-release without one.
        "5.14.0-70.13.1.el9_0.x86_64",
    ]


def test_filters(repo: Path) -> None:
    def names(filters: Filters) -> set[str]:
        return {b.uname_r for b in discover_rpm(str(repo), filters)}

    assert names(Filters(arch=("aarch64",))) == {f"{EL9_4}.aarch64"}
    assert names(Filters(flavour=("rt",))) == {f"{EL9_3}.x86_64+rt"}
    assert names(Filters(dist=("el7",))) == {f"{EL7}.x86_64"}
    assert names(Filters(uname_r=("*.el9_4.*",))) == {f"{EL9_4}.x86_64", f"{EL9_4}.aarch64"}


def test_http_matches_folder(repo: Path, http_url: str) -> None:
    local = ordered(discover_rpm(str(repo)))
    remote = ordered(discover_rpm(http_url))
    assert [b.to_json() | {"origin": None} for b in remote] == [
        b.to_json() | {"origin": None} for b in local
    ]
    assert {b.origin for b in remote} == {http_url}


def test_http_not_a_repository(http_url: str) -> None:
    with pytest.raises(InputError, match=r"repodata/repomd.xml: not found \(HTTP 404\)"):
        discover_rpm(http_url + "/nothing-here")


def test_unreachable_server_is_a_work_error() -> None:
    with pytest.raises(WorkError):
        # Port 9 (discard) on loopback: nothing listens, the connection is refused.
        discover_rpm("http://127.0.0.1:9/repo", timeout=5)


def test_tampered_primary_is_refused(repo: Path, tmp_path: Path) -> None:
    copy = tmp_path / "repo"
    shutil.copytree(repo, copy)
    (primary,) = (copy / "repodata").glob("*-primary.xml.gz")
    primary.write_bytes(primary.read_bytes() + b"\0")
    with pytest.raises(WorkError, match=r"does not match repomd\.xml"):
        discover_rpm(str(copy))


def test_malformed_repomd_is_bad_input(tmp_path: Path) -> None:
    (tmp_path / "repodata").mkdir()
    (tmp_path / "repodata" / "repomd.xml").write_text("<repomd><data type=")
    with pytest.raises(InputError, match=r"repodata/repomd\.xml: well-formed repomd\.xml"):
        discover_rpm(str(tmp_path))


def test_bad_url_scheme() -> None:
    with pytest.raises(InputError, match="ftp://x/repo: a folder, file:// or http"):
        discover_rpm("ftp://x/repo")


def _livegraft(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    return subprocess.run(
        ["livegraft", *args], env=env, capture_output=True, text=True, check=False
    )


def test_cli_json(repo: Path) -> None:
    cp = _livegraft("kernels", "discover", "--from", "rpm", "--url", str(repo), "--json")
    assert cp.returncode == 0, cp.stderr
    data = json.loads(cp.stdout)
    assert [d["uname_r"] for d in data][:2] == [f"{EL7}.x86_64", f"{EL9_3}.x86_64"]
    assert data[1]["headers"][0]["name"] == "kernel-devel"


def test_cli_bad_usage_and_input(tmp_path: Path) -> None:
    cp = _livegraft("kernels", "discover", "--from", "rpm")
    assert cp.returncode == 2
    assert "--from rpm needs --url" in cp.stderr
    cp = _livegraft("kernels", "discover", "--from", "rpm", "--url", str(tmp_path))
    assert cp.returncode == 2
    assert cp.stderr.strip().splitlines() == [
        f"livegraft: error: {tmp_path}: repodata/repomd.xml: not found: is this an RPM repository?"
    ]
