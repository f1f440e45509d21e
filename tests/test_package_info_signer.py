"""livepatch.json names the module's signer the ways the client needs (fingerprint, subject,
subject key id, serial, issuer), also for a module built before build.json recorded the
last three: those come from the configured certificate when it is the recorded signer,
and the package stage refuses otherwise. Stand-in verified cells, DEB only (fast)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cli_support import livegraft
from client_source import client_source
from livegraft.pipeline.config import SigningSettings
from livegraft.pipeline.proc import run
from livegraft.signing.module_key import CERT_FILE, KEY_FILE, generate_module_key, load_module_key
from verified_cells import verify_all, write_config

INFO = "usr/lib/livegraft/6.1.0-56-amd64/livepatch.json"


def project(root: Path, key: tuple[Path, Path]) -> Path:
    root.mkdir()
    client_source(root / "source")
    return write_config(root, key, 'formats = ["deb"]\nclient_source = "source"')


def packaged_info(config: Path, tmp: Path) -> dict[str, Any]:
    done = livegraft("package", "--config", str(config), "--json")
    assert done.status == 0, done.out + done.err
    deb = next(Path(p["path"]) for p in done.packages if p["kind"] == "livepatch")
    run(["dpkg-deb", "--extract", deb, tmp])
    document: dict[str, Any] = json.loads((tmp / INFO).read_text(encoding="utf-8"))
    return document


def test_a_new_build_records_every_name(tmp_path: Path, signing_key: tuple[Path, Path]) -> None:
    config = project(tmp_path / "p", signing_key)
    key = load_module_key(SigningSettings(*signing_key), tmp_path, environ={})
    verify_all(config, key.signer())
    info = packaged_info(config, tmp_path / "x")
    assert info["format"] == 2
    assert info["signer"] == key.signer()
    assert all(info["signer"][k] for k in ("subject_key_id", "serial", "issuer"))


def test_an_older_build_gets_them_from_its_own_certificate(
    tmp_path: Path, signing_key: tuple[Path, Path]
) -> None:
    config = project(tmp_path / "p", signing_key)
    key = load_module_key(SigningSettings(*signing_key), tmp_path, environ={})
    verify_all(config, {"fingerprint": key.fingerprint, "subject": key.subject})
    assert packaged_info(config, tmp_path / "x")["signer"] == key.signer()


def test_an_older_build_of_another_signer_is_refused(
    tmp_path: Path, signing_key: tuple[Path, Path]
) -> None:
    key = load_module_key(SigningSettings(*signing_key), tmp_path, environ={})
    other = tmp_path / "other-key"
    generate_module_key(other, "other")
    config = project(tmp_path / "p", (other / KEY_FILE, other / CERT_FILE))
    verify_all(config, {"fingerprint": key.fingerprint, "subject": key.subject})
    refused = livegraft("package", "--config", str(config), "--json")
    assert refused.status == 2 and refused.out == "", refused.out + refused.err
    assert refused.err.count("\n") == 1
    assert refused.err.startswith("livegraft: error: ")
    assert "/build.json: signer.subject_key_id: the signer's subject_key_id, serial, issuer;" in (
        refused.err
    )
    assert key.fingerprint in refused.err
    assert not (tmp_path / "p" / "work" / "packages").exists()


@pytest.fixture(autouse=True)
def _no_environment_key(monkeypatch: pytest.MonkeyPatch) -> None:
    # The configured certificate must be the config's, not one the environment names.
    for name in ("LIVEGRAFT_MODULE_KEY", "LIVEGRAFT_MODULE_CERT"):
        monkeypatch.delenv(name, raising=False)
