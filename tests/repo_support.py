"""Tiny real packages and archive keys for the repository tests, and clean-up of the agents
clients start."""

from __future__ import annotations

import functools
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from livegraft.pipeline.config import SigningSettings
from livegraft.signing import gpg
from livegraft.signing.gpg import ArchiveSigner, load_archive_signer


@contextmanager
def archive_signers(root: Path, *key_sets: tuple[int, ...]) -> Iterator[tuple[ArchiveSigner, ...]]:
    """One archive signer per key set: ``(1,)`` signs with key 1, ``(1, 2)`` with keys 1
    and 2 at once (a rotation). Keys are generated once each, numbered from 1."""
    for i in sorted({i for keys in key_sets for i in keys}):
        home = root / f"keygen{i}"
        fp = gpg.generate_key(home, f"Key {i}", f"k{i}@example.invalid")
        gpg.export_secret_key(home, fp, root / f"k{i}.asc")
        gpg.kill_agent(home)
    made = []
    try:
        for keys in key_sets:
            settings = SigningSettings(archive_keys=tuple(root / f"k{i}.asc" for i in keys))
            work = root / ("work-" + "-".join(str(i) for i in keys))
            made.append(load_archive_signer(settings, work, name="t", environ={}))
        yield tuple(made)
    finally:
        for signer in made:
            signer.close()


def build_rpm(top: Path, name: str, version: str, *, release: str = "1") -> Path:
    """A noarch RPM holding /opt/<name> (its version), with no scriptlet: an installroot
    has no /bin/sh."""
    specs = top / "SPECS"
    specs.mkdir(parents=True, exist_ok=True)
    spec = specs / f"{name}-{version}.spec"
    spec.write_text(
        f"Name: {name}\nVersion: {version}\nRelease: {release}\nSummary: {name} test package\n"
        "License: MIT\nBuildArch: noarch\n"
        f"%description\n{name} for the repository tests.\n"
        f"%install\nmkdir -p %{{buildroot}}/opt\necho {version} > %{{buildroot}}/opt/{name}\n"
        f"%files\n/opt/{name}\n"
    )
    subprocess.run(
        ["rpmbuild", "-bb", "--define", f"_topdir {top}", str(spec)],
        check=True,
        capture_output=True,
    )
    return top / "RPMS" / "noarch" / f"{name}-{version}-{release}.noarch.rpm"


def build_deb(
    out: Path,
    name: str,
    version: str,
    *,
    arch: str = "all",
    extra: str = "",
    description: str = "test package\n a package for the repository tests.",
) -> Path:
    """A .deb holding /opt/<name> (its version), made with dpkg-deb; no maintainer scripts."""
    tree = out / f"{name}_{version}.tree"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "opt").mkdir()
    (tree / "opt" / name).write_text(f"{version}\n")
    (tree / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: {arch}\n"
        "Maintainer: livegraft tests <tests@example.invalid>\nInstalled-Size: 1\n"
        f"Section: kernel\nPriority: optional\n{extra}Description: {description}\n"
    )
    # As dpkg-buildpackage names it: no epoch in the file name.
    deb = out / f"{name}_{version.split(':')[-1]}_{arch}.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(tree), str(deb)],
        check=True,
        capture_output=True,
    )
    return deb


class DnfRoot:
    """Real dnf in an empty installroot whose only repositories are the ``.repo`` text
    given; rpm's database in the root (a HOME whose .rpmmacros sets it: Debian's rpm
    keeps it in ~/.rpmdb otherwise)."""

    def __init__(self, tmp: Path, repo_file: str) -> None:
        self.root, self.home, self.repos = tmp / "installroot", tmp / "home", tmp / "repos.d"
        for d in (self.root, self.home, self.repos):
            d.mkdir(parents=True)
        (self.home / ".rpmmacros").write_text("%_dbpath /var/lib/rpm\n")
        (self.repos / "test.repo").write_text(repo_file)
        self.env = {"HOME": str(self.home), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"}

    def __call__(self, *args: str) -> str:
        """``dnf -y ARGS``, which must succeed; its output."""
        argv = ["dnf", "--installroot", str(self.root), "--releasever", "12", "--refresh", "-y",
                f"--setopt=reposdir={self.repos}", *args]  # fmt: skip
        try:
            cp = subprocess.run(
                argv, env=self.env, capture_output=True, text=True, timeout=180, check=False
            )
        finally:
            kill_agents_under(self.root)
        assert cp.returncode == 0, cp.stdout + cp.stderr
        return cp.stdout

    def installed(self) -> list[str]:
        """Every package in the root's rpm database, as name-version-release.arch (not the
        gpg-pubkey entries that importing a repository's key adds)."""
        cp = subprocess.run(
            ["rpm", "--root", str(self.root), "-qa", "--qf", "%{NEVRA}\n"],
            env=self.env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        return sorted(p for p in cp.stdout.split() if not p.startswith("gpg-pubkey-"))


def kill_agents_under(root: Path) -> None:
    """Stop every gpg-agent a client started for a keyring below ``root`` (librepo's
    per-repository ``pubring``, apt's temporary homes live elsewhere and die with gpgv)."""
    for home in root.rglob("pubring"):
        if home.is_dir():
            subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)


@contextmanager
def http_server(folder: Path) -> Iterator[str]:
    """``folder`` over HTTP on loopback, for the duration of the block."""
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass
