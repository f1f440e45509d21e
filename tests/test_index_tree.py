"""The published tree without kernels: 1,000 generated packages per format, then one new
level. Metadata is rewritten, the pool is not; a re-run with nothing new writes nothing.
Also: advisory names checked against the pools, and the base URL validated strictly."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from debian import deb822
from livegraft.pipeline.config import SigningSettings, load_config
from livegraft.pipeline.errors import InputError
from livegraft.pipeline.package.records import PackageRecord, advisories
from livegraft.pipeline.repo import tree
from livegraft.signing.gpg import ArchiveSigner
from livegraft.signing.module_key import load_module_key
from package_factory import rpm_template, write_deb, write_rpm
from repo_support import archive_signers, build_rpm

COUNT = 1000
DIST = "bookworm"
FIX = {
    "id": "LGSA-2026-0001",
    "title": "nf_tables: use-after-free",
    "description": "Replaces nft_pipapo_walk.",
    "severity": "important",
    "cves": ["CVE-2024-26581", "OSV-2024-1"],
}


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArchiveSigner]:
    with archive_signers(tmp_path_factory.mktemp("key"), (1,)) as (signer,):
        yield signer


@pytest.fixture(scope="module")
def cert_der(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    work = tmp_path_factory.mktemp("modkey")
    return load_module_key(SigningSettings(), work, name="t", environ={}).cert_der()


def record(
    path: Path, kind: str, name: str, level: int, fixes: list[dict[str, Any]]
) -> PackageRecord:
    data = path.read_bytes()
    return PackageRecord(
        {
            "type": kind,
            "name": name,
            "version": str(level),
            "release": "1" if kind == "rpm" else "",
            "arch": "amd64" if kind == "deb" else "noarch",
            "filename": path.name,
            "path": f"{kind}/{path.name}",
            "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data),
            "build": {"uname_r": f"{name}-uname", "dist": DIST, "arch": "x86_64"},
            "level": level,
            "fixes": fixes,
            "cves": [c for f in fixes for c in f["cves"]],
        },
        path,
    )


@dataclass
class Generated:
    root: Path
    records: list[PackageRecord]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Generated:
    root = tmp_path_factory.mktemp("packages")
    (root / "deb").mkdir()
    (root / "rpm").mkdir()
    template = rpm_template(root / "rpmbuild", "kpatch-patch-t", "1")
    records = []
    for i in range(COUNT):
        name = f"livepatch-6.1.0-{i:05d}-amd64"
        records.append(record(write_deb(root / "deb", name, "1"), "deb", name, 1, []))
        rpm = write_rpm(root / "rpm", template, "kpatch-patch-t", i)
        records.append(record(rpm, "rpm", f"kpatch-patch-t-{i:05d}", 1, []))
    return Generated(root, records)


def assemble(
    out: Path, records: list[PackageRecord], signer: ArchiveSigner, der: bytes, **kw: Any
) -> tree.TreeResult:
    fixes = kw.pop("fixes", None)
    return tree.assemble_tree(
        out,
        records=records,
        fixes=advisories(records) if fixes is None else fixes,
        signer=signer,
        archive_asc=signer.public_asc(),
        archive_keyring=signer.public_keyring(),
        module_cert_der=der,
        base_url=kw.pop("base_url", "http://127.0.0.1:8080/lg/"),
        state_dir=out.parent / f"{out.name}-state",
        **kw,
    )


def inline_key(sources: str) -> bytes:
    """The armored key block of a deb822 source's multi-line Signed-By, as gpg wrote it."""
    block = sources.split("\nSigned-By:\n", 1)[1].splitlines()
    assert all(line.startswith(" ") for line in block), block
    return "".join("\n" if line == " ." else line[1:] + "\n" for line in block).encode()


def files(root: Path, under: str) -> dict[str, tuple[int, int]]:
    """Every file below root/under: (inode, mtime_ns)."""
    return {
        str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in sorted((root / under).rglob("*"))
        if p.is_file()
    }


