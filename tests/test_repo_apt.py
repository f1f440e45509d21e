"""The apt repository against apt-ftparchive (same fields) and real apt in an isolated root.

The repository is served over HTTP on loopback; apt runs with APT_CONFIG naming a root
of its own (lists, cache, dpkg status), installs through ``dpkg --root``, and trusts
only the keyring its deb822 source names in ``Signed-By``. Nothing touches the host's
apt configuration.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from apt_client import AptRoot
from debian import deb822
from livegraft.pipeline.errors import InputError
from livegraft.pipeline.repo import apt_repo, tree
from livegraft.pipeline.repo.advisory import Advisory
from livegraft.signing.gpg import ArchiveSigner
from repo_support import archive_signers, build_deb, http_server

NAME = "livepatch-6.1.0-56-amd64"
CVE = "CVE-2024-26581"
SUITE = "bookworm"


@pytest.fixture(scope="module")
def signers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ArchiveSigner, ...]]:
    """The archive key, both keys of a rotation, the new key alone, an unrelated key."""
    root = tmp_path_factory.mktemp("signers")
    with archive_signers(root, (1,), (1, 2), (2,), (3,)) as made:
        yield made


@pytest.fixture(scope="module")
def debs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("debs")
    enhances = f"Enhances: linux-image-{NAME.removeprefix('livepatch-')}\n"
    return {
        "v1": build_deb(out, NAME, "1", arch="amd64", extra=enhances),
        "v2": build_deb(out, NAME, "2", arch="amd64", extra=enhances),
        "client": build_deb(
            out,
            "livegraft-client",
            "0.1.0~rc1+deb12u1",
            extra="Depends: python3 (>= 3.11)\nRecommends: kmod\nHomepage: https://example.invalid\n",
            description="livegraft client\n Loads the livepatch for the running kernel.\n .\n Two.",
        ),
        "lib": build_deb(out, "libgraft1", "1:2.0-1", arch="amd64", extra="Multi-Arch: same\n"),
    }


def advisory(*files: Path) -> Advisory:
    return Advisory(
        id="LIVEGRAFT-2026-0002",
        title="livepatch level 2: netfilter",
        severity="important",
        description="Replaces nft_pipapo_walk.",
        issued=datetime(2026, 3, 1, 12, 0, tzinfo=UTC),
        cves=(CVE,),
        packages=tuple(f.name for f in files),
    )


def publish(
    root: Path,
    signer: ArchiveSigner,
    files: list[Path],
    advisories: tuple[Advisory, ...] = (),
    now: datetime | None = None,
) -> apt_repo.AptIndex:
    apt_repo.add_to_pool(root, files)
    return apt_repo.index_apt_repo(root, suite=SUITE, signer=signer, advisories=advisories, now=now)


class Apt(AptRoot):
    """An isolated apt whose one source is the repository at ``url``."""

    def __init__(self, tmp: Path, url: str, signer: ArchiveSigner) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        keyring = tmp / "archive-keyring.gpg"
        keyring.write_bytes(signer.public_keyring())
        sources = (
            f"Types: deb\nURIs: {url}/\nSuites: {SUITE}\nComponents: main\nSigned-By: {keyring}\n"
        )
        super().__init__(tmp / "aptroot", sources)

    def __call__(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run(*args, ok=ok)

    def installed(self, name: str = NAME) -> str | None:
        path = self.root / "opt" / name
        return path.read_text().strip() if path.exists() else None


def paragraphs(data: bytes | str) -> dict[str, dict[str, str]]:
    text = data.decode() if isinstance(data, bytes) else data
    return {
        p["Package"] + " " + p["Version"]: dict(p)
        for p in deb822.Packages.iter_paragraphs(text.splitlines(keepends=True), use_apt_pkg=False)
    }


def test_packages_match_apt_ftparchive(
    tmp_path: Path, signers: tuple[ArchiveSigner, ...], debs: dict[str, Path]
) -> None:
    root = tmp_path / "deb"
    pooled = apt_repo.add_to_pool(root, list(debs.values()))
    assert root / "pool/main/libg/libgraft1/libgraft1_2.0-1_amd64.deb" in pooled
    assert root / f"pool/main/l/{NAME}/{NAME}_2_amd64.deb" in pooled
    publish(root, signers[0], [])
    ours = (root / "dists" / SUITE / "main/binary-amd64/Packages").read_bytes()
    theirs = subprocess.run(
        ["apt-ftparchive", "packages", "pool"], cwd=root, capture_output=True, check=True
    ).stdout
    assert paragraphs(ours) == paragraphs(theirs)
    assert len(paragraphs(ours)) == 4
    # Field order too, stanza by stanza.
    theirs_order = {k: list(v) for k, v in paragraphs(theirs).items()}
    assert {k: list(v) for k, v in paragraphs(ours).items()} == theirs_order


def test_release_signed_with_hashes_and_by_hash(
    tmp_path: Path, signers: tuple[ArchiveSigner, ...], debs: dict[str, Path]
) -> None:
    root = tmp_path / "deb"
    now = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)
    index = publish(root, signers[0], [debs["v1"]], (advisory(debs["v1"]),), now=now)
    dist = root / "dists" / SUITE
    release = deb822.Release((dist / "Release").read_text())
    assert release["Date"] == "Fri, 01 May 2026 08:00:00 +0000"
    assert release["Valid-Until"] == "Fri, 08 May 2026 08:00:00 +0000"
    assert index.valid_until == now + timedelta(days=7)
    for key, value in {
        "Origin": "livegraft",
        "Label": "livegraft",
        "Suite": SUITE,
        "Codename": SUITE,
        "Acquire-By-Hash": "yes",
        "Architectures": "amd64",
        "Components": "main",
    }.items():
        assert release[key] == value
    names = {e["name"] for e in release["SHA256"]}
    assert {f"main/binary-amd64/Packages{ext}" for ext in ("", ".gz", ".xz")} | {
        f"main/advisories/Advisories{ext}" for ext in ("", ".gz", ".xz")
    } == names
    for entry in release["SHA256"]:
        folder = (dist / entry["name"]).parent
        assert (folder / "by-hash" / "SHA256" / entry["sha256"]).is_file()
    assert {e["name"] for e in release["MD5Sum"]} == names == {e["name"] for e in release["SHA1"]}

    keyring = tmp_path / "k.gpg"
    keyring.write_bytes(signers[0].public_keyring())
    for argv in (["InRelease"], ["Release.gpg", "Release"]):
        subprocess.run(
            ["gpgv", "--keyring", str(keyring), *argv], cwd=dist, check=True, capture_output=True
        )
    advisories = (dist / "main/advisories/Advisories").read_text()
    [stanza] = deb822.Deb822.iter_paragraphs(
        advisories.splitlines(keepends=True), use_apt_pkg=False
    )
    assert dict(stanza) == {
        "Package": NAME,
        "Version": "1",
        "Architecture": "amd64",
        "Advisory": "LIVEGRAFT-2026-0002",
        "Type": "security",
        "Severity": "important",
        "Issued": "2026-03-01T12:00:00Z",
        "CVEs": CVE,
        "Title": "livepatch level 2: netfilter",
    }


def test_apt_installs_upgrades_and_fetches_advisories(
    tmp_path: Path, signers: tuple[ArchiveSigner, ...], debs: dict[str, Path]
) -> None:
    root = tmp_path / "deb"
    publish(root, signers[0], [debs["v1"]])
    with http_server(root) as url:
        apt = Apt(tmp_path, url, signers[0])
        apt("update")
        apt("install", NAME)
        assert apt.installed() == "1"

        publish(root, signers[0], [debs["v2"]], (advisory(debs["v2"]),))
        apt.forget_lists()
        apt("update")
        advisories = apt.list_file("_main_advisories_Advisories")
        assert advisories is not None and f"CVEs: {CVE}" in advisories.read_text()
        apt("upgrade")
        assert apt.installed() == "2"
        status = (apt.root / "var/lib/dpkg/status").read_text()
        assert f"Package: {NAME}\nStatus: install ok installed" in status


def test_rotation_either_key_accepts_release_signed_by_both(
    tmp_path: Path, signers: tuple[ArchiveSigner, ...], debs: dict[str, Path]
) -> None:
    main, both, second, _ = signers
    root = tmp_path / "deb"
    publish(root, both, [debs["v1"]])
    with http_server(root) as url:
        for i, key in enumerate((main, second)):
            apt = Apt(tmp_path / f"client{i}", url, key)
            cp = apt("update")
            output = cp.stdout + cp.stderr
            # Not even a warning for the signature whose key this client lacks.
            assert "W: " not in output and "NO_PUBKEY" not in output, output
            apt("install", NAME)
            assert apt.installed() == "1"


def test_published_sources_carry_every_key_of_a_rotation_inline(
    tmp_path: Path, signers: tuple[ArchiveSigner, ...], debs: dict[str, Path]
) -> None:
    """clients/livegraft.sources as index writes it, used as it is (no keyring file): with
    both keys of a rotation inline, a Release signed by either key alone is accepted, and
    one signed by another key is not."""
    main, both, second, wrong = signers
    tree_root = tmp_path / "tree"
    root = tree_root / "deb"
    apt_repo.add_to_pool(root, [debs["v1"]])
    with http_server(tree_root) as url:
        sources = tree.sources_text(url, [SUITE], both.public_asc())
        assert sources.count("-----BEGIN PGP PUBLIC KEY BLOCK-----") == 1
        for i, key in enumerate((main, second)):
            apt_repo.index_apt_repo(root, suite=SUITE, signer=key)
            apt = AptRoot(tmp_path / f"client{i}", sources)
            cp = apt.run("update")
            assert "W: " not in cp.stdout + cp.stderr, cp.stdout + cp.stderr
            apt.run("install", NAME)
            assert (apt.root / "opt" / NAME).read_text().strip() == "1"
        apt_repo.index_apt_repo(root, suite=SUITE, signer=wrong)
        refused = AptRoot(tmp_path / "refused", sources)
        cp = refused.run("update", ok=False)
        assert "NO_PUBKEY" in cp.stdout + cp.stderr and refused.list_file("_Packages") is None


def tamper_package(root: Path) -> None:
    [deb] = (root / "pool").rglob("*.deb")
    data = bytearray(deb.read_bytes())
    data[-20] ^= 0xFF
    deb.write_bytes(bytes(data))


def tamper_index(root: Path, rel: str, old: bytes, new: bytes) -> None:
    """Change the index in every form apt could fetch it (plain, compressed, by-hash)."""
    dist = root / "dists" / SUITE
    plain = dist / rel
    text = plain.read_bytes()
    assert old in text
    text = text.replace(old, new)
    variants = apt_repo._variants(text)
    release = deb822.Release((dist / "Release").read_text())
    for entry in release["SHA256"]:
        if entry["name"].startswith(rel):
            data = variants[entry["name"].removeprefix(rel)]
            (dist / entry["name"]).write_bytes(data)
            (plain.parent / "by-hash/SHA256" / entry["sha256"]).write_bytes(data)


def unsign(root: Path) -> None:
    for name in ("InRelease", "Release.gpg"):
        (root / "dists" / SUITE / name).unlink()


@pytest.mark.parametrize(
    "case",
    [
        "tampered package",
        "tampered Packages",
        "tampered Advisories",
        "wrong key",
        "unsigned",
        "expired",
    ],
)
def test_apt_refuses(
    tmp_path: Path, signers: tuple[ArchiveSigner, ...], debs: dict[str, Path], case: str
) -> None:
    main, _, _, wrong = signers
    root = tmp_path / "deb"
    past = datetime.now(UTC) - timedelta(days=30)
    publish(
        root, main, [debs["v1"]], (advisory(debs["v1"]),), now=past if case == "expired" else None
    )
    if case == "tampered package":
        tamper_package(root)
    elif case == "tampered Packages":
        tamper_index(root, "main/binary-amd64/Packages", b"optional", b"required")
    elif case == "tampered Advisories":
        tamper_index(root, "main/advisories/Advisories", b"important", b"IMPORTANT")
    elif case == "unsigned":
        unsign(root)
    with http_server(root) as url:
        apt = Apt(tmp_path, url, wrong if case == "wrong key" else main)
        if case == "tampered package":
            apt("update")
            cp = apt("install", NAME, ok=False)
            assert apt.installed() is None
        elif case == "tampered Advisories":
            # The package indexes are fine and used; the advisory index is refused.
            cp = apt("update", ok=False)
            assert apt.list_file("_Advisories") is None
        else:
            cp = apt("update", ok=False)
            assert apt.list_file("_Packages") is None
            apt("install", NAME, ok=False)
            assert apt.installed() is None
    output = cp.stdout + cp.stderr
    # A changed index may also change size once compressed: apt checks the size first.
    mismatch = ("Hash Sum mismatch", "File has unexpected size")
    expected = {
        "tampered package": mismatch,
        "tampered Packages": mismatch,
        "tampered Advisories": mismatch,
        "wrong key": ("NO_PUBKEY",),
        "unsigned": ("is not signed",),
        "expired": ("is expired",),
    }[case]
    assert any(e in output for e in expected), output


def files_and_times(root: Path) -> list[tuple[Path, int]]:
    return sorted(
        (p.relative_to(root), p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()
    )


def test_pool_refuses_changed_bytes_bad_names_and_foreign_arch(
    tmp_path: Path, signers: tuple[ArchiveSigner, ...], debs: dict[str, Path]
) -> None:
    root = tmp_path / "deb"
    publish(root, signers[0], [debs["v1"]])
    before = files_and_times(root)
    changed = tmp_path / "changed" / debs["v1"].name
    changed.parent.mkdir()
    shutil.copy(debs["v2"], changed)
    with pytest.raises(InputError, match="exists with different bytes"):
        apt_repo.add_to_pool(root, [debs["client"], changed])
    bad = tmp_path / "bad name.deb"
    shutil.copy(debs["v2"], bad)
    with pytest.raises(InputError, match="package file name"):
        apt_repo.add_to_pool(root, [bad])
    arm = build_deb(tmp_path, "livepatch-6.1.0-56-arm64", "1", arch="arm64")
    apt_repo.add_to_pool(root, [arm])
    with pytest.raises(InputError, match="Architecture: one of amd64 or all, not arm64"):
        apt_repo.index_apt_repo(root, suite=SUITE, signer=signers[0])
    shutil.rmtree(root / "pool/main/l/livepatch-6.1.0-56-arm64")
    assert files_and_times(root) == before


def test_by_hash_keeps_the_previous_generation_only(
    tmp_path: Path, signers: tuple[ArchiveSigner, ...], debs: dict[str, Path]
) -> None:
    root = tmp_path / "deb"
    cache = tmp_path / "cache.json"
    by_hash = root / "dists" / SUITE / "main/binary-amd64/by-hash/SHA256"
    seen = []
    for key in ("v1", "v2", "client"):
        apt_repo.add_to_pool(root, [debs[key]])
        apt_repo.index_apt_repo(root, suite=SUITE, signer=signers[0], cache=cache)
        seen.append({p.name for p in by_hash.iterdir()})
    assert len(seen[0]) == 3 and len(seen[1]) == 6
    assert seen[2] == seen[2] - seen[0] and len(seen[2]) == 6
