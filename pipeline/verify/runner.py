"""Verifying the cells of a plan, or of one shard of it: one QEMU per core at most.

Per cell: the artifact the build stage stored for it (none: the cell fails as "not
built"; verify never builds). A verified record for that artifact makes the cell
``cached`` without booting anything. Otherwise, in a scratch folder beside the records:

- the build's real kernel image, fetched once into the cache;
- the level N+1 probe: the same cell's fixes generated, compiled and signed at level+1
  by the build stage's own functions, under its own module name; it proves atomic
  replace and is thrown away (neither stored nor entered in the level ledger);
- an unsigned copy of the artifact's module, which must be refused under
  ``module.sig_enforce``;
- each fix's check script, named by the fix id;

then one boot (``engine.verify_cell``), and the record and console log are written.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from livegraft.signing.module_key import ModuleKey
from livegraft.signing.module_signature import strip_signature

from ..build.generate import build_label
from ..build.kbuild import BuildFailed, Log, Toolchain, toolchain_of
from ..build.runner import cell_json, make_module
from ..build.store import Artifact, Store
from ..errors import LivegraftError
from ..files import write_atomic
from ..kernel_files import KernelTree, fetch_image, prepare
from ..plan import Cell
from . import qemu
from .engine import verify_cell
from .initramfs import base_image
from .records import log_path, record_path, records_dir, save_record, verified_record

Status = Literal["verified", "cached", "failed"]
NOT_BUILT = "not built: run livegraft build first"


@dataclass(frozen=True)
class CellOutcome:
    cell: Cell
    status: Status
    # Empty unless failed: the first failing step and its detail.
    reason: str
    artifact: Artifact | None
    # The boot's console log (or what explains a failure before booting).
    log: Path | None
    record: Path | None
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            **cell_json(self.cell, self.status, self.reason, self.artifact),
            "log": str(self.log) if self.log else None,
            "record": str(self.record) if self.record else None,
        }


def next_level(cell: Cell) -> Cell:
    """The cell as the next level would build it: same fixes, level + 1, its own name."""
    return replace(cell, level=cell.level + 1)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Verifier:
    store: Store
    cache: Path
    work_dir: Path
    # Bounds each boot.
    timeout: float
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _toolchains: dict[Path, Toolchain] = field(default_factory=dict)

    def settled(self, cell: Cell) -> CellOutcome | Artifact:
        """The outcome of a cell that needs no boot (not built, cached), else its artifact."""
        started = time.monotonic()
        artifact = self.store.for_cell(cell.id)
        if artifact is None:
            return CellOutcome(cell, "failed", NOT_BUILT, None, None, None, 0.0)
        record = verified_record(self.work_dir, artifact.id, artifact.sha256)
        if record is None:
            return artifact
        log = Path(record["log"]) if record.get("log") else None
        path = record_path(self.work_dir, artifact.id)
        return CellOutcome(cell, "cached", "", artifact, log, path, time.monotonic() - started)

    def verify(
        self,
        cells: Sequence[Cell],
        jobs: int,
        key: Callable[[], ModuleKey],
        on_done: Callable[[CellOutcome], None] = lambda r: None,
    ) -> list[CellOutcome]:
        """Every cell's outcome, in the order given. ``key`` is asked for only when some
        cell has to boot (it signs the probes)."""
        outcomes: list[CellOutcome | None] = [None] * len(cells)
        todo: list[tuple[int, Artifact]] = []
        for i, cell in enumerate(cells):
            found = self.settled(cell)
            if isinstance(found, CellOutcome):
                outcomes[i] = found
                on_done(found)
            else:
                todo.append((i, found))
        if todo:
            signer = key()
            # Checked once, before any cell: a missing tool is not a per-cell failure.
            qemu.qemu_binary()
            base_image()
            accel = qemu.accelerator()

            def task(item: tuple[int, Artifact]) -> None:
                i, artifact = item
                outcome = self.one(cells[i], artifact, signer, accel)
                outcomes[i] = outcome
                on_done(outcome)

            with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
                list(pool.map(task, todo))
        return [o for o in outcomes if o is not None]

    def _tree(self, cell: Cell) -> tuple[KernelTree, Toolchain]:
        # As in the build: kernel packages are shared, so one fetch at a time.
        with self._lock:
            tree = prepare(cell.build, self.cache)
            if tree.root not in self._toolchains:
                self._toolchains[tree.root] = toolchain_of(tree)
            return tree, self._toolchains[tree.root]

    def _image(self, cell: Cell) -> Path:
        with self._lock:
            return fetch_image(cell.build, self.cache)

    def one(self, cell: Cell, artifact: Artifact, key: ModuleKey, accel: qemu.Accel) -> CellOutcome:
        started = time.monotonic()
        folder = records_dir(self.work_dir)
        folder.mkdir(parents=True, exist_ok=True)
        final_log = log_path(self.work_dir, artifact.id)
        base: dict[str, Any] = {
            "artifact": artifact.id,
            "cell": cell.id,
            "uname_r": cell.build.uname_r,
            "package_version": cell.build.package_version,
            "level": cell.level,
            "module": cell.module_name,
            "sha256": artifact.sha256,
            "timeout": self.timeout,
        }

        def failed(reason: str, log_text: str | None) -> CellOutcome:
            if log_text is not None:
                write_atomic(final_log, log_text)
            else:
                final_log.unlink(missing_ok=True)
            seconds = time.monotonic() - started
            record = save_record(
                self.work_dir,
                {
                    **base,
                    "status": "failed",
                    "reason": reason,
                    "steps": [],
                    "kernel_release": None,
                    "kernel_version": None,
                    "accel": None,
                    "seconds": round(seconds, 3),
                    "info": {},
                    "log": str(final_log) if log_text is not None else None,
                },
            )
            log = final_log if log_text is not None else None
            return CellOutcome(cell, "failed", reason, artifact, log, record, seconds)

        module = artifact.module
        if not module.is_file() or _sha256(module) != artifact.sha256:
            return failed(f"{module}: missing or not the sha256 its build.json records", None)
        try:
            vmlinuz = self._image(cell)
        except LivegraftError as exc:
            return failed(f"kernel image: {exc}", None)
        with tempfile.TemporaryDirectory(dir=folder, prefix=f".{cell.module_name}.") as tmp:
            scratch = Path(tmp)
            probe_cell = next_level(cell)
            probe_what = f"level {probe_cell.level} probe {probe_cell.module_name}"
            log = Log()
            log.add(f"livegraft verify: the {probe_what} for {build_label(cell)}")
            try:
                tree, toolchain = self._tree(cell)
                moddir = scratch / "probe"
                moddir.mkdir()
                probe = make_module(probe_cell, tree, toolchain, key, self.cache, moddir, log)
            except BuildFailed as exc:
                return failed(f"{probe_what}: {exc.reason}", exc.log or log.text())
            except (LivegraftError, OSError) as exc:
                return failed(f"{probe_what}: {exc}", log.text())
            try:
                unsigned = scratch / "unsigned" / module.name
                unsigned.parent.mkdir()
                unsigned.write_bytes(strip_signature(module.read_bytes(), module))
                checks = [(f.id, f.check) for f in cell.fixes if f.check is not None]
                result = verify_cell(
                    vmlinuz,
                    module,
                    probe.ko,
                    unsigned,
                    checks,
                    scratch / "boot",
                    self.timeout,
                    expect_release=cell.build.uname_r,
                    expect_build_version=cell.build.package_version,
                    accel=accel,
                )
            except (LivegraftError, OSError) as exc:
                return failed(str(exc), None)
            if result.log.is_file():
                os.replace(result.log, final_log)
            else:
                # QEMU failed before opening its console: the reason says why.
                write_atomic(final_log, "")
        seconds = time.monotonic() - started
        document = result.to_json()
        record = save_record(
            self.work_dir,
            {
                **base,
                **document,
                "reason": result.reason or "",
                "log": str(final_log),
                "next_level": {"module": probe_cell.module_name, "sha256": probe.sha256},
            },
        )
        return CellOutcome(
            cell, result.status, result.reason or "", artifact, final_log, record, seconds
        )