def test_new_level_rewrites_metadata_not_the_pool_and_a_rerun_writes_nothing(
    generated: Generated, signer: ArchiveSigner, cert_der: bytes, tmp_path: Path
) -> None:
    out = tmp_path / "repo"
    first = assemble(out, generated.records, signer, cert_der)
    assert first.changed
    assert [(s.suite, s.packages) for s in first.deb] == [(DIST, COUNT)]
    assert [(r.dist, r.arch, r.packages, r.generation) for r in first.rpm] == [
        (DIST, "x86_64", COUNT, 1)
    ]
    before = files(out, ".")

    again = assemble(out, generated.records, signer, cert_der)
    assert not again.changed and again.to_json()["changed"] is False
    assert files(out, ".") == before, "a re-run with nothing new wrote something"

    # A new level for one kernel build: one new file per pool, carrying an advisory.
    name = "livepatch-6.1.0-00007-amd64"
    deb2 = write_deb(generated.root / "deb", name, "2")
    rpm2 = write_rpm(
        generated.root / "rpm", rpm_template(generated.root / "rpmbuild2", "kpatch-patch-t", "2"),
        "kpatch-patch-t", 7,
    )  # fmt: skip
    new = [
        record(deb2, "deb", name, 2, [FIX]),
        record(rpm2, "rpm", "kpatch-patch-t-00007", 2, [FIX]),
    ]
    third = assemble(out, generated.records + new, signer, cert_der)
    assert third.changed
    after = files(out, ".")
    for pool in ("deb/pool", f"rpm/{DIST}/x86_64/pool"):
        old = {k: v for k, v in before.items() if k.startswith(pool)}
        now = {k: v for k, v in after.items() if k.startswith(pool)}
        assert {k: now[k] for k in old} == old, f"{pool}: a pool file was rewritten"
        assert len(set(now) - set(old)) == 1
    assert sorted(third.written) == sorted(
        [f"deb/pool/main/l/{name}/{deb2.name}", f"rpm/{DIST}/x86_64/pool/{rpm2.name}"]
    )
    for meta in (f"deb/dists/{DIST}/InRelease", f"rpm/{DIST}/x86_64/metalink.xml"):
        assert after[meta] != before[meta], meta
    assert third.rpm[0].generation == 2 and third.rpm[0].advisories == 1

    # apt's index names the newest level only; the advisory index names it with the CVE.
    dist = out / "deb" / "dists" / DIST / "main"
    stanzas = list(
        deb822.Packages.iter_paragraphs(
            (dist / "binary-amd64" / "Packages").read_text(), use_apt_pkg=False
        )
    )
    assert len(stanzas) == COUNT
    assert [s["Version"] for s in stanzas if s["Package"] == name] == ["2"]
    [adv] = list(deb822.Deb822.iter_paragraphs((dist / "advisories" / "Advisories").read_text()))
    assert (adv["Package"], adv["Version"], adv["Advisory"]) == (name, "2", FIX["id"])
    assert adv["CVEs"] == "CVE-2024-26581" and adv["Severity"] == "important"

    # And again nothing: the advisory keeps its first publication time.
    fourth = assemble(out, generated.records + new, signer, cert_der)
    assert not fourth.changed and files(out, ".") == after


def test_keys_and_client_files(
    generated: Generated, signer: ArchiveSigner, cert_der: bytes, tmp_path: Path
) -> None:
    out = tmp_path / "repo"
    assemble(out, generated.records[:4], signer, cert_der, base_url="https://example.test/lg/")
    keys = out / "keys"
    assert (keys / "livegraft-archive.asc").read_bytes() == signer.public_asc()
    assert (keys / "livegraft-archive.gpg").read_bytes() == signer.public_keyring()
    assert (keys / "livegraft-module-signing.der").read_bytes() == cert_der
    assert (
        (keys / "livegraft-module-signing.crt")
        .read_text()
        .startswith("-----BEGIN CERTIFICATE-----\n")
    )
    text = (out / "clients/livegraft.sources").read_text()
    [sources] = list(deb822.Deb822.iter_paragraphs(text))
    assert {k: v for k, v in sources.items() if k != "Signed-By"} == {
        "Types": "deb",
        "URIs": "https://example.test/lg/deb",
        "Suites": DIST,
        "Components": "main",
    }
    # The key itself, inline: the file is all a host needs.
    assert inline_key(text) == signer.public_asc()
    assert tree.indexed_base_url(out) == "https://example.test/lg"
    repo = (out / "clients/livegraft.repo").read_text()
    assert f"[livegraft-{DIST}-x86_64]" in repo
    assert f"metalink=https://example.test/lg/rpm/{DIST}/x86_64/metalink.xml" in repo
    assert "gpgcheck=1\nrepo_gpgcheck=1\n" in repo
    assert "gpgkey=https://example.test/lg/keys/livegraft-archive.asc" in repo
    assert (
        f"https://example.test/lg/rpm/{DIST}/x86_64/gen-1/repodata/repomd.xml"
        in (out / f"rpm/{DIST}/x86_64/metalink.xml").read_text()
    )


