"""The .modinfo strings of a kernel module, read straight from its ELF sections.

Verify needs two of them before booting: ``name`` (the module's and so the livepatch's
sysfs name, which can differ from the file name) and ``vermagic`` (which build it was
compiled for).
"""

from __future__ import annotations

import struct
from pathlib import Path

from ..errors import InputError

_ELF64_LE = b"\x7fELF\x02\x01"


def read_modinfo(path: Path) -> dict[str, list[str]]:
    """Every key of the module's .modinfo section with its values, in file order."""
    data = path.read_bytes()
    if data[:6] != _ELF64_LE:
        raise InputError(path, None, "a 64-bit little-endian ELF kernel module (.ko)")
    try:
        (shoff,) = struct.unpack_from("<Q", data, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

        def section(i: int) -> tuple[int, int, int]:
            base = shoff + i * shentsize
            (name,) = struct.unpack_from("<I", data, base)
            offset, size = struct.unpack_from("<QQ", data, base + 0x18)
            return name, offset, size

        _, names_at, _ = section(shstrndx)
        for i in range(shnum):
            name_off, offset, size = section(i)
            end = data.index(b"\0", names_at + name_off)
            if data[names_at + name_off : end] == b".modinfo":
                return _parse(data[offset : offset + size])
    except (struct.error, ValueError):
        raise InputError(path, None, "a kernel module with readable ELF sections") from None
    raise InputError(path, ".modinfo", "a kernel module (.ko) with a .modinfo section")


def _parse(raw: bytes) -> dict[str, list[str]]:
    info: dict[str, list[str]] = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.decode("utf-8", "replace").partition("=")
        if sep:
            info.setdefault(key, []).append(value)
    return info


def module_name(path: Path) -> str:
    """The name the kernel gives the module (``name=``, set by kbuild since 5.x)."""
    names = read_modinfo(path).get("name")
    if names:
        return names[0]
    # Older kbuild: the file name, with the dashes kbuild turns into underscores.
    return path.name.removesuffix(".ko").replace("-", "_")


def vermagic_release(path: Path) -> str | None:
    """The ``uname -r`` the module was built for: the first word of its vermagic."""
    magic = read_modinfo(path).get("vermagic")
    return magic[0].split()[0] if magic and magic[0].split() else None
