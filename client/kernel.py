"""Every access to the running kernel: sysfs, procfs and the module loader, behind roots.

Nothing else in the client reads ``/sys`` or ``/proc`` or runs ``insmod``: the roots can
be pointed at a prepared tree (and the loader at another program), which is how the
client's behaviour is tested on a machine whose own kernel may not be patched. The
environment variables, the same for ``livegraftctl``, the dnf plugin and the apt hook:

- ``LIVEGRAFT_SYSFS`` (default ``/sys``), ``LIVEGRAFT_PROCFS`` (default ``/proc``);
- ``LIVEGRAFT_ROOT`` (default ``/``): the file system whose ``/usr/lib/livegraft``,
  ``/var/lib/livegraft``, ``/run/livegraft`` and ``/etc/livegraft`` the client uses;
- ``LIVEGRAFT_INSMOD`` and ``LIVEGRAFT_RMMOD`` (default kmod's ``insmod``, ``rmmod``).
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

LIVEPATCH_DIR = "kernel/livepatch"
# The kernel's taint bits that matter to someone livepatching (kernel/panic.c).
TAINT_FLAGS = {
    1: ("F", "a module was force-loaded"),
    12: ("O", "an out-of-tree module is loaded"),
    13: ("E", "an unsigned module is loaded"),
    15: ("K", "the kernel has been livepatched"),
}
# struct efi_guid of the global variables (EFI_GLOBAL_VARIABLE).
_EFI_GLOBAL = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
_DEBIAN_VERSION = re.compile(r"\bDebian (\S+)")
_RPM_UNAME = re.compile(r"(?P<vr>[^-]+-[^-]+)\.(?P<arch>[a-z0-9_]+)(?:\+[a-z0-9]+)?")
_PROC_KEY = re.compile(
    r"^(?P<serial>[0-9a-f]+) \S+ +\d+ \S+ [0-9a-f]+ +\d+ +\d+ (?P<type>\S+) +(?P<desc>.*)$"
)


@dataclass(frozen=True)
class Roots:
    sysfs: Path
    procfs: Path
    root: Path
    insmod: str
    rmmod: str

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Roots:
        env = os.environ if environ is None else environ
        return cls(
            sysfs=Path(env.get("LIVEGRAFT_SYSFS") or "/sys"),
            procfs=Path(env.get("LIVEGRAFT_PROCFS") or "/proc"),
            root=Path(env.get("LIVEGRAFT_ROOT") or "/"),
            insmod=env.get("LIVEGRAFT_INSMOD") or "insmod",
            rmmod=env.get("LIVEGRAFT_RMMOD") or "rmmod",
        )

    def path(self, absolute: str) -> Path:
        """``absolute`` (``/var/lib/livegraft``) below the file-system root."""
        return self.root / absolute.lstrip("/")

    @property
    def is_host(self) -> bool:
        """True when the client works on the machine's own kernel and file system."""
        return (self.sysfs, self.procfs, self.root) == (Path("/sys"), Path("/proc"), Path("/"))


