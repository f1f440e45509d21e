"""Publishing to a real SeaweedFS through a fault proxy: 500s, stalls, refused credentials,
a missing bucket, an endpoint that is down. Retries with backoff, then one clear line;
whatever happens, anonymous clients keep reading the previous generation whole."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fault_proxy import FaultProxy, Rule
from livegraft.pipeline.publish.layout import (
    CONTENT_CACHE,
    ROOT_CACHE,
    Kind,
    cache_control,
    content_type,
)
from livegraft.pipeline.publish.publisher import LOCK, Publisher, scan
from livegraft.pipeline.publish.s3_store import S3Location, S3Options, S3Store
from livegraft.pipeline.publish.storage import ObjectInfo, sha256_hex
from seaweed import ACCESS_KEY, SECRET_KEY, SeaweedFS
from test_publish import RPM, SUITE, write_tree

ROOTS = r"/(InRelease|Release|Release\.gpg|metalink\.xml)$"
PREFIX = "repo"


@pytest.fixture
def proxy(seaweedfs: SeaweedFS) -> Iterator[FaultProxy]:
    with FaultProxy(seaweedfs.endpoint, stall_seconds=10) as p:
        yield p


@pytest.fixture
def bucket(seaweedfs: SeaweedFS) -> str:
    name = f"faults-{uuid.uuid4().hex[:12]}"
    seaweedfs.create_bucket(name)
    return name


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from project import make_project

    return make_project(tmp_path_factory.mktemp("project"))


def _env(secret: str = SECRET_KEY) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return {**env, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": secret}


def publish(
    config: Path, endpoint: str, bucket: str, tree: Path, *extra: str, secret: str = SECRET_KEY
) -> subprocess.CompletedProcess[str]:
    argv = [
        sys.executable, "-m", "livegraft.pipeline.cli", "publish", "--config", str(config),
        "--from", str(tree), "--endpoint", endpoint, "--to", f"s3://{bucket}/{PREFIX}",
        "--retries", "2", "--timeout", "10", *extra,
    ]  # fmt: skip
    return subprocess.run(
        argv, capture_output=True, text=True, check=False, env=_env(secret), timeout=120
    )


def anonymous(seaweedfs: SeaweedFS, bucket: str, key: str) -> bytes | None:
    """What a client reading over plain HTTP, without credentials, sees."""
    try:
        with urllib.request.urlopen(f"{seaweedfs.endpoint}/{bucket}/{PREFIX}/{key}") as resp:
            data: bytes = resp.read()
            return data
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def assert_generation(seaweedfs: SeaweedFS, bucket: str, level: int) -> None:
    """The roots name this level, and everything they name is there."""
    assert anonymous(seaweedfs, bucket, f"{SUITE}/InRelease") == f"InRelease {level}".encode()
    assert anonymous(seaweedfs, bucket, f"{SUITE}/Release") == f"Release {level}".encode()
    assert anonymous(seaweedfs, bucket, f"{RPM}/metalink.xml") == (
        f"metalink -> gen-{level}".encode()
    )
    # The Release says Acquire-By-Hash: apt reads the Packages its roots name by hash
    # (the plain-named index may already be the next level's, written before the roots).
    name = "livepatch-6.12.117+deb12-amd64"
    deb = f"deb/pool/main/l/{name}/{name}_{level}_amd64.deb"
    packages = f"Package: livepatch\nVersion: {level}\nFilename: {deb}\n".encode()
    by_hash = f"{SUITE}/main/binary-amd64/by-hash/SHA256/{sha256_hex(packages)}"
    assert anonymous(seaweedfs, bucket, by_hash) == packages
    assert anonymous(seaweedfs, bucket, deb) == f"deb level {level}".encode()
    assert anonymous(seaweedfs, bucket, f"{RPM}/gen-{level}/repodata/repomd.xml") is not None


def one_line(result: subprocess.CompletedProcess[str], status: int) -> str:
    assert result.returncode == status, (result.returncode, result.stderr)
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("livegraft: error: ")
    assert SECRET_KEY not in result.stderr and "wrong-secret" not in result.stderr
    return result.stderr


@pytest.fixture
def levels(
    tmp_path: Path, seaweedfs: SeaweedFS, bucket: str, config: Path, proxy: FaultProxy
) -> tuple[Path, Path]:
    """Level 1 published cleanly; level 2's tree ready beside it."""
    one = write_tree(tmp_path / "one", 1)
    two = write_tree(tmp_path / "two", 2)
    first = publish(config, seaweedfs.endpoint, bucket, one)
    assert first.returncode == 0, first.stderr
    assert_generation(seaweedfs, bucket, 1)
    proxy.clear()
    return one, two


