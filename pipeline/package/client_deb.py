"""The client DEBs (``livegraft-client``, ``apt-livegraft``; Architecture: all).

Built like the livepatch DEBs (``deb``): owners root, every mtime SOURCE_DATE_EPOCH,
single-threaded xz. ``DEBIAN/`` holds ``control``, ``md5sums`` and exactly the control
members the item declares: none for ``livegraft-client``, whose unit is enabled by the
``multi-user.target.wants`` symlink in the package, so nothing needs ``systemctl`` at
install time; ``conffiles``, ``triggers`` and a ``postinst`` for ``apt-livegraft``. Modes
are the payload's (``/var/lib/livegraft`` 0700, ``livegraftctl`` 0755); folders the
payload does not list are plain 0755 parents. Read back with dpkg-deb before it counts.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from debian.deb822 import Deb822

from ..errors import WorkError
from ..proc import run, run_bytes
from .client_item import ClientItem, check_tree
from .deb import PRIORITY, description_field, dpkg_deb_build, installed_kib, read_control, set_times

SECTION = "admin"


def control(item: ClientItem, installed: int) -> Deb822:
    fields = Deb822()
    fields["Package"] = item.name
    fields["Version"] = item.version
    fields["Architecture"] = item.arch
    fields["Maintainer"] = item.maintainer
    fields["Installed-Size"] = str(installed)
    for name, value in item.relations:
        fields[name] = value
    fields["Section"] = SECTION
    fields["Priority"] = PRIORITY
    fields["Description"] = description_field(item.summary, item.description)
    return fields


def _lay_out(item: ClientItem, root: Path) -> None:
    for entry in item.payload:
        target = root / entry.path.relative_to("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if entry.kind == "dir":
            target.mkdir(exist_ok=True)
        elif entry.kind == "symlink":
            target.symlink_to(entry.target)
        else:
            target.write_bytes(entry.data)
    for folder, _, _ in os.walk(root):
        os.chmod(folder, 0o755)
    for entry in item.payload:
        if entry.kind != "symlink":
            os.chmod(root / entry.path.relative_to("/"), entry.mode)


def md5sums(item: ClientItem) -> bytes:
    files = sorted((e for e in item.payload if e.kind == "file"), key=lambda e: e.path)
    lines = (f"{hashlib.md5(e.data).hexdigest()}  {e.path.relative_to('/')}\n" for e in files)
    return "".join(lines).encode()


def build_client_deb(item: ClientItem, work: Path) -> Path:
    """Build ``item`` in the empty folder ``work``; return the checked .deb inside it."""
    root = work / "root"
    root.mkdir()
    _lay_out(item, root)
    meta = root / "DEBIAN"
    meta.mkdir()
    (meta / "md5sums").write_bytes(md5sums(item))
    (meta / "control").write_text(control(item, installed_kib(root, meta)).dump(), "utf-8")
    for member in item.control:
        (meta / member.name).write_bytes(member.data)
    for path in (meta, meta / "md5sums", meta / "control"):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    for member in item.control:
        os.chmod(meta / member.name, member.mode)
    set_times(root, item.epoch)
    out = work / item.filename
    dpkg_deb_build(root, out, item.epoch)
    check_client_deb(out, item, work / "check")
    return out


def check_client_deb(package: Path, item: ClientItem, scratch: Path) -> None:
    """Read it back: its fields, its control members (exactly those declared, with their
    bytes and modes), the tree it unpacks."""
    fields = read_control(package)
    expected = {"Package": item.name, "Version": item.version, "Architecture": item.arch}
    expected.update(dict(item.relations))
    for key, value in expected.items():
        if fields.get(key) != value:
            raise WorkError(f"{package}: {key} is {fields.get(key)!r}, expected {value!r}")
    scratch.mkdir()
    meta = scratch / "DEBIAN"
    run(["dpkg-deb", "--control", package, meta])
    # control is checked through its fields above; every other member by its bytes.
    wanted: dict[str, tuple[int, bytes | None]] = {
        "control": (0o644, None),
        "md5sums": (0o644, md5sums(item)),
    }
    wanted.update((m.name, (m.mode, m.data)) for m in item.control)
    members = sorted(p.name for p in meta.iterdir())
    if members != sorted(wanted):
        raise WorkError(
            f"{package}: control members {', '.join(members)}, expected {', '.join(sorted(wanted))}"
        )
    for name, (mode, data) in sorted(wanted.items()):
        info = (meta / name).lstat()
        kind = "file" if stat.S_ISREG(info.st_mode) else "non-file"
        if kind != "file" or stat.S_IMODE(info.st_mode) != mode:
            raise WorkError(
                f"{package}: control member {name} is a {kind} of mode "
                f"{stat.S_IMODE(info.st_mode):o}, expected a file of mode {mode:o}"
            )
        if data is not None and (meta / name).read_bytes() != data:
            raise WorkError(f"{package}: control member {name} is not the one given")
    tar = scratch / "data.tar"
    tar.write_bytes(run_bytes(["dpkg-deb", "--fsys-tarfile", package], input=b""))
    check_tree(package, tar, item.payload)
