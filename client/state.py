"""What the client keeps on the host: settings, its state file, the crash-loop guard, the lock.

- ``/etc/livegraft/livegraft.conf`` (ini, ``[client]``): ``auto``, ``transition_timeout``,
  ``on_stall`` (``revert`` or ``keep``), ``busy_retries``, ``busy_delay``, ``grace``.
  ``livegraftctl auto on|off`` rewrites ``auto`` and keeps the rest.
- ``/etc/livegraft/disable``: while it exists nothing is loaded (as ``livegraft.enable=0``
  on the kernel command line).
- ``/var/lib/livegraft/state.json``: the last outcome and a short history of loads, and
  the livepatch packages the user removed (auto mode does not bring those back).
  Written atomically; an unreadable one is moved aside and reported, never fatal.
- ``/var/lib/livegraft/loading``: the crash-loop guard, written before a load and removed
  once the patch has run for the grace period. Found at boot with another boot's id, it
  means the machine went down while that patch was new: it is not loaded again until
  ``livegraftctl apply`` is run by hand.
- ``/run/livegraft/lock``: one client at a time (flock).
"""

from __future__ import annotations

import configparser
import contextlib
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .kernel import Roots

STATE_FORMAT = 1
HISTORY = 50
CONFIG = "/etc/livegraft/livegraft.conf"
DISABLE = "/etc/livegraft/disable"
STATE = "/var/lib/livegraft/state.json"
GUARD = "/var/lib/livegraft/loading"
LOCK = "/run/livegraft/lock"


class SettingsError(Exception):
    """A bad setting: names the file, the key and what was expected."""


@dataclass(frozen=True)
class Settings:
    auto: bool = True
    transition_timeout: float = 60.0
    on_stall: str = "revert"
    busy_retries: int = 5
    busy_delay: float = 2.0
    grace: float = 120.0
    path: Path | None = None


def read_settings(roots: Roots) -> Settings:
    path = roots.path(CONFIG)
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(path.read_text(encoding="utf-8"), source=str(path))
    except FileNotFoundError:
        return Settings(path=path)
    except (OSError, UnicodeDecodeError, configparser.Error) as exc:
        raise SettingsError(f"{path}: a readable ini file ({exc})".replace("\n", " ")) from None
    section = parser["client"] if parser.has_section("client") else {}
    known = {"auto", "transition_timeout", "on_stall", "busy_retries", "busy_delay", "grace"}
    for key in section:
        if key not in known:
            raise SettingsError(f"{path}: [client] {key}: one of {', '.join(sorted(known))}")

    def number(key: str, default: float) -> float:
        raw = section.get(key)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if value < 0:
            raise SettingsError(f"{path}: [client] {key}: a number of seconds >= 0, not {raw!r}")
        return value

    auto_raw = str(section.get("auto", "yes")).strip().lower()
    if auto_raw not in ("yes", "no", "true", "false", "on", "off", "1", "0"):
        raise SettingsError(f"{path}: [client] auto: yes or no, not {auto_raw!r}")
    on_stall = str(section.get("on_stall", "revert")).strip()
    if on_stall not in ("revert", "keep"):
        raise SettingsError(f"{path}: [client] on_stall: revert or keep, not {on_stall!r}")
    return Settings(
        auto=auto_raw in ("yes", "true", "on", "1"),
        transition_timeout=number("transition_timeout", 60.0),
        on_stall=on_stall,
        busy_retries=int(number("busy_retries", 5)),
        busy_delay=number("busy_delay", 2.0),
        grace=number("grace", 120.0),
        path=path,
    )