def test_transient_500s_are_retried(
    seaweedfs: SeaweedFS, bucket: str, config: Path, proxy: FaultProxy, levels: tuple[Path, Path]
) -> None:
    _, two = levels
    proxy.add(Rule("error", 500, key=r"/pool/", methods=frozenset({"PUT"}), times=2))
    proxy.add(Rule("error", 503, key=ROOTS, methods=frozenset({"PUT"}), times=1))
    proxy.add(Rule("error", 500, methods=frozenset({"HEAD"}), times=1))
    done = publish(config, proxy.endpoint, bucket, two)
    assert done.returncode == 0, done.stderr
    assert proxy.faults() == 4
    # Every refused request was sent again, and the publish went through whole.
    pool_puts = [s for s in proxy.seen("PUT") if "/pool/" in s.key]
    assert len(pool_puts) == 2 + sum(1 for o in scan(two) if "/pool/" in f"/{o.key}")
    assert_generation(seaweedfs, bucket, 2)


def test_persistent_500s_on_the_roots_keep_the_old_generation(
    seaweedfs: SeaweedFS, bucket: str, config: Path, proxy: FaultProxy, levels: tuple[Path, Path]
) -> None:
    _, two = levels
    proxy.add(Rule("error", 500, key=ROOTS, methods=frozenset({"PUT"})))
    started = time.monotonic()
    failed = publish(config, proxy.endpoint, bucket, two)
    line = one_line(failed, 1)
    assert "InternalError" in line and "Release" in line, line
    # --retries 2: the first root was tried three times, and no other root after it.
    root_puts = [s for s in proxy.seen("PUT") if s.fault]
    assert len(root_puts) == 3 and {s.key.rsplit("/", 1)[1] for s in root_puts} == {"Release"}
    assert time.monotonic() - started < 30
    assert_generation(seaweedfs, bucket, 1)
    head = seaweedfs.client()
    with pytest.raises(head.exceptions.ClientError):
        head.head_object(Bucket=bucket, Key=f"{PREFIX}/{LOCK}")
    # Once the store is healthy again, the same publish completes the new generation.
    proxy.clear()
    assert publish(config, proxy.endpoint, bucket, two).returncode == 0
    assert_generation(seaweedfs, bucket, 2)


def test_a_stall_times_out_then_fails_cleanly(
    seaweedfs: SeaweedFS, bucket: str, config: Path, proxy: FaultProxy, levels: tuple[Path, Path]
) -> None:
    _, two = levels
    # Mid-publish: the level-2 rpm never gets an answer (the deb beside it does).
    proxy.add(Rule("stall", key=r"/pool/kpatch-patch-.*-2-1", methods=frozenset({"PUT"})))
    started = time.monotonic()
    failed = publish(config, proxy.endpoint, bucket, two, "--timeout", "1")
    elapsed = time.monotonic() - started
    line = one_line(failed, 1)
    assert "no answer within 1 s" in line and "kpatch-patch" in line, line
    stalls = [s for s in proxy.seen("PUT") if s.fault == "stall"]
    assert len(stalls) == 3, "one try and two retries"
    assert elapsed < 20, elapsed
    assert_generation(seaweedfs, bucket, 1)


def test_lost_answers_to_written_objects(
    seaweedfs: SeaweedFS, bucket: str, config: Path, proxy: FaultProxy, levels: tuple[Path, Path]
) -> None:
    """The write happens, its answer is lost: the conditional retry finds the object (or
    the lock) already there, and must see that it is its own."""
    _, two = levels
    for key in (r"/\.livegraft/lock$", r"/pool/.*_2_amd64\.deb$"):
        proxy.add(Rule("stall", key=key, methods=frozenset({"PUT"}), times=1, forward_first=True))
    done = publish(config, proxy.endpoint, bucket, two, "--timeout", "2")
    assert done.returncode == 0, done.stderr
    assert proxy.faults() == 2
    assert_generation(seaweedfs, bucket, 2)


