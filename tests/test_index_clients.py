"""``livegraft index`` for real: the example's fixes for two Debian kernel builds, built,
verified in QEMU and packaged (DEB and RPM), then indexed with ``--base-url`` pointing at
a loopback HTTP server that serves the published tree.

Real clients configured from the tree alone: apt in an isolated root with
``clients/livegraft.sources`` as it is fetched from the server (the archive key is inline
in its Signed-By, so nothing else is fetched or rewritten), and dnf in an installroot
with ``clients/livegraft.repo`` as its only repository. Both install the
package for one build and see the advisories; then a new level (a sample fix's source
edited, plan/build/verify/package/index again) and both upgrade to it.

Uses the verify tests' warm cache under /tmp (header trees and kernel images), so a warm
run downloads nothing. Four QEMU boots (two builds, two levels).
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from apt_client import AptRoot
from conftest import REPO
from livegraft.pipeline.cli import main
from livegraft.pipeline.kernels.apt_source import discover_apt
from livegraft.pipeline.kernels.filters import Filters
from livegraft.pipeline.kernels.matrix import ordered
from livegraft.pipeline.verify import qemu
from livegraft.pipeline.verify.initramfs import BUSYBOX
from livegraft.signing.module_key import CERT_FILE, KEY_FILE, generate_module_key
from repo_support import http_server, kill_agents_under

CACHE = Path(tempfile.gettempdir()) / "livegraft-test-verify-cache"
MAIN = "6.1.0-56-amd64"
NEWER = "6.12.*+deb12-amd64"
DEB_NAME = f"livepatch-{MAIN}"
RPM_NAME = "kpatch-patch-6_1_0-56-amd64"
ADVISORY = "LGSA-SAMPLE-0001"

pytestmark = [
    pytest.mark.skipif(shutil.which(qemu.QEMU) is None, reason="qemu-system-x86 not installed"),
    pytest.mark.skipif(not BUSYBOX.is_file(), reason="busybox-static not installed"),
    pytest.mark.skipif(shutil.which("dnf") is None, reason="dnf is not installed"),
]


def livegraft(*argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue() + err.getvalue()


def stage(config: Path, *argv: str) -> str:
    status, output = livegraft(*argv, "--config", str(config))
    assert status == 0, f"livegraft {argv}: {output}"
    return output


def newest_612() -> str:
    found = discover_apt(Filters(uname_r=(NEWER,), flavour=("amd64",)))
    if not found:
        pytest.skip(f"the machine's apt sources offer no {NEWER}")
    return ordered(found)[-1].uname_r


@dataclass
class Published:
    """The project, and the folder `livegraft run` publishes to, served over HTTP."""

    root: Path
    config: Path
    url: str

    def pipeline(self) -> str:
        """The whole pipeline, as a user runs it: plan, build, verify, package, index,
        publish (to [publish] to) and report."""
        return stage(self.config, "run")

    def fetch(self, rel: str, dest: Path) -> Path:
        with urllib.request.urlopen(f"{self.url}/{rel}", timeout=30) as response:
            dest.write_bytes(response.read())
        return dest


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Published, str]]:
    newer = newest_612()
    root = tmp_path_factory.mktemp("index") / "project"
    root.mkdir()
    shutil.copytree(REPO / "examples" / "fixes", root / "fixes")
    shutil.copytree(REPO / "examples" / "errata", root / "errata")
    keys = root / "module-key"
    generate_module_key(keys, "tests")
    public = root / "public"
    public.mkdir()
    with http_server(public) as url:
        config = root / "livegraft.toml"
        config.write_text(
            'name = "test"\nwork_dir = "work"\nerrata = ["errata"]\nfixes = "fixes"\n'
            f'[build]\ncache = "{CACHE}"\n'
            f'[signing]\nmodule_key = "{keys / KEY_FILE}"\nmodule_cert = "{keys / CERT_FILE}"\n'
            '[packages]\nformats = ["deb", "rpm"]\n'
            f'[publish]\nto = "public"\nbase_url = "{url}"\n'
            f'[[discover]]\nfrom = "apt"\nuname_r = {json.dumps([MAIN, newer])}\n',
            encoding="utf-8",
        )
        pub = Published(public, config, url)
        yield pub, pub.pipeline()
    kill_agents_under(root)


class Apt(AptRoot):
    """An isolated apt root whose one source is the tree's clients/livegraft.sources."""

    def __init__(self, tmp: Path, pub: Published) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        sources = pub.fetch("clients/livegraft.sources", tmp / "livegraft.sources").read_text()
        # The file as published, dropped in as it is: the key is inline, no path to fill.
        assert "\nSigned-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n" in sources
        super().__init__(tmp / "aptroot", sources)

    def __call__(self, *args: str) -> str:
        cp = self.run(*args)
        return cp.stdout + cp.stderr

    def advisories(self) -> str:
        found = self.list_file("_advisories_Advisories")
        return found.read_text() if found else ""


