"""Publishing a tree so that no client ever sees a torn repository.

The order, for every publish:

1. take the lock (``lock``: a conditional create; the lock of a publisher that is gone
   is taken over by compare-and-swap), refreshed while the publish runs;
2. content first: every package, by-hash index and hash-named repodata that no kept
   generation's manifest records, written once (conditional create); where the store
   has it already, the same sha256 is fine and other bytes are an error: content never
   changes;
3. check every content object the new roots name, size and sha256: what the manifest
   records was checked by the publish that wrote it; what was written now is vouched
   for by the store's answer (the ETag it computed) or read back;
4. the mutable indexes, then, once the lock is seen to be still ours, the roots:
   ``Release``, ``Release.gpg``, ``metalink.xml``, and ``InRelease`` last;
5. record this generation's manifest (keys, sizes, sha256), then delete what only generations
   replaced longer ago than the retention time named: from the manifests, never from a
   listing of the bucket;
6. release the lock.

A crash anywhere leaves the previous roots in place, and they name only content that is
still there; running publish again completes the new generation.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

from ..canonical import canonical_json
from ..errors import InputError, WorkError
from .layout import Kind, cache_control, content_type, kind_of, root_rank
from .lock import LOCK, REFRESH_EVERY, PublishLock
from .storage import Conflict, ObjectInfo, Storage, sha256_hex

log = logging.getLogger("livegraft.publish")

STATE = ".livegraft"
MANIFESTS = f"{STATE}/manifests.json"
MANIFEST_FORMAT = 2
READABLE_FORMATS = (1, 2)
__all__ = ["LOCK", "MANIFESTS", "LocalObject", "Publisher", "Report", "scan"]


@dataclass(frozen=True)
class LocalObject:
    key: str
    path: Path
    size: int
    sha256: str

    @property
    def kind(self) -> Kind:
        return kind_of(self.key)


@dataclass
class Report:
    """What a publish did (or, with dry_run, would do)."""

    put: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    bytes_put: int = 0
    generation: str = ""
    took_over: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "put": self.put,
            "skipped": len(self.skipped),
            "deleted": self.deleted,
            "bytes_put": self.bytes_put,
            "took_over": self.took_over,
        }


def scan(tree: Path) -> list[LocalObject]:
    """Every file of the tree as an object, hashed once."""
    if not tree.is_dir():
        raise InputError(tree, None, "the tree to publish does not exist (run livegraft index)")
    objects = []
    for path in sorted(tree.rglob("*")):
        if path.is_file() and not any(p.startswith(".") for p in path.relative_to(tree).parts):
            data = path.read_bytes()
            objects.append(
                LocalObject(path.relative_to(tree).as_posix(), path, len(data), sha256_hex(data))
            )
    return objects


class Publisher:
    def __init__(
        self,
        store: Storage,
        *,
        jobs: int = 8,
        retention: timedelta = timedelta(days=2),
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_plan: Callable[[int, int], None] = lambda count, size: None,
        on_put: Callable[[LocalObject], None] = lambda obj: None,
        refresh_every: timedelta = REFRESH_EVERY,
        recheck: bool = False,
    ) -> None:
        self.store = store
        self.jobs = jobs
        self.retention = retention
        self.now = now
        # Progress: told once how many objects and bytes will go up, then each one.
        self.on_plan = on_plan
        self.on_put = on_put
        self._report_lock = threading.Lock()
        self.refresh_every = refresh_every
        self._lock: PublishLock | None = None
        # Look at every object in the store rather than trust the manifest.
        self.recheck = recheck
        # What each put answered, for the check before the roots.
        self._written: dict[str, ObjectInfo] = {}

    # -- the lock ---------------------------------------------------------------------

    def acquire(self, *, break_lock: bool = False) -> None:
        self._lock = PublishLock(self.store, now=self.now, refresh_every=self.refresh_every)
        self._lock.acquire(break_lock=break_lock)

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # -- manifests --------------------------------------------------------------------

    def _manifests(self) -> dict[str, Any]:
        raw = self.store.get(MANIFESTS)
        if raw is None:
            return {"format": MANIFEST_FORMAT, "objects": {}, "generations": []}
        try:
            doc: dict[str, Any] = json.loads(raw)
        except ValueError:
            raise WorkError(f"{self.store.describe()}: {MANIFESTS} is not JSON") from None
        if doc.get("format") not in READABLE_FORMATS:
            raise WorkError(f"{self.store.describe()}: {MANIFESTS}: unknown format")
        # Format 1 recorded no sizes and digests: every object is looked at once more.
        doc.setdefault("objects", {})
        doc["format"] = MANIFEST_FORMAT
        return doc

    # -- publishing -------------------------------------------------------------------

    def publish(
        self, objects: Sequence[LocalObject], *, dry_run: bool = False, break_lock: bool = False
    ) -> Report:
        report = Report(generation=self.now().strftime("%Y%m%dT%H%M%S%fZ"))
        if dry_run:
            return self._dry_run(objects, report)
        self.acquire(break_lock=break_lock)
        assert self._lock is not None
        report.took_over = self._lock.took_over
        try:
            self._publish(objects, report)
        except BaseException:
            # Keep the error that stopped the publish; a lock left behind expires.
            try:
                self.release()
            except WorkError as exc:
                log.warning("could not release the lock: %s", exc)
            raise
        self.release()
        return report

    def _state(self, objects: Sequence[LocalObject]) -> dict[str, ObjectInfo | None]:
        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            heads = list(pool.map(lambda o: self.store.head(o.key), objects))
        return {o.key: h for o, h in zip(objects, heads, strict=True)}

    def _changed_content(self, obj: LocalObject) -> WorkError:
        return WorkError(
            f"{self.store.describe()}: {obj.key} exists with other content; "
            "published content never changes (a new level must have a new name)"
        )

    def _needs(self, obj: LocalObject, head: ObjectInfo | None) -> bool:
        if head is None:
            return True
        same = head.size == obj.size and head.sha256 == obj.sha256
        if obj.kind is Kind.CONTENT and not same:
            raise self._changed_content(obj)
        return not same

    def _todo(self, objects: Sequence[LocalObject], doc: dict[str, Any]) -> list[LocalObject]:
        """What must be written, with as few requests as the store allows.

        Content a kept generation's manifest names is in the store as recorded: content
        never changes, and only a publish holding the lock deletes it (--recheck looks
        anyway, for a store changed by other hands). Other content is simply written,
        create-only: where it exists already, the store refuses and we compare then.
        The few mutable indexes and roots are looked at, since a publish that crashed
        may have moved some of them past what the manifest says.
        """
        known: dict[str, list[Any]] = doc["objects"]
        content = [o for o in objects if o.kind is Kind.CONTENT]
        looked = [o for o in objects if o.kind is not Kind.CONTENT]
        if self.recheck:
            looked = list(objects)
            content = []
        todo = []
        for obj in content:
            recorded = known.get(obj.key)
            if recorded is None:
                todo.append(obj)
            elif recorded != [obj.size, obj.sha256]:
                raise self._changed_content(obj)
        state = self._state(looked)
        todo.extend(o for o in looked if self._needs(o, state[o.key]))
        return todo

    def _put(self, obj: LocalObject, report: Report) -> None:
        data = obj.path.read_bytes()
        if sha256_hex(data) != obj.sha256:
            raise WorkError(f"{obj.path}: changed while publishing")
        try:
            info = self.store.put(
                obj.key,
                data,
                content_type=content_type(obj.key),
                cache_control=cache_control(obj.key),
                create_only=obj.kind is Kind.CONTENT,
            )
        except Conflict:
            # There already (an earlier publish that crashed, another writer, or our own
            # write whose answer was lost): fine only if it is the same bytes.
            head = self.store.head(obj.key)
            if head is None:
                raise
            if head.size != obj.size or head.sha256 != obj.sha256:
                raise self._changed_content(obj) from None
            info = replace(head, confirmed=True)
        with self._report_lock:
            self._written[obj.key] = info
            report.put.append(obj.key)
            report.bytes_put += obj.size
        self.on_put(obj)

    def _publish(self, objects: Sequence[LocalObject], report: Report) -> None:
        # Read once, under the lock: no other publisher changes it until we let go.
        doc = self._manifests()
        todo = self._todo(objects, doc)
        needed = {o.key for o in todo}
        report.skipped = [o.key for o in objects if o.key not in needed]
        content = [o for o in todo if o.kind is Kind.CONTENT]
        self.on_plan(len(todo), sum(o.size for o in todo))
        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            list(pool.map(lambda o: self._put(o, report), content))
        # Nothing that names content moves until every piece of it is in the store: what
        # an earlier publish wrote was checked then and is in its manifest; what was
        # written now is vouched for by the store's own answer, or read back.
        self._check(content)
        # The mutable indexes, in parallel too: no order among them matters, only that
        # they all precede the roots.
        indexes = sorted((o for o in todo if o.kind is Kind.INDEX), key=lambda o: o.key)
        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            list(pool.map(lambda o: self._put(o, report), indexes))
        assert self._lock is not None
        self._lock.check_held()
        for obj in sorted(
            (o for o in todo if o.kind is Kind.ROOT), key=lambda o: (root_rank(o.key), o.key)
        ):
            self._put(obj, report)
        self._record_and_collect(objects, report, doc)

    def _check(self, content: Sequence[LocalObject]) -> None:
        unconfirmed = [
            o
            for o in content
            if not (self._written[o.key].confirmed and self._written[o.key].size == o.size)
        ]
        state = self._state(unconfirmed)
        for obj in unconfirmed:
            head = state[obj.key]
            if head is None or head.size != obj.size or head.sha256 != obj.sha256:
                raise WorkError(
                    f"{self.store.describe()}: {obj.key} is not in the store as written "
                    "(size or sha256 differ); the roots were not moved"
                )

    def _record_and_collect(
        self, objects: Sequence[LocalObject], report: Report, doc: dict[str, Any]
    ) -> None:
        # Again: deleting on the word of a manifest another publisher now owns could take
        # objects from under its roots.
        assert self._lock is not None
        self._lock.check_held()
        before = canonical_json(doc)
        doc["generations"], stale = self._collection(doc["generations"], objects, report)
        # Sizes and digests of everything a kept generation names: ours from the tree,
        # the older ones' as recorded (absent for what format 1 wrote).
        ours = {o.key: [o.size, o.sha256] for o in objects}
        kept = {k for g in doc["generations"] for k in g["keys"]}
        doc["objects"] = {
            k: ours.get(k) or doc["objects"][k]
            for k in sorted(kept)
            if k in ours or k in doc["objects"]
        }
        after = canonical_json(doc)
        if after != before:
            self.store.put(MANIFESTS, after, content_type="application/json",
                           cache_control="no-store")  # fmt: skip
        for key in stale:
            self.store.delete(key)
            report.deleted.append(key)

    def _collection(
        self, generations: list[dict[str, Any]], objects: Sequence[LocalObject], report: Report
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """The generations still needed once this publish is done, and the keys that only
        the others named.

        A publish that put nothing and names the same keys is the current generation
        again, not a new one. A generation is needed while it is current and for the
        retention time after the next one replaced it: clients and caches may hold its
        metadata for that long, however old the generation itself is.
        """
        now = self.now()
        keys = sorted(o.key for o in objects)
        if report.put or not generations or generations[-1]["keys"] != keys:
            generations = [*generations, {"name": report.generation,
                                          "published": now.isoformat(), "keys": keys}]  # fmt: skip
        cutoff = now - self.retention
        keep = [
            g
            for g, successor in pairwise(generations)
            if datetime.fromisoformat(successor["published"]) > cutoff
        ]
        keep.append(generations[-1])
        needed = {k for g in keep for k in g["keys"]}
        return keep, sorted({k for g in generations for k in g["keys"]} - needed)

    def _dry_run(self, objects: Sequence[LocalObject], report: Report) -> Report:
        doc = self._manifests()
        todo = self._todo(objects, doc)
        # Without the lock nothing is written, so look at what would be created too:
        # a dry run says what a publish would send, not what it would try.
        unrecorded = [o for o in todo if o.kind is Kind.CONTENT]
        state = self._state(unrecorded)
        there = {o.key for o in unrecorded if not self._needs(o, state[o.key])}
        sent = {o.key for o in todo} - there
        for obj in objects:
            if obj.key in sent:
                report.put.append(obj.key)
                report.bytes_put += obj.size
            else:
                report.skipped.append(obj.key)
        _, report.deleted = self._collection(doc["generations"], objects, report)
        return report
