"""The RPM of one kernel build's module: ``kpatch-patch-<…>``, version N, release 1.

Ties to the kernel, as RHEL's kpatch-patch packages have them: ``Provides: kpatch-patch
= <uname -r>`` and, for an RPM kernel, ``Requires: kernel-uname-r = <uname -r>`` (which
the kernel-core package provides). A kernel of another family has no RPM that could
provide it, so its package only ``Enhances`` it: installable anywhere, pulling nothing.
RPM allows one ``-`` in a dependency's version, so a Debian ``uname -r`` appears there
with its later ``-`` as ``_`` (``6.1.0-56_amd64``); the exact one is in the info file.

Every package also ``Supplements: kernel-uname-r = <the same version>``: installing that
kernel then pulls the patch in through dnf's weak dependencies alone, which is all a
host without the livegraft dnf plugin (and every dnf 5 host, which loads no dnf 4
plugin) has. It does nothing for a kernel already installed: the plugin covers those.

No scriptlets at all (nor triggers): the client plugin applies modules and never fails a
transaction; an RPM with no scripts cannot fail one for reasons of ours. Automatic
dependencies are off, so the ties above are the only ones.

The module signature survives: no brp scripts run (``__os_install_post`` is empty,
``__strip`` is ``/bin/true``, no debuginfo, no build-id links); the packaged module is
read back and must end with the signature marker and hash to build.json's sha256.

Reproducible: SOURCE_DATE_EPOCH as build time and file mtimes, a fixed build host,
gzip payload, a private HOME (no ``~/.rpmmacros``). The package is then signed by the
archive key with rpmsign (sha256); the OpenPGP signature carries its own creation
time, so what repeats byte for byte is the header, compared by its sha256
(``SHA256HEADER``, which covers the payload digest).
"""

from __future__ import annotations

import tarfile
from pathlib import Path

from livegraft.client.names import RPM_KERNEL_PROVIDE, RPM_PATCH_PROVIDE
from livegraft.signing.gpg import ArchiveSigner

from ..errors import WorkError
from ..proc import run
from .item import PackageItem
from .names import rpm_dependency_version

LICENSE = "GPL-2.0-only"
GROUP = "System Environment/Kernel"
BUILD_HOST = "livegraft"
RPM_KERNEL_TIE = RPM_KERNEL_PROVIDE
# No brp script may touch what is packaged: stripping would remove a module's signature,
# byte-compiling would add files; gzip and sha256 file digests, as every RPM here has.
BUILD_MACROS = (
    "%global __os_install_post %{nil}",
    "%global debug_package %{nil}",
    "%define __strip /bin/true",
    "%global _build_id_links none",
    "%global _binary_payload w9.gzdio",
    "%global _binary_filedigest_algorithm 8",
)
# Query tags that together say "this package has a script of some kind".
_SCRIPT_TAGS = (
    "PREIN", "POSTIN", "PREUN", "POSTUN", "PRETRANS", "POSTTRANS", "VERIFYSCRIPT",
)  # fmt: skip


def spec_text(text: str) -> str:
    # A % would start a macro: spec text is expanded.
    return text.replace("%", "%%")


def ties(item: PackageItem) -> list[str]:
    """The package's dependency lines (preamble tags)."""
    uname_r = item.build.uname_r
    # The version kernel-core provides: an RPM kernel's uname -r as it is, another
    # family's in the one form RPM can compare.
    kernel = uname_r if item.build.family == "rpm" else rpm_dependency_version(uname_r)
    lines = [f"Provides: {RPM_PATCH_PROVIDE} = {rpm_dependency_version(uname_r)}"]
    if item.build.family == "rpm":
        lines.append(f"Requires: {RPM_KERNEL_TIE} = {kernel}")
    else:
        lines.append(f"Enhances: {RPM_KERNEL_TIE} = {kernel}")
    lines.append(f"Supplements: {RPM_KERNEL_TIE} = {kernel}")
    return lines