def test_a_rotation_puts_both_keys_inline(
    generated: Generated, cert_der: bytes, tmp_path: Path
) -> None:
    with archive_signers(tmp_path / "keys", (1,), (1, 2)) as (old, both):
        out = tmp_path / "repo"
        sources = out / "clients/livegraft.sources"
        assemble(out, generated.records[:4], old, cert_der)
        assert inline_key(sources.read_text()) == old.public_asc()
        rotated = assemble(out, generated.records[:4], both, cert_der)
        assert "clients/livegraft.sources" in rotated.written
        assert inline_key(sources.read_text()) == both.public_asc()
        home = tmp_path / "gnupg"
        home.mkdir(mode=0o700)
        shown = subprocess.run(
            ["gpg", "--homedir", str(home), "--batch", "--show-keys", "--with-colons"],
            input=inline_key(sources.read_text()), capture_output=True, check=True,
        ).stdout.decode()  # fmt: skip
        primary = [
            line.split(":")[9]
            for previous, line in zip(shown.splitlines(), shown.splitlines()[1:], strict=False)
            if previous.startswith("pub:") and line.startswith("fpr:")
        ]
        assert sorted(primary) == sorted(both.fingerprints) and len(set(primary)) == 2


def test_an_advisory_naming_a_file_in_no_pool_is_refused(
    generated: Generated, signer: ArchiveSigner, cert_der: bytes, tmp_path: Path
) -> None:
    records = generated.records[:2]
    stray = record(generated.records[2].path, "deb", "livepatch-stray", 1, [FIX])
    out = tmp_path / "repo"
    with pytest.raises(InputError, match=r"LGSA-2026-0001.*in no pool"):
        assemble(out, records, signer, cert_der, fixes=advisories([*records, stray]))
    assert not out.exists() or not any(out.rglob("*")), "refused, yet something was written"


@pytest.mark.parametrize(
    "url",
    ["ftp://example.test/", "http://", "file://relative/path", "https://a b/", "example.test",
     "http://example.test/?q=1", "file:repo"],
)  # fmt: skip
def test_bad_base_urls_are_refused(url: str) -> None:
    with pytest.raises(InputError, match="base-url"):
        tree.check_base_url(url)


def test_good_base_urls(tmp_path: Path) -> None:
    assert tree.check_base_url("https://example.test/lg/") == "https://example.test/lg"
    assert tree.check_base_url("http://127.0.0.1:8080") == "http://127.0.0.1:8080"
    assert tree.check_base_url(tmp_path.as_uri()) == tmp_path.as_uri()


def _config(tmp_path: Path, publish: str) -> Path:
    (tmp_path / "fixes").mkdir(exist_ok=True)
    path = tmp_path / "c.toml"
    path.write_text(
        'name = "t"\n[[kernels]]\nuname_r = "6.1.0-56-amd64"\n' + publish, encoding="utf-8"
    )
    return path


def test_config_publish_base_url(tmp_path: Path) -> None:
    cfg = load_config(_config(tmp_path, '[publish]\nbase_url = "https://example.test/x/"\n'))
    assert cfg.publish.base_url == "https://example.test/x"
    assert load_config(_config(tmp_path, "")).publish.base_url is None
    for bad, field in (
        ('[publish]\nbase_url = "ftp://x/"\n', "publish.base_url"),
        ("[publish]\nbase_url = 3\n", "publish.base_url"),
        ('[publish]\nbase_uri = "https://x/"\n', "publish.base_uri"),
    ):
        with pytest.raises(InputError, match=field):
            load_config(_config(tmp_path, bad))


