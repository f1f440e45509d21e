"""One contract for every storage backend: the folder and S3 (a real SeaweedFS)."""

from __future__ import annotations

import threading
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from livegraft.pipeline.errors import InputError
from livegraft.pipeline.publish.folder_store import FolderStore
from livegraft.pipeline.publish.s3_store import S3Location, S3Options, S3Store
from livegraft.pipeline.publish.storage import Conflict, Storage, sha256_hex
from seaweed import SeaweedFS

TEXT = {"content_type": "text/plain", "cache_control": "max-age=60"}


@pytest.fixture(params=["folder", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    if request.param == "folder":
        yield FolderStore(tmp_path / "store")
        return
    server: SeaweedFS = request.getfixturevalue("seaweedfs")
    bucket = f"contract-{uuid.uuid4().hex[:12]}"
    server.create_bucket(bucket)
    yield S3Store(
        S3Location(bucket, "some/prefix"),
        S3Options(endpoint_url=server.endpoint, addressing="path"),
    )


@pytest.fixture(autouse=True)
def _publisher_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    from seaweed import ACCESS_KEY, SECRET_KEY

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)


def test_put_head_get_delete(store: Storage) -> None:
    key = "pool/main/l/livepatch-6.1.0-56-amd64/livepatch-6.1.0-56-amd64_3_amd64.deb"
    info = store.put(key, b"payload", **TEXT)
    assert (info.size, info.sha256) == (7, sha256_hex(b"payload"))
    head = store.head(key)
    assert head is not None and head.size == 7 and head.sha256 == sha256_hex(b"payload")
    assert store.get(key) == b"payload"
    assert store.head("missing/key") is None and store.get("missing/key") is None
    store.delete(key)
    store.delete(key)  # deleting what is gone is fine: deletes get retried
    assert store.head(key) is None


def test_keys_with_plus(store: Storage) -> None:
    key = "pool/main/l/livepatch-6.12.117+deb12-amd64/x_1+deb12u1_amd64.deb"
    store.put(key, b"plus", **TEXT)
    assert store.get(key) == b"plus"
    assert key in list(store.list("pool/"))


def test_create_only_has_one_winner(store: Storage) -> None:
    store.put("lock", b"first", **TEXT, create_only=True)
    with pytest.raises(Conflict):
        store.put("lock", b"second", **TEXT, create_only=True)
    assert store.get("lock") == b"first"

    winners: list[int] = []
    errors: list[Exception] = []

    def race(i: int) -> None:
        try:
            store.put("race", str(i).encode(), **TEXT, create_only=True)
            winners.append(i)
        except Conflict:
            pass
        except Exception as exc:  # anything else is a bug in the backend
            errors.append(exc)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(winners) == 1
    assert store.get("race") == str(winners[0]).encode()


def test_if_match_is_compare_and_swap(store: Storage) -> None:
    first = store.put("root", b"gen-1", **TEXT)
    second = store.put("root", b"gen-2", **TEXT, if_match=first.etag)
    with pytest.raises(Conflict):
        store.put("root", b"gen-3", **TEXT, if_match=first.etag)  # stale etag
    assert store.get("root") == b"gen-2"
    head = store.head("root")
    assert head is not None and head.etag == second.etag


def test_bad_keys_are_refused(store: Storage) -> None:
    for key in ("", "/abs", "a/../b", "a//b", "./a"):
        with pytest.raises(ValueError):
            store.put(key, b"x", **TEXT)


def test_s3_headers_and_anonymous_read(seaweedfs: SeaweedFS) -> None:
    seaweedfs.create_bucket("headers")
    s3 = S3Store(S3Location("headers", ""), S3Options(endpoint_url=seaweedfs.endpoint))
    s3.put("dists/x/InRelease", b"root", content_type="text/plain", cache_control="max-age=60")
    r = seaweedfs.client().head_object(Bucket="headers", Key="dists/x/InRelease")
    assert (r["ContentType"], r["CacheControl"]) == ("text/plain", "max-age=60")
    # Clients read over plain HTTP without credentials; '+' works escaped or not.
    s3.put("p/a+b.deb", b"deb", content_type="application/vnd.debian.binary-package",
           cache_control="max-age=31536000, immutable")  # fmt: skip
    for path in ("p/a+b.deb", "p/a%2Bb.deb"):
        with urllib.request.urlopen(f"{seaweedfs.endpoint}/headers/{path}") as resp:
            assert resp.read() == b"deb"


def test_s3_errors_are_one_clear_line(
    seaweedfs: SeaweedFS, monkeypatch: pytest.MonkeyPatch
) -> None:
    seaweedfs.create_bucket("errors")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    wrong = S3Store(S3Location("errors", ""), S3Options(endpoint_url=seaweedfs.endpoint))
    with pytest.raises(InputError) as info:
        wrong.put("x", b"x", **TEXT)
    assert "credentials" in str(info.value) and "not-the-secret" not in str(info.value)
    monkeypatch.undo()
    from seaweed import ACCESS_KEY, SECRET_KEY

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    missing = S3Store(
        S3Location("no-such-bucket-x", ""), S3Options(endpoint_url=seaweedfs.endpoint)
    )
    with pytest.raises(InputError, match="does not exist"):
        missing.check_bucket()
    down = S3Store(
        S3Location("errors", ""),
        S3Options(endpoint_url="http://127.0.0.1:9", max_attempts=2, connect_timeout=1),
    )
    with pytest.raises(Exception, match="unreachable"):
        down.put("x", b"x", **TEXT)
