"""Publishing to a real S3 store (SeaweedFS on loopback) read by real clients.

A small real repository (DEBs and RPMs, indexed and signed by the real indexers) at level
1 and level 2, with its base URL the bucket's plain-HTTP address. Level 1 is published;
then, for every k from 1 to the number of writes a level-2 publish makes, a real
``livegraft publish`` process is SIGKILLed right after its k-th object write, and real
``apt-get update && apt-get install`` and ``dnf install`` (in isolated roots) must succeed
and see the whole old or the whole new generation, as the store's roots say; publishing
again completes level 2 and both clients upgrade to it. Also: two publishers at once.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from livegraft.pipeline.config import SigningSettings
from livegraft.pipeline.package.records import PackageRecord, advisories
from livegraft.pipeline.publish.publisher import LOCK, MANIFESTS, Publisher, scan
from livegraft.pipeline.publish.s3_store import S3Location, S3Options, S3Store
from livegraft.pipeline.repo import tree
from livegraft.signing.gpg import ArchiveSigner
from livegraft.signing.module_key import load_module_key
from package_factory import write_deb
from project import make_project
from repo_support import archive_signers, build_rpm
from seaweed import SeaweedFS
from test_index_clients import Apt, Dnf, Published
from test_index_tree import record

pytestmark = [
    pytest.mark.skipif(shutil.which("dnf") is None, reason="dnf is not installed"),
    pytest.mark.skipif(shutil.which("apt-get") is None, reason="apt-get is not installed"),
]

DIST = "bookworm"
# A '+' in a key, as Debian kernel ABI names have: both clients must fetch it.
DEB = "livepatch-6.12.117+deb12-amd64"
DEB_OTHER = "livepatch-6.1.0-56-amd64"
RPM_PREFIX = "kpatch-patch-t"
RPM = f"{RPM_PREFIX}-00001"
SUITE = f"deb/dists/{DIST}"
METALINK = f"rpm/{DIST}/x86_64/metalink.xml"

# Runs the real CLI in a child process whose S3 puts are counted (one at a time, so that
# "after the k-th write" is exact) and which SIGKILLs itself right after the k-th; the
# product code is untouched. k = 0 never kills: it counts a whole publish's writes.
CHILD = """
import os, signal, sys, threading
from livegraft.pipeline.cli import main
from livegraft.pipeline.publish import s3_store

limit, log = int(sys.argv[1]), sys.argv[2]
guard = threading.Lock()
count = 0
real_put = s3_store.S3Store.put

def put(self, key, data, **kw):
    global count
    with guard:
        info = real_put(self, key, data, **kw)
        count += 1
        with open(log, "a") as f:
            f.write(key + "\\n")
        if count == limit:
            os.kill(os.getpid(), signal.SIGKILL)
        return info

