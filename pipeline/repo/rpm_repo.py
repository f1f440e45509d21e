"""An RPM repository for dnf: repodata with updateinfo, signed, committed through a metalink.

Layout of one repository root (``rpm/<dist>/<arch>/`` in the published tree)::

    pool/<file>.rpm                      every package, shared by all generations
    gen-<N>/repodata/repomd.xml(.asc)    generation N's metadata; hrefs ../pool/<file>
    gen-<N>/repodata/<sha256>-primary.xml.gz, -filelists, -other, -updateinfo
    metalink.xml                         MirrorManager 3.0: sha256 and URL of gen-N's repomd
    repodata/                            the newest generation again, hrefs pool/<file>,
                                         for clients configured with baseurl= this root

The metalink is the commit point: ``repomd.xml`` and ``repomd.xml.asc`` are two objects,
so a client reading them while they change could see a mismatched pair; a generation is
complete before the metalink (one object, written in one go) names it, and dnf refuses a
repomd.xml whose sha256 differs from the metalink's. dnf re-reads the metalink just before
downloading packages, so packages live in the shared pool, never in a generation. The
top-level ``repodata/`` is for ``baseurl=`` clients, which accept that two-object window.

Package metadata comes from createrepo_c's bindings, one parse per pool file, kept in an
optional cache keyed by name, size and mtime, so adding one package to a pool of
thousands re-reads one package and rewrites only metadata.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import multiprocessing
import os
import re
import shutil
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit
from xml.sax.saxutils import escape, quoteattr

import createrepo_c as cr

from ..canonical import content_id
from ..errors import InputError, WorkError
from ..files import write_atomic
from .advisory import POOL_FILE_NAME, Advisory, for_pool
from .signer import MetadataSigner

log = logging.getLogger("livegraft.repo.rpm")

POOL = "pool"
REPODATA = "repodata"
METALINK = "metalink.xml"
GENERATION = re.compile(r"^gen-(\d+)$")
FORMAT = 1
# RPM names: what dnf, rpm and a URL all take without quoting trouble.
_RPM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_POOL_HREF = '<location href="../pool/'


@dataclass(frozen=True)
class RpmPackage:
    """What one pool file contributes to the metadata (cached between runs)."""

    file: str
    size: int
    mtime_ns: int
    pkgid: str
    name: str
    epoch: str
    version: str
    release: str
    arch: str
    sourcerpm: str
    # createrepo_c's XML chunks; primary with href ../pool/<file>.
    primary: str
    filelists: str
    other: str

    @property
    def nevra(self) -> str:
        epoch = "" if self.epoch in ("", "0") else f"{self.epoch}:"
        return f"{self.name}-{epoch}{self.version}-{self.release}.{self.arch}"


@dataclass(frozen=True)
class RpmIndex:
    root: Path
    generation: int
    repomd: Path
    metalink: Path
    packages: int
    advisories: int
    # False when the inputs matched the current generation and nothing was written.
    changed: bool


# -- pool --------------------------------------------------------------------------------


def check_pool_name(path: Path) -> None:
    if not POOL_FILE_NAME.match(path.name) or not path.name.endswith(".rpm"):
        raise InputError(
            path, None, "a package file name of letters, digits and ._+~^- ending in .rpm"
        )


def add_to_pool(root: Path, files: Iterable[Path]) -> list[Path]:
    """Copy packages into ``root/pool``; a name already there must hold the same bytes.

    Checked for every file before any is copied, so a refusal leaves the pool unchanged.
    """
    pool = root / POOL
    plan: list[tuple[Path, Path]] = []
    for src in files:
        check_pool_name(src)
        dest = pool / src.name
        if dest.exists():
            if not _same_bytes(src, dest):
                raise InputError(
                    src, None, f"{dest} exists with different bytes; a published file never changes"
                )
            continue
        plan.append((src, dest))
    pool.mkdir(parents=True, exist_ok=True)
    for src, dest in plan:
        tmp = dest.with_name(f".{dest.name}.tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    return [dest for _, dest in plan]


def _same_bytes(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with a.open("rb") as fa, b.open("rb") as fb:
        while True:
            ca, cb = fa.read(1 << 20), fb.read(1 << 20)
            if ca != cb:
                return False
            if not ca:
                return True


def read_pool(pool: Path, cache: Path | None = None) -> list[RpmPackage]:
    """Every package in the pool, sorted by file name; refuses bad names and NEVRA clashes."""
    cached = _load_cache(cache)
    found: list[RpmPackage | None] = []
    misses: list[tuple[int, Path, int, int]] = []
    names = sorted(n for n in os.listdir(pool) if n.endswith(".rpm")) if pool.is_dir() else []
    for name in names:
        path = pool / name
        check_pool_name(path)
        st = path.stat()
        hit = cached.get(path.name)
        if hit is not None and hit.size == st.st_size and hit.mtime_ns == st.st_mtime_ns:
            found.append(hit)
            continue
        misses.append((len(found), path, st.st_size, st.st_mtime_ns))
        found.append(None)
    fresh = len(misses)
    for i, read in _read_packages(misses):
        found[i] = read
    packages = [p for p in found if p is not None]
    by_nevra: dict[str, RpmPackage] = {}
    for pkg in packages:
        other = by_nevra.setdefault(pkg.nevra, pkg)
        if other is not pkg:
            raise InputError(
                pool / pkg.file, None, f"{pkg.nevra} is also {other.file}: one file per version"
            )
    if cache is not None and (fresh or len(cached) != len(packages)):
        write_atomic(cache, json.dumps([asdict(p) for p in packages]))
    log.debug("rpm pool %s: %d packages, %d read", pool, len(packages), fresh)
    return packages


def _load_cache(cache: Path | None) -> dict[str, RpmPackage]:
    if cache is None or not cache.is_file():
        return {}
    try:
        return {d["file"]: RpmPackage(**d) for d in json.loads(cache.read_text("utf-8"))}
    except (ValueError, TypeError, KeyError):
        # A cache is only a cache: a damaged one is rebuilt from the pool.
        log.warning("ignoring unreadable package cache %s", cache)
        return {}


# Below this many packages to read, a process pool costs more than it saves.
_PARALLEL_FROM = 64


def _read_packages(
    misses: Sequence[tuple[int, Path, int, int]],
) -> Iterator[tuple[int, RpmPackage]]:
    """Read each missed file's header; in one process per core when many (createrepo_c
    itself reads with a pool of workers)."""
    jobs = min(os.cpu_count() or 1, 8)
    if len(misses) < _PARALLEL_FROM or jobs < 2:
        for i, path, size, mtime_ns in misses:
            yield i, _read_package(path, size, mtime_ns)
        return
    chunk = max(16, len(misses) // (jobs * 8))
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork")) as workers:
        for i, result in workers.map(_read_package_or_error, misses, chunksize=chunk):
            if isinstance(result, RpmPackage):
                yield i, result
            else:
                # InputError does not survive pickling with its fields: rebuilt here.
                raise InputError(*result)


def _read_package_or_error(
    job: tuple[int, Path, int, int],
) -> tuple[int, RpmPackage | tuple[str | None, str | None, str]]:
    i, path, size, mtime_ns = job
    try:
        return i, _read_package(path, size, mtime_ns)
    except InputError as exc:
        return i, (exc.path, exc.field, exc.expected)


def _read_package(path: Path, size: int, mtime_ns: int) -> RpmPackage:
    try:
        pkg = cr.package_from_rpm(str(path), cr.SHA256, f"../{POOL}/{path.name}", None, 10)
    except (cr.CreaterepoCError, OSError) as exc:
        raise InputError(path, None, f"not a readable RPM package ({exc})") from None
    if not _RPM_NAME.match(pkg.name or ""):
        raise InputError(path, "Name", "letters, digits and ._+- (a name dnf and URLs take)")
    return RpmPackage(
        file=path.name,
        size=size,
        mtime_ns=mtime_ns,
        pkgid=pkg.pkgId,
        name=pkg.name,
        epoch=pkg.epoch or "0",
        version=pkg.version,
        release=pkg.release,
        arch=pkg.arch,
        sourcerpm=pkg.rpm_sourcerpm or "",
        primary=cr.xml_dump_primary(pkg),
        filelists=cr.xml_dump_filelists(pkg),
        other=cr.xml_dump_other(pkg),
    )


# -- updateinfo --------------------------------------------------------------------------


def updateinfo_records(
    advisories: Sequence[Advisory], packages: Sequence[RpmPackage], collection: str
) -> list[Any]:
    """createrepo_c UpdateRecords for the advisories that name files of this pool."""
    by_file = {p.file: p for p in packages}
    records = []
    for adv, files in for_pool(advisories, by_file):
        rec = cr.UpdateRecord()
        rec.fromstr = "livegraft"
        rec.status = "final"
        rec.type = adv.type
        rec.version = "1"
        rec.id = adv.id
        rec.title = adv.title
        rec.severity = adv.severity_title
        rec.summary = adv.title
        rec.description = adv.description
        rec.issued_date = adv.issued.astimezone(UTC).replace(tzinfo=None)
        rec.updated_date = (adv.updated or adv.issued).astimezone(UTC).replace(tzinfo=None)
        rec.release = collection
        rec.reboot_suggested = False
        for ref in adv.all_references():
            cref = cr.UpdateReference()
            cref.href = ref.url
            cref.id = ref.id
            cref.type = ref.type
            cref.title = ref.title
            rec.append_reference(cref)
        col = cr.UpdateCollection()
        col.shortname = collection
        col.name = collection
        for file in files:
            pkg = by_file[file]
            cpkg = cr.UpdateCollectionPackage()
            cpkg.name = pkg.name
            cpkg.epoch = pkg.epoch
            cpkg.version = pkg.version
            cpkg.release = pkg.release
            cpkg.arch = pkg.arch
            cpkg.src = pkg.sourcerpm
            cpkg.filename = pkg.file
            cpkg.sum = pkg.pkgid
            cpkg.sum_type = cr.SHA256
            cpkg.reboot_suggested = False
            col.append(cpkg)
        rec.append_collection(col)
        records.append(rec)
    return records


# -- writing -----------------------------------------------------------------------------


def index_rpm_repo(
    root: Path,
    *,
    base_url: str,
    signer: MetadataSigner,
    advisories: Sequence[Advisory] = (),
    collection: str = "livegraft",
    cache: Path | None = None,
    keep: int = 3,
    now: datetime | None = None,
) -> RpmIndex:
    """Index ``root/pool`` into a new generation, sign it, move the metalink, prune.

    ``base_url`` is the absolute URL at which ``root`` is served (``https://…/rpm/<dist>/
    <arch>``, or ``file://…``): the metalink must name repomd.xml by absolute URL.
    Unchanged inputs (packages, advisories, keys, URL) write nothing.
    """
    _check_base_url(base_url)
    if keep < 1:
        raise ValueError("keep at least one generation")
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    root.mkdir(parents=True, exist_ok=True)
    (root / POOL).mkdir(exist_ok=True)
    with _locked(root / POOL):
        packages = read_pool(root / POOL, cache)
        records = updateinfo_records(advisories, packages, collection)
        inputs = content_id(
            {
                "format": FORMAT,
                "packages": [[p.file, p.pkgid] for p in packages],
                "advisories": [a.summary() for a in advisories],
                "collection": collection,
                "keys": list(signer.fingerprints),
                "base_url": base_url,
            }
        )
        generations = _generations(root)
        current = generations[-1] if generations else 0
        if current and _contenthash(root / f"gen-{current}" / REPODATA) == inputs:
            metalink = root / METALINK
            if metalink.is_file():
                log.info("rpm %s: unchanged (generation %d)", root, current)
                return RpmIndex(
                    root,
                    current,
                    root / f"gen-{current}" / REPODATA / "repomd.xml",
                    metalink,
                    len(packages),
                    len(records),
                    changed=False,
                )
        gen = current + 1
        _clean_temporaries(root)
        tmp = root / f".gen-{gen}.tmp"
        repomd = _write_repodata(
            tmp / REPODATA, packages, records, signer, moment, inputs, href_prefix=None
        )
        os.replace(tmp, root / f"gen-{gen}")
        gen_repodata = root / f"gen-{gen}" / REPODATA
        write_atomic(
            root / METALINK,
            metalink_xml(
                f"{base_url.rstrip('/')}/gen-{gen}/{REPODATA}/repomd.xml",
                (gen_repodata / "repomd.xml").read_bytes(),
                moment,
            ),
        )
        _write_baseurl_view(root, gen_repodata, packages, signer)
        for old in generations[: max(0, len(generations) + 1 - keep)]:
            shutil.rmtree(root / f"gen-{old}")
    log.info(
        "rpm %s: generation %d, %d packages, %d advisories", root, gen, len(packages), len(records)
    )
    return RpmIndex(
        root, gen, gen_repodata / repomd.name, root / METALINK, len(packages), len(records), True
    )


def _write_repodata(
    repodata: Path,
    packages: Sequence[RpmPackage],
    records: Sequence[Any],
    signer: MetadataSigner,
    moment: datetime,
    inputs: str,
    *,
    href_prefix: str | None,
    reuse: cr.Repomd | None = None,
) -> Path:
    """Write one repodata folder; ``href_prefix`` replaces ``../pool/`` in primary.

    With ``reuse`` (a repomd whose files already sit in ``repodata``), only primary is
    written and every other record is taken from it.
    """
    repodata.mkdir(parents=True, exist_ok=True)
    repomd = cr.Repomd()
    repomd.set_revision(str(int(moment.timestamp())))
    repomd.set_contenthash(inputs, "sha256")
    primary_chunks = (
        p.primary
        if href_prefix is None
        else p.primary.replace(_POOL_HREF, f'<location href="{href_prefix}', 1)
        for p in packages
    )
    files: list[tuple[str, Any, Iterable[str]]] = [("primary", cr.PrimaryXmlFile, primary_chunks)]
    if reuse is None:
        files += [
            ("filelists", cr.FilelistsXmlFile, (p.filelists for p in packages)),
            ("other", cr.OtherXmlFile, (p.other for p in packages)),
        ]
    for kind, cls, chunks in files:
        path = repodata / f"{kind}.xml.gz"
        xml = cls(str(path), cr.GZ_COMPRESSION)
        xml.set_num_of_pkgs(len(packages))
        for chunk in chunks:
            xml.add_chunk(chunk)
        xml.close()
        repomd.set_record(_record(kind, path))
    if reuse is None:
        path = repodata / "updateinfo.xml.gz"
        xml = cr.UpdateInfoXmlFile(str(path), cr.GZ_COMPRESSION)
        for rec in records:
            xml.add_chunk(cr.xml_dump_updaterecord(rec))
        xml.close()
        repomd.set_record(_record("updateinfo", path))
    else:
        for rec in reuse.records:
            if rec.type != "primary":
                repomd.set_record(rec.copy())
    repomd.sort_records()
    text = repomd.xml_dump().encode("utf-8")
    # The signature first: once repomd.xml is in place it must be checkable.
    write_atomic(repodata / "repomd.xml.asc", signer.detach_sign(text))
    write_atomic(repodata / "repomd.xml", text)
    return repodata / "repomd.xml"


def _record(kind: str, path: Path) -> Any:
    rec = cr.RepomdRecord(kind, str(path))
    rec.fill(cr.SHA256)
    # <sha256>-<kind>.xml.gz: a name never reused for other bytes, so caches never lie.
    rec.rename_file()
    return rec


def _write_baseurl_view(
    root: Path, gen_repodata: Path, packages: Sequence[RpmPackage], signer: MetadataSigner
) -> None:
    """``root/repodata``: the generation with hrefs ``pool/…``, for ``baseurl=`` clients.

    Shares every file but primary with the generation (copied: object stores have no
    links). Keeps the files the previous top-level repomd.xml named, for clients that
    read it a moment ago, and drops older ones.
    """
    top = root / REPODATA
    previous = _referenced(top)
    gen_repomd = cr.Repomd(str(gen_repodata / "repomd.xml"))
    top.mkdir(exist_ok=True)
    for rec in gen_repomd.records:
        if rec.type != "primary":
            name = Path(rec.location_href).name
            if not (top / name).exists():
                tmp = top / f".{name}.tmp"
                shutil.copyfile(gen_repodata / name, tmp)
                os.replace(tmp, top / name)
    moment = datetime.fromtimestamp(int(gen_repomd.revision), UTC)
    _write_repodata(
        top,
        packages,
        (),
        signer,
        moment,
        gen_repomd.contenthash,
        href_prefix=f"{POOL}/",
        reuse=gen_repomd,
    )
    keep = previous | _referenced(top) | {"repomd.xml", "repomd.xml.asc"}
    for path in top.iterdir():
        if path.name not in keep:
            path.unlink()


def _referenced(repodata: Path) -> set[str]:
    if not (repodata / "repomd.xml").is_file():
        return set()
    return {Path(r.location_href).name for r in cr.Repomd(str(repodata / "repomd.xml")).records}


def metalink_xml(url: str, repomd: bytes, moment: datetime) -> str:
    """A MirrorManager-style metalink 3.0 naming one repomd.xml by sha256, size and URL."""
    scheme = urlsplit(url).scheme
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<metalink version="3.0" xmlns="http://www.metalinker.org/"'
        ' xmlns:mm0="http://fedorahosted.org/mirrormanager" type="dynamic"'
        f' pubdate={quoteattr(format_datetime(moment, usegmt=True))} generator="livegraft">\n'
        " <files>\n"
        '  <file name="repomd.xml">\n'
        f"   <mm0:timestamp>{int(moment.timestamp())}</mm0:timestamp>\n"
        f"   <size>{len(repomd)}</size>\n"
        "   <verification>\n"
        f'    <hash type="sha256">{hashlib.sha256(repomd).hexdigest()}</hash>\n'
        f'    <hash type="sha512">{hashlib.sha512(repomd).hexdigest()}</hash>\n'
        "   </verification>\n"
        '   <resources maxconnections="1">\n'
        f"    <url protocol={quoteattr(scheme)} type={quoteattr(scheme)}"
        f' preference="100">{escape(url)}</url>\n'
        "   </resources>\n"
        "  </file>\n"
        " </files>\n"
        "</metalink>\n"
    )


def _check_base_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https", "file") or (
        parts.scheme != "file" and not parts.netloc
    ):
        raise InputError(None, "base_url", f"an absolute http(s):// or file:// URL, not {url!r}")
    if quote(url, safe=":/?&=%~+@!$,;'()*[]#") != url:
        raise InputError(None, "base_url", f"a URL without spaces or unquoted characters: {url!r}")


def _generations(root: Path) -> list[int]:
    found = []
    for path in root.iterdir():
        m = GENERATION.match(path.name)
        if m and path.is_dir():
            found.append(int(m.group(1)))
    return sorted(found)


def _contenthash(repodata: Path) -> str | None:
    try:
        return str(cr.Repomd(str(repodata / "repomd.xml")).contenthash or "") or None
    except (cr.CreaterepoCError, OSError):
        return None


def _clean_temporaries(root: Path) -> None:
    for path in root.glob(".gen-*.tmp"):
        shutil.rmtree(path)


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One indexer per repository at a time (a lock on the pool folder itself)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def read_metalink_url(metalink: Path) -> str:
    """The repomd.xml URL a metalink names (for tests and the mirror)."""
    m = re.search(r"<url [^>]*>([^<]+)</url>", metalink.read_text("utf-8"))
    if m is None:
        raise WorkError(f"{metalink}: no <url>")
    return m.group(1).replace("&amp;", "&")
