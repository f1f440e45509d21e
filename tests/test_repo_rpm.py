"""The RPM repository against Debian's real dnf (4.14, librepo 1.14) in an installroot.

gpgcheck=1 and repo_gpgcheck=1 throughout; the repository is reached through its
metalink. dnf runs with a HOME whose .rpmmacros puts the rpmdb where dnf looks, and
every gpg-agent librepo starts for its repository keyring is killed afterwards.
"""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from livegraft.pipeline.errors import InputError
from livegraft.pipeline.repo import rpm_repo
from livegraft.pipeline.repo.advisory import Advisory, Reference
from livegraft.signing.gpg import ArchiveSigner
from repo_support import archive_signers, build_rpm, http_server, kill_agents_under

pytestmark = pytest.mark.skipif(shutil.which("dnf") is None, reason="dnf is not installed")

NAME = "lg-demo"
CVE = "CVE-2024-26581"


@dataclass(frozen=True)
class Packages:
    v1: Path
    v2: Path
    unsigned: Path
    other_key: Path


@pytest.fixture(scope="module")
def signers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ArchiveSigner, ...]]:
    """The archive signer, a second key (rotation), and an unrelated one (the wrong key)."""
    root = tmp_path_factory.mktemp("signers")
    with archive_signers(root, (1,), (1, 2), (2,), (3,)) as made:
        yield made


@pytest.fixture(scope="module")
def packages(
    tmp_path_factory: pytest.TempPathFactory, signers: tuple[ArchiveSigner, ...]
) -> Packages:
    main, _, _, wrong = signers
    top = tmp_path_factory.mktemp("rpmbuild")
    v1, v2, unsigned = (build_rpm(top / v, NAME, v) for v in ("1", "2", "3"))
    other = build_rpm(top / "other", NAME, "4")
    for signer, files in ((main, [v1, v2]), (wrong, [other])):
        subprocess.run(
            ["rpmsign", "--addsign", *signer.rpm_macros(), *files], check=True, capture_output=True
        )
    return Packages(v1, v2, unsigned, other)


def advisory(package: Path) -> Advisory:
    return Advisory(
        id="LIVEGRAFT-2026-0002",
        title="lg-demo level 2: netfilter livepatch",
        severity="important",
        description="Replaces nft_pipapo_walk to fix a use-after-free.",
        issued=datetime(2026, 3, 1, 12, 0, tzinfo=UTC),
        cves=(CVE,),
        references=(
            Reference("https://example.invalid/LIVEGRAFT-2026-0002", "self", "LIVEGRAFT-2026-0002"),
        ),
        packages=(package.name,),
    )


