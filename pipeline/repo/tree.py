"""The published tree: keys, an apt repository, dnf repositories and client files, assembled.

Layout below the tree's root (``<work_dir>/repo`` by default)::

    keys/livegraft-archive.asc            the archive key(s), armored (dnf's gpgkey=)
    keys/livegraft-archive.gpg            the same as a binary keyring (for a keyring path)
    keys/livegraft-module-signing.crt     the module-signing certificate, PEM (and .der)
    deb/                                  apt repository root: pool/, dists/<dist>/
    rpm/<dist>/<arch>/                    dnf repository: pool/, gen-N/, metalink.xml
    clients/livegraft.sources             deb822 source for apt, the key(s) inline
    clients/livegraft.repo                one section per rpm dist and arch (metalink=)

One apt suite per dist of the builds (``bookworm``), every suite sharing one pool; its
indexes name the newest level of each package only. Each rpm repository indexes its
whole pool. Pool files are never removed here: an older level stays for clients that
hold metadata naming it (and the rpm generations before the newest still name it).

``clients/livegraft.sources`` works dropped into ``/etc/apt/sources.list.d/`` as it is: its
``Signed-By`` holds the archive key(s) as one ASCII-armored block (apt 2.4 and later), so
apt trusts them for this source alone and a host needs no keyring file. During a
rotation both keys are in the block.

The client packages (records of kind ``client``: ``livegraft-client``, the dnf plugin and
the apt hook)
belong to no kernel build: each goes into every rpm repository (RPM, noarch) and every
apt suite (DEB, Architecture: all, its newest version) the livepatch packages make, and
into no advisory.

Nothing is written that would not change: an unchanged key file, client file, apt suite
(same files, advisories, keys, and a Valid-Until not yet half spent) or rpm generation is
left as it is, so a re-run with nothing new reports ``changed: false``. Caches and the
first-publication time of each advisory live in ``<work_dir>/index/``, outside the tree.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from debian import deb822

from ..canonical import content_id
from ..errors import InputError, WorkError
from ..files import write_atomic
from ..package.records import Advisory as FixAdvisory
from ..package.records import PackageRecord
from . import apt_repo, rpm_repo
from .advisory import Advisory
from .signer import MetadataSigner

log = logging.getLogger("livegraft.repo.tree")

KEYS = "keys"
DEB = "deb"
RPM = "rpm"
CLIENTS = "clients"
ARCHIVE_ASC = "livegraft-archive.asc"
ARCHIVE_GPG = "livegraft-archive.gpg"
MODULE_CERT = "livegraft-module-signing.crt"
MODULE_DER = "livegraft-module-signing.der"
SOURCES = "livegraft.sources"
REPO_FILE = "livegraft.repo"
COMPONENT = "main"
APT_VALID_FOR = timedelta(days=7)
STATE_FORMAT = 1
CVE_ID = re.compile(r"^CVE-\d{4}-\d{4,}$")


@dataclass(frozen=True)
class SuiteResult:
    suite: str
    architectures: tuple[str, ...]
    packages: int
    advisories: int
    changed: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "architectures": list(self.architectures),
            "packages": self.packages,
            "advisories": self.advisories,
            "changed": self.changed,
        }


@dataclass(frozen=True)
class RpmResult:
    dist: str
    arch: str
    generation: int
    packages: int
    advisories: int
    changed: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "dist": self.dist,
            "arch": self.arch,
            "generation": self.generation,
            "packages": self.packages,
            "advisories": self.advisories,
            "changed": self.changed,
        }


@dataclass(frozen=True)
class TreeResult:
    root: Path
    base_url: str
    deb: tuple[SuiteResult, ...]
    rpm: tuple[RpmResult, ...]
    advisories: int
    # Tree-relative paths of key, client and pool files written this run.
    written: tuple[str, ...] = field(default=())

    @property
    def changed(self) -> bool:
        return (
            bool(self.written)
            or any(s.changed for s in self.deb)
            or any(r.changed for r in self.rpm)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "base_url": self.base_url,
            "changed": self.changed,
            "advisories": self.advisories,
            "deb": [s.to_json() for s in self.deb],
            "rpm": [r.to_json() for r in self.rpm],
            "written": list(self.written),
        }


def check_base_url(url: str, where: str = "--base-url") -> str:
    """An absolute http(s):// or file:// URL, no query or fragment; returned without a
    trailing slash."""
    parts = urlsplit(url)
    ok = parts.scheme in ("http", "https") and bool(parts.hostname)
    ok = ok or (
        parts.scheme == "file" and parts.netloc in ("", "localhost") and parts.path[:1] == "/"
    )
    if not ok or parts.query or parts.fragment:
        raise InputError(None, where, f"an absolute http(s):// or file:/// URL, not {url!r}")
    if quote(url, safe=":/%~+@!$,;'()*[]") != url:
        raise InputError(None, where, f"a URL without spaces or unquoted characters, not {url!r}")
    return url.rstrip("/")


# -- advisories --------------------------------------------------------------------------


def repo_advisories(fixes: Sequence[FixAdvisory], issued: Mapping[str, datetime]) -> list[Advisory]:
    """One repository advisory per fix, naming every package file that carries it."""
    made = []
    for fix in fixes:
        cves = tuple(c for c in fix.cves if CVE_ID.match(c))
        # Other vulnerability ids (OSV's, a sample's) have no reference URL to give.
        others = [c for c in fix.cves if c not in cves]
        description = fix.description.strip()
        if others:
            description += f"\n\nVulnerability ids: {', '.join(others)}"
        made.append(
            Advisory(
                id=fix.id,
                title=fix.title,
                severity=fix.severity,
                description=description,
                issued=issued[fix.id],
                cves=cves,
                packages=tuple(sorted({p.filename for p in fix.packages})),
                # Every livepatched fix is published as a security update: that is
                # what `dnf updateinfo --security` and unattended upgrades pick.
                type="security",
            )
        )
    return made


def _issued_times(state: Path, ids: Iterable[str], now: datetime) -> dict[str, datetime]:
    """When each advisory was first published: kept, so a re-run changes no metadata."""
    try:
        known = {k: str(v) for k, v in json.loads(state.read_text("utf-8")).items()}
    except (OSError, ValueError, AttributeError):
        known = {}
    moment = now.astimezone(UTC).replace(microsecond=0).isoformat()
    wanted = {i: known.get(i, moment) for i in ids}
    if any(i not in known for i in wanted):
        write_atomic(state, json.dumps({**known, **wanted}, indent=1, sort_keys=True) + "\n")
    return {i: datetime.fromisoformat(v) for i, v in wanted.items()}


def _pooled_files(root: Path) -> set[str]:
    found = {p.name for p in (root / DEB / apt_repo.POOL).rglob("*.deb")}
    return found | {p.name for p in (root / RPM).glob(f"*/*/{rpm_repo.POOL}/*.rpm")}


def _check_advisories_in_pools(
    advisories: Sequence[Advisory | FixAdvisory], pooled: set[str]
) -> None:
    for adv in advisories:
        names = [p if isinstance(p, str) else p.filename for p in adv.packages]
        for name in names:
            if name not in pooled:
                raise InputError(
                    None,
                    f"advisory {adv.id!r}: packages",
                    f"{name} is in no pool of the tree (a package record without its file?)",
                )


# -- writing -----------------------------------------------------------------------------


def write_if_changed(path: Path, data: bytes) -> bool:
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    write_atomic(path, data)
    return True


def pem_certificate(der: bytes) -> bytes:
    b64 = base64.b64encode(der).decode("ascii")
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return (
        "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"
    ).encode()


def sources_text(base_url: str, suites: Sequence[str], archive_asc: bytes) -> str:
    """The deb822 source, ``Signed-By`` holding ``archive_asc`` (every archive key in one
    armored block) as a multi-line field: each line indented by one space, an empty
    line written as `` .``."""
    lines = archive_asc.decode("ascii").strip().splitlines()
    # One block holding every key (gpg --export --armor of them all) is what apt reads.
    if [line for line in lines if line.startswith("-----")] != [
        "-----BEGIN PGP PUBLIC KEY BLOCK-----",
        "-----END PGP PUBLIC KEY BLOCK-----",
    ]:
        raise WorkError("the archive keys are not one ASCII-armored public key block")
    key = "".join(f" {line.rstrip()}\n" if line.strip() else " .\n" for line in lines)
    return (
        "# livegraft kernel livepatches (apt): put this file in /etc/apt/sources.list.d/ as\n"
        "# it is. Signed-By holds the archive key(s) itself (apt 2.4 or later).\n"
        f"Types: deb\nURIs: {base_url}/{DEB}\nSuites: {' '.join(suites)}\n"
        f"Components: {COMPONENT}\nSigned-By:\n{key}"
    )


def indexed_base_url(root: Path) -> str | None:
    """The base URL a tree's clients/ were written for (None: a tree without clients).

    Read back from the files ``sources_text`` and ``repo_text`` write, so a publish can
    refuse to put a tree where its clients and metalinks would point elsewhere.
    """
    import configparser

    from debian.deb822 import Deb822

    sources = root / CLIENTS / SOURCES
    if sources.is_file():
        uris = str(Deb822(sources.read_text(encoding="utf-8")).get("URIs", ""))
        if uris.endswith(f"/{DEB}"):
            return uris.removesuffix(f"/{DEB}")
    repo = root / CLIENTS / REPO_FILE
    if repo.is_file():
        parser = configparser.ConfigParser(interpolation=None)
        parser.read_string(repo.read_text(encoding="utf-8"))
        for section in parser.sections():
            key = parser[section].get("gpgkey", "")
            if key.endswith(f"/{KEYS}/{ARCHIVE_ASC}"):
                return key.removesuffix(f"/{KEYS}/{ARCHIVE_ASC}")
    return None


def repo_text(base_url: str, repos: Sequence[tuple[str, str]]) -> str:
    out = ["# livegraft kernel livepatches (dnf): one repository per dist and architecture."]
    for dist, arch in repos:
        out.append(
            f"\n[livegraft-{dist}-{arch}]\n"
            f"name=livegraft kernel livepatches ({dist}, {arch})\n"
            f"metalink={base_url}/{RPM}/{dist}/{arch}/metalink.xml\n"
            "enabled=1\ngpgcheck=1\nrepo_gpgcheck=1\n"
            f"gpgkey={base_url}/{KEYS}/{ARCHIVE_ASC}\n"
        )
    return "".join(out)


def _newest(records: Iterable[PackageRecord]) -> list[PackageRecord]:
    best: dict[str, PackageRecord] = {}
    for r in records:
        if r.name not in best or r.newer_than(best[r.name]):
            best[r.name] = r
    return sorted(best.values(), key=lambda r: r.name)


def _dist(r: PackageRecord) -> str:
    dist = str(r.document.get("build", {}).get("dist") or "")
    if not dist:
        raise InputError(r.path, "build.dist", "the dist of the package's kernel build")
    return dist


def _machine(r: PackageRecord) -> str:
    return str(r.document["build"]["arch"])


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _pool_debs(root: Path, records: Sequence[PackageRecord]) -> tuple[list[Path], list[str]]:
    """Every DEB in ``root/pool`` (copied when missing); returns pool paths and the new ones.

    A file already in the pool is compared by sha256 with its record, so a pool of
    thousands is not re-read through python-debian on every run.
    """
    paths: list[Path] = []
    fresh: list[PackageRecord] = []
    for r in records:
        dest = root / apt_repo.pool_dir(r.name, COMPONENT) / r.filename
        if dest.is_file():
            if dest.stat().st_size != r.size or _sha256(dest) != r.sha256:
                raise InputError(
                    r.path,
                    None,
                    f"{dest} exists with different bytes; a published file never changes",
                )
            paths.append(dest)
        else:
            fresh.append(r)
    added = apt_repo.add_to_pool(root, [r.path for r in fresh], COMPONENT) if fresh else []
    return paths + added, [p.relative_to(root).as_posix() for p in added]


def _apt_unchanged(dist_dir: Path, state: Path, inputs: str, now: datetime) -> bool:
    try:
        if json.loads(state.read_text("utf-8")).get("inputs") != inputs:
            return False
        with (dist_dir / "Release").open("rb") as f:
            valid_until = parsedate_to_datetime(str(deb822.Release(f)["Valid-Until"]))
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if not (dist_dir / "InRelease").is_file():
        return False
    # Re-signed once half the validity is spent, so a daily run never lets it expire.
    return valid_until - now > APT_VALID_FOR / 2


def assemble_tree(
    root: Path,
    *,
    records: Sequence[PackageRecord],
    fixes: Sequence[FixAdvisory],
    signer: MetadataSigner,
    archive_asc: bytes,
    archive_keyring: bytes,
    module_cert_der: bytes,
    base_url: str,
    state_dir: Path,
    now: datetime | None = None,
) -> TreeResult:
    """Bring the tree at ``root`` up to date with ``records``; see the module docstring."""
    base_url = check_base_url(base_url)
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    # Every record's file goes into a pool below, so an advisory must name one of them
    # (or a file already pooled); checked before anything is written.
    pooled = {r.filename for r in records if r.type in ("deb", "rpm")}
    _check_advisories_in_pools(fixes, pooled | _pooled_files(root))

    written: list[str] = []
    root.mkdir(parents=True, exist_ok=True)
    state_dir.mkdir(parents=True, exist_ok=True)

    for rel, data in (
        (f"{KEYS}/{ARCHIVE_ASC}", archive_asc),
        (f"{KEYS}/{ARCHIVE_GPG}", archive_keyring),
        (f"{KEYS}/{MODULE_CERT}", pem_certificate(module_cert_der)),
        (f"{KEYS}/{MODULE_DER}", module_cert_der),
    ):
        if write_if_changed(root / rel, data):
            written.append(rel)

    debs = [r for r in records if r.type == "deb" and not r.is_client]
    rpms = [r for r in records if r.type == "rpm" and not r.is_client]
    # The client's packages go beside every kernel's: only the newest DEB of each, since
    # an apt index names one version per package.
    client_debs = _newest(r for r in records if r.type == "deb" and r.is_client) if debs else []
    client_rpms = [r for r in records if r.type == "rpm" and r.is_client]
    deb_root = root / DEB
    deb_paths, added = _pool_debs(deb_root, debs + client_debs) if debs else ([], [])
    written += [f"{DEB}/{rel}" for rel in added]
    pool_of = {p.name: p for p in deb_paths}

    rpm_groups: dict[tuple[str, str], list[PackageRecord]] = {}
    for r in rpms:
        rpm_groups.setdefault((_dist(r), _machine(r)), []).append(r)
    for (dist, arch), group in sorted(rpm_groups.items()):
        repo = root / RPM / dist / arch
        for path in rpm_repo.add_to_pool(repo, [r.path for r in group + client_rpms]):
            written.append(path.relative_to(root).as_posix())

    issued = _issued_times(state_dir / "advisories.json", [f.id for f in fixes], moment)
    advisories = repo_advisories(fixes, issued)
    _check_advisories_in_pools(advisories, _pooled_files(root))

    suites: list[SuiteResult] = []
    by_dist: dict[str, list[PackageRecord]] = {}
    for r in debs:
        by_dist.setdefault(_dist(r), []).append(r)
    for dist, group in sorted(by_dist.items()):
        newest = sorted(_newest(group) + client_debs, key=lambda r: r.name)
        files = [pool_of[r.filename] for r in newest]
        arches = tuple(sorted({r.arch for r in newest if r.arch != "all"})) or ("amd64",)
        inputs = content_id(
            {
                "format": STATE_FORMAT,
                "files": [
                    [p.relative_to(deb_root).as_posix(), r.sha256]
                    for p, r in zip(files, newest, strict=True)
                ],
                "advisories": [a.summary() for a in advisories],
                "keys": list(signer.fingerprints),
                "architectures": list(arches),
            }
        )
        state = state_dir / f"apt-{dist}.json"
        n_adv = len({a.id for a in advisories if set(a.packages) & {r.filename for r in newest}})
        if _apt_unchanged(deb_root / "dists" / dist, state, inputs, moment):
            suites.append(SuiteResult(dist, arches, len(files), n_adv, False))
            continue
        index = apt_repo.index_apt_repo(
            deb_root,
            suite=dist,
            signer=signer,
            architectures=arches,
            component=COMPONENT,
            files=files,
            advisories=advisories,
            valid_for=APT_VALID_FOR,
            cache=state_dir / "apt-cache.json",
            now=moment,
        )
        write_atomic(state, json.dumps({"inputs": inputs}) + "\n")
        suites.append(SuiteResult(dist, arches, index.packages, index.advisories, True))

    rpm_results: list[RpmResult] = []
    for dist, arch in sorted(rpm_groups):
        repo = root / RPM / dist / arch
        rpm_index = rpm_repo.index_rpm_repo(
            repo,
            base_url=f"{base_url}/{RPM}/{dist}/{arch}",
            signer=signer,
            advisories=advisories,
            collection=f"livegraft-{dist}-{arch}",
            cache=state_dir / f"rpm-cache-{dist}-{arch}.json",
            now=moment,
        )
        rpm_results.append(
            RpmResult(
                dist,
                arch,
                rpm_index.generation,
                rpm_index.packages,
                rpm_index.advisories,
                rpm_index.changed,
            )
        )

    clients: list[tuple[str, str]] = []
    if suites:
        clients.append((SOURCES, sources_text(base_url, [s.suite for s in suites], archive_asc)))
    if rpm_results:
        clients.append((REPO_FILE, repo_text(base_url, [(r.dist, r.arch) for r in rpm_results])))
    for name, text in clients:
        if write_if_changed(root / CLIENTS / name, text.encode("utf-8")):
            written.append(f"{CLIENTS}/{name}")

    result = TreeResult(
        root, base_url, tuple(suites), tuple(rpm_results), len(advisories), tuple(written)
    )
    log.info("tree %s: changed=%s", root, result.changed)
    return result


def tree_state_dir(work_dir: Path, root: Path) -> Path:
    """Caches and advisory times for the tree at ``root``: one folder per tree."""
    default = (work_dir / "repo").resolve()
    resolved = root.resolve()
    if resolved == default:
        return work_dir / "index"
    return work_dir / "index" / hashlib.sha256(os.fsencode(resolved)).hexdigest()[:16]
