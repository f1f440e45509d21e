"""Shared test helpers: where the repository and the shared errata fixtures are, the
module-signing key the build, verify and package tests sign with, and the S3 server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from livegraft.signing.module_key import CERT_FILE, KEY_FILE, generate_module_key
from seaweed import SeaweedFS

REPO = Path(__file__).resolve().parent.parent
# Real public errata records live beside the checkout and are never copied into it.
SHARED_ERRATA = REPO.parent / "shared" / "fixtures" / "errata"


@pytest.fixture
def shared_errata() -> Path:
    if not SHARED_ERRATA.is_dir():
        pytest.skip("../shared/fixtures/errata is not present beside the checkout")
    return SHARED_ERRATA


@pytest.fixture(scope="session")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A module-signing key and certificate, as ``livegraft keys init`` makes them."""
    keys = tmp_path_factory.mktemp("signing-key")
    generate_module_key(keys, "tests")
    return keys / KEY_FILE, keys / CERT_FILE


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """One real SeaweedFS S3 server on loopback for the whole session."""
    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def client_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The client's import path laid out as the livegraft-client package installs it
    (livegraft/client/…), pointing at this checkout's client/."""
    top = tmp_path_factory.mktemp("client-path")
    (top / "livegraft").mkdir()
    (top / "livegraft" / "client").symlink_to(REPO / "client")
    return top


@pytest.fixture(scope="session")
def running_version() -> str:
    """The distribution version of the build the client tests play as the running one."""
    from dnf_host import RUNNING, build_version

    return build_version(RUNNING)
