"""The publish lock: one object, written with conditions, so one publisher at a time.

Taken by a conditional create. Taken over by compare-and-swap (If-Match on the ETag read)
when its holder is known to be gone:

- it expired: holders refresh it while they run, so an expired lock was abandoned;
- its holder ran in this very process table (same boot, same PID namespace) and that
  process is gone, or the PID now belongs to a process started later: a publisher killed
  on this machine does not block the next run for the lock's lifetime;
- the operator says so (``--break-lock``), for a holder on another machine.

A holder checks the lock is still its own before it moves any root, so a publisher whose
lock was broken stops short of the roots instead of racing the one that broke it.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ..canonical import canonical_json
from ..errors import WorkError
from .storage import Conflict, Storage

log = logging.getLogger("livegraft.publish")

LOCK = ".livegraft/lock"
LOCK_TTL = timedelta(hours=1)
# Refreshed four times per lifetime: one missed refresh (a slow store) does not lose it.
REFRESH_EVERY = LOCK_TTL / 4


@dataclass(frozen=True)
class Process:
    """Where a process lives, precisely enough to tell later whether it still runs.

    A PID alone is reused; PIDs mean something only within one PID namespace of one boot,
    and the start time (in clock ticks since boot) tells a reused PID from the original.
    """

    host: str
    pid: int
    boot_id: str
    pid_namespace: str
    start_ticks: int | None

    @classmethod
    def current(cls) -> Process:
        pid = os.getpid()
        return cls(socket.gethostname(), pid, _boot_id(), _pid_namespace(), _start_ticks(pid))

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "pid": self.pid,
            "boot_id": self.boot_id,
            "pid_namespace": self.pid_namespace,
            "start_ticks": self.start_ticks,
        }

    @classmethod
    def from_json(cls, doc: Any) -> Process | None:
        try:
            start = doc.get("start_ticks")
            return cls(
                str(doc["host"]),
                int(doc["pid"]),
                str(doc["boot_id"]),
                str(doc["pid_namespace"]),
                None if start is None else int(start),
            )
        except (AttributeError, KeyError, TypeError, ValueError):
            return None

    def is_gone(self) -> bool:
        """True only when this machine can prove it: the process ran in our own process
        table and no longer does. A holder elsewhere is never judged from here."""
        here = Process.current()
        if not self.boot_id or (self.boot_id, self.pid_namespace) != (
            here.boot_id,
            here.pid_namespace,
        ):
            return False
        if self.pid == here.pid:
            return False  # our own process: not gone (and not someone else's either)
        started = _start_ticks(self.pid)
        if started is None:
            return not Path(f"/proc/{self.pid}").exists()
        return self.start_ticks is not None and started != self.start_ticks


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="ascii").strip()
    except OSError:
        return ""


def _boot_id() -> str:
    return _read("/proc/sys/kernel/random/boot_id")


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _start_ticks(pid: int) -> int | None:
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return None
    # Field 22 (starttime); the command name in field 2 may hold spaces and ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


@dataclass(frozen=True)
class Holder:
    """What a lock object says of its holder."""

    owner: str
    since: str
    expires: datetime
    process: Process | None

    @classmethod
    def parse(cls, raw: bytes) -> Holder:
        try:
            doc = json.loads(raw)
            return cls(
                str(doc["owner"]),
                str(doc["since"]),
                datetime.fromisoformat(doc["expires"]),
                Process.from_json(doc.get("process")),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            # Unreadable: nobody can be proven to hold it; treat it as expired.
            return cls("unknown", "unknown", datetime.min.replace(tzinfo=UTC), None)

    def describe(self) -> str:
        return f"{self.owner} since {self.since}"


class PublishLock:
    def __init__(
        self,
        store: Storage,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        refresh_every: timedelta = REFRESH_EVERY,
    ) -> None:
        self.store = store
        self.now = now
        self.refresh_every = refresh_every
        self.process = Process.current()
        self.since = now()
        self._token = secrets.token_hex(8)
        self._etag: str | None = None
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._keeper: threading.Thread | None = None
        self._lost: str | None = None
        # Set when a lock was taken over: whose it was and why, for the caller to report.
        self.took_over: str | None = None

    def _body(self) -> bytes:
        return canonical_json(
            {
                "owner": f"{self.process.host}:{self.process.pid}",
                "since": self.since.isoformat(),
                "expires": (self.now() + LOCK_TTL).isoformat(),
                "process": self.process.to_json(),
                "token": self._token,
            }
        )

    def _write(
        self, body: bytes, *, create_only: bool = False, if_match: str | None = None
    ) -> None:
        """A conditional write of the lock. Losing it to our own earlier try counts as
        winning: the write went through, its answer was lost, and the store's retry of
        the same request then found it there."""
        try:
            info = self.store.put(
                LOCK,
                body,
                content_type="application/json",
                cache_control="no-store",
                create_only=create_only,
                if_match=if_match,
            )
            self._etag = info.etag
        except Conflict:
            if self.store.get(LOCK) != body:
                raise
            head = self.store.head(LOCK)
            if head is None:
                raise
            self._etag = head.etag

    def acquire(self, *, break_lock: bool = False) -> None:
        body = self._body()
        try:
            self._write(body, create_only=True)
        except Conflict:
            self._take_over(body, break_lock=break_lock)
        self._keeper = threading.Thread(target=self._keep, name="publish-lock", daemon=True)
        self._keeper.start()

    def _take_over(self, body: bytes, *, break_lock: bool) -> None:
        held = self.store.head(LOCK)
        raw = self.store.get(LOCK)
        if held is None or raw is None:
            # Released between our attempt and our look: try once more, strictly.
            self._write(body, create_only=True)
            return
        holder = Holder.parse(raw)
        if holder.expires <= self.now():
            why = "it expired"
        elif holder.process is not None and holder.process.is_gone():
            why = "its process is gone"
        elif break_lock:
            why = "--break-lock"
        else:
            raise WorkError(
                f"{self.store.describe()}: another publish holds the lock "
                f"({holder.describe()}, until {holder.expires.isoformat()}); try again when "
                "it is done, or use --break-lock if that publisher is gone"
            )
        # Only if nobody else took it meanwhile: a second breaker loses here.
        self._write(body, if_match=held.etag)
        self.took_over = f"took over the lock of {holder.describe()}: {why}"

    def _keep(self) -> None:
        """Refresh the expiry while the publish runs, so a long upload keeps its lock."""
        while not self._stop.wait(self.refresh_every.total_seconds()):
            with self._guard:
                if self._lost is not None:
                    return
                try:
                    self._write(self._body(), if_match=self._etag)
                except Conflict:
                    self._lost = "the lock was taken over while this publish ran"
                    return
                except WorkError as exc:
                    # The next refresh may succeed; the check before the roots decides.
                    log.warning("could not refresh the publish lock: %s", exc)

    def check_held(self) -> None:
        """Raise unless the lock is still ours: nothing may move the roots otherwise."""
        with self._guard:
            head = self.store.head(LOCK)
            if self._lost is None and (head is None or head.etag != self._etag):
                self._lost = "the lock was taken over or removed while this publish ran"
            if self._lost is not None:
                raise WorkError(f"{self.store.describe()}: {self._lost}; the roots were not moved")

    def release(self) -> None:
        self._stop.set()
        if self._keeper is not None:
            self._keeper.join()
        with self._guard:
            if self._lost is not None:
                return  # not ours any more: leave the new holder's lock alone
            head = self.store.head(LOCK)
            if head is not None and head.etag == self._etag:
                self.store.delete(LOCK)