def set_auto(roots: Roots, on: bool) -> Path:
    path = roots.path(CONFIG)
    parser = configparser.ConfigParser(interpolation=None)
    with contextlib.suppress(FileNotFoundError):
        parser.read_string(path.read_text(encoding="utf-8"))
    if not parser.has_section("client"):
        parser.add_section("client")
    parser["client"]["auto"] = "yes" if on else "no"
    lines: list[str] = []

    class _Sink:
        def write(self, text: str) -> None:
            lines.append(text)

    parser.write(_Sink())
    write_atomic(path, "".join(lines).encode())
    return path


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Temporary name beside ``path``, fsync, rename: a reader or a crash sees old or new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=str(path.parent), prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# -- the state file --------------------------------------------------------------------


@dataclass
class State:
    path: Path
    last: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    declined: list[str] = field(default_factory=list)
    # Set when the file on disk could not be read: why, and where it was moved.
    problem: str | None = None

    def record(self, event: dict[str, Any]) -> None:
        event = {"time": _now(), **event}
        self.last = event
        self.history = [*self.history, event][-HISTORY:]

    def decline(self, package: str) -> None:
        if package not in self.declined:
            self.declined = sorted([*self.declined, package])

    def accept(self, package: str) -> None:
        self.declined = [p for p in self.declined if p != package]

    def save(self) -> None:
        doc = {
            "format": STATE_FORMAT,
            "last": self.last,
            "history": self.history,
            "declined": self.declined,
        }
        write_atomic(self.path, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode())


def load_state(roots: Roots, *, move_aside: bool = False) -> State:
    """The state file; a corrupt one gives an empty state with ``problem`` set (and, with
    ``move_aside``, is renamed to ``state.json.corrupt`` so the next save starts clean)."""
    path = roots.path(STATE)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return State(path)
    except OSError as exc:
        return State(path, problem=f"{path}: unreadable ({exc.strerror})")
    try:
        doc = json.loads(raw.decode("utf-8"))
        if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT:
            raise ValueError(f"format: {STATE_FORMAT} expected")
        last = doc.get("last")
        history = doc.get("history", [])
        declined = doc.get("declined", [])
        if last is not None and not isinstance(last, dict):
            raise ValueError("last: an object expected")
        if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
            raise ValueError("history: a list of objects expected")
        if not isinstance(declined, list) or not all(isinstance(d, str) for d in declined):
            raise ValueError("declined: a list of package names expected")
    except (UnicodeDecodeError, ValueError) as exc:
        problem = f"{path}: not a livegraft state file ({exc})".replace("\n", " ")
        if move_aside:
            aside = path.with_name(path.name + ".corrupt")
            with contextlib.suppress(OSError):
                os.replace(path, aside)
                problem += f"; moved to {aside}"
        return State(path, problem=problem)
    return State(path, last, history, declined)


# -- the crash-loop guard ----------------------------------------------------------------


@dataclass(frozen=True)
class Guard:
    module: str
    level: int
    boot_id: str
    started: float

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.started))
        return f"{self.module} (level {self.level}) was being loaded at {when}"


def read_guard(roots: Roots) -> Guard | None:
    path = roots.path(GUARD)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return Guard(
            str(doc["module"]), int(doc["level"]), str(doc["boot_id"]), float(doc["started"])
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        # A marker cut short by the crash it guards against still means "a load was under
        # way": keep the guard up rather than read it as absent.
        return Guard("unknown", 0, "unknown", 0.0)


def set_guard(roots: Roots, module: str, level: int, boot_id: str) -> None:
    doc = {"module": module, "level": level, "boot_id": boot_id, "started": time.time()}
    write_atomic(roots.path(GUARD), (json.dumps(doc) + "\n").encode())


def clear_guard(roots: Roots) -> None:
    with contextlib.suppress(FileNotFoundError):
        roots.path(GUARD).unlink()


# -- one client at a time -------------------------------------------------------------------


class Busy(Exception):
    """Another livegraft client holds the lock."""


@contextlib.contextmanager
def locked(roots: Roots, wait: float = 300.0) -> Iterator[None]:
    path = roots.path(LOCK)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(str(path), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise Busy(
                        f"{path}: held by another livegraft client for {wait:.0f} s"
                    ) from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
