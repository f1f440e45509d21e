"""Load errata from files and folders into one :class:`ErrataSet`.

A path is a CVE JSON 5 record (its ``.dyad``, ``.sha1`` and ``.vulnerable`` sidecars
are read from beside it), an OSV record, a Debian security tracker list, or a folder
searched recursively for them. Formats are recognised by content, not by name.

In a folder, files that are not records (the kernel CNA's ``.mbox`` and ``.cvss``,
other advisory formats, READMEs) are passed over; a file named on its own must be a
record, except for those companions. A ``.json`` file that is not valid JSON is bad
input wherever it is.

Skipped: CVE records whose state is REJECTED or that the kernel CNA filed as rejected
(under ``rejected/``, named ``rejected-…``, or announced by a ``.rejected`` file beside
them), and withdrawn OSV records. Records sharing an id (OSV aliases included) or a fix
commit become one vulnerability (see model.py).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

from ..errors import InputError
from .branches import KnownFix
from .cve5 import is_cve5, is_rejected, parse_cve5
from .debian_tracker import TrackerData, is_kernel_package, sniff
from .debian_tracker import parse as parse_tracker
from .distro import DistroData
from .errata_set import ErrataSet
from .jsonfields import Field, load_json
from .model import PRECEDENCE_DISTRO_NOTE, Record, Vulnerability, id_order
from .osv import is_osv, parse_osv
from .sidecars import read_sidecars

__all__ = ["ErrataSet", "load_errata", "merge"]

log = logging.getLogger(__name__)

# Files that accompany kernel CNA records; read through their record, never on their own.
COMPANION_SUFFIXES = (".dyad", ".sha1", ".vulnerable", ".mbox", ".cvss", ".rejected")
# Enough of a file to recognise its format by content.
_HEAD = 64 * 1024
NOT_A_RECORD = "expected a CVE JSON 5 record, an OSV record or a Debian security tracker list"


def load_errata(paths: Iterable[str | os.PathLike[str]]) -> ErrataSet:
    """Read every record under ``paths``; raise InputError for the first bad one."""
    loader = _Loader()
    for given in paths:
        path = Path(given)
        if path.is_dir():
            for file in _walk(path):
                loader.load(file, explicit=False)
        elif path.is_file():
            loader.load(path, explicit=True)
        else:
            raise InputError(path, None, "no such file or folder")
    return loader.result()


def _walk(folder: Path) -> list[Path]:
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        # Hidden folders (.git) hold no records; sorted so merging order is stable.
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(root, f) for f in sorted(files) if not f.startswith("."))
    return found


class _Loader:
    def __init__(self) -> None:
        self.records: list[Record] = []
        self.trackers: list[TrackerData] = []
        self.seen: set[Path] = set()

    def load(self, path: Path, *, explicit: bool) -> None:
        key = path.resolve()
        if key in self.seen:
            return
        self.seen.add(key)
        if path.name.lower().endswith(COMPANION_SUFFIXES):
            return
        if path.suffix.lower() == ".json":
            self._json(path, load_json(path), explicit=explicit)
            return
        head = _read(path, _HEAD)
        if head.lstrip().startswith(b"{"):
            try:
                root = load_json(path)
            except InputError:
                if explicit:
                    raise
                log.debug("%s: not JSON, skipped", path)
                return
            self._json(path, root, explicit=explicit)
            return
        kind = sniff(head.decode("utf-8-sig", errors="replace"))
        if kind is None:
            self._not_a_record(path, explicit)
            return
        data = _read(path, None)
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise InputError(path, None, f"expected UTF-8 text: {exc.reason}") from None
        self.trackers.append(parse_tracker(path, text, kind))

    def _json(self, path: Path, root: Field, *, explicit: bool) -> None:
        if is_cve5(root):
            if is_rejected(root) or _filed_as_rejected(path):
                log.debug("%s: rejected, skipped", path)
                return
            record = parse_cve5(root, read_sidecars(path))
        elif is_osv(root):
            record = parse_osv(root)
        else:
            self._not_a_record(path, explicit)
            return
        if record is None:
            log.debug("%s: rejected or withdrawn, skipped", path)
            return
        self.records.append(record)

    def _not_a_record(self, path: Path, explicit: bool) -> None:
        if explicit:
            raise InputError(path, None, NOT_A_RECORD)
        log.debug("%s: not an errata record, skipped", path)

    def result(self) -> ErrataSet:
        entries = tuple(e for t in self.trackers for e in t.entries)
        records = self.records + _tracker_records(self.trackers)
        return ErrataSet(tuple(merge(records)), DistroData(entries))


def _read(path: Path, limit: int | None) -> bytes:
    try:
        with path.open("rb") as handle:
            return handle.read(limit) if limit is not None else handle.read()
    except OSError as exc:
        raise InputError(path, None, f"cannot read: {exc.strerror or exc}") from None


def _filed_as_rejected(path: Path) -> bool:
    """Whether the kernel CNA filed this record as rejected (its JSON may still say PUBLISHED)."""
    parent = path.parent
    if path.name.lower().startswith("rejected-") or parent.name == "rejected":
        return True
    # vulns.git keeps rejected records in cve/rejected/<year>/.
    if parent.name.isdigit() and parent.parent.name == "rejected":
        return True
    stem = path.name.removesuffix(path.suffix)
    return any((parent / f"{stem}{suffix}").exists() for suffix in (".rejected", ".mbox.rejected"))


def _tracker_records(trackers: list[TrackerData]) -> list[Record]:
    """One record per kernel CVE the tracker knows, so that it is listed even without others.

    Its only upstream fact is the mainline release the fix arrived in, from the NOTE
    lines; fix commits are not used for merging, since a note may name follow-ups.
    """
    records: list[Record] = []
    noted: set[str] = set()
    for tracker in trackers:
        for note in tracker.notes:
            if not note.kernel:
                continue
            noted.add(note.cve)
            records.append(
                Record(
                    id=note.cve,
                    kind="debian",
                    source=note.source,
                    description=note.description,
                    upstream=KnownFix(note.mainline_fix) if note.mainline_fix else None,
                    precedence=PRECEDENCE_DISTRO_NOTE,
                )
            )
    for tracker in trackers:
        for entry in tracker.entries:
            if entry.cve not in noted and is_kernel_package(entry.package):
                noted.add(entry.cve)
                records.append(
                    Record(
                        id=entry.cve,
                        kind="debian",
                        source=entry.source,
                        precedence=PRECEDENCE_DISTRO_NOTE,
                    )
                )
    return records


def merge(records: list[Record]) -> list[Vulnerability]:
    """Group records that share an id or a fix commit; the lowest CVE id is primary."""
    parent = list(range(len(records)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[str, int] = {}
    for i, record in enumerate(records):
        keys = [f"id:{vid}" for vid in record.ids]
        keys += [f"commit:{c}" for c in record.fix_commits]
        for key in keys:
            j = owner.setdefault(key, i)
            parent[find(i)] = find(j)

    groups: dict[int, list[Record]] = {}
    for i, record in enumerate(records):
        groups.setdefault(find(i), []).append(record)
    merged: list[Vulnerability] = []
    for group in groups.values():
        ids = sorted({vid for r in group for vid in r.ids}, key=id_order)
        ordered = sorted(group, key=lambda r: (-r.precedence, r.source))
        merged.append(Vulnerability(ids[0], tuple(ids[1:]), tuple(ordered)))
    return merged
