"""What verify concluded about each artifact, kept beside the store.

Layout, below ``<work_dir>/verify/``::

    <artifact id>.json   the record: status, reason, steps, the booted kernel, times
    <artifact id>.log    the boot's serial console (or, when no boot happened, the log
                         of what failed before it)

Records are keyed by artifact id, which names everything that made the module (cell,
fixes and their check scripts, toolchain, signer), so a verified record stays true for
that artifact: verify does not boot it again, and the package stage asks ``verified``
before it packages anything.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..files import write_atomic

RECORD_FORMAT = 1
RECORDS_DIR = "verify"
_ID = re.compile(r"[0-9a-f]{64}\Z")


def records_dir(work_dir: Path) -> Path:
    return work_dir / RECORDS_DIR


def _checked_id(artifact_id: str) -> str:
    if not _ID.match(artifact_id):
        raise InputError(None, "artifact", f"an artifact id (64 hex digits), not {artifact_id!r}")
    return artifact_id


def record_path(work_dir: Path, artifact_id: str) -> Path:
    return records_dir(work_dir) / f"{_checked_id(artifact_id)}.json"


def log_path(work_dir: Path, artifact_id: str) -> Path:
    return records_dir(work_dir) / f"{_checked_id(artifact_id)}.log"


def load_record(work_dir: Path, artifact_id: str) -> dict[str, Any] | None:
    """The record for this artifact, or None when there is none that this version reads.

    An unreadable or foreign record counts as none: verify then simply runs again.
    """
    path = record_path(work_dir, artifact_id)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if (
        not isinstance(record, dict)
        or record.get("format") != RECORD_FORMAT
        or record.get("artifact") != artifact_id
    ):
        return None
    return record


def save_record(work_dir: Path, record: dict[str, Any]) -> Path:
    path = record_path(work_dir, str(record["artifact"]))
    document = {"format": RECORD_FORMAT, **record}
    write_atomic(path, json.dumps(document, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    return path


def verified_record(
    work_dir: Path, artifact_id: str, sha256: str | None = None
) -> dict[str, Any] | None:
    """The record proving this artifact on its kernel, or None (see ``verified``)."""
    record = load_record(work_dir, artifact_id)
    if record is None or record.get("status") != "verified":
        return None
    if sha256 is not None and record.get("sha256") != sha256:
        return None
    return record


def verified(work_dir: Path, artifact_id: str, sha256: str | None = None) -> bool:
    """Whether verify proved this artifact on its kernel (what the package stage asks).

    With ``sha256``, the record must also be about a module with that digest, so a
    module changed in the store after its verification does not pass.
    """
    return verified_record(work_dir, artifact_id, sha256) is not None
