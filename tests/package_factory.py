"""Many small real packages, fast: for the incremental index test and ``bench/index``.

DEBs are written member by member (ar, control.tar.gz, data.tar.gz) as dpkg-deb lays
them out, with no subprocess per package. RPMs come from one ``rpmbuild`` per version
whose output is copied with its name rewritten in place: every name has the same length
(``<prefix>-NNNNN``), so the header stays well-formed and rpm/createrepo_c read each copy
as its own package (its header digests no longer match, which no indexer checks).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import struct
import subprocess
import tarfile
from pathlib import Path

MTIME = 1704067200


def _tar_gz(members: dict[str, bytes], dirs: tuple[str, ...] = ()) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for d in ("./", *dirs):
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, MTIME
            info.uname = info.gname = "root"
            tar.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, MTIME
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), compresslevel=1, mtime=0)


def _ar_member(name: str, data: bytes) -> bytes:
    header = f"{name:<16}{MTIME:<12}{0:<6}{0:<6}{0o100644:<8o}{len(data):<10}`\n".encode()
    assert len(header) == 60
    return header + data + (b"\n" if len(data) % 2 else b"")


def write_deb(out: Path, name: str, version: str, arch: str = "amd64") -> Path:
    control = (
        f"Package: {name}\nVersion: {version}\nArchitecture: {arch}\n"
        "Maintainer: livegraft bench <bench@example.invalid>\nInstalled-Size: 1\n"
        f"Enhances: linux-image-{name.removeprefix('livepatch-')}\n"
        "Section: kernel\nPriority: optional\n"
        f"Description: generated package {name}\n a small package for index tests.\n"
    ).encode()
    data = f"{name} {version}\n".encode()
    deb = out / f"{name}_{version}_{arch}.deb"
    deb.write_bytes(
        b"!<arch>\n"
        + _ar_member("debian-binary", b"2.0\n")
        + _ar_member("control.tar.gz", _tar_gz({"./control": control}))
        + _ar_member("data.tar.gz", _tar_gz({f"./opt/{name}": data}, ("./opt/",)))
    )
    return deb


def rpm_template(top: Path, prefix: str, version: str) -> Path:
    """``<prefix>-00000-<version>-1.noarch.rpm``, built once per version."""
    name = f"{prefix}-00000"
    rpm = top / "RPMS" / "noarch" / f"{name}-{version}-1.noarch.rpm"
    if rpm.is_file():
        return rpm
    (top / "SPECS").mkdir(parents=True, exist_ok=True)
    spec = top / "SPECS" / f"{name}-{version}.spec"
    spec.write_text(
        f"Name: {name}\nVersion: {version}\nRelease: 1\nSummary: generated package\n"
        "License: MIT\nBuildArch: noarch\n%description\nA small package for index tests.\n"
        f"%install\nmkdir -p %{{buildroot}}/opt\necho {version} > %{{buildroot}}/opt/{name}\n"
        f"%files\n/opt/{name}\n"
    )
    subprocess.run(
        ["rpmbuild", "-bb", "--define", f"_topdir {top}", "--define", "_binary_payload w1.gzdio",
         str(spec)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return rpm


def _header_end(data: bytes, start: int) -> int:
    count, size = struct.unpack(">II", data[start + 8 : start + 16])
    return start + 16 + 16 * count + size


def write_rpm(out: Path, template: Path, prefix: str, index: int) -> Path:
    """A copy of ``template`` whose name is ``<prefix>-<index:05d>``, header digests redone."""
    old, new = f"{prefix}-00000".encode(), f"{prefix}-{index:05d}".encode()
    data = template.read_bytes()
    sig_end = _header_end(data, 96)
    main = sig_end + (-sig_end % 8)
    end = _header_end(data, main)
    header, payload = data[main:end], data[end:]
    patched = header.replace(old, new)
    sig = data[96:main]
    for algo in ("sha1", "sha256"):
        sig = sig.replace(
            hashlib.new(algo, header).hexdigest().encode(),
            hashlib.new(algo, patched).hexdigest().encode(),
        )
    sig = sig.replace(
        hashlib.md5(header + payload).digest(), hashlib.md5(patched + payload).digest()
    )
    dest = out / template.name.replace(old.decode(), new.decode())
    dest.write_bytes(data[:96].replace(old, new) + sig + patched + payload)
    return dest
