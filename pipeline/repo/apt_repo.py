"""An apt repository: pool, Packages indexes, by-hash, a signed Release, and advisories.

Layout of the repository root (``deb/`` in the published tree)::

    pool/<component>/<l>/<source>/<file>.deb
    dists/<suite>/<component>/binary-<arch>/Packages{,.gz,.xz}
    dists/<suite>/<component>/binary-<arch>/by-hash/SHA256/<sha256>
    dists/<suite>/<component>/advisories/Advisories{,.gz,.xz}   (+ by-hash)
    dists/<suite>/{Release,Release.gpg,InRelease}

Every index is written through python-debian's deb822 classes, with the fields and values
apt-ftparchive writes for the same pool (the tests compare the two). ``Acquire-By-Hash``
lets apt fetch indexes under names that never change, so a client that reads the
InRelease just written never meets a Packages file from the run before; the by-hash
files the previous Release named are kept for clients that read it a moment ago.
InRelease is written last: it is what apt reads first.

The advisory index (deb822, one stanza per advisory and package version: Package,
Version, Architecture, Advisory, Severity, Issued, CVEs, Title) is listed in Release, so
its hash is covered by the same signature; apt fetches and checks it like any index when
configured with an ``Acquire::IndexTargets`` entry whose MetaKey is
``$(COMPONENT)/advisories/Advisories``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import lzma
import multiprocessing
import os
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path, PurePosixPath
from typing import Any

from debian import deb822, debfile

from ..errors import InputError, WorkError
from ..files import write_atomic
from ..proc import run_bytes
from .advisory import POOL_FILE_NAME, Advisory, for_pool, iso
from .signer import MetadataSigner

log = logging.getLogger("livegraft.repo.apt")

POOL = "pool"
ADVISORIES = "advisories/Advisories"
# The hashes Release lists, weakest first (apt-ftparchive's set, less SHA512: apt fetches
# by-hash under the strongest one listed, and SHA256 is the one we keep by-hash copies of).
# (Release field, hashlib name, python-debian's key within the field's entries)
RELEASE_HASHES = (
    ("MD5Sum", "md5", "md5sum"),
    ("SHA1", "sha1", "sha1"),
    ("SHA256", "sha256", "sha256"),
)
BY_HASH = "SHA256"
# Field order of apt's TFRewritePackageOrder, which apt-ftparchive follows; fields not
# listed keep their control-file order after these.
PACKAGE_ORDER = (
    "Package",
    "Package-Type",
    "Architecture",
    "Subarchitecture",
    "Version",
    "Built-Using",
    "Built-For-Profiles",
    "Multi-Arch",
    "Priority",
    "Essential",
    "Section",
    "Source",
    "Origin",
    "Maintainer",
    "Original-Maintainer",
    "Bugs",
    "Installed-Size",
    "Provides",
    "Pre-Depends",
    "Depends",
    "Recommends",
    "Suggests",
    "Conflicts",
    "Breaks",
    "Replaces",
    "Enhances",
    "Filename",
    "Size",
    "MD5sum",
    "SHA1",
    "SHA256",
    "SHA512",
    "Homepage",
    "Description",
)
_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_VERSION = re.compile(r"^(\d+:)?[0-9][A-Za-z0-9.+~-]*$")
_SUITE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class DebEntry:
    """One pool file's Packages stanza material (cached between runs)."""

    path: str  # relative to the repository root: pool/…
    size: int
    mtime_ns: int
    # The control file's fields in their order, Description included.
    control: tuple[tuple[str, str], ...]
    md5: str
    sha1: str
    sha256: str
    sha512: str

    def field(self, name: str) -> str:
        for key, value in self.control:
            if key.lower() == name.lower():
                return value
        return ""

    @property
    def name(self) -> str:
        return self.field("Package")

    @property
    def version(self) -> str:
        return self.field("Version")

    @property
    def arch(self) -> str:
        return self.field("Architecture")

    def stanza(self) -> deb822.Packages:
        fields = dict(self.control)
        fields.update(
            {
                "Filename": self.path,
                "Size": str(self.size),
                "MD5sum": self.md5,
                "SHA1": self.sha1,
                "SHA256": self.sha256,
                "SHA512": self.sha512,
            }
        )
        stanza = deb822.Packages()
        for key in PACKAGE_ORDER:
            if key in fields:
                stanza[key] = fields.pop(key)
        for key, value in fields.items():
            stanza[key] = value
        return stanza


