"""Publishing: content before indexes before roots, nothing rewritten, one publisher at a
time, old generations collected from manifests; on a folder and on real S3 (SeaweedFS)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from livegraft.pipeline.errors import WorkError
from livegraft.pipeline.publish.folder_store import FolderStore
from livegraft.pipeline.publish.layout import Kind, kind_of
from livegraft.pipeline.publish.publisher import LOCK, Publisher, scan
from livegraft.pipeline.publish.s3_store import S3Location, S3Options, S3Store
from livegraft.pipeline.publish.storage import Storage, sha256_hex
from seaweed import ACCESS_KEY, SECRET_KEY, SeaweedFS

SUITE = "deb/dists/bookworm"
RPM = "rpm/bookworm/x86_64"


def write_tree(root: Path, level: int) -> Path:
    """A tree shaped like livegraft index's, with small stand-in files."""
    name = "livepatch-6.12.117+deb12-amd64"
    deb = f"deb/pool/main/l/{name}/{name}_{level}_amd64.deb"
    packages = f"Package: livepatch\nVersion: {level}\nFilename: {deb}\n".encode()
    files = {
        deb: f"deb level {level}".encode(),
        f"{RPM}/pool/kpatch-patch-6_1_0-56-amd64-{level}-1.x86_64.rpm": f"rpm {level}".encode(),
        f"{SUITE}/main/binary-amd64/Packages": packages,
        f"{SUITE}/main/binary-amd64/by-hash/SHA256/{sha256_hex(packages)}": packages,
        f"{SUITE}/Release": f"Release {level}".encode(),
        f"{SUITE}/Release.gpg": f"sig {level}".encode(),
        f"{SUITE}/InRelease": f"InRelease {level}".encode(),
        f"{RPM}/gen-{level}/repodata/repomd.xml": f"repomd {level}".encode(),
        f"{RPM}/gen-{level}/repodata/{'a' * 64}-primary.xml.gz": f"primary {level}".encode(),
        f"{RPM}/metalink.xml": f"metalink -> gen-{level}".encode(),
        "keys/livegraft-archive.asc": b"key",
        "clients/livegraft.sources": b"Types: deb\n",
    }
    for key, data in files.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
    return root


class Recording:
    """A store that remembers the order of writes (and can fail after k of them)."""

    def __init__(self, inner: Storage, fail_after: int | None = None) -> None:
        self.inner = inner
        self.puts: list[str] = []
        self.fail_after = fail_after

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def put(self, key: str, data: bytes, **kw: object) -> object:
        if self.fail_after is not None and len(self.puts) >= self.fail_after:
            raise WorkError("injected: store went away")
        result = self.inner.put(key, data, **kw)  # type: ignore[arg-type]
        self.puts.append(key)
        return result


StoreFactory = Callable[[str], Storage]


