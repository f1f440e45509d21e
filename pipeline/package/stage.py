"""The package stage: every verified plan cell's module as the packages the config asks for.

Only a verified artifact is packaged (``verify.records.verified_record`` with the
module's sha256): a cell not built, not verified, or failed is skipped with its reason.

All or nothing: every item is checked first (names, module signature, sha256), then
each package that is not already there is built and read back in a staging folder
below ``packages/``; only when every one succeeded are they renamed into place and
their records written. A bad input leaves ``packages/`` as it was.

Idempotent: a package whose record says it was made from the same input, and whose
file still has the recorded sha256, is ``cached`` and not touched. A package file already
there under the same name and version but with other content is refused: a published
level must never change under clients (a new content gets a new level from the plan).

The client packages (``client_item``) go through the same steps, once per run and
format, whenever at least one cell is packaged in that format: the repositories that
carry livepatches then carry the client that applies them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import textwrap
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from livegraft.signing.certificate import Certificate
from livegraft.signing.gpg import ArchiveSigner
from livegraft.signing.module_signature import is_signed

from ..build.store import Artifact, Store
from ..canonical import content_id
from ..config import PACKAGE_FORMATS, PackageSettings
from ..errors import InputError
from ..plan import PACKAGE_FORMAT, Cell
from ..verify.records import load_record, verified_record
from . import client_deb, client_rpm, deb, rpm
from .client_item import ClientItem, RevisionLedger, client_items, project_version, revisions_file
from .info import PackageType, info_document, render_info, signer_identity
from .item import PackageItem
from .names import RPM_RELEASE, deb_arch, deb_name, rpm_name
from .records import (
    CLIENT_KIND,
    LIVEPATCH_KIND,
    RECORD_FORMAT,
    packages_dir,
    read_record,
    save_record,
)

# Bumped (plan.PACKAGE_FORMAT) when a builder changes what it writes for the same item:
# the plan then gives every package a new level, so no published level's package changes.
# 2: Supplements on every RPM, livepatch.json format 2 (the signer's key id and serial).
PACKAGER_VERSION = PACKAGE_FORMAT

# Debian's description lines: at most 80 columns with the leading space.
DESCRIPTION_WIDTH = 72

Status = Literal["built", "cached", "skipped"]


@dataclass(frozen=True)
class PackageResult:
    # None for a client package, which belongs to no kernel build.
    cell: Cell | None
    type: PackageType
    name: str | None
    version: str
    status: Status
    reason: str = ""
    path: Path | None = None
    sha256: str | None = None
    artifact: str | None = None
    # RPM Release ("" for a DEB); a client package's revision.
    release: str = ""
    revision: int | None = None

    @property
    def kind(self) -> str:
        return "livepatch" if self.cell is not None else "client"

    def to_json(self) -> dict[str, Any]:
        build = self.cell.build if self.cell is not None else None
        return {
            "kind": self.kind,
            "name": self.name,
            "version": self.version,
            "release": self.release,
            "format": self.type,
            "path": str(self.path) if self.path else None,
            "sha256": self.sha256,
            "uname_r": build.uname_r if build else None,
            "package_version": build.package_version if build else None,
            "level": self.cell.level if self.cell is not None else None,
            "revision": self.revision,
            "artifact": self.artifact,
            "status": self.status,
            "reason": self.reason,
        }


@dataclass
class _Job:
    item: PackageItem | ClientItem
    input_id: str
    # A livepatch package's cell and artifact; None for a client package.
    cell: Cell | None = None
    artifact: Artifact | None = None
    record: dict[str, Any] = field(default_factory=dict)
    staged: Path | None = None


def formats_for(cell: Cell, settings: PackageSettings) -> tuple[PackageType, ...]:
    chosen = settings.formats or (cell.build.family,)
    return tuple("deb" if f == "deb" else "rpm" for f in chosen)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Packager:
    def __init__(
        self,
        *,
        store: Store,
        work_dir: Path,
        settings: PackageSettings,
        vendor: str,
        signer: Callable[[], ArchiveSigner],
        certificate: Callable[[], Certificate | None] = lambda: None,
        jobs: int = 1,
    ) -> None:
        self.store = store
        self.work_dir = work_dir
        self.root = packages_dir(work_dir)
        self.settings = settings
        self.vendor = vendor
        self._signer_factory = signer
        self._signer: ArchiveSigner | None = None
        # The configured module certificate, read only for a build.json that predates
        # the signer's key id and serial (info.signer_identity), then kept.
        self._certificate_factory = certificate
        self._certificate: tuple[Certificate | None] | None = None
        self.jobs = jobs

    def _signer_now(self) -> ArchiveSigner:
        if self._signer is None:
            self._signer = self._signer_factory()
        return self._signer

    def _certificate_now(self) -> Certificate | None:
        if self._certificate is None:
            self._certificate = (self._certificate_factory(),)
        return self._certificate[0]

    def close(self) -> None:
        if self._signer is not None:
            self._signer.close()
            self._signer = None

    def package(self, cells: Sequence[Cell]) -> list[PackageResult]:
        """Every cell's packages in plan order, then the client packages."""
        results: dict[tuple[str, str], PackageResult] = {}
        jobs: list[_Job] = []
        for cell in cells:
            artifact, reason, record = self._verified(cell)
            for kind in formats_for(cell, self.settings):
                if artifact is None or record is None:
                    results[cell.id, kind] = PackageResult(
                        cell, kind, _name_or_none(cell, kind), str(cell.level), "skipped", reason
                    )
                    continue
                item = self.item(cell, artifact, record, kind)
                jobs.append(_Job(item, _input_id(item), cell, artifact))
        formats = {job.item.type for job in jobs}
        ledger = RevisionLedger.load(revisions_file(self.work_dir)) if formats else None
        clients = self._client_jobs(formats, ledger) if ledger is not None else []
        jobs += clients

        todo = []
        for job in jobs:
            if self._cached(job):
                results[_key(job)] = self._result(job, "cached")
            else:
                todo.append(job)
        if todo:
            self._build_all(todo)
            for job in todo:
                status: Status = "built" if job.staged is not None else "cached"
                results[_key(job)] = self._result(job, status)
        if ledger is not None and ledger.changed:
            # After the packages are in place: a revision is only ever given to content
            # that was built (a run that fails hands the same number out again).
            ledger.save()
        ordered = []
        for cell in cells:
            for kind in formats_for(cell, self.settings):
                ordered.append(results[cell.id, kind])
        return ordered + [results[_key(job)] for job in clients]

    def _client_jobs(self, formats: set[PackageType], ledger: RevisionLedger) -> list[_Job]:
        """The client packages of every format some cell is packaged in (none otherwise)."""
        wanted = [kind for kind in PACKAGE_FORMATS if kind in formats]
        version = project_version()
        return [
            _Job(item, item.input_id())
            for kind in wanted
            for item in client_items(
                "deb" if kind == "deb" else "rpm", self.settings, self.vendor, ledger, version
            )
        ]

    # -- what may be packaged ---------------------------------------------------------

    def _verified(self, cell: Cell) -> tuple[Artifact | None, str, dict[str, Any] | None]:
        artifact = self.store.for_cell(cell.id)
        if artifact is None:
            return None, "not built", None
        record = verified_record(self.work_dir, artifact.id, artifact.sha256)
        if record is None:
            found = load_record(self.work_dir, artifact.id)
            if found is None:
                return artifact, "not verified", None
            if found.get("status") == "verified":
                return artifact, "verified another module (its sha256 differs)", None
            why = f": {found['reason']}" if found.get("reason") else ""
            return artifact, f"verification {found.get('status')}{why}", None
        return artifact, "", record

    def item(
        self, cell: Cell, artifact: Artifact, record: dict[str, Any], kind: PackageType
    ) -> PackageItem:
        """The package of one verified cell, every input checked (InputError otherwise)."""
        module = artifact.module
        if not module.is_file():
            raise InputError(module, None, "the module build.json names (file missing)")
        signer = artifact.info.get("signer")
        if signer and not is_signed(module):
            raise InputError(
                module,
                "signature",
                f"a module signed by {signer.get('subject')} (signing is configured), "
                "found no appended signature",
            )
        if _sha256(module) != artifact.sha256:
            raise InputError(module, "sha256", f"{artifact.sha256} as build.json records")
        build = cell.build
        if kind == "deb":
            name, arch, release = deb_name(build), deb_arch(build), ""
        else:
            name, arch, release = rpm_name(build), build.arch, RPM_RELEASE
        version = str(cell.level)
        info = info_document(
            package_type=kind,
            name=name,
            version=version,
            cell=cell,
            artifact=artifact,
            verification=record,
            signer=signer_identity(artifact, self._certificate_now),
        )
        summary = f"Livepatch for Linux {build.uname_r}, level {cell.level}"
        about = (
            f"The cumulative livepatch module {cell.module_name} for the kernel build "
            f"{build.uname_r} ({build.package_version}), level {cell.level}, verified on "
            "that kernel. Installing it loads nothing: the livegraft client applies it."
        )
        description = [
            *textwrap.wrap(about, DESCRIPTION_WIDTH),
            "",
            "Fixes:",
            *(f"  {f.id} ({f.severity}): {' '.join(f.title.split())}" for f in cell.fixes),
        ]
        if cell.cves:
            description += ["", *textwrap.wrap("CVEs: " + ", ".join(cell.cves), DESCRIPTION_WIDTH)]
        return PackageItem(
            type=kind,
            name=name,
            version=version,
            release=release,
            arch=arch,
            build=build,
            module=module,
            module_file=str(artifact.info["file"]),
            sha256=artifact.sha256,
            info=render_info(info),
            summary=summary,
            description=tuple(description),
            maintainer=self.settings.maintainer,
            vendor=self.vendor,
            epoch=self.settings.source_date_epoch,
        )

    # -- idempotence ------------------------------------------------------------------

    def _target(self, item: PackageItem | ClientItem) -> Path:
        return self.root / item.type / item.filename

    def _cached(self, job: _Job) -> bool:
        record = read_record(self.work_dir, job.item.filename)
        target = self._target(job.item)
        if record is None or record.get("input") != job.input_id or not target.is_file():
            return False
        if record.get("sha256") != _sha256(target):
            return False
        job.record = record
        return True

    # -- building ---------------------------------------------------------------------

    def _build_all(self, todo: list[_Job]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        signer = self._signer_now() if any(j.item.type == "rpm" for j in todo) else None
        staging = Path(tempfile.mkdtemp(dir=self.root, prefix=".staging-"))
        try:
            work_dirs = [staging / str(i) for i in range(len(todo))]
            for w in work_dirs:
                w.mkdir()
            with ThreadPoolExecutor(max_workers=max(1, self.jobs)) as pool:
                built = list(pool.map(self._build_one, todo, work_dirs, [signer] * len(todo)))
            # Every package is built and checked: only now does anything move into place.
            for job, out in zip(todo, built, strict=True):
                self._decide(job, out, signer)
            for job in todo:
                if job.staged is not None:
                    target = self._target(job.item)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.chmod(job.staged, 0o644)
                    os.rename(job.staged, target)
            for job in todo:
                save_record(self.work_dir, job.record)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _build_one(self, job: _Job, work: Path, signer: ArchiveSigner | None) -> Path:
        item = job.item
        if isinstance(item, ClientItem):
            if item.type == "deb":
                return client_deb.build_client_deb(item, work)
            return client_rpm.build_client_rpm(item, work, signer)
        if item.type == "deb":
            return deb.build_deb(item, work)
        return rpm.build_rpm(item, work, signer)

    def _decide(self, job: _Job, out: Path, signer: ArchiveSigner | None) -> None:
        """Stage ``out`` for ``job``, or keep the same package already there, or refuse."""
        item = job.item
        target = self._target(item)
        # rpm's HOME (where it may keep a database) is the staging folder, never packages/.
        home = out.parent
        identity = self._identity(item, out, home)
        if target.is_file():
            existing = self._identity(item, target, home)
            if existing != identity:
                raise InputError(target, None, _changed(item, self.work_dir))
            out = target
            # The package kept was signed when it was first made, maybe by another key.
            earlier = read_record(self.work_dir, item.filename)
            if earlier is not None and earlier.get("sha256") == _sha256(target):
                signer_fp = earlier.get("signer")
            else:
                signer_fp = _fingerprint(item, signer)
        else:
            job.staged = out
            signer_fp = _fingerprint(item, signer)
        job.record = self._record(job, out, identity, signer_fp)

    def _identity(self, item: PackageItem | ClientItem, path: Path, home: Path) -> str:
        # A signed RPM differs in its signature's time each signing: its header does not.
        if item.type == "rpm":
            return "header:" + rpm.header_sha256(path, home)
        return "sha256:" + _sha256(path)

    def _record(
        self, job: _Job, package: Path, identity: str, signer: str | None
    ) -> dict[str, Any]:
        item, cell, artifact = job.item, job.cell, job.artifact
        common = {
            "format": RECORD_FORMAT,
            "type": item.type,
            "name": item.name,
            "version": item.version,
            "release": item.release,
            "arch": item.arch,
            "filename": item.filename,
            "path": f"{item.type}/{item.filename}",
            "sha256": _sha256(package),
            "size": package.stat().st_size,
            "content": identity,
            "input": job.input_id,
            # The archive key that signed the package (RPM); a DEB is signed by its index.
            "signer": signer,
        }
        if isinstance(item, ClientItem):
            # No build, level or fixes: index puts it beside every kernel's packages, and
            # no advisory names it.
            return {
                **common,
                "kind": CLIENT_KIND,
                "project_version": item.project_version,
                "revision": item.revision,
            }
        assert cell is not None and artifact is not None
        return {
            **common,
            "kind": LIVEPATCH_KIND,
            "build": cell.build.to_json(),
            "level": cell.level,
            "module": cell.module_name,
            "module_sha256": item.sha256,
            "artifact": artifact.id,
            "fixes": [
                {
                    "id": f.id,
                    "title": f.title,
                    "description": f.description,
                    "severity": f.severity,
                    "cves": list(f.cves),
                }
                for f in cell.fixes
            ],
            "cves": list(cell.cves),
        }

    def _result(self, job: _Job, status: Status) -> PackageResult:
        item = job.item
        return PackageResult(
            job.cell,
            item.type,
            item.name,
            item.version,
            status,
            path=self._target(item),
            sha256=str(job.record["sha256"]),
            artifact=job.artifact.id if job.artifact else None,
            release=item.release,
            revision=item.revision if isinstance(item, ClientItem) else None,
        )


def _key(job: _Job) -> tuple[str, str]:
    return (job.cell.id if job.cell else job.item.name, job.item.type)


def _changed(item: PackageItem | ClientItem, work_dir: Path) -> str:
    if isinstance(item, ClientItem):
        return (
            f"{item.name} {item.version}{'-' + item.release if item.release else ''} was already "
            "produced with other content; a package version never changes (new content gets "
            f"a new revision from {revisions_file(work_dir)}: was it lost?)"
        )
    return (
        f"{item.name} {item.version} was already produced with other content; "
        "a level's package never changes (remove it only if it was never published)"
    )


def _input_id(item: PackageItem) -> str:
    return content_id(
        {
            "stage": "package",
            "packager": PACKAGER_VERSION,
            "type": item.type,
            "name": item.name,
            "version": item.version,
            "release": item.release,
            "arch": item.arch,
            "module_sha256": item.sha256,
            "module_file": item.module_file,
            "info_sha256": hashlib.sha256(item.info).hexdigest(),
            "summary": item.summary,
            "description": list(item.description),
            "maintainer": item.maintainer,
            "vendor": item.vendor,
            "epoch": item.epoch,
        }
    )


def _fingerprint(item: PackageItem | ClientItem, signer: ArchiveSigner | None) -> str | None:
    return signer.fingerprints[0] if signer is not None and item.type == "rpm" else None


def _name_or_none(cell: Cell, kind: PackageType) -> str | None:
    try:
        return deb_name(cell.build) if kind == "deb" else rpm_name(cell.build)
    except InputError:
        return None