@dataclass(frozen=True)
class AptIndex:
    root: Path
    suite: str
    release: Path
    inrelease: Path
    packages: int
    advisories: int
    valid_until: datetime


# -- pool --------------------------------------------------------------------------------


def pool_dir(name: str, component: str = "main") -> PurePosixPath:
    """``pool/main/l/livepatch-6.1.0-56-amd64``: Debian's split by first letter (lib*: 4)."""
    prefix = name[:4] if name.startswith("lib") and len(name) > 3 else name[:1]
    return PurePosixPath(POOL, component, prefix, name)


def read_control(path: Path) -> tuple[tuple[str, str], ...]:
    try:
        raw = _control_member(path)
        if raw is not None:
            control: Mapping[str, Any] = deb822.Deb822(raw.decode("utf-8"))
        else:
            control = debfile.DebFile(str(path)).debcontrol()
    except (debfile.DebError, OSError, EOFError, ValueError, lzma.LZMAError) as exc:
        raise InputError(path, None, f"not a readable .deb ({exc})") from None
    fields = tuple((k, str(v)) for k, v in control.items())
    _check_control(path, dict(fields))
    return fields


def _control_member(path: Path) -> bytes | None:
    """The ``control`` file of a .deb read straight from its ar and tar members.

    python-debian's DebFile opens every member through tarfile, which dominates indexing
    a large pool; this reads only what a Packages stanza needs. None for anything
    unusual (zstd, long tar names, no control): the caller then asks python-debian.
    """
    with path.open("rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise ValueError("not an ar archive")
        while header := f.read(60):
            if len(header) < 60 or header[58:60] != b"`\n":
                raise ValueError("truncated ar member header")
            name = header[:16].rstrip(b" ").rstrip(b"/")
            size = int(header[48:58])
            if not name.startswith(b"control.tar"):
                f.seek(size + size % 2, os.SEEK_CUR)
                continue
            data = f.read(size)
            if name == b"control.tar.gz":
                tar = gzip.decompress(data)
            elif name == b"control.tar.xz":
                tar = lzma.decompress(data)
            elif name == b"control.tar":
                tar = data
            else:
                return None
            return _tar_member(tar, (b"./control", b"control"))
    return None


def _tar_member(tar: bytes, names: tuple[bytes, ...]) -> bytes | None:
    pos = 0
    while pos + 512 <= len(tar):
        header = tar[pos : pos + 512]
        if header == bytes(512):
            return None
        name = header[:100].split(b"\0", 1)[0]
        size = int(header[124:136].split(b"\0", 1)[0].strip() or b"0", 8)
        kind = header[156:157]
        if name in names and kind in (b"0", b"\0"):
            return tar[pos + 512 : pos + 512 + size]
        if kind in (b"L", b"K", b"x", b"g"):
            return None  # long names or pax headers: leave them to tarfile
        pos += 512 + (size + 511) // 512 * 512
    return None


def _check_control(path: Path, fields: Mapping[str, str]) -> None:
    if not POOL_FILE_NAME.match(path.name) or not path.name.endswith(".deb"):
        raise InputError(
            path, None, "a package file name of letters, digits and ._+~- ending in .deb"
        )
    if not _NAME.match(fields.get("Package", "")):
        raise InputError(path, "Package", "lowercase letters, digits and +.- (Debian policy)")
    if not _VERSION.match(fields.get("Version", "")):
        raise InputError(path, "Version", "a Debian version (digits first; A-Za-z0-9.+~-)")
    if not re.match(r"^[a-z0-9-]+$", fields.get("Architecture", "")):
        raise InputError(path, "Architecture", "a Debian architecture name")
    if not fields.get("Description"):
        raise InputError(path, "Description", "a description (apt shows it)")


def add_to_pool(root: Path, files: Iterable[Path], component: str = "main") -> list[Path]:
    """Copy .deb files to ``pool/<component>/<l>/<source>/``; returns their pool paths.

    A file already there must hold the same bytes. Everything is checked before anything
    is copied, so a refusal leaves the pool unchanged.
    """
    plan: list[tuple[Path, Path]] = []
    result: list[Path] = []
    for src in files:
        fields = dict(read_control(src))
        source = fields.get("Source", "").split(" ", 1)[0] or fields["Package"]
        if not _NAME.match(source):
            raise InputError(src, "Source", "a Debian source package name")
        dest = root / pool_dir(source, component) / src.name
        result.append(dest)
        if dest.exists():
            if _digest(dest, "sha256") != _digest(src, "sha256"):
                raise InputError(
                    src, None, f"{dest} exists with different bytes; a published file never changes"
                )
            continue
        plan.append((src, dest))
    for src, dest in plan:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    return result


def _digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def read_entries(
    root: Path, files: Sequence[Path] | None = None, cache: Path | None = None
) -> list[DebEntry]:
    """Stanza material for ``files`` (pool paths; all of ``root/pool`` when None)."""
    if files is None:
        files = sorted((root / POOL).rglob("*.deb"))
    cached = _load_cache(cache)
    entries: list[DebEntry | None] = []
    misses: list[tuple[int, Path, str, int, int]] = []
    resolved_root = root.resolve()
    for path in files:
        full = path if path.is_absolute() else root / path
        try:
            rel = full.resolve().relative_to(resolved_root).as_posix()
        except ValueError:
            raise InputError(path, None, f"a file in the pool under {root}") from None
        if not rel.startswith(f"{POOL}/"):
            raise InputError(path, None, f"a file in the pool under {root}")
        try:
            st = full.stat()
        except FileNotFoundError:
            raise InputError(path, None, "package file not found") from None
        hit = cached.get(rel)
        if hit is not None and hit.size == st.st_size and hit.mtime_ns == st.st_mtime_ns:
            entries.append(hit)
            continue
        misses.append((len(entries), full, rel, st.st_size, st.st_mtime_ns))
        entries.append(None)
    fresh = len(misses)
    for i, read in _read_entries(misses):
        entries[i] = read
    seen: dict[tuple[str, str, str], DebEntry] = {}
    unique: list[DebEntry] = []
    for entry in (e for e in entries if e is not None):
        key = (entry.name, entry.version, entry.arch)
        other = seen.setdefault(key, entry)
        if other is entry:
            unique.append(entry)
        elif other.sha256 != entry.sha256:
            raise InputError(
                entry.path, None, f"{'_'.join(key)} is also {other.path} with different bytes"
            )
    if cache is not None and fresh:
        # The cache may serve several suites sharing one pool: keep what still exists.
        merged = {**{e.path: e for e in cached.values()}, **{e.path: e for e in unique}}
        kept = [e for e in merged.values() if (root / e.path).is_file()]
        write_atomic(cache, json.dumps([_entry_json(e) for e in kept]))
    log.debug("apt pool %s: %d packages, %d read", root, len(unique), fresh)
    return unique


# Below this many packages to read, a process pool costs more than it saves.
_PARALLEL_FROM = 64


def _read_entries(
    misses: Sequence[tuple[int, Path, str, int, int]],
) -> Iterable[tuple[int, DebEntry]]:
    """Read (control + four hashes) each missed file; in one process per core when many."""
    jobs = min(os.cpu_count() or 1, 8)
    if len(misses) < _PARALLEL_FROM or jobs < 2:
        for i, full, rel, size, mtime_ns in misses:
            yield i, _read_entry(full, rel, size, mtime_ns)
        return
    chunk = max(16, len(misses) // (jobs * 8))
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork")) as pool:
        for result in pool.map(_read_entry_or_error, misses, chunksize=chunk):
            if isinstance(result[1], DebEntry):
                yield result[0], result[1]
            else:
                # InputError does not survive pickling with its fields: rebuilt here.
                path, fld, expected = result[1]
                raise InputError(path, fld, expected)


def _read_entry_or_error(
    job: tuple[int, Path, str, int, int],
) -> tuple[int, DebEntry | tuple[str | None, str | None, str]]:
    i, full, rel, size, mtime_ns = job
    try:
        return i, _read_entry(full, rel, size, mtime_ns)
    except InputError as exc:
        return i, (exc.path, exc.field, exc.expected)


def _read_entry(full: Path, rel: str, size: int, mtime_ns: int) -> DebEntry:
    control = read_control(full)
    hashes = {a: hashlib.new(a) for a in ("md5", "sha1", "sha256", "sha512")}
    with full.open("rb") as f:
        while chunk := f.read(1 << 20):
            for h in hashes.values():
                h.update(chunk)
    return DebEntry(rel, size, mtime_ns, control, *(h.hexdigest() for h in hashes.values()))


def _entry_json(e: DebEntry) -> dict[str, Any]:
    return {
        "path": e.path,
        "size": e.size,
        "mtime_ns": e.mtime_ns,
        "control": [list(kv) for kv in e.control],
        "md5": e.md5,
        "sha1": e.sha1,
        "sha256": e.sha256,
        "sha512": e.sha512,
    }


def _load_cache(cache: Path | None) -> dict[str, DebEntry]:
    if cache is None or not cache.is_file():
        return {}
    try:
        raw = json.loads(cache.read_text("utf-8"))
        return {
            d["path"]: DebEntry(
                d["path"],
                d["size"],
                d["mtime_ns"],
                tuple((k, v) for k, v in d["control"]),
                d["md5"],
                d["sha1"],
                d["sha256"],
                d["sha512"],
            )
            for d in raw
        }
    except (ValueError, TypeError, KeyError):
        log.warning("ignoring unreadable package cache %s", cache)
        return {}


# -- indexes -----------------------------------------------------------------------------


def packages_text(entries: Sequence[DebEntry]) -> bytes:
    """A Packages file: stanzas sorted by name, version and path, blank-line separated."""
    return b"".join(_packages_chunks(entries))


def _packages_chunks(entries: Sequence[DebEntry], per_chunk: int = 256) -> Iterable[bytes]:
    ordered = sorted(entries, key=lambda e: (e.name, e.version, e.arch, e.path))
    for start in range(0, len(ordered), per_chunk):
        # Each stanza followed by a blank line, as apt-ftparchive writes them.
        chunk = ordered[start : start + per_chunk]
        yield "".join(e.stanza().dump() + "\n" for e in chunk).encode("utf-8")


def advisories_text(advisories: Sequence[Advisory], entries: Sequence[DebEntry]) -> bytes:
    """The side index: one stanza per advisory and package version it names."""
    by_file = {PurePosixPath(e.path).name: e for e in entries}
    stanzas = []
    for adv, files in for_pool(advisories, by_file):
        for file in files:
            e = by_file[file]
            stanza = deb822.Deb822()
            stanza["Package"] = e.name
            stanza["Version"] = e.version
            stanza["Architecture"] = e.arch
            stanza["Advisory"] = adv.id
            stanza["Type"] = adv.type
            stanza["Severity"] = adv.severity.lower()
            stanza["Issued"] = iso(adv.issued)
            if adv.cves:
                stanza["CVEs"] = " ".join(adv.cves)
            stanza["Title"] = adv.title
            stanzas.append(((e.name, e.version, e.arch, adv.id), stanza))
    stanzas.sort(key=lambda pair: pair[0])
    return "".join(s.dump() + "\n" for _, s in stanzas).encode("utf-8")


def _variants(data: bytes) -> dict[str, bytes]:
    """The file as apt may fetch it: plain, gzip and xz, all deterministic."""
    return {
        "": data,
        ".gz": gzip.compress(data, compresslevel=9, mtime=0),
        ".xz": _xz(data),
    }


# From this size xz runs as a program, in blocks on every core: liblzma through Python
# compresses on one core only, and on a pool of thousands that was most of the time.
_XZ_THREADED_FROM = 1 << 20


def _xz(data: bytes) -> bytes:
    """xz -6; multi-block (1 MiB blocks, one stream: any xz reader) when large."""
    xz = shutil.which("xz")
    if len(data) >= _XZ_THREADED_FROM and xz is not None:
        try:
            return run_bytes([xz, "-6", "--block-size=1MiB", "-T0", "-c", "-q"], input=data)
        except WorkError as exc:
            log.warning("%s; compressing on one core instead", exc)
    return lzma.compress(data, format=lzma.FORMAT_XZ, preset=6)


def index_apt_repo(
    root: Path,
    *,
    suite: str,
    signer: MetadataSigner,
    codename: str | None = None,
    architectures: Sequence[str] = ("amd64",),
    component: str = "main",
    files: Sequence[Path] | None = None,
    advisories: Sequence[Advisory] = (),
    origin: str = "livegraft",
    label: str = "livegraft",
    description: str = "livegraft kernel livepatches",
    valid_for: timedelta = timedelta(days=7),
    cache: Path | None = None,
    now: datetime | None = None,
) -> AptIndex:
    """Write ``dists/<suite>`` for the pool files given (all of the pool when None).

    ``Valid-Until`` is ``now + valid_for``: the repository must be indexed (re-signed) again
    before then, or clients refuse it as expired. Packages of an architecture the suite
    does not list are refused; ``all`` packages go into every architecture's index.
    """
    for value, fld in ((suite, "suite"), (codename or suite, "codename"), (component, "component")):
        if not _SUITE.match(value):
            raise InputError(None, fld, f"letters, digits and ._- (not {value!r})")
    if not architectures or "all" in architectures:
        raise InputError(None, "architectures", "one or more architectures, not 'all'")
    moment = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    entries = read_entries(root, files, cache)
    for e in entries:
        if e.arch != "all" and e.arch not in architectures:
            raise InputError(
                e.path, "Architecture", f"one of {', '.join(architectures)} or all, not {e.arch}"
            )
    dist = root / "dists" / suite
    previous = _by_hash_named(dist / "Release")

    indexes: dict[str, bytes] = {}
    for arch in architectures:
        mine = [e for e in entries if e.arch in (arch, "all")]
        for ext, data in _variants(packages_text(mine)).items():
            indexes[f"{component}/binary-{arch}/Packages{ext}"] = data
    advisory_data = advisories_text(advisories, entries)
    for ext, data in _variants(advisory_data).items():
        indexes[f"{component}/{ADVISORIES}{ext}"] = data

    current: set[Path] = set()
    for rel, data in indexes.items():
        by_hash = dist / PurePosixPath(rel).parent / "by-hash" / BY_HASH
        target = by_hash / hashlib.sha256(data).hexdigest()
        current.add(target)
        if not target.exists():
            write_atomic(target, data)
    for rel, data in indexes.items():
        write_atomic(dist / rel, data)

    release = deb822.Release()
    release["Origin"] = origin
    release["Label"] = label
    release["Suite"] = suite
    release["Codename"] = codename or suite
    release["Date"] = format_datetime(moment)
    valid_until = moment + valid_for
    release["Valid-Until"] = format_datetime(valid_until)
    release["Acquire-By-Hash"] = "yes"
    release["Architectures"] = " ".join(architectures)
    release["Components"] = component
    release["Description"] = description
    # python-debian types fields as str; its hash fields take lists of dicts.
    multivalued: Any = release
    for fld, algo, key in RELEASE_HASHES:
        multivalued[fld] = [
            {key: hashlib.new(algo, data).hexdigest(), "size": str(len(data)), "name": rel}
            for rel, data in sorted(indexes.items())
        ]
    text = release.dump().encode("utf-8")
    write_atomic(dist / "Release", text)
    write_atomic(dist / "Release.gpg", signer.detach_sign(text))
    write_atomic(dist / "InRelease", signer.clearsign(text))

    for by_hash_dir in {t.parent for t in current}:
        for old in by_hash_dir.iterdir():
            if old not in current and old not in previous and not old.name.startswith("."):
                old.unlink()
    n_adv = len(for_pool(advisories, {PurePosixPath(e.path).name: e for e in entries}))
    log.info("apt %s/%s: %d packages, %d advisories", root, suite, len(entries), n_adv)
    return AptIndex(
        root, suite, dist / "Release", dist / "InRelease", len(entries), n_adv, valid_until
    )


def _by_hash_named(release: Path) -> set[Path]:
    """The by-hash files a Release names (to keep them one more generation)."""
    if not release.is_file():
        return set()
    with release.open("rb") as f:
        parsed = deb822.Release(f)
    dist = release.parent
    return {
        dist / PurePosixPath(item["name"]).parent / "by-hash" / BY_HASH / item["sha256"]
        for item in parsed.get("SHA256", [])
    }
