"""What one package holds and says: the input both the DEB and the RPM builder take."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from livegraft.signing.module_signature import SIGNATURE_MARKER

from ..errors import InputError, WorkError
from ..kernels.model import KernelBuild
from .info import INFO_NAME, PackageType, install_dir
from .names import check_level, check_uname_r, deb_filename, rpm_filename

_MODULE_FILE = re.compile(r"[A-Za-z0-9_]+\.ko")


@dataclass(frozen=True)
class PackageItem:
    type: PackageType
    name: str
    version: str
    # RPM only (Release); "" for a DEB.
    release: str
    # The package's architecture as its format names it (amd64 / x86_64).
    arch: str
    build: KernelBuild
    # The signed module in the store, the name it is installed under, and its sha256.
    module: Path
    module_file: str
    sha256: str
    # The rendered info file (info.render_info).
    info: bytes
    summary: str
    description: tuple[str, ...]
    maintainer: str
    vendor: str
    # SOURCE_DATE_EPOCH: every timestamp in the package.
    epoch: int

    def __post_init__(self) -> None:
        check_uname_r(self.build.uname_r)
        check_level(self.version)
        if not _MODULE_FILE.fullmatch(self.module_file):
            raise InputError(
                self.module, "file", f"a module file name (name.ko), not {self.module_file!r}"
            )

    @property
    def install_dir(self) -> PurePosixPath:
        return install_dir(self.build.uname_r)

    @property
    def module_path(self) -> PurePosixPath:
        return self.install_dir / self.module_file

    @property
    def info_path(self) -> PurePosixPath:
        return self.install_dir / INFO_NAME

    @property
    def filename(self) -> str:
        if self.type == "deb":
            return deb_filename(self.name, self.version, self.arch)
        return rpm_filename(self.name, self.version, self.release, self.arch)

    def check_payload(self, package: Path, module: bytes, info: bytes) -> None:
        """The module and info file as read back from the built package: still ours, signed."""
        if hashlib.sha256(module).hexdigest() != self.sha256:
            raise WorkError(f"{package}: {self.module_path} is not the module built and verified")
        if not module.endswith(SIGNATURE_MARKER):
            raise WorkError(f"{package}: {self.module_path} lost its module signature")
        if info != self.info:
            raise WorkError(f"{package}: {self.info_path} is not the info file given")
