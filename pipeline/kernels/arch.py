"""Architecture names: the matrix speaks ``uname -m``; Debian's archive speaks dpkg's names."""

from __future__ import annotations

# dpkg architecture → what ``uname -m`` prints on that architecture's kernels. RPM
# already names architectures as uname does (x86_64, aarch64, ppc64le, s390x).
DEB_TO_UNAME: dict[str, str] = {
    "amd64": "x86_64",
    "arm64": "aarch64",
    "armhf": "armv7l",
    "armel": "armv5tel",
    "i386": "i686",
    "ppc64el": "ppc64le",
    "ppc64": "ppc64",
    "s390x": "s390x",
    "riscv64": "riscv64",
    "mips64el": "mips64",
    "mipsel": "mips",
    "loong64": "loongarch64",
}


def uname_machine(arch: str) -> str:
    """``uname -m`` for a dpkg architecture name; other names are taken as uname's already."""
    return DEB_TO_UNAME.get(arch, arch)
