"""A kernel module's .modinfo strings, read from its ELF sections with pyelftools.

The build stage checks what it made (vermagic, the livepatch flag, srcversion, the exact
build label); verify reads the same file before booting (``name``, the module's and so
the livepatch's sysfs name, which can differ from the file name, and ``vermagic``).
"""

from __future__ import annotations

from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from .errors import InputError


def read_modinfo(path: Path) -> dict[str, list[str]]:
    """Every key of the module's .modinfo section with its values, in file order.

    Keys may repeat (``alias``, ``depends``), hence the lists. A file that is not a
    readable ELF module, or one without .modinfo, is an InputError naming the file.
    """
    try:
        with path.open("rb") as f:
            section = ELFFile(f).get_section_by_name(".modinfo")
            raw: bytes | None = section.data() if section is not None else None
    except FileNotFoundError:
        raise InputError(path, None, "a kernel module (.ko): no such file") from None
    except (OSError, ELFError, ValueError) as exc:
        raise InputError(
            path, None, f"a kernel module (.ko) with readable ELF sections ({exc})"
        ) from None
    if raw is None:
        raise InputError(path, ".modinfo", "a kernel module (.ko) with a .modinfo section")
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