@pytest.fixture(params=["folder", "s3"])
def stores(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> StoreFactory:
    """A new, empty store per call: a folder, or a prefix of a new bucket."""
    if request.param == "folder":
        return lambda name: FolderStore(tmp_path / "published" / name)
    server: SeaweedFS = request.getfixturevalue("seaweedfs")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    bucket = f"pub-{uuid.uuid4().hex[:12]}"
    server.create_bucket(bucket)
    return lambda name: S3Store(S3Location(bucket, name), S3Options(endpoint_url=server.endpoint))


@pytest.fixture
def store(stores: StoreFactory) -> Storage:
    return stores("repo")


def test_order_content_then_indexes_then_roots(store: Storage, tmp_path: Path) -> None:
    objects = scan(write_tree(tmp_path / "tree", 1))
    recording = Recording(store)
    report = Publisher(recording).publish(objects)  # type: ignore[arg-type]
    published = [k for k in recording.puts if not k.startswith(".livegraft/")]
    assert sorted(published) == sorted(o.key for o in objects)
    kinds = [kind_of(k) for k in published]
    assert kinds == sorted(kinds), "content, then indexes, then roots"
    roots = [k for k in published if kind_of(k) is Kind.ROOT]
    assert roots[-1] == f"{SUITE}/InRelease"
    assert roots.index(f"{SUITE}/Release") < roots.index(f"{SUITE}/Release.gpg")
    assert len(report.put) == len(objects)
    for obj in objects:
        head = store.head(obj.key)
        assert head is not None and head.sha256 == obj.sha256
    assert store.head(LOCK) is None, "the lock is released"


def test_republish_puts_nothing(store: Storage, tmp_path: Path) -> None:
    objects = scan(write_tree(tmp_path / "tree", 1))
    Publisher(store).publish(objects)
    again = Publisher(store).publish(objects)
    assert again.put == [] and len(again.skipped) == len(objects)


def test_new_level_writes_only_what_changed(store: Storage, tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "tree", 1)
    Publisher(store).publish(scan(tree))
    write_tree(tree, 2)  # level 2 beside level 1's pool files, new roots
    report = Publisher(store).publish(scan(tree))
    assert all("_1_amd64.deb" not in k and "-1-1.x86_64" not in k for k in report.put)
    assert f"{SUITE}/InRelease" in report.put and report.put[-1] == f"{SUITE}/InRelease"


def test_changed_content_is_refused_and_roots_stay(store: Storage, tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "tree", 1)
    Publisher(store).publish(scan(tree))
    pool = next(tree.glob("deb/pool/**/*.deb"))
    pool.write_bytes(b"other bytes, same name")
    (tree / SUITE / "InRelease").write_bytes(b"InRelease naming the other bytes")
    with pytest.raises(WorkError, match="published content never changes"):
        Publisher(store).publish(scan(tree))
    assert store.get(f"{SUITE}/InRelease") == b"InRelease 1"
    assert store.head(LOCK) is None


def test_content_there_but_unrecorded_is_compared_when_the_create_is_refused(
    store: Storage, tmp_path: Path
) -> None:
    tree = write_tree(tmp_path / "tree", 1)
    deb = next(o for o in scan(tree) if o.key.endswith(".deb"))
    # Left by a publish that crashed before its manifest: the same bytes are fine ...
    store.put(deb.key, deb.path.read_bytes(), content_type="x", cache_control="x")
    Publisher(store).publish(scan(tree))
    assert store.get(f"{SUITE}/InRelease") == b"InRelease 1"
    # ... other bytes under a content name are refused before any root moves.
    other = write_tree(tmp_path / "other", 2)
    rpm = next(o for o in scan(other) if o.key.endswith(".rpm"))
    store.put(rpm.key, b"someone else's bytes", content_type="x", cache_control="x")
    with pytest.raises(WorkError, match=f"{re.escape(rpm.key)} exists with other content"):
        Publisher(store).publish(scan(other))
    assert store.get(f"{SUITE}/InRelease") == b"InRelease 1"


def test_the_manifest_is_trusted_and_recheck_looks_again(store: Storage, tmp_path: Path) -> None:
    objects = scan(write_tree(tmp_path / "tree", 1))
    Publisher(store).publish(objects)
    deb = next(o for o in objects if o.key.endswith(".deb"))
    store.delete(deb.key)  # by other hands: a publish cannot know without looking
    assert Publisher(store).publish(objects).put == []
    fixed = Publisher(store, recheck=True).publish(objects)
    assert fixed.put == [deb.key] and store.get(deb.key) == deb.path.read_bytes()


class Unconfirmed:
    """A store whose put answers vouch for nothing (S3 with SSE-KMS: the ETag is not the
    MD5), and which may keep other bytes than it was sent."""

    def __init__(self, inner: Storage, corrupt: str | None = None) -> None:
        self.inner = inner
        self.corrupt = corrupt
        self.heads: list[str] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def put(self, key: str, data: bytes, **kw: object) -> object:
        if self.corrupt and key.endswith(self.corrupt):
            data = data[:-1]
        info = self.inner.put(key, data, **kw)  # type: ignore[arg-type]
        return dataclasses.replace(info, confirmed=False)

    def head(self, key: str) -> object:
        self.heads.append(key)
        return self.inner.head(key)


def test_unconfirmed_writes_are_read_back(store: Storage, tmp_path: Path) -> None:
    objects = scan(write_tree(tmp_path / "tree", 1))
    content = {o.key for o in objects if o.kind is Kind.CONTENT}
    honest = Unconfirmed(store)
    Publisher(honest).publish(objects)  # type: ignore[arg-type]
    assert content <= set(honest.heads), "each written content object read back"
    lying = Unconfirmed(stores_for(store, tmp_path), corrupt=".deb")
    with pytest.raises(WorkError, match=r"\.deb is not in the store as written"):
        Publisher(lying).publish(objects)  # type: ignore[arg-type]
    assert lying.inner.get(f"{SUITE}/InRelease") is None, "no root moved"


def stores_for(store: Storage, tmp_path: Path) -> Storage:
    """An empty store of the same kind as ``store``."""
    if isinstance(store, FolderStore):
        return FolderStore(tmp_path / "second")
    assert isinstance(store, S3Store)
    return S3Store(S3Location(store.location.bucket, "second"), store.options)


def test_crash_at_every_write_leaves_a_whole_generation(
    stores: StoreFactory, tmp_path: Path
) -> None:
    one = scan(write_tree(tmp_path / "one", 1))
    two = scan(write_tree(tmp_path / "two", 2))
    # The publish of level 2 into a level-1 repository, stopped after its k-th write.
    full = Recording(stores("count"))
    Publisher(full).publish(one)  # type: ignore[arg-type]
    full.puts.clear()
    Publisher(full).publish(two)  # type: ignore[arg-type]
    writes = len(full.puts)
    held = 0
    for k in range(1, writes):
        store = stores(f"crash-{k}")
        Publisher(store).publish(one)
        with pytest.raises(WorkError, match="injected"):
            Publisher(Recording(store, fail_after=k)).publish(two)  # type: ignore[arg-type]
        seen = store.get(f"{SUITE}/InRelease")
        generation = one if seen == b"InRelease 1" else two
        assert seen in (b"InRelease 1", b"InRelease 2")
        # Whatever the roots say, everything of that generation is there.
        assert all(store.head(o.key) is not None for o in generation if o.kind is Kind.CONTENT)
        assert store.head(LOCK) is None, "a publish that failed released its lock"
        Publisher(store).publish(two)
        assert store.get(f"{SUITE}/InRelease") == b"InRelease 2"
        assert store.get(f"{RPM}/metalink.xml") == b"metalink -> gen-2"
        held += 1
    print(f"crash points tried: {writes - 1}, held: {held}")
    assert held == writes - 1 >= 10


def test_one_publisher_at_a_time(store: Storage, tmp_path: Path) -> None:
    objects = scan(write_tree(tmp_path / "tree", 1))
    first = Publisher(store)
    first.acquire()
    with pytest.raises(WorkError, match="another publish holds the lock"):
        Publisher(store).publish(objects)
    first.release()
    # A lock whose publisher died is taken over once it expired.
    first.acquire()
    later = datetime.now(UTC) + timedelta(hours=2)
    Publisher(store, now=lambda: later).publish(objects)
    assert store.head(LOCK) is None


def test_old_generations_collected_from_manifests(store: Storage, tmp_path: Path) -> None:
    one = scan(write_tree(tmp_path / "one", 1))
    two = scan(write_tree(tmp_path / "two", 2))
    start = datetime.now(UTC)
    Publisher(store, now=lambda: start).publish(one)
    kept = Publisher(store, now=lambda: start + timedelta(hours=1)).publish(two)
    assert kept.deleted == [], "level 1 is younger than the retention: kept"
    level1_deb = next(o.key for o in one if o.key.endswith(".deb"))
    assert store.head(level1_deb) is not None
    dry = Publisher(store, now=lambda: start + timedelta(days=3)).publish(two, dry_run=True)
    assert level1_deb in dry.deleted and store.head(level1_deb) is not None
    gone = Publisher(store, now=lambda: start + timedelta(days=3)).publish(two)
    assert level1_deb in gone.deleted and store.head(level1_deb) is None
    assert all(store.head(o.key) is not None for o in two)


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "livegraft.pipeline.cli", "publish", *args],
        capture_output=True, text=True, check=False, env=env,
    )  # fmt: skip