def test_refusals_are_one_line_without_secrets(
    seaweedfs: SeaweedFS, bucket: str, config: Path, proxy: FaultProxy, tmp_path: Path
) -> None:
    tree = write_tree(tmp_path / "tree", 1)
    wrong = publish(config, proxy.endpoint, bucket, tree, secret="wrong-secret-value")
    assert "credentials" in one_line(wrong, 2)
    missing = publish(config, proxy.endpoint, "no-such-bucket-faults", tree)
    assert "does not exist" in one_line(missing, 2)
    assert proxy.counts()["PUT"] == 0
    proxy.stop()  # nothing listens there any more
    started = time.monotonic()
    down = publish(config, proxy.endpoint, bucket, tree)
    assert "unreachable" in one_line(down, 1)
    assert time.monotonic() - started < 20


def test_incremental_publish_lists_nothing_and_writes_only_what_changed(
    seaweedfs: SeaweedFS, bucket: str, config: Path, proxy: FaultProxy, tmp_path: Path
) -> None:
    tree = write_tree(tmp_path / "tree", 1)
    assert publish(config, proxy.endpoint, bucket, tree).returncode == 0
    before = {o.key: o.sha256 for o in scan(tree)}
    write_tree(tree, 2)  # one new package of each format, new indexes and roots
    after = {o.key: o.sha256 for o in scan(tree)}
    changed = {k for k, digest in after.items() if before.get(k) != digest}
    proxy.clear()
    done = publish(config, proxy.endpoint, bucket, tree)
    assert done.returncode == 0, done.stderr
    counts = proxy.counts()
    assert counts["LIST"] == 0, counts
    written = {s.key.split("/", 2)[2] for s in proxy.seen("PUT")}
    assert written == changed | {LOCK, ".livegraft/manifests.json"}
    assert {s.key.split("/", 2)[2] for s in proxy.seen("DELETE")} == {LOCK}
    kinds = {Kind.CONTENT: 0, Kind.INDEX: 0, Kind.ROOT: 0}
    for o in scan(tree):
        if o.key in changed:
            kinds[o.kind] += 1
    assert all(kinds.values()), kinds
    # No HEAD for content: what the manifest records is there, what is new is created
    # (the store's ETag vouches for it). A HEAD for each mutable index and root, one for
    # the bucket, and three to see the lock is still ours (before the roots, before the
    # manifest, before the unlock): only the mutable part of the tree counts.
    mutable = [o for o in scan(tree) if o.kind is not Kind.CONTENT]
    assert counts["HEAD"] == len(mutable) + 4, counts
    looked = {s.key.split("/", 2)[2] for s in proxy.seen("HEAD") if s.key.count("/") >= 2}
    assert looked == {o.key for o in mutable} | {LOCK}, looked
    assert counts["GET"] == 1, "the manifest, read once"
    assert_generation(seaweedfs, bucket, 2)


def test_content_type_and_cache_control(
    seaweedfs: SeaweedFS, bucket: str, config: Path, proxy: FaultProxy, tmp_path: Path
) -> None:
    tree = write_tree(tmp_path / "tree", 1)
    assert publish(config, proxy.endpoint, bucket, tree).returncode == 0
    objects = scan(tree)
    for obj in objects:
        url = f"{seaweedfs.endpoint}/{bucket}/{PREFIX}/{obj.key}"
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD")) as resp:
            headers = (resp.headers["Content-Type"], resp.headers["Cache-Control"])
        assert headers == (content_type(obj.key), cache_control(obj.key)), obj.key
    by_kind = {o.kind: cache_control(o.key) for o in objects}
    assert by_kind[Kind.CONTENT] == CONTENT_CACHE and "immutable" in CONTENT_CACHE
    assert by_kind[Kind.ROOT] == ROOT_CACHE and "max-age=30" in ROOT_CACHE
    assert content_type(f"{SUITE}/InRelease").startswith("text/plain")
    assert content_type("deb/pool/x.deb") == "application/vnd.debian.binary-package"


