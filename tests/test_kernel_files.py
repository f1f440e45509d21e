"""Kernel packages: fetched through apt, checked against the index, unpacked per build."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from livegraft.pipeline.errors import InputError, WorkError
from livegraft.pipeline.kernel_files import complete_from_apt, fetch_package, prepare
from livegraft.pipeline.kernels.apt_source import discover_apt
from livegraft.pipeline.kernels.filters import Filters
from livegraft.pipeline.kernels.model import KernelBuild, PackageRef

CACHE = Path(os.environ.get("LIVEGRAFT_TEST_CACHE", "/tmp/livegraft-cache"))


@pytest.fixture(scope="module")
def build() -> KernelBuild:
    found = discover_apt(Filters(uname_r=("6.1.0-*-amd64",), flavour=("amd64",)))
    if not found:
        pytest.skip("the machine's apt sources offer no 6.1 amd64 kernel build")
    return max(found, key=lambda b: int(b.uname_r.split("-")[1]))


def declared(build: KernelBuild) -> KernelBuild:
    """The build as a config may declare it: uname -r, version and its headers package."""
    return dataclasses.replace(
        build,
        headers=(PackageRef(f"linux-headers-{build.uname_r}", build.package_version),),
        image=None,
    )


def test_declared_build_gets_its_dependencies(build: KernelBuild) -> None:
    complete = complete_from_apt(declared(build))
    names = [h.name for h in complete.headers]
    abi = build.uname_r.removesuffix("-amd64")
    assert names[0] == f"linux-headers-{build.uname_r}"
    assert f"linux-headers-{abi}-common" in names
    assert any(n.startswith("linux-kbuild-") for n in names)
    assert all(h.sha256 and len(h.sha256) == 64 for h in complete.headers)
    assert complete.image is not None and complete.image.name.startswith("linux-image-")


def test_tree_is_the_builds_own(build: KernelBuild) -> None:
    tree = prepare(declared(build), CACHE)
    makefile = (tree.headers / "Makefile").read_text()
    # Never the host's /usr/src: the -common include points into this tree.
    assert makefile.startswith(f"include {tree.root}/usr/src/linux-headers-")
    assert tree.sign_file.is_file()
    assert (tree.headers / ".config").is_file()


def test_unknown_build_is_bad_input(build: KernelBuild, tmp_path: Path) -> None:
    ghost = dataclasses.replace(
        declared(build), uname_r="6.1.0-999-amd64", package_version="6.1.999-1"
    )
    with pytest.raises(InputError, match="apt sources offer"):
        prepare(ghost, tmp_path)
    assert not (tmp_path / "trees").exists() or not any((tmp_path / "trees").iterdir())


def test_checksum_mismatch_is_refused(build: KernelBuild, tmp_path: Path) -> None:
    ref = dataclasses.replace(build.headers[0], sha256="0" * 64)
    with pytest.raises(WorkError, match="does not match the repository"):
        fetch_package(build, ref, tmp_path)
    # Nothing of the refused download stays in the cache.
    assert not list((tmp_path / "packages").glob("*/pkg"))


def test_mismatched_headers_are_refused(build: KernelBuild, tmp_path: Path) -> None:
    other = discover_apt(Filters(uname_r=("6.1.0-*-cloud-amd64",)))
    if not other:
        pytest.skip("no cloud-amd64 build offered")
    wrong = dataclasses.replace(build, headers=other[0].headers)
    with pytest.raises(WorkError, match="no kbuild tree"):
        prepare(wrong, tmp_path)
    assert not any((tmp_path / "trees").iterdir())


def test_packages_from_a_configured_url(build: KernelBuild, tmp_path: Path) -> None:
    """origin = a repository base URL: files at their index Filename, checked the same way."""
    import http.server
    import shutil
    import threading
    from functools import partial

    complete = complete_from_apt(build)
    mirror = tmp_path / "mirror"
    for ref in complete.headers:
        assert ref.filename and ref.sha256
        target = mirror / ref.filename
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(fetch_package(complete, ref, CACHE), target)
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(mirror))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        remote = dataclasses.replace(
            complete, origin=f"http://127.0.0.1:{server.server_address[1]}/"
        )
        tree = prepare(remote, tmp_path / "cache")
        assert (tree.headers / ".config").is_file()
        # A file the server holds that is not what the index says is refused.
        first = mirror / str(complete.headers[0].filename)
        first.write_bytes(first.read_bytes() + b"tampered")
        with pytest.raises(WorkError, match="does not match the repository"):
            prepare(remote, tmp_path / "other-cache")
    finally:
        server.shutdown()