s3_store.S3Store.put = put
sys.exit(main(sys.argv[3:]))
"""


@dataclass
class Bucket:
    server: SeaweedFS
    name: str
    prefix: str
    config: Path

    @property
    def url(self) -> str:
        return f"{self.server.endpoint}/{self.name}/{self.prefix}"

    @property
    def dest(self) -> str:
        return f"s3://{self.name}/{self.prefix}"

    def store(self) -> S3Store:
        return S3Store(
            S3Location(self.name, self.prefix), S3Options(endpoint_url=self.server.endpoint)
        )

    def env(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        return {**base, **self.server.env()}

    def argv(self, tree_dir: Path) -> list[str]:
        return ["publish", "--config", str(self.config), "--from", str(tree_dir), "--to",
                self.dest, "--endpoint", self.server.endpoint, "--addressing", "path"]  # fmt: skip

    def publish(self, tree_dir: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "livegraft.pipeline.cli", *self.argv(tree_dir)],
            capture_output=True, text=True, check=False, env=self.env(), timeout=300,
        )  # fmt: skip

    def crash_after(self, k: int, tree_dir: Path, log: Path) -> subprocess.CompletedProcess[str]:
        log.unlink(missing_ok=True)
        return subprocess.run(
            [sys.executable, "-c", CHILD, str(k), str(log), *self.argv(tree_dir)],
            capture_output=True, text=True, check=False, env=self.env(), timeout=300,
        )  # fmt: skip

    def wipe(self) -> None:
        client = self.server.client()
        keys = [
            item["Key"]
            for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=self.name, Prefix=f"{self.prefix}/"
            )
            for item in page.get("Contents", [])
        ]
        for key in keys:
            client.delete_object(Bucket=self.name, Key=key)

    def get(self, key: str) -> bytes | None:
        return self.store().get(key)


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArchiveSigner]:
    with archive_signers(tmp_path_factory.mktemp("key"), (1,)) as (signer,):
        yield signer


@pytest.fixture(scope="module")
def bucket(seaweedfs: SeaweedFS, tmp_path_factory: pytest.TempPathFactory) -> Bucket:
    name = f"clients-{uuid.uuid4().hex[:10]}"
    seaweedfs.create_bucket(name)
    config = make_project(tmp_path_factory.mktemp("project") / "p")
    return Bucket(seaweedfs, name, "lg", config)


def _assemble(
    out: Path, records: list[PackageRecord], signer: ArchiveSigner, der: bytes, url: str
) -> None:
    tree.assemble_tree(
        out,
        records=records,
        fixes=advisories(records),
        signer=signer,
        archive_asc=signer.public_asc(),
        archive_keyring=signer.public_keyring(),
        module_cert_der=der,
        base_url=url,
        state_dir=out.parent / f"{out.name}-state",
    )


@dataclass
class Levels:
    one: Path
    two: Path


def build_levels(root: Path, signer: ArchiveSigner, url: str, extra_debs: int = 0) -> Levels:
    """Level 1 (two DEBs, two RPMs), then level 2 of one of each, as index leaves them."""
    pkgs = root / "packages"
    (pkgs / "deb").mkdir(parents=True)
    (pkgs / "rpm").mkdir()
    der = load_module_key(SigningSettings(), root / "modkey", name="t", environ={}).cert_der()
    # Whole rpmbuild packages: package_factory's renamed copies do not install.
    rpms = [build_rpm(pkgs / f"rpmbuild-{n}-{v}", n, v)
            for n, v in ((RPM, "1"), (f"{RPM_PREFIX}-00002", "1"), (RPM, "2"))]  # fmt: skip
    # dnf checks package signatures (gpgcheck=1), as the package stage signs them.
    subprocess.run(
        ["rpmsign", "--addsign", *signer.rpm_macros(), *map(str, rpms)],
        check=True, capture_output=True,
    )  # fmt: skip
    one = [
        record(write_deb(pkgs / "deb", DEB, "1"), "deb", DEB, 1, []),
        record(write_deb(pkgs / "deb", DEB_OTHER, "1"), "deb", DEB_OTHER, 1, []),
        record(rpms[0], "rpm", RPM, 1, []),
        record(rpms[1], "rpm", f"{RPM_PREFIX}-00002", 1, []),
    ]
    for i in range(extra_debs):
        name = f"livepatch-6.1.0-{i:05d}-amd64"
        one.append(record(write_deb(pkgs / "deb", name, "1"), "deb", name, 1, []))
    two = [
        record(write_deb(pkgs / "deb", DEB, "2"), "deb", DEB, 2, []),
        record(rpms[2], "rpm", RPM, 2, []),
    ]
    levels = Levels(root / "one", root / "two")
    _assemble(levels.one, one, signer, der, url)
    shutil.copytree(levels.one, levels.two)
    shutil.copytree(root / "one-state", root / "two-state")
    _assemble(levels.two, one + two, signer, der, url)
    return levels


def fresh_clients(tmp: Path, levels: Levels, url: str) -> tuple[Apt, Dnf]:
    # The client files and keys are the same at both levels (and published at level 1).
    pub = Published(levels.one, Path("unused"), url)
    return Apt(tmp / "apt", pub), Dnf(tmp / "dnf", pub)


def install_both(apt: Apt, dnf: Dnf) -> tuple[str | None, str | None]:
    apt("update")
    apt("install", DEB)
    dnf("makecache")
    dnf("install", RPM)
    return apt.version(DEB), dnf.version(RPM)


@pytest.fixture(autouse=True)
def publisher_credentials(bucket: Bucket, monkeypatch: pytest.MonkeyPatch) -> None:
    """For the test's own look at the store (the CLI gets them in its environment)."""
    for key, value in bucket.server.env().items():
        monkeypatch.setenv(key, value)


