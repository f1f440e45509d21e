"""The publish lock after a crash: a publisher killed on this machine does not block the
next one; a holder elsewhere waits for expiry or an operator's --break-lock; a publisher
that lost its lock moves no root; a long publish keeps its lock fresh."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from livegraft.pipeline.canonical import canonical_json
from livegraft.pipeline.errors import WorkError
from livegraft.pipeline.publish.folder_store import FolderStore
from livegraft.pipeline.publish.lock import LOCK, Process, PublishLock
from livegraft.pipeline.publish.publisher import Publisher, scan
from livegraft.pipeline.publish.storage import Storage
from project import make_project
from test_publish import SUITE, write_tree

HOLD = """
import sys, time
from pathlib import Path
from livegraft.pipeline.publish.folder_store import FolderStore
from livegraft.pipeline.publish.lock import PublishLock
PublishLock(FolderStore(Path(sys.argv[1]))).acquire()
print("held", flush=True)
time.sleep(600)
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another publisher, in another process on this machine, holding the lock."""
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path / "published")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert child.stdout is not None and child.stdout.readline() == "held\n"
    yield child
    child.kill()
    child.wait()


def write_lock(store: Storage, process: Process, *, hours: float = 1) -> None:
    now = datetime.now(UTC)
    body = {
        "owner": f"{process.host}:{process.pid}",
        "since": now.isoformat(),
        "expires": (now + timedelta(hours=hours)).isoformat(),
        "process": process.to_json(),
        "token": "0123456789abcdef",
    }
    store.put(LOCK, canonical_json(body), content_type="application/json",
              cache_control="no-store", create_only=True)  # fmt: skip


def test_a_killed_publisher_on_this_machine_does_not_block_the_next(
    holder: subprocess.Popen[str], tmp_path: Path
) -> None:
    store = FolderStore(tmp_path / "published")
    objects = scan(write_tree(tmp_path / "tree", 1))
    with pytest.raises(WorkError, match=rf"holds the lock \(\S+:{holder.pid} since .*--break-lock"):
        Publisher(store).publish(objects)
    assert store.get(f"{SUITE}/InRelease") is None
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    report = Publisher(store).publish(objects)
    assert report.took_over is not None
    assert f":{holder.pid} since" in report.took_over and "its process is gone" in report.took_over
    assert store.get(f"{SUITE}/InRelease") == b"InRelease 1"
    assert store.head(LOCK) is None, "released after the publish"


def test_a_reused_pid_is_not_the_holder(tmp_path: Path) -> None:
    store = FolderStore(tmp_path / "published")
    objects = scan(write_tree(tmp_path / "tree", 1))
    # A live process of this machine, but started after the lock's holder did.
    other = subprocess.Popen(["sleep", "60"])
    try:
        here = Process.current()
        ticks = _ticks(other.pid)
        real = Process(here.host, other.pid, here.boot_id, here.pid_namespace, ticks)
        write_lock(store, real)
        with pytest.raises(WorkError, match="another publish holds the lock"):
            Publisher(store).publish(objects)
        store.delete(LOCK)
        # The lock's holder had that PID before: it started earlier than the live process.
        write_lock(
            store, Process(here.host, other.pid, here.boot_id, here.pid_namespace, ticks - 1)
        )
        report = Publisher(store).publish(objects)
        assert report.took_over is not None and "its process is gone" in report.took_over
    finally:
        other.kill()
        other.wait()


def _ticks(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rfind(")") + 2 :].split()[19])


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "livegraft.pipeline.cli", "publish", *args],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


def test_a_holder_on_another_machine_waits_for_expiry_or_break_lock(tmp_path: Path) -> None:
    config = make_project(tmp_path / "project")
    tree = write_tree(tmp_path / "tree", 1)
    dest = tmp_path / "published"
    store = FolderStore(dest)
    # Its PID is free here, but it ran on another machine: nothing here can tell.
    elsewhere = Process("build-agent-7", 4_000_000, "another-boot", "pid:[1]", 12345)
    write_lock(store, elsewhere)
    common = ["--config", str(config), "--from", str(tree), "--to", str(dest)]
    refused = _cli(*common)
    assert refused.returncode == 1, refused.stderr
    assert refused.stderr.count("\n") == 1 and "build-agent-7:4000000" in refused.stderr
    assert "--break-lock" in refused.stderr
    assert store.get(f"{SUITE}/InRelease") is None
    broken = _cli(*common, "--break-lock", "--json")
    assert broken.returncode == 0, broken.stderr
    took = json.loads(broken.stdout)["took_over"]
    assert "build-agent-7:4000000" in took and took.endswith("--break-lock")
    assert store.get(f"{SUITE}/InRelease") == b"InRelease 1"
    assert store.head(LOCK) is None
    # Expired: taken over without being asked.
    write_lock(store, elsewhere, hours=-1)
    again = _cli(*common)
    assert again.returncode == 0, again.stderr
    assert "took over the lock of build-agent-7:4000000" in again.stdout
    assert "it expired" in again.stdout


class BrokenAtIndexes:
    """A store where another publisher breaks the lock once the content is written."""

    def __init__(self, inner: FolderStore) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def put(self, key: str, data: bytes, **kw: object) -> object:
        if key.endswith("/Packages") and self.inner.head(LOCK) is not None:
            self.inner.delete(LOCK)
            write_lock(self.inner, Process("operator-host", 1, "b", "pid:[2]", 1))
        return self.inner.put(key, data, **kw)  # type: ignore[arg-type]


def test_a_publisher_that_lost_its_lock_moves_no_root(tmp_path: Path) -> None:
    store = FolderStore(tmp_path / "published")
    Publisher(store).publish(scan(write_tree(tmp_path / "one", 1)))
    two = scan(write_tree(tmp_path / "two", 2))
    with pytest.raises(WorkError, match=r"taken over or removed .*the roots were not moved"):
        Publisher(BrokenAtIndexes(store)).publish(two)  # type: ignore[arg-type]
    assert store.get(f"{SUITE}/InRelease") == b"InRelease 1"
    lock = store.get(LOCK)
    assert lock is not None and b"operator-host" in lock, "the new holder's lock stays"


def test_the_lock_is_kept_fresh_while_a_publish_runs(tmp_path: Path) -> None:
    store = FolderStore(tmp_path / "published")
    start = datetime.now(UTC)
    clock = [start]
    lock = PublishLock(store, now=lambda: clock[0], refresh_every=timedelta(seconds=0.05))
    lock.acquire()

    def expires() -> datetime:
        raw = store.get(LOCK)
        assert raw is not None
        return datetime.fromisoformat(json.loads(raw)["expires"])

    first = expires()
    clock[0] = start + timedelta(minutes=50)
    deadline = time.monotonic() + 10
    while expires() == first and time.monotonic() < deadline:
        time.sleep(0.02)
    assert expires() == first + timedelta(minutes=50), "refreshed from the clock"
    lock.check_held()
    # Someone else takes it: the keeper notices, and the check before the roots refuses.
    store.delete(LOCK)
    write_lock(store, Process("operator-host", 1, "b", "pid:[2]", 1))
    time.sleep(0.2)
    with pytest.raises(WorkError, match="taken over while this publish ran"):
        lock.check_held()
    lock.release()
    assert store.get(LOCK) is not None and b"operator-host" in (store.get(LOCK) or b"")