def test_config_publish_destination(tmp_path: Path) -> None:
    cfg = load_config(_config(tmp_path, ""))
    assert cfg.publish_to == str(cfg.work_dir / "public")
    assert cfg.publish_url() == (cfg.work_dir / "public").as_uri()
    cfg = load_config(_config(tmp_path, '[publish]\nto = "served"\nretention_hours = 6\n'))
    assert cfg.publish_to == str(tmp_path / "served") and cfg.publish.retention_hours == 6
    assert cfg.publish_url() == (tmp_path / "served").as_uri()
    bucket = '[publish]\nto = "s3://b/p"\nendpoint = "http://127.0.0.1:1"\naddressing = "path"\n'
    cfg = load_config(_config(tmp_path, bucket))
    assert (cfg.publish.endpoint, cfg.publish.addressing) == ("http://127.0.0.1:1", "path")
    with pytest.raises(
        InputError, match=r"publish\.base_url: .*required when publishing to a bucket"
    ):
        cfg.publish_url()
    with_url = load_config(_config(tmp_path, bucket + 'base_url = "https://cdn.test/p"\n'))
    assert with_url.publish_url() == "https://cdn.test/p"
    for bad, field in (
        ('[publish]\nto = "ftp://x/y"\n', "publish.to"),
        ('[publish]\nto = ""\n', "publish.to"),
        ('[publish]\naddressing = "sideways"\n', "publish.addressing"),
        ("[publish]\nretention_hours = -1\n", "publish.retention_hours"),
        ("[publish]\nretention_hours = true\n", "publish.retention_hours"),
        ("[publish]\nendpoint = 3\n", "publish.endpoint"),
    ):
        with pytest.raises(InputError, match=field):
            load_config(_config(tmp_path, bad))


def test_result_json_shape(
    generated: Generated, signer: ArchiveSigner, cert_der: bytes, tmp_path: Path
) -> None:
    result = assemble(tmp_path / "repo", generated.records[:2], signer, cert_der)
    doc = json.loads(json.dumps(result.to_json()))
    assert set(doc) == {"root", "base_url", "changed", "advisories", "deb", "rpm", "written"}


def client_record(
    path: Path, kind: str, version: str, release: str, revision: int
) -> PackageRecord:
    """A client package's record as the package stage writes it: no build, no fixes."""
    data = path.read_bytes()
    return PackageRecord(
        {
            "kind": "client",
            "type": kind,
            "name": "livegraft-client",
            "version": version,
            "release": release,
            "arch": "all" if kind == "deb" else "noarch",
            "filename": path.name,
            "path": f"{kind}/{path.name}",
            "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data),
            "project_version": version.split("-")[0],
            "revision": revision,
        },
        path,
    )


def test_client_packages_go_into_every_repository(
    generated: Generated, signer: ArchiveSigner, cert_der: bytes, tmp_path: Path
) -> None:
    # Two dists of livepatches, each with a deb and an rpm.
    other_dist = [
        PackageRecord({**r.document, "build": {**r.document["build"], "dist": "trixie"}}, r.path)
        for r in generated.records[2:4]
    ]
    (tmp_path / "deb").mkdir()
    clients = [
        # dpkg's order, not the text's: 0.10.0-1 is the newest.
        client_record(write_deb(tmp_path / "deb", "livegraft-client", v, "all"), "deb", v, "", n)
        for v, n in (("0.9.0-3", 3), ("0.10.0-1", 1))
    ]
    clients.append(
        client_record(build_rpm(tmp_path / "rpmbuild", "livegraft-client", "0.9.0"), "rpm",
                      "0.9.0", "1", 1)
    )  # fmt: skip
    # One livepatch carries a fix: an advisory the client packages must stay out of.
    fixed = generated.records[0]
    fixed = PackageRecord({**fixed.document, "fixes": [FIX], "cves": FIX["cves"]}, fixed.path)
    records = [fixed, generated.records[1], *other_dist, *clients]
    out = tmp_path / "repo"
    result = assemble(out, records, signer, cert_der)
    assert [(s.suite, s.packages) for s in result.deb] == [("bookworm", 2), ("trixie", 2)]
    assert [(r.dist, r.packages) for r in result.rpm] == [("bookworm", 2), ("trixie", 2)]
    for suite in ("bookworm", "trixie"):
        index = (out / f"deb/dists/{suite}/main/binary-amd64/Packages").read_text()
        stanzas = list(deb822.Packages.iter_paragraphs(index, use_apt_pkg=False))
        assert [(s["Version"], s["Architecture"]) for s in stanzas
                if s["Package"] == "livegraft-client"] == [("0.10.0-1", "all")]  # fmt: skip
        assert (out / f"rpm/{suite}/x86_64/pool/livegraft-client-0.9.0-1.noarch.rpm").is_file()
    # Only the newest client DEB is pooled (no index names the other).
    assert not list((out / "deb/pool").rglob("livegraft-client_0.9.0-3_all.deb"))
    # No advisory names a client package.
    assert result.advisories == 1
    for suite in ("bookworm", "trixie"):
        text = (out / f"deb/dists/{suite}/main/advisories/Advisories").read_text()
        assert "livegraft-client" not in text