def test_crash_after_every_write_real_clients(
    bucket: Bucket, signer: ArchiveSigner, tmp_path: Path
) -> None:
    levels = build_levels(tmp_path / "trees", signer, bucket.url)
    in_release = {
        (levels.one / SUITE / "InRelease").read_bytes(): "1",
        (levels.two / SUITE / "InRelease").read_bytes(): "2",
    }
    metalink = {
        (levels.one / METALINK).read_bytes(): "1",
        (levels.two / METALINK).read_bytes(): "2",
    }
    assert len(in_release) == len(metalink) == 2

    def level_one() -> None:
        bucket.wipe()
        Publisher(bucket.store()).publish(scan(levels.one))

    # How many writes a whole level-2 publish over level 1 makes, and which.
    level_one()
    log = tmp_path / "writes"
    counted = bucket.crash_after(0, levels.two, log)
    assert counted.returncode == 0, counted.stderr
    writes = log.read_text().splitlines()
    assert writes[0] == ".livegraft/lock" and writes[-1] == MANIFESTS
    assert f"{SUITE}/InRelease" in writes

    started = time.monotonic()
    held = 0
    seen: dict[str, int] = {}
    for k in range(1, len(writes) + 1):
        level_one()
        crash = bucket.crash_after(k, levels.two, log)
        assert crash.returncode == -9, (k, crash.returncode, crash.stderr)
        assert len(log.read_text().splitlines()) == k
        # What the store's roots say now; each client must see exactly that generation.
        apt_expected = in_release[bucket.get(f"{SUITE}/InRelease") or b""]
        dnf_expected = metalink[bucket.get(METALINK) or b""]
        apt, dnf = fresh_clients(tmp_path / f"k{k}", levels, bucket.url)
        got = install_both(apt, dnf)
        assert got == (apt_expected, dnf_expected), (k, writes[k - 1], got)
        seen[f"apt{got[0]} dnf{got[1]}"] = seen.get(f"apt{got[0]} dnf{got[1]}", 0) + 1
        # The killed publisher's lock stays behind; the next run on this machine sees its
        # process is gone and takes it over.
        assert bucket.get(LOCK) is not None
        again = bucket.publish(levels.two)
        assert again.returncode == 0, (k, again.stderr)
        assert "its process is gone" in again.stdout, (k, again.stdout)
        apt.forget_lists()
        apt("update")
        apt("install", DEB)
        dnf("upgrade", RPM)
        assert (apt.version(DEB), dnf.version(RPM)) == ("2", "2"), k
        held += 1
        shutil.rmtree(tmp_path / f"k{k}")
    elapsed = time.monotonic() - started
    print("\nwrites of a level-2 publish:", *(f"{i}:{w}" for i, w in enumerate(writes, 1)))
    print(f"crash points tried: {len(writes)}, held: {held} ({elapsed:.0f} s; {seen})")
    assert held == len(writes) >= 15
    # Both generations were seen: the roots move somewhere in the middle.
    assert "apt1 dnf1" in seen and "apt2 dnf2" in seen


def test_two_publishers_at_once(bucket: Bucket, signer: ArchiveSigner, tmp_path: Path) -> None:
    lock_bucket = Bucket(bucket.server, bucket.name, "race", bucket.config)
    # Enough packages that a publish lasts well beyond the two processes' start-up jitter.
    levels = build_levels(tmp_path / "trees", signer, lock_bucket.url, extra_debs=400)
    cmd = [sys.executable, "-m", "livegraft.pipeline.cli",
           *lock_bucket.argv(levels.one), "--jobs", "1"]  # fmt: skip
    procs = [
        subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=lock_bucket.env()
        )
        for _ in range(2)
    ]
    results: list[tuple[subprocess.Popen[str], int, str]] = []
    for p in procs:
        _, err = p.communicate(timeout=300)
        results.append((p, p.returncode, err))
    assert sorted(r[1] for r in results) == [0, 1], [(r[1], r[2]) for r in results]
    winner = next(r[0] for r in results if r[1] == 0)
    loser_err = next(r[2] for r in results if r[1] == 1)
    assert loser_err.count("\n") == 1, loser_err
    assert "another publish holds the lock" in loser_err, loser_err
    assert f":{winner.pid} since " in loser_err, loser_err
    store = lock_bucket.store()
    assert store.head(LOCK) is None
    manifests: Any = store.get(MANIFESTS)
    assert manifests is not None and manifests.count(b'"name"') == 1
    apt, _ = fresh_clients(tmp_path / "clients", levels, lock_bucket.url)
    apt("update")
    apt("install", DEB, "livepatch-6.1.0-00399-amd64")
    assert apt.version(DEB) == "1" and apt.version("livepatch-6.1.0-00399-amd64") == "1"