def test_cli_to_s3_and_its_errors(seaweedfs: SeaweedFS, tmp_path: Path) -> None:

    from project import make_project

    config = make_project(tmp_path / "project")
    tree = write_tree(tmp_path / "tree", 1)
    seaweedfs.create_bucket("cli")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    good = {**env, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    common = ["--config", str(config), "--from", str(tree), "--endpoint", seaweedfs.endpoint]
    dry = _cli(*common, "--to", "s3://cli/prefix", "--dry-run", "--json", env=good)
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["bytes_put"] == sum(o.size for o in scan(tree))
    done = _cli(*common, "--to", "s3://cli/prefix", "--json", env=good)
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["put"]) == len(scan(tree))
    # Anonymous clients read it over plain HTTP.
    import urllib.request

    url = f"{seaweedfs.endpoint}/cli/prefix/{SUITE}/InRelease"
    with urllib.request.urlopen(url) as resp:
        assert resp.read() == b"InRelease 1"

    wrong = _cli(*common, "--to", "s3://cli/prefix",
                 env={**good, "AWS_SECRET_ACCESS_KEY": "wrong-secret-value"})  # fmt: skip
    assert wrong.returncode == 2 and "credentials" in wrong.stderr
    assert "wrong-secret-value" not in wrong.stderr and wrong.stderr.count("\n") == 1
    missing = _cli(*common, "--to", "s3://no-such-bucket/prefix", env=good)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    down = _cli("--config", str(config), "--from", str(tree), "--endpoint",
                "http://127.0.0.1:9", "--to", "s3://cli/prefix", env=good)  # fmt: skip
    assert down.returncode == 1 and "unreachable" in down.stderr


