"""Which objects of a published tree are content, which are indexes and which are roots.

Content (packages, by-hash indexes, hash-named and per-generation repodata) is written
once and never changed, so a CDN may cache it forever. Roots are what a client reads
first and what names everything else: apt's ``InRelease`` (and ``Release``,
``Release.gpg``) and dnf's ``metalink.xml``. Everything else (plain-named indexes, keys,
client files) is a mutable index, written after the content it names and before the
roots.
"""

from __future__ import annotations

import re
from enum import IntEnum
from pathlib import PurePosixPath


class Kind(IntEnum):
    # The value is the order of writing.
    CONTENT = 0
    INDEX = 1
    ROOT = 2


_CONTENT = re.compile(
    r"(^|/)pool/"  # packages
    r"|/by-hash/"  # apt indexes by their hash
    r"|(^|/)gen-\d+/"  # a dnf generation's repodata
    r"|/repodata/[0-9a-f]{64}-[^/]+$"  # createrepo_c's hash-named metadata
)
# apt reads InRelease first, or Release + Release.gpg: InRelease goes last of all.
_ROOT_ORDER = {"Release": 0, "Release.gpg": 1, "metalink.xml": 2, "InRelease": 3}

CONTENT_CACHE = "public, max-age=31536000, immutable"
INDEX_CACHE = "public, max-age=60"
ROOT_CACHE = "public, max-age=30, must-revalidate"

_TYPES = {
    ".deb": "application/vnd.debian.binary-package",
    ".rpm": "application/x-rpm",
    ".gz": "application/gzip",
    ".xz": "application/x-xz",
    ".zst": "application/zstd",
    ".xml": "application/xml",
    ".json": "application/json",
    ".asc": "application/pgp-signature",
    ".gpg": "application/pgp-keys",
    ".crt": "application/x-pem-file",
    ".der": "application/pkix-cert",
    ".repo": "text/plain; charset=utf-8",
    ".sources": "text/plain; charset=utf-8",
}


def kind_of(key: str) -> Kind:
    name = PurePosixPath(key).name
    if name in _ROOT_ORDER and "/by-hash/" not in key:
        return Kind.ROOT
    if _CONTENT.search(key):
        return Kind.CONTENT
    return Kind.INDEX


def root_rank(key: str) -> int:
    return _ROOT_ORDER.get(PurePosixPath(key).name, 0)


def content_type(key: str) -> str:
    path = PurePosixPath(key)
    if path.name in ("InRelease", "Release") or (
        path.name.startswith("Packages") and not path.suffix
    ):
        return "text/plain; charset=utf-8"
    if path.name == "Release.gpg":
        return "application/pgp-signature"
    if "/by-hash/" in key:
        return "application/octet-stream"
    return _TYPES.get(path.suffix, "application/octet-stream")


def cache_control(key: str) -> str:
    return {Kind.CONTENT: CONTENT_CACHE, Kind.INDEX: INDEX_CACHE, Kind.ROOT: ROOT_CACHE}[
        kind_of(key)
    ]
