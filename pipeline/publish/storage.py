"""What publishing needs from a store, and nothing more (after aptly's storage interface).

Every backend offers the same few operations, so one contract test suite proves the
folder and the S3 backend alike. Two of them carry conditions, because nothing is atomic
across keys and two publishers may race: ``create_only`` (write only if the key does not
exist) and ``if_match`` (replace only the version we read): the lock and the roots of a
publish rely on them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from ..errors import WorkError


class Conflict(WorkError):
    """A conditional write lost: the key exists, or changed since it was read."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    # An opaque version tag for if_match: the S3 ETag, a folder file's own digest.
    etag: str
    # sha256 of the content when the store knows it (our own uploads record it).
    sha256: str | None
    # On a put's answer: the store itself vouched for the bytes it now holds (S3: the
    # ETag it computed is the MD5 of what was sent), so no read-back is needed.
    confirmed: bool = False


class Storage(Protocol):
    """Keys are '/'-separated relative paths; they may contain '+' and other characters
    Debian and RPM file names use."""

    def describe(self) -> str:
        """Where this is, for messages (never with credentials)."""
        ...

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
        """Write one object whole; raise Conflict when a condition does not hold."""
        ...

    def head(self, key: str) -> ObjectInfo | None: ...

    def get(self, key: str) -> bytes | None: ...

    def delete(self, key: str) -> None:
        """Remove the key; a missing key is not an error (deletes are retried)."""
        ...

    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys under prefix. For mirroring and tests: publishing never lists."""
        ...


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def md5_hex(data: bytes) -> str:
    # Not for security: S3's ETag of a single-part, non-KMS upload is this digest.
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def check_key(key: str) -> str:
    """Refuse keys that could escape the tree or mean different things to different stores."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"not a relative object key: {key!r}")
    if any(ord(ch) < 0x20 or ch == "\\" for ch in key):
        raise ValueError(f"object key with a control character or backslash: {key!r}")
    return key
