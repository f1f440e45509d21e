"""The folder backend: a local directory (or any mounted file system) as the store.

Each write goes to a temporary name and is renamed into place, so a reader sees the old
file or the new one. ``create_only`` uses link(2), which fails if the name exists, and
``if_match`` holds an flock while it compares and renames: both are race-free between
processes on one file system.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .storage import Conflict, ObjectInfo, check_key, sha256_hex


class FolderStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def describe(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    @contextmanager
    def _lock(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".livegraft-store.lock").open("a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str,
        cache_control: str,
        create_only: bool = False,
        if_match: str | None = None,
    ) -> ObjectInfo:
        # A folder has no per-object headers: content type and caching are the web
        # server's business when the folder is served.
        del content_type, cache_control
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp.")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            if create_only:
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    raise Conflict(f"{key}: already exists in {self.root}") from None
            elif if_match is not None:
                with self._lock():
                    current = self.head(key)
                    if current is None or current.etag != if_match:
                        raise Conflict(f"{key}: changed in {self.root} since it was read")
                    os.replace(tmp, path)
            else:
                os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
        digest = sha256_hex(data)
        # Written whole and renamed into place by this process: nothing between us and
        # the disk could have changed it, so a read-back would only re-read our own cache.
        return ObjectInfo(key, len(data), digest, digest, confirmed=True)

    def head(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        try:
            data = path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        digest = sha256_hex(data)
        return ObjectInfo(key, len(data), digest, digest)

    def get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def list(self, prefix: str = "") -> Iterator[str]:
        if not self.root.is_dir():
            return
        for path in sorted(self.root.rglob("*")):
            rel = path.relative_to(self.root).as_posix()
            if path.is_file() and not path.name.startswith(".") and rel.startswith(prefix):
                yield rel