class Dnf:
    """One client: an installroot, a HOME for rpm's macros, and a repos.d of its own."""

    def __init__(self, tmp: Path, repo: Path | str, *keys: ArchiveSigner, baseurl: bool = False):
        self.root = tmp / "installroot"
        self.home = tmp / "home"
        self.repos = tmp / "repos.d"
        for d in (self.root, self.home, self.repos):
            d.mkdir(parents=True)
        (self.home / ".rpmmacros").write_text("%_dbpath /var/lib/rpm\n")
        urls = []
        for i, signer in enumerate(keys):
            asc = tmp / f"key{i}.asc"
            asc.write_bytes(signer.public_asc())
            urls.append(asc.as_uri())
        url = repo.as_uri() if isinstance(repo, Path) else repo
        where = f"baseurl={url}" if baseurl else f"metalink={url}/metalink.xml"
        (self.repos / "livegraft.repo").write_text(
            f"[livegraft]\nname=livegraft\n{where}\nenabled=1\ngpgcheck=1\nrepo_gpgcheck=1\n"
            f"gpgkey={' '.join(urls)}\n"
        )

    def __call__(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [
            "dnf",
            "--installroot",
            str(self.root),
            "--releasever",
            "12",
            "--refresh",
            "-y",
            f"--setopt=reposdir={self.repos}",
            *args,
        ]
        try:
            cp = subprocess.run(
                argv,
                env={"HOME": str(self.home), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"},
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
        finally:
            kill_agents_under(self.root)
        if ok:
            assert cp.returncode == 0, cp.stdout + cp.stderr
        else:
            assert cp.returncode != 0, cp.stdout + cp.stderr
        return cp

    def installed(self) -> str | None:
        path = self.root / "opt" / NAME
        return path.read_text().strip() if path.exists() else None


def publish(
    root: Path, signer: ArchiveSigner, files: Sequence[Path], advisories: Sequence[Advisory] = ()
) -> rpm_repo.RpmIndex:
    rpm_repo.add_to_pool(root, files)
    return rpm_repo.index_rpm_repo(
        root, base_url=root.as_uri(), signer=signer, advisories=advisories
    )


def test_install_updateinfo_upgrade_through_metalink(
    tmp_path: Path, signers: tuple[ArchiveSigner, ...], packages: Packages
) -> None:
    main = signers[0]
    repo = tmp_path / "pub" / "rpm" / "bookworm" / "noarch"
    first = publish(repo, main, [packages.v1])
    assert first.generation == 1 and first.changed
    names = sorted(p.name for p in (repo / "gen-1" / "repodata").iterdir())
    assert names[-2:] == ["repomd.xml", "repomd.xml.asc"]
    kinds = ["filelists", "other", "primary", "updateinfo"]
    assert sorted(n.split("-", 1)[1] for n in names[:-2]) == [f"{k}.xml.gz" for k in kinds]
    assert all(len(n.split("-", 1)[0]) == 64 for n in names[:-2])
    primary = next((repo / "gen-1" / "repodata").glob("*-primary.xml.gz"))
    assert b'<location href="../pool/lg-demo-1-1.noarch.rpm"/>' in gzip.decompress(
        primary.read_bytes()
    )

    dnf = Dnf(tmp_path / "client", repo, main)
    dnf("install", NAME)
    assert dnf.installed() == "1"

    second = publish(repo, main, [packages.v2], [advisory(packages.v2)])
    assert (second.generation, second.advisories) == (2, 1)
    assert rpm_repo.read_metalink_url(repo / "metalink.xml").endswith("/gen-2/repodata/repomd.xml")
    listed = dnf("updateinfo", "list", "--security").stdout
    assert "LIVEGRAFT-2026-0002 Important/Sec. lg-demo-2-1.noarch" in listed
    info = dnf("updateinfo", "info", "LIVEGRAFT-2026-0002").stdout
    assert f"CVEs: {CVE}" in info
    assert "Severity: Important" in info and "Type: security" in info
    assert "Replaces nft_pipapo_walk" in info
    dnf("upgrade")
    assert dnf.installed() == "2"
    assert "LIVEGRAFT-2026-0002" in dnf("updateinfo", "list", "--installed").stdout

    # The same inputs again: no new generation, nothing rewritten.
    again = publish(repo, main, [], [advisory(packages.v2)])
    assert (again.generation, again.changed) == (2, False)


def test_baseurl_clients_use_the_top_level_repodata(
    tmp_path: Path, signers: tuple[ArchiveSigner, ...], packages: Packages
) -> None:
    """Over HTTP: for a file:// baseurl librepo takes the folder for a local cache and
    checks repomd.xml against the metalink.xml it finds there (gen-N's, not this one)."""
    main = signers[0]
    repo = tmp_path / "repo"
    publish(repo, main, [packages.v1])
    publish(repo, main, [packages.v2], [advisory(packages.v2)])
    repomd = (repo / "repodata" / "repomd.xml").read_text()
    [primary] = re.findall(r'href="repodata/([0-9a-f]{64}-primary.xml.gz)"', repomd)
    text = gzip.decompress((repo / "repodata" / primary).read_bytes())
    assert b'<location href="pool/lg-demo-2-1.noarch.rpm"/>' in text
    with http_server(repo) as url:
        dnf = Dnf(tmp_path / "client", url, main, baseurl=True)
        dnf("install", NAME)
        assert dnf.installed() == "2"
        assert CVE in dnf("updateinfo", "info", "--installed").stdout


def test_rotation_either_key_accepts_metadata_signed_by_both(
    tmp_path: Path, signers: tuple[ArchiveSigner, ...], packages: Packages
) -> None:
    main, both, second, _ = signers
    repo = tmp_path / "repo"
    publish(repo, both, [packages.v1])
    for i, client_key in enumerate((main, second)):
        dnf = Dnf(tmp_path / f"client{i}", repo, client_key)
        dnf("makecache")
    # Packages carry one signature (the first key's): a client holding only the new key
    # learns the old one from the .repo during the overlap.
    dnf = Dnf(tmp_path / "client-install", repo, second, main)
    dnf("install", NAME)
    assert dnf.installed() == "1"


def tamper_package(repo: Path, _: ArchiveSigner) -> None:
    pkg = repo / "pool" / "lg-demo-1-1.noarch.rpm"
    data = bytearray(pkg.read_bytes())
    data[-10] ^= 0xFF
    pkg.write_bytes(bytes(data))


def tamper_repomd(repo: Path, signer: ArchiveSigner) -> None:
    """Change repomd.xml and sign it again with the right key: only the metalink's hash
    can tell."""
    repomd = repo / "gen-1" / "repodata" / "repomd.xml"
    text = repomd.read_bytes().replace(b"<revision>", b"<revision>1")
    repomd.write_bytes(text)
    (repomd.parent / "repomd.xml.asc").write_bytes(signer.detach_sign(text))


def unsign_repomd(repo: Path, _: ArchiveSigner) -> None:
    (repo / "gen-1" / "repodata" / "repomd.xml.asc").unlink()


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        (tamper_package, "lg-demo-1-1.noarch.rpm: Downloading successful, but checksum doesn't"),
        (tamper_repomd, "checksum doesn't match"),
        (unsign_repomd, "GPG verification is enabled, but GPG signature is not available"),
        ("wrong key", "repomd.xml GPG signature verification error: Bad GPG signature"),
        ("unsigned package", "lg-demo-3-1.noarch.rpm is not signed"),
        ("package by another key", "Public key for lg-demo-4-1.noarch.rpm is not installed"),
    ],
    ids=[
        "tampered-package",
        "tampered-repomd",
        "unsigned-repomd",
        "wrong-key",
        "unsigned-package",
        "package-other-key",
    ],
)
def test_dnf_refuses(
    tmp_path: Path,
    signers: tuple[ArchiveSigner, ...],
    packages: Packages,
    case: object,
    expected: str,
) -> None:
    main, _, _, wrong = signers
    repo = tmp_path / "repo"
    package = {"unsigned package": packages.unsigned, "package by another key": packages.other_key}
    publish(repo, main, [package.get(str(case), packages.v1)])
    client_key = wrong if case == "wrong key" else main
    if callable(case):
        case(repo, main)
    dnf = Dnf(tmp_path / "client", repo, client_key)
    cp = dnf("install", NAME, ok=False)
    assert dnf.installed() is None
    assert expected in cp.stdout + cp.stderr, cp.stdout + cp.stderr
    if case is tamper_repomd:
        assert "Cannot download repomd.xml" in cp.stdout + cp.stderr


def test_pool_refuses_changed_bytes_and_bad_names(
    tmp_path: Path, signers: tuple[ArchiveSigner, ...], packages: Packages
) -> None:
    main = signers[0]
    repo = tmp_path / "repo"
    publish(repo, main, [packages.v1])
    before = sorted(p.relative_to(repo) for p in repo.rglob("*"))
    changed = tmp_path / "changed" / packages.v1.name
    changed.parent.mkdir()
    changed.write_bytes(packages.v1.read_bytes() + b"\0")
    with pytest.raises(InputError, match="exists with different bytes"):
        rpm_repo.add_to_pool(repo, [packages.v2, changed])
    bad = tmp_path / "bad name.rpm"
    shutil.copy(packages.v2, bad)
    with pytest.raises(InputError, match="package file name"):
        rpm_repo.add_to_pool(repo, [bad])
    # The same NEVRA under a second file name.
    shutil.copy(packages.v1, repo / "pool" / "lg-demo-1-copy.noarch.rpm")
    with pytest.raises(InputError, match=r"lg-demo-1-1\.noarch is also"):
        rpm_repo.index_rpm_repo(repo, base_url=repo.as_uri(), signer=main)
    (repo / "pool" / "lg-demo-1-copy.noarch.rpm").unlink()
    assert sorted(p.relative_to(repo) for p in repo.rglob("*")) == before


def test_keeps_recent_generations_and_the_previous_top_level_files(
    tmp_path: Path, signers: tuple[ArchiveSigner, ...], packages: Packages
) -> None:
    main = signers[0]
    repo = tmp_path / "repo"
    cache = tmp_path / "cache.json"
    for i, pkg in enumerate([packages.v1, packages.v2, packages.unsigned, packages.other_key]):
        rpm_repo.add_to_pool(repo, [pkg])
        rpm_repo.index_rpm_repo(
            repo, base_url="https://example.invalid/rpm/x", signer=main, cache=cache, keep=2
        )
        assert (repo / f"gen-{i + 1}").is_dir()
    assert sorted(p.name for p in repo.glob("gen-*")) == ["gen-3", "gen-4"]
    assert rpm_repo.read_metalink_url(repo / "metalink.xml") == (
        "https://example.invalid/rpm/x/gen-4/repodata/repomd.xml"
    )
    primaries = list((repo / "repodata").glob("*-primary.xml.gz"))
    assert len(primaries) == 2  # the current one and the one a client may have just read
    with pytest.raises(InputError, match="base_url"):
        rpm_repo.index_rpm_repo(repo, base_url="example.invalid/rpm", signer=main)
