"""What the repository writers need from a signer (livegraft.signing.gpg.ArchiveSigner)."""

from __future__ import annotations

from typing import Protocol


class MetadataSigner(Protocol):
    @property
    def fingerprints(self) -> tuple[str, ...]: ...

    def clearsign(self, data: bytes) -> bytes: ...

    def detach_sign(self, data: bytes, *, armor: bool = True) -> bytes: ...