def test_retention_counts_from_when_a_generation_was_replaced(
    store: Storage, tmp_path: Path
) -> None:
    one = scan(write_tree(tmp_path / "one", 1))
    two = scan(write_tree(tmp_path / "two", 2))
    start = datetime.now(UTC)
    Publisher(store, now=lambda: start).publish(one)
    # Nothing new for five days: the same generation, not one per publish.
    recording = Recording(store)
    quiet = Publisher(recording, now=lambda: start + timedelta(days=2)).publish(one)  # type: ignore[arg-type]
    assert quiet.put == [] and recording.puts == [LOCK], "a no-op publish writes only the lock"
    # Level 1 is five days old but was current until now: clients may hold its metadata.
    replaced = start + timedelta(days=5)
    level1_only = {o.key for o in one} - {o.key for o in two}
    report = Publisher(store, now=lambda: replaced).publish(two)
    assert report.deleted == [] and all(store.head(k) is not None for k in level1_only)
    later = Publisher(store, now=lambda: replaced + timedelta(hours=49)).publish(two)
    assert sorted(later.deleted) == sorted(level1_only)
    assert all(store.head(k) is None for k in level1_only)
    manifests = json.loads(store.get(".livegraft/manifests.json") or b"{}")
    assert len(manifests["generations"]) == 1


def test_run_refuses_a_bucket_without_a_base_url_before_any_work(tmp_path: Path) -> None:
    from project import make_project

    config = make_project(tmp_path / "project")
    cp = subprocess.run(
        [sys.executable, "-m", "livegraft.pipeline.cli", "run", "--config", str(config),
         "--to", "s3://bucket/prefix"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert cp.returncode == 2, cp.stderr
    assert cp.stderr.count("\n") == 1 and "publish.base_url" in cp.stderr, cp.stderr
    assert not any((tmp_path / "project").rglob("plan.json")), "nothing planned"


def test_a_tree_indexed_for_another_place_is_refused(tmp_path: Path) -> None:
    from livegraft.pipeline.repo.tree import repo_text, sources_text
    from project import make_project

    config = make_project(tmp_path / "project")
    tree = write_tree(tmp_path / "tree", 1)
    served = tmp_path / "served"
    url = served.resolve().as_uri()
    # A stand-in key block: what is read back is the URIs line.
    key = b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nstand-in\n-----END PGP PUBLIC KEY BLOCK-----\n"
    (tree / "clients/livegraft.sources").write_text(sources_text(url, ["bookworm"], key))
    (tree / "clients/livegraft.repo").write_text(repo_text(url, [("bookworm", "x86_64")]))
    common = ["--config", str(config), "--from", str(tree)]
    elsewhere = _cli(*common, "--to", str(tmp_path / "elsewhere"), env=dict(os.environ))
    assert elsewhere.returncode == 2 and elsewhere.stderr.count("\n") == 1, elsewhere.stderr
    assert f"not {url}" in elsewhere.stderr and "clients" in elsewhere.stderr
    assert not (tmp_path / "elsewhere").exists(), "nothing written"
    bucket = _cli(*common, "--to", "s3://bucket/prefix", env=dict(os.environ))
    assert bucket.returncode == 2 and "an http(s) URL clients can read" in bucket.stderr
    fine = _cli(*common, "--to", str(served), env=dict(os.environ))
    assert fine.returncode == 0, fine.stderr
    assert (served / "clients/livegraft.repo").read_text().count(f"gpgkey={url}/keys/") == 1