class Dnf:
    """An installroot whose only repository file is the tree's clients/livegraft.repo."""

    def __init__(self, tmp: Path, pub: Published) -> None:
        self.root, self.home, self.repos = tmp / "installroot", tmp / "home", tmp / "repos.d"
        for d in (self.root, self.home, self.repos):
            d.mkdir(parents=True)
        (self.home / ".rpmmacros").write_text("%_dbpath /var/lib/rpm\n")
        pub.fetch("clients/livegraft.repo", self.repos / "livegraft.repo")

    def __call__(self, *args: str) -> str:
        argv = ["dnf", "--installroot", str(self.root), "--releasever", "12", "--refresh", "-y",
                f"--setopt=reposdir={self.repos}", *args]  # fmt: skip
        try:
            cp = subprocess.run(
                argv,
                env={"HOME": str(self.home), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"},
                capture_output=True, text=True, timeout=180, check=False,
            )  # fmt: skip
        finally:
            kill_agents_under(self.root)
        assert cp.returncode == 0, cp.stdout + cp.stderr
        return cp.stdout

    def version(self, name: str) -> str | None:
        cp = subprocess.run(
            ["rpm", "--root", str(self.root), "-q", "--qf", "%{VERSION}", name],
            env={"HOME": str(self.home), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        return cp.stdout if cp.returncode == 0 else None


def test_tree_layout_and_clients(published: tuple[Published, str]) -> None:
    pub, output = published
    # Two kernel builds' packages, and beside them the client's (and its apt hook, or for
    # RPM its dnf plugin).
    assert "deb  bookworm (amd64): 4 packages" in output, output
    assert "rpm  bookworm/x86_64: generation 1, 4 packages" in output, output
    # What run published is what index assembled, every file of it.
    tree = pub.config.parent / "work" / "repo"
    staged = {p.relative_to(tree) for p in tree.rglob("*") if p.is_file()}
    staged = {p for p in staged if not p.parts[0].startswith(".")}
    assert staged and all((pub.root / p).read_bytes() == (tree / p).read_bytes() for p in staged)
    for rel in (
        "keys/livegraft-archive.asc", "keys/livegraft-archive.gpg",
        "keys/livegraft-module-signing.crt", "keys/livegraft-module-signing.der",
        "deb/dists/bookworm/InRelease", "rpm/bookworm/x86_64/metalink.xml",
        "clients/livegraft.sources", "clients/livegraft.repo",
    ):  # fmt: skip
        assert (pub.root / rel).is_file(), rel
    assert (
        f"{pub.url}/rpm/bookworm/x86_64/gen-1/repodata/repomd.xml"
        in (pub.root / "rpm/bookworm/x86_64/metalink.xml").read_text()
    )
    assert (pub.root / ".livegraft/manifests.json").is_file()
    assert not (pub.root / ".livegraft/lock").exists(), "the publish lock is released"
    # Nothing new: nothing indexed, nothing put.
    status, out = livegraft("index", "--config", str(pub.config), "--json")
    assert status == 0 and json.loads(out)["changed"] is False, out
    status, out = livegraft("publish", "--config", str(pub.config), "--json")
    assert status == 0 and json.loads(out)["put"] == [], out


def test_real_clients_install_see_advisories_and_upgrade_to_a_new_level(
    published: tuple[Published, str], tmp_path: Path
) -> None:
    pub, _ = published
    apt = Apt(tmp_path / "apt", pub)
    apt("update")
    apt("install", DEB_NAME)
    assert apt.version(DEB_NAME) == "1"
    advisories = apt.advisories()
    assert f"Package: {DEB_NAME}\nVersion: 1\n" in advisories and ADVISORY in advisories

    dnf = Dnf(tmp_path / "dnf", pub)
    dnf("install", RPM_NAME)
    assert dnf.version(RPM_NAME) == "1"
    # Installed already: listed with --all.
    listed = dnf("updateinfo", "list", "--security", "--all")
    assert ADVISORY in listed and f"{RPM_NAME}-1-1.x86_64" in listed, listed

    # A new level: the sample's source changes, every stage runs again.
    source = pub.config.parent / "fixes" / ADVISORY / "livepatch.c"
    source.write_text(source.read_text() + "\n/* level 2 of the sample */\n")
    output = pub.pipeline()
    assert "rpm  bookworm/x86_64: generation 2, " in output, output
    assert re.search(r"/public: put [1-9][0-9]* objects", output), output

    apt.forget_lists()
    apt("update")
    apt("upgrade")
    assert apt.version(DEB_NAME) == "2"
    assert f"Package: {DEB_NAME}\nVersion: 2\n" in apt.advisories()
    listed = dnf("updateinfo", "list", "--security")
    assert ADVISORY in listed and f"{RPM_NAME}-2-1.x86_64" in listed, listed
    info = dnf("updateinfo", "info", ADVISORY)
    assert "Severity: Low" in info and "LIVEGRAFT-SAMPLE-0001" in info, info
    dnf("upgrade")
    assert dnf.version(RPM_NAME) == "2"
    # Level 1 stays in the pools for clients holding the previous metadata.
    assert (pub.root / f"deb/pool/main/l/{DEB_NAME}/{DEB_NAME}_1_amd64.deb").is_file()
    assert (pub.root / f"rpm/bookworm/x86_64/pool/{RPM_NAME}-1-1.x86_64.rpm").is_file()
