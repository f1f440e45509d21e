"""A minimal initramfs, written as a newc cpio archive in pure Python.

No cpio binary and no root-owned staging folder: device nodes and ownership are just
header fields here. The archive is deterministic (entries sorted, fixed mtime, uid, gid
and inode numbers, gzip without a timestamp), so one verify input gives one initramfs.
"""

from __future__ import annotations

import gzip
import stat
import struct
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import WorkError
from ..proc import run

# Debian's busybox-static; the dynamically linked busybox would not run in a guest
# that has no libc.
BUSYBOX = Path("/bin/busybox")
BUSYBOX_PACKAGE = "busybox-static"

# The applets /init itself uses; the check scripts get every applet busybox has.
REQUIRED_APPLETS = frozenset(
    {"sh", "mount", "insmod", "rmmod", "cat", "grep", "sleep", "poweroff", "uname", "dmesg"}
)

_TRAILER = "TRAILER!!!"
_MAGIC = b"070701"
_PT_INTERP = 3


@dataclass(frozen=True)
class Entry:
    """One archive member; ``data`` is a file's bytes or a symlink's target."""

    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


class Initramfs:
    """Collects members by absolute guest path; parent folders are added implicitly."""

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}

    def _put(self, path: str, entry: Entry) -> None:
        p = PurePosixPath(path)
        if not p.is_absolute() or ".." in p.parts:
            raise ValueError(f"{path}: expected an absolute guest path without ..")
        for parent in reversed(p.parents):
            if str(parent) != "/":
                self._entries.setdefault(str(parent), Entry(stat.S_IFDIR | 0o755))
        self._entries[str(p)] = entry

    def add_dir(self, path: str, mode: int = 0o755) -> None:
        self._put(path, Entry(stat.S_IFDIR | mode))

    def add_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self._put(path, Entry(stat.S_IFREG | mode, data))

    def add_symlink(self, path: str, target: str) -> None:
        self._put(path, Entry(stat.S_IFLNK | 0o777, target.encode()))

    def add_chardev(self, path: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._put(path, Entry(stat.S_IFCHR | mode, rdev=(major, minor)))

    def cpio(self) -> bytes:
        """The uncompressed newc archive."""
        out = bytearray()
        # Sorted paths put every folder before its contents, as the kernel's unpacker needs.
        for ino, name in enumerate(sorted(self._entries), start=1):
            e = self._entries[name]
            _member(out, name.lstrip("/"), e, ino)
        _member(out, _TRAILER, Entry(0), 0)
        return bytes(out)

    def gzipped(self) -> bytes:
        return gzip.compress(self.cpio(), compresslevel=6, mtime=0)


def _member(out: bytearray, name: str, e: Entry, ino: int) -> None:
    raw_name = name.encode() + b"\0"
    nlink = 2 if stat.S_ISDIR(e.mode) else 1
    fields = (ino, e.mode, 0, 0, nlink, 0, len(e.data), 0, 0, *e.rdev, len(raw_name), 0)
    out += _MAGIC + b"".join(b"%08X" % f for f in fields)
    out += raw_name
    out += b"\0" * (-len(out) % 4)
    out += e.data
    out += b"\0" * (-len(out) % 4)


def _is_static(path: Path) -> bool:
    """True if the ELF file has no program interpreter (no dynamic loader to find)."""
    head = path.read_bytes()
    if head[:5] != b"\x7fELF\x02" or head[5] != 1:
        return False
    (phoff,) = struct.unpack_from("<Q", head, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
    return all(
        struct.unpack_from("<I", head, phoff + i * phentsize)[0] != _PT_INTERP for i in range(phnum)
    )


def add_busybox(image: Initramfs, busybox: Path = BUSYBOX) -> None:
    """/bin/busybox and a link for each of its applets in /bin."""
    if not busybox.is_file():
        raise WorkError(f"{busybox}: not installed (Debian package {BUSYBOX_PACKAGE})")
    if not _is_static(busybox):
        raise WorkError(
            f"{busybox}: dynamically linked; the guest needs Debian's {BUSYBOX_PACKAGE}"
        )
    applets = set(run([busybox, "--list"]).stdout.split())
    missing = REQUIRED_APPLETS - applets
    if missing:
        raise WorkError(f"{busybox}: lacks the applets {', '.join(sorted(missing))}")
    image.add_file("/bin/busybox", busybox.read_bytes(), 0o755)
    for applet in sorted(applets - {"busybox"}):
        if "/" not in applet:
            image.add_symlink(f"/bin/{applet}", "busybox")


def base_image() -> Initramfs:
    """The folders and device node every guest needs before /init runs."""
    image = Initramfs()
    for folder in ("/dev", "/proc", "/sys", "/tmp", "/run"):
        image.add_dir(folder)
    # The kernel opens /dev/console for init before anything can mount devtmpfs.
    image.add_chardev("/dev/console", 5, 1)
    add_busybox(image)
    return image
