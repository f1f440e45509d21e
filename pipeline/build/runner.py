"""Building the cells of a plan, or of one shard of it: one compile per core.

Per cell: its kernel tree (fetched once, under a lock, since builds share packages),
its toolchain identity (cheap facts only), its artifact id. An artifact already in the
store makes the cell ``cached`` without touching make. Otherwise the module is generated
in a scratch folder, compiled, stripped, signed and checked, and only then renamed into
the store whole. A cell that fails leaves nothing in the store; its reason (the
compiler's first error, a vermagic mismatch, …) is reported, its full log kept in
``<work_dir>/failed/<module>.log``, and the other cells build on.

Shards: cells sorted by id, shard I of N takes every N-th starting at the I-th. Cell
ids are content ids of the plan, so every machine holding the same plan splits it the
same way, and the N shards together are exactly the plan.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from livegraft.signing.module_key import ModuleKey

from ..canonical import content_id
from ..errors import InputError, LivegraftError
from ..files import write_atomic
from ..kernel_files import KernelTree, prepare
from ..plan import Cell
from . import kpatch
from .generate import GENERATOR_VERSION, build_label, module_sources
from .kbuild import (
    BuildFailed,
    Finished,
    Log,
    Toolchain,
    check_own_modinfo,
    compile_module,
    finish_module,
    toolchain_of,
)
from .store import INFO_FILE, LOG_FILE, STORE_FORMAT, Artifact, Store, info_document

Status = Literal["built", "cached", "failed"]
_SHARD = re.compile(r"([0-9]+)/([0-9]+)\Z")


@dataclass(frozen=True)
class CellResult:
    cell: Cell
    status: Status
    reason: str
    artifact: Artifact | None
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return cell_json(self.cell, self.status, self.reason, self.artifact)


def cell_json(cell: Cell, status: str, reason: str, artifact: Artifact | None) -> dict[str, Any]:
    """One cell's line of a stage's --json output (build and verify print the same shape)."""
    return {
        "cell": cell.id,
        "uname_r": cell.build.uname_r,
        "package_version": cell.build.package_version,
        "level": cell.level,
        "status": status,
        "reason": reason,
        "module": cell.module_name,
        "path": str(artifact.module) if artifact else None,
        "sha256": artifact.sha256 if artifact else None,
        "artifact": artifact.id if artifact else None,
    }


def parse_shard(text: str) -> tuple[int, int]:
    m = _SHARD.match(text)
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise InputError(None, "--shard", f"I/N with 1 <= I <= N, such as 1/4 (not {text!r})")
    return int(m.group(1)), int(m.group(2))


def shard_cells(cells: Sequence[Cell], shard: tuple[int, int] | None) -> tuple[Cell, ...]:
    """The cells of one shard, in plan order (the order people read them in).

    Membership follows the cells' ids, not the plan's order, so every machine computes
    the same split from the same plan however it lists the builds.
    """
    if shard is None:
        return tuple(cells)
    index, count = shard
    by_id = sorted(cells, key=lambda c: c.id)
    chosen = {c.id for k, c in enumerate(by_id) if k % count == index - 1}
    return tuple(c for c in cells if c.id in chosen)


def backend_of(cell: Cell) -> str:
    return "kpatch" if kpatch.uses_kpatch(cell) else "kbuild"


def artifact_id(cell: Cell, toolchain: dict[str, Any], signer_fingerprint: str) -> str:
    """What made the module, never the module: known before it is built."""
    return content_id(
        {
            "stage": "build",
            "format": STORE_FORMAT,
            "cell": cell.id,
            "backend": backend_of(cell),
            "generator": GENERATOR_VERSION,
            "toolchain": toolchain,
            "signer": signer_fingerprint,
        }
    )


def build_info(
    cell: Cell, aid: str, toolchain: dict[str, Any], key: ModuleKey, **module: Any
) -> dict[str, Any]:
    """build.json: deterministic (no times, hosts or paths), so shards compare equal."""
    return {
        "format": STORE_FORMAT,
        "artifact": aid,
        "cell": cell.id,
        "uname_r": cell.build.uname_r,
        "package_version": cell.build.package_version,
        "family": cell.build.family,
        "build": build_label(cell),
        "level": cell.level,
        "module": cell.module_name,
        "file": f"{cell.module_name}.ko",
        "fixes": [f.id for f in cell.fixes],
        "cves": list(cell.cves),
        "signer": key.signer(),
        "toolchain": toolchain,
        "backend": backend_of(cell),
        "generator": GENERATOR_VERSION,
        **module,
    }


def make_module(
    cell: Cell,
    tree: KernelTree,
    toolchain: Toolchain,
    key: ModuleKey,
    cache: Path,
    moddir: Path,
    log: Log,
) -> Finished:
    """The cell's module made in ``moddir``: generated, compiled, stripped, signed, checked.

    Nothing is stored: the builder moves the result into the store, verify makes its
    level N+1 probe with this too and throws it away.
    """
    if backend_of(cell) == "kpatch":
        ko = kpatch.build_with_kpatch(cell, tree, moddir, cache, log)
    else:
        module_sources(cell).write(moddir)
        ko = compile_module(tree, toolchain, moddir, cell.module_name, log)
    done = finish_module(ko, tree, toolchain, key, log)
    if backend_of(cell) == "kbuild":
        try:
            check_own_modinfo(done.modinfo, build_label(cell))
        except BuildFailed as exc:
            raise BuildFailed(exc.reason, log.text()) from None
    return done


@dataclass
class Builder:
    store: Store
    key: ModuleKey
    cache: Path
    # Module folders are made here (on the store's file system, so results move by rename).
    scratch: Path
    failed_logs: Path
    _tree_lock: threading.Lock = field(default_factory=threading.Lock)
    _toolchains: dict[Path, Toolchain] = field(default_factory=dict)

    def build(
        self,
        cells: Sequence[Cell],
        jobs: int,
        on_done: Callable[[CellResult], None] = lambda r: None,
    ) -> list[CellResult]:
        def task(cell: Cell) -> CellResult:
            result = self.one(cell)
            on_done(result)
            return result

        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            return list(pool.map(task, cells))

    def _tree(self, cell: Cell) -> tuple[KernelTree, Toolchain]:
        # Builds share packages (kbuild, -common): fetching one at a time keeps the
        # cache's staging renames free of races; a warm tree costs one stat.
        with self._tree_lock:
            tree = prepare(cell.build, self.cache)
            if tree.root not in self._toolchains:
                self._toolchains[tree.root] = toolchain_of(tree)
            return tree, self._toolchains[tree.root]

    def one(self, cell: Cell) -> CellResult:
        started = time.monotonic()

        def result(status: Status, reason: str = "", a: Artifact | None = None) -> CellResult:
            return CellResult(cell, status, reason, a, time.monotonic() - started)

        try:
            tree, toolchain = self._tree(cell)
            identity = toolchain.identity()
            if backend_of(cell) == "kpatch":
                identity = {**identity, "kpatch_build": kpatch.tool_identity()}
        except BuildFailed as exc:
            return result("failed", exc.reason)
        except LivegraftError as exc:
            return result("failed", f"kernel tree: {exc}")
        aid = artifact_id(cell, identity, self.key.fingerprint)
        failed_log = self.failed_logs / f"{cell.module_name}.log"
        if self.store.has(aid):
            self.store.link_cell(cell.id, aid)
            failed_log.unlink(missing_ok=True)
            return result("cached", "", self.store.get(aid))
        log = Log()
        log.add(
            f"livegraft build of cell {cell.id}\nkernel build {build_label(cell)}, "
            f"level {cell.level}, module {cell.module_name}\n"
            f"fixes: {', '.join(f.id for f in cell.fixes)}\n"
            f"artifact {aid}\ntoolchain: {identity}\nsigner: {self.key.subject}\n"
        )
        try:
            artifact = self._make(cell, tree, toolchain, identity, aid, log)
        except BuildFailed as exc:
            write_atomic(failed_log, exc.log or log.text())
            return result("failed", exc.reason)
        except (LivegraftError, OSError) as exc:
            write_atomic(failed_log, log.text() + f"\n{exc}\n")
            return result("failed", str(exc))
        failed_log.unlink(missing_ok=True)
        return result("built", "", artifact)

    def _make(
        self,
        cell: Cell,
        tree: KernelTree,
        toolchain: Toolchain,
        identity: dict[str, Any],
        aid: str,
        log: Log,
    ) -> Artifact:
        self.scratch.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.scratch, prefix=f"{cell.module_name}.") as tmp:
            done = make_module(cell, tree, toolchain, self.key, self.cache, Path(tmp), log)
            info = build_info(
                cell,
                aid,
                identity,
                self.key,
                sha256=done.sha256,
                srcversion=done.srcversion,
                vermagic=done.vermagic,
            )
            with self.store.staging() as stage:
                shutil.move(done.ko, stage / info["file"])
                (stage / INFO_FILE).write_text(info_document(info), encoding="utf-8")
                (stage / LOG_FILE).write_text(log.text(), encoding="utf-8")
                artifact = self.store.add(stage, aid)
        self.store.link_cell(cell.id, aid)
        return artifact


def default_jobs() -> int:
    return len(os.sched_getaffinity(0)) or 1