def many_packages(root: Path, count: int) -> Path:
    write_tree(root, 1)
    for n in range(count):
        (root / f"deb/pool/main/b/bulk/bulk_{n}+deb12_amd64.deb").parent.mkdir(
            parents=True, exist_ok=True
        )
        (root / f"deb/pool/main/b/bulk/bulk_{n}+deb12_amd64.deb").write_bytes(b"x" * (n + 1))
    return root


def test_uploads_run_in_parallel(
    seaweedfs: SeaweedFS, bucket: str, proxy: FaultProxy, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    objects = scan(many_packages(tmp_path / "tree", 50))
    proxy.delay = 0.1
    store = S3Store(
        S3Location(bucket, PREFIX), S3Options(endpoint_url=proxy.endpoint, max_pool_connections=8)
    )
    started = time.monotonic()
    report = Publisher(store, jobs=8).publish(objects)
    elapsed = time.monotonic() - started
    requests = sum(proxy.counts().values())
    print(f"{len(report.put)} objects, {requests} requests, {elapsed:.2f} s at --jobs 8")
    assert len(report.put) == len(objects) >= 60
    assert proxy.max_inflight >= 6, proxy.max_inflight
    # Serially this would be requests x delay; 50 uploads alone would be 5 s. What stays
    # serial (lock, manifest, roots one by one, the lock checks) is about 15 requests.
    assert elapsed < 50 * proxy.delay and elapsed < 0.5 * requests * proxy.delay, elapsed


def test_dry_run_says_what_and_how_much(
    seaweedfs: SeaweedFS, bucket: str, config: Path, proxy: FaultProxy, levels: tuple[Path, Path]
) -> None:
    _, two = levels
    dry = publish(config, proxy.endpoint, bucket, two, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    put = {line.split(" ", 1)[1] for line in lines if line.startswith("put ")}
    one = {o.key: o.sha256 for o in scan(levels[0])}
    new = [o for o in scan(two) if one.get(o.key) != o.sha256]
    assert put == {o.key for o in new}
    assert f"would put {len(new)} objects ({sum(o.size for o in new)} bytes)" in lines[-1]
    assert "would delete 0" in lines[-1]
    counts = proxy.counts()
    assert counts["PUT"] == counts["DELETE"] == counts["LIST"] == 0, counts
    assert_generation(seaweedfs, bucket, 1)


def test_progress_on_a_terminal(
    seaweedfs: SeaweedFS, bucket: str, config: Path, tmp_path: Path
) -> None:
    tree = many_packages(tmp_path / "tree", 5)
    leader, follower = pty.openpty()
    argv = [
        sys.executable, "-m", "livegraft.pipeline.cli", "publish", "--config", str(config),
        "--from", str(tree), "--endpoint", seaweedfs.endpoint, "--to", f"s3://{bucket}/{PREFIX}",
    ]  # fmt: skip
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=follower, env={**_env(), "COLUMNS": "120"}
    )
    os.close(follower)
    chunks: list[bytes] = []

    def drain() -> None:  # read while it runs: a full pty would block the publisher
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    stdout, _ = proc.communicate(timeout=60)
    reader.join(timeout=10)
    os.close(leader)
    seen = b"".join(chunks)
    assert proc.returncode == 0, seen
    total = len(scan(tree))
    assert b"publish" in seen and f"{total}/{total}".encode() in seen, seen
    assert b"objects" in stdout


def test_a_failed_unlock_does_not_hide_why_the_publish_failed(tmp_path: Path) -> None:
    from livegraft.pipeline.errors import WorkError
    from livegraft.pipeline.publish.folder_store import FolderStore

    class Failing(FolderStore):
        def put(self, key: str, data: bytes, **kw: Any) -> ObjectInfo:
            if key.endswith("InRelease"):
                raise WorkError("injected: the root was refused")
            return super().put(key, data, **kw)

        def delete(self, key: str) -> None:
            raise WorkError("injected: the unlock was refused too")

    store = Failing(tmp_path / "store")
    with pytest.raises(WorkError, match="the root was refused"):
        Publisher(store).publish(scan(write_tree(tmp_path / "tree", 1)))