class LoadError(Exception):
    """insmod failed; ``code`` is the errno when its message names one we act on."""

    def __init__(self, code: int | None, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class LivePatch:
    """One entry of /sys/kernel/livepatch."""

    name: str
    enabled: bool
    transition: bool


@dataclass(frozen=True)
class Task:
    pid: int
    comm: str
    patch_state: int
    stack: str


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


class Kernel:
    """The running kernel as seen through ``roots``."""

    def __init__(self, roots: Roots) -> None:
        self.roots = roots

    # -- identity -----------------------------------------------------------------------

    def uname_r(self) -> str:
        text = _read(self.roots.procfs / "sys/kernel/osrelease")
        return text.strip() if text else os.uname().release

    def uname_v(self) -> str:
        text = _read(self.roots.procfs / "sys/kernel/version")
        return text.strip() if text else os.uname().version

    def build_version(self) -> str | None:
        """The distribution's version of the running build (Debian's ``6.1.192-2``).

        Debian writes it into ``uname -v``; an RPM kernel's ``uname -r`` is its
        version-release and architecture. None when neither tells.
        """
        found = _DEBIAN_VERSION.search(self.uname_v())
        if found:
            return found.group(1)
        rpm = _RPM_UNAME.fullmatch(self.uname_r())
        return rpm.group("vr") if rpm else None

    def boot_id(self) -> str:
        text = _read(self.roots.procfs / "sys/kernel/random/boot_id")
        return text.strip() if text else ""

    def cmdline(self) -> list[str]:
        text = _read(self.roots.procfs / "cmdline")
        return text.replace("\0", " ").split() if text else []

    # -- module trust -------------------------------------------------------------------

    def livepatch_supported(self) -> bool:
        return (self.roots.sysfs / LIVEPATCH_DIR).is_dir()

    def sig_enforce(self) -> bool | None:
        text = _read(self.roots.sysfs / "module/module/parameters/sig_enforce")
        return None if text is None else text.strip() == "Y"

    def lockdown(self) -> str | None:
        """``none``, ``integrity`` or ``confidentiality``; None where the LSM is absent."""
        text = _read(self.roots.sysfs / "kernel/security/lockdown")
        if text is None:
            return None
        chosen = re.search(r"\[(\w+)\]", text)
        return chosen.group(1) if chosen else None

    def secure_boot(self) -> bool | None:
        var = self.roots.sysfs / f"firmware/efi/efivars/SecureBoot-{_EFI_GLOBAL}"
        try:
            data = var.read_bytes()
        except OSError:
            return None if not (self.roots.sysfs / "firmware/efi").is_dir() else False
        # Four bytes of attributes, then the one-byte value.
        return len(data) >= 5 and data[4] == 1

    def trusted_key_ids(self) -> dict[str, str] | None:
        """Subject key id → description of every asymmetric key in ``/proc/keys``.

        The kernel names an X.509 key ``<CN>: <subject key id>``; the keys it verifies
        modules against (builtin, secondary, machine, platform) are all asymmetric keys
        visible to root. None when ``/proc/keys`` cannot be read.
        """
        text = _read(self.roots.procfs / "keys")
        if text is None:
            return None
        found: dict[str, str] = {}
        for line in text.splitlines():
            m = _PROC_KEY.match(line)
            if not m or not m.group("type").startswith("asymmetri"):
                continue
            desc = m.group("desc")
            # "<CN>: <skid>: X509.rsa 3b4e4c9c []" — the id is the last hex run before the
            # key's algorithm suffix.
            head = desc.split(": X509.")[0] if ": X509." in desc else desc
            skid = head.rsplit(": ", 1)[-1].strip().lower()
            if re.fullmatch(r"[0-9a-f]{8,}", skid):
                found[skid] = head
        return found

    def tainted(self) -> tuple[int, list[str]]:
        text = _read(self.roots.procfs / "sys/kernel/tainted")
        value = int(text.strip()) if text and text.strip().isdigit() else 0
        flags = [
            f"{letter}: {why}" for bit, (letter, why) in TAINT_FLAGS.items() if value >> bit & 1
        ]
        return value, flags

    # -- livepatch state ----------------------------------------------------------------

    def patches(self) -> list[LivePatch]:
        base = self.roots.sysfs / LIVEPATCH_DIR
        try:
            names = sorted(p.name for p in base.iterdir() if p.is_dir())
        except OSError:
            return []
        found = []
        for name in names:
            enabled = (_read(base / name / "enabled") or "").strip() == "1"
            transition = (_read(base / name / "transition") or "").strip() == "1"
            found.append(LivePatch(name, enabled, transition))
        return found

    def patch(self, name: str) -> LivePatch | None:
        return next((p for p in self.patches() if p.name == name), None)

    def module_loaded(self, name: str) -> bool:
        return (self.roots.sysfs / "module" / name).is_dir()

    def disable(self, name: str) -> None:
        """Write 0 to ``enabled``: disables the patch, or reverses its transition."""
        (self.roots.sysfs / LIVEPATCH_DIR / name / "enabled").write_text("0\n")

    def unpatched_tasks(self, limit: int = 20) -> list[Task]:
        """Tasks whose ``patch_state`` is not yet the target (0 or 1; -1 is "no transition").

        During a transition every task moves from the old state to the new one; the
        ones that have not are what holds it up, with their stacks where readable.
        """
        states: dict[int, list[int]] = {}
        for entry in self._pids():
            text = _read(self.roots.procfs / str(entry) / "patch_state")
            if text is None or not text.strip().lstrip("-").isdigit():
                continue
            states.setdefault(int(text.strip()), []).append(entry)
        patched = {s for s in states if s >= 0}
        if len(patched) < 2:
            return []
        # The target is the state most tasks already reached; the rest are stragglers.
        target = max(patched, key=lambda s: len(states[s]))
        stragglers = [pid for s in patched if s != target for pid in states[s]]
        tasks = []
        for pid in sorted(stragglers)[:limit]:
            comm = (_read(self.roots.procfs / str(pid) / "comm") or "?").strip()
            stack = (_read(self.roots.procfs / str(pid) / "stack") or "").strip()
            tasks.append(Task(pid, comm, 1 - target, stack))
        return tasks

    def _pids(self) -> list[int]:
        try:
            return sorted(int(p.name) for p in self.roots.procfs.iterdir() if p.name.isdigit())
        except OSError:
            return []

    # -- the module loader --------------------------------------------------------------

    def insmod(self, module: Path, timeout: float = 120.0) -> None:
        cp = subprocess.run(
            [self.roots.insmod, str(module)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=_loader_env(self.roots),
        )
        if cp.returncode != 0:
            message = (cp.stderr or cp.stdout).strip().splitlines()
            text = message[-1] if message else f"{self.roots.insmod} exited {cp.returncode}"
            raise LoadError(_errno_of(text), text)

    def rmmod(self, name: str, timeout: float = 60.0) -> str | None:
        """Unload ``name``; the loader's message on failure, None on success."""
        cp = subprocess.run(
            [self.roots.rmmod, name],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=_loader_env(self.roots),
        )
        if cp.returncode == 0:
            return None
        lines = (cp.stderr or cp.stdout).strip().splitlines()
        return lines[-1] if lines else f"{self.roots.rmmod} exited {cp.returncode}"


def _loader_env(roots: Roots) -> dict[str, str]:
    # kmod needs no environment of ours; a prepared tree's loader reads the roots from it.
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LC_ALL": "C"}
    for key in ("LIVEGRAFT_SYSFS", "LIVEGRAFT_PROCFS", "LIVEGRAFT_ROOT"):
        if key in os.environ:
            env[key] = os.environ[key]
    env.update({"LIVEGRAFT_SYSFS": str(roots.sysfs), "LIVEGRAFT_PROCFS": str(roots.procfs)})
    return env


# insmod prints strerror(): the ones the client treats specially.
_ERRNO_TEXT = {
    os.strerror(errno.EBUSY): errno.EBUSY,
    os.strerror(errno.EKEYREJECTED): errno.EKEYREJECTED,
    os.strerror(errno.EPERM): errno.EPERM,
    os.strerror(errno.EEXIST): errno.EEXIST,
    os.strerror(errno.ENOEXEC): errno.ENOEXEC,
    os.strerror(errno.EINVAL): errno.EINVAL,
}


def _errno_of(message: str) -> int | None:
    for text, code in _ERRNO_TEXT.items():
        if text in message:
            return code
    return None
