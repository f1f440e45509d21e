"""The client RPMs (``livegraft-client``, ``python3-dnf-plugin-livegraft``), noarch.

Built like the livepatch RPMs (``rpm``): no brp script (no byte-compiling, no
stripping), no scriptlets or triggers (an installroot has no ``/bin/sh``, and a package
that runs nothing cannot fail a transaction), automatic dependencies off, reproducible
under SOURCE_DATE_EPOCH, signed by the archive key. Each file carries its mode in
``%files``; ``/var/lib/livegraft`` is 0700; the dnf plugin's config is
``%config(noreplace)``. Only folders below the package's own roots are owned, never a
system folder (``/usr/bin``, systemd's, dnf's). Read back with rpm before it counts.
"""

from __future__ import annotations

from pathlib import Path

from livegraft.signing.gpg import ArchiveSigner

from ..errors import WorkError
from .client_files import Entry
from .client_item import ClientItem, check_tree
from .rpm import (
    build_signed,
    check_no_scripts,
    check_signature,
    payload_tar,
    preamble,
    query,
    spec_text,
)

GROUP = "System Environment/Base"


def _files_line(entry: Entry) -> str:
    attr = f"%attr({entry.mode:04o},root,root)"
    if entry.kind == "dir":
        return f"%dir {attr} {entry.path}"
    if entry.kind == "symlink":
        return str(entry.path)
    return f"{'%config(noreplace) ' if entry.config else ''}{attr} {entry.path}"


def _install_line(entry: Entry, source: str) -> str:
    target = f'"%{{buildroot}}{entry.path}"'
    if entry.kind == "dir":
        return f"mkdir -p {target}"
    if entry.kind == "symlink":
        return f'mkdir -p "%{{buildroot}}{entry.path.parent}" && ln -s {entry.target} {target}'
    return f'install -D -p -m {entry.mode:04o} "%{{_sourcedir}}/{source}" {target}'


def sources(item: ClientItem) -> dict[str, bytes]:
    # Numbered names: a source file's own name could clash or need quoting.
    return {f"file{i}": e.data for i, e in enumerate(item.payload) if e.kind == "file"}


def spec(item: ClientItem) -> str:
    names = iter(sources(item))
    install = [_install_line(e, next(names) if e.kind == "file" else "") for e in item.payload]
    lines = [
        *preamble(
            name=item.name,
            version=item.version,
            release=item.release,
            summary=item.summary,
            vendor=item.vendor,
            maintainer=item.maintainer,
            group=GROUP,
        ),
        "BuildArch: noarch",
        "AutoReqProv: no",
        *(f"{tag}: {value}" for tag, value in item.relations),
        "",
        "%description",
        *(spec_text(line) for line in item.description),
        "",
        "%install",
        *install,
        "",
        "%files",
        "%defattr(-,root,root,-)",
        *(_files_line(e) for e in item.payload),
        "",
    ]
    return "\n".join(lines)


def build_client_rpm(item: ClientItem, work: Path, signer: ArchiveSigner | None) -> Path:
    """Build ``item`` in the empty folder ``work``, sign it; return the checked .rpm."""
    out = build_signed(
        spec(item), item.name, item.filename, sources(item), work, item.epoch, item.arch, signer
    )
    check_client_rpm(out, item, work / "check", signer)
    return out


def check_client_rpm(
    package: Path, item: ClientItem, scratch: Path, signer: ArchiveSigner | None
) -> None:
    """Read it back: name, version, release, arch, no scripts, the tree, config files,
    the signature."""
    scratch.mkdir()
    said = query(package, "%{NAME}\n%{VERSION}\n%{RELEASE}\n%{ARCH}\n", scratch).splitlines()
    expected = [item.name, item.version, item.release, item.arch]
    if said != expected:
        raise WorkError(f"{package}: name, version, release, arch are {said}, expected {expected}")
    check_no_scripts(package, scratch)
    check_tree(package, payload_tar(package, scratch), item.payload)
    listed = query(package, "[%{FILENAMES} %{FILEFLAGS:fflags}\n]", scratch).splitlines()
    flags = dict(line.partition(" ")[::2] for line in listed)
    config = sorted(path for path, f in flags.items() if "c" in f)
    wanted = sorted(str(e.path) for e in item.payload if e.config)
    if config != wanted or not all("n" in flags[path] for path in config):
        raise WorkError(f"{package}: config files {config}, expected {wanted} (noreplace)")
    if signer is not None:
        check_signature(package, scratch, signer)