def preamble(
    *, name: str, version: str, release: str, summary: str, vendor: str, maintainer: str,
    group: str = GROUP,
) -> list[str]:  # fmt: skip
    """The build macros and the tags every livegraft RPM starts with."""
    return [
        *BUILD_MACROS,
        f"Name: {name}",
        f"Version: {version}",
        f"Release: {release}",
        f"Summary: {spec_text(summary)}",
        f"License: {LICENSE}",
        f"Group: {group}",
        f"Vendor: {spec_text(vendor)}",
        f"Packager: {spec_text(maintainer)}",
    ]


def spec(item: PackageItem, module_source: str, info_source: str) -> str:
    description = [spec_text(line) for line in item.description] or [spec_text(item.summary)]
    lines = [
        *preamble(
            name=item.name,
            version=item.version,
            release=item.release,
            summary=item.summary,
            vendor=item.vendor,
            maintainer=item.maintainer,
        ),
        "AutoReqProv: no",
        *ties(item),
        "",
        "%description",
        *description,
        "",
        "%install",
        *(
            f'install -D -p -m 0644 "%{{_sourcedir}}/{source}" "%{{buildroot}}{target}"'
            for source, target in ((module_source, item.module_path), (info_source, item.info_path))
        ),
        "",
        "%files",
        "%defattr(-,root,root,-)",
        f"%dir {item.install_dir.parent}",
        f"%dir {item.install_dir}",
        str(item.module_path),
        str(item.info_path),
        "",
    ]
    return "\n".join(lines)


def build_rpm(item: PackageItem, work: Path, signer: ArchiveSigner | None) -> Path:
    """Build ``item`` in the empty folder ``work``, sign it; return the checked .rpm."""
    sources = {"module.ko": item.module.read_bytes(), "livepatch.json": item.info}
    text = spec(item, "module.ko", "livepatch.json")
    out = build_signed(text, item.name, item.filename, sources, work, item.epoch, item.arch, signer)
    check_rpm(out, item, work / "check", signer)
    return out


def build_signed(
    spec_text: str, name: str, filename: str, sources: dict[str, bytes], work: Path,
    epoch: int, arch: str, signer: ArchiveSigner | None,
) -> Path:  # fmt: skip
    """rpmbuild, then the archive key's signature; the package, not yet read back."""
    out = rpmbuild(spec_text, name, sources, work, epoch, arch) / filename
    if not out.is_file():
        raise WorkError(f"rpmbuild did not write {out}")
    if signer is not None:
        sign(out, signer, work, epoch)
    return out


def rpmbuild(
    spec_text: str, name: str, sources: dict[str, bytes], work: Path, epoch: int, arch: str
) -> Path:
    """``rpmbuild -bb`` of ``spec_text`` in the empty folder ``work``; returns the folder
    the packages of ``arch`` are written to."""
    top = work / "rpmbuild"
    source_dir = top / "SOURCES"
    source_dir.mkdir(parents=True)
    for source, data in sources.items():
        (source_dir / source).write_bytes(data)
    spec_file = top / f"{name}.spec"
    spec_file.write_text(spec_text, encoding="utf-8")
    defines = {
        "_topdir": str(top),
        "_tmppath": str(work / "tmp"),
        "_buildhost": BUILD_HOST,
        "use_source_date_epoch_as_buildtime": "1",
        "clamp_mtime_to_source_date_epoch": "1",
        "source_date_epoch_from_changelog": "0",
    }
    (work / "tmp").mkdir()
    argv: list[str | Path] = ["rpmbuild", "-bb", "--target", arch]
    for key, value in defines.items():
        argv += ["--define", f"{key} {value}"]
    run([*argv, spec_file], env=_env(work, epoch))
    return top / "RPMS" / arch


def sign(package: Path, signer: ArchiveSigner, home: Path, epoch: int) -> None:
    run(["rpmsign", "--addsign", *signer.rpm_macros(), package], env=_env(home, epoch))


def _env(home: Path, epoch: int) -> dict[str, str]:
    # A private HOME: rpm reads ~/.rpmmacros, and on Debian keeps its database there.
    return {"HOME": str(home), "SOURCE_DATE_EPOCH": str(epoch), "TZ": "UTC", "LC_ALL": "C"}


def query(package: Path, fmt: str, home: Path) -> str:
    argv: list[str | Path] = ["rpm", "-qp", "--nosignature", "--queryformat", fmt, package]
    return run(argv, env=_env(home, 0)).stdout


def header_sha256(package: Path, home: Path) -> str:
    """The sha256 of the main header: the same for the same content, however it was signed."""
    return query(package, "%{SHA256HEADER}", home).strip()


def check_rpm(
    package: Path, item: PackageItem, scratch: Path, signer: ArchiveSigner | None
) -> None:
    """Read the package back with rpm: its name, no scripts, the module's bytes, the signature."""
    scratch.mkdir()
    said = query(package, "%{NAME}\n%{VERSION}\n%{RELEASE}\n%{ARCH}\n", scratch).splitlines()
    expected = [item.name, item.version, item.release, item.arch]
    if said != expected:
        raise WorkError(f"{package}: name, version, release, arch are {said}, expected {expected}")
    check_no_scripts(package, scratch)
    module, info = _payload(package, item, scratch)
    item.check_payload(package, module, info)
    if signer is not None:
        check_signature(package, scratch, signer)


def check_no_scripts(package: Path, scratch: Path) -> None:
    scripts = query(package, "".join(f"%{{{t}}}\n" for t in _SCRIPT_TAGS), scratch)
    triggers = run(["rpm", "-qp", "--nosignature", "--triggers", "--filetriggers", package],
                   env=_env(scratch, 0)).stdout  # fmt: skip
    if any(line != "(none)" for line in scripts.splitlines()) or triggers.strip():
        raise WorkError(f"{package}: carries scriptlets or triggers")


def check_signature(package: Path, scratch: Path, signer: ArchiveSigner) -> None:
    """``rpm -K`` with the archive key alone accepts it, and the signature is SHA256."""
    keyring = RpmKeyring(scratch / "rpmdb", signer.public_asc())
    if not keyring.verifies(package):
        raise WorkError(f"{package}: rpm -K does not accept its signature by the archive key")
    how = query(package, "%{RSAHEADER:pgpsig}", scratch)
    if "SHA256" not in how:
        raise WorkError(f"{package}: signed {how!r}, expected a SHA256 signature")


def payload_tar(package: Path, scratch: Path) -> Path:
    """The package's payload as an uncompressed tar (rpm2archive), in ``scratch``."""
    # rpm2archive writes <file>.tar beside its input: give it a copy of its own.
    copy = scratch / "payload.rpm"
    copy.write_bytes(package.read_bytes())
    run(["rpm2archive", "--nocompression", copy], cwd=scratch, env=_env(scratch, 0))
    return scratch / "payload.rpm.tar"


def _payload(package: Path, item: PackageItem, scratch: Path) -> tuple[bytes, bytes]:
    members: dict[str, bytes] = {}
    with tarfile.open(payload_tar(package, scratch)) as tar:
        for member in tar:
            f = tar.extractfile(member) if member.isfile() else None
            if f is not None:
                members["/" + member.name.removeprefix("./")] = f.read()
    expected = sorted([str(item.module_path), str(item.info_path)])
    if sorted(members) != expected:
        raise WorkError(f"{package}: holds {sorted(members)}, expected {expected}")
    return members[str(item.module_path)], members[str(item.info_path)]


class RpmKeyring:
    """A private rpm database holding only the given public keys, for ``rpm -K``."""

    def __init__(self, dbpath: Path, public_asc: bytes) -> None:
        self.dbpath = dbpath
        dbpath.mkdir(parents=True)
        key = dbpath.parent / f"{dbpath.name}.asc"
        key.write_bytes(public_asc)
        self._env = _env(dbpath.parent, 0)
        run(["rpm", "--dbpath", dbpath, "--initdb"], env=self._env)
        run(["rpm", "--dbpath", dbpath, "--import", key], env=self._env)

    def verifies(self, package: Path) -> bool:
        result = run(["rpm", "--dbpath", self.dbpath, "-K", package], env=self._env, check=False)
        return result.returncode == 0 and result.stdout.rstrip().endswith("signatures OK")
