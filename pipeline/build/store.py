"""The content-addressed artifact store: one folder per built module.

Layout, below ``<work_dir>/store/``::

    <artifact id>/<module>.ko   the stripped, signed module
    <artifact id>/build.json    what it is (see ``Artifact``); deterministic
    <artifact id>/build.log     how it was made (commands, output, times): informational
    cells/<cell id>             the artifact id of the cell's module, one line

The artifact id is a sha256 over what made the module (the plan cell, the toolchain,
the signer, the generator), never over the module itself, so it is known before
anything is built and a re-run finds an unchanged cell without compiling it.

An artifact appears whole or not at all: it is written into a staging folder beside
the store and renamed into place. The same id always means the same module and
build.json, which is what lets shards built on different machines merge without
conflict; a difference is an error, never silently resolved.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError, WorkError
from ..files import write_atomic

STORE_FORMAT = 1
INFO_FILE = "build.json"
LOG_FILE = "build.log"
CELLS_DIR = "cells"
_ID = re.compile(r"[0-9a-f]{64}\Z")


@dataclass(frozen=True)
class Artifact:
    id: str
    dir: Path
    info: dict[str, Any]

    @property
    def module(self) -> Path:
        return self.dir / str(self.info["file"])

    @property
    def log(self) -> Path:
        return self.dir / LOG_FILE

    @property
    def sha256(self) -> str:
        return str(self.info["sha256"])


def info_document(info: dict[str, Any]) -> str:
    return json.dumps(info, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class ImportResult:
    added: tuple[str, ...]
    present: tuple[str, ...]
    cells: int


class Store:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, artifact_id: str) -> Path:
        return self.root / artifact_id

    def has(self, artifact_id: str) -> bool:
        return (self.root / artifact_id / INFO_FILE).is_file()

    def get(self, artifact_id: str) -> Artifact:
        folder = self.root / artifact_id
        try:
            info = json.loads((folder / INFO_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise WorkError(f"{folder}: no such artifact in the store") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(folder / INFO_FILE, None, f"unreadable build info ({exc})") from None
        if not isinstance(info, dict) or info.get("artifact") != artifact_id:
            raise InputError(folder / INFO_FILE, "artifact", f"expected {artifact_id}")
        return Artifact(artifact_id, folder, info)

    def ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if _ID.match(p.name) and p.is_dir())

    def for_cell(self, cell_id: str) -> Artifact | None:
        """The module last built (or imported) for this plan cell, if any."""
        pointer = self.root / CELLS_DIR / cell_id
        try:
            artifact_id = pointer.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        return self.get(artifact_id) if self.has(artifact_id) else None

    def link_cell(self, cell_id: str, artifact_id: str) -> None:
        pointer = self.root / CELLS_DIR / cell_id
        try:
            if pointer.read_text(encoding="utf-8").strip() == artifact_id:
                return
        except FileNotFoundError:
            pass
        write_atomic(pointer, artifact_id + "\n")

    @contextmanager
    def staging(self) -> Iterator[Path]:
        """A private folder on the store's file system; removed unless ``add`` took it."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=".staging-"))
        try:
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def add(self, staged: Path, artifact_id: str) -> Artifact:
        """Rename a complete staging folder into place as ``artifact_id``.

        Another writer may have put the same id first (two shards, two runs at once):
        then its content must equal ours, and theirs is kept.
        """
        os.chmod(staged, 0o755)
        final = self.path(artifact_id)
        try:
            os.rename(staged, final)
        except OSError:
            if not self.has(artifact_id):
                raise
            self._same(staged, self.get(artifact_id), str(staged))
        return self.get(artifact_id)

    def _same(self, other_dir: Path, mine: Artifact, where: str) -> None:
        try:
            theirs = json.loads((other_dir / INFO_FILE).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise WorkError(f"{where}: unreadable {INFO_FILE} ({exc})") from None
        if theirs != mine.info:
            diff = sorted(k for k in {*theirs, *mine.info} if theirs.get(k) != mine.info.get(k))
            raise WorkError(
                f"store conflict for artifact {mine.id}: {INFO_FILE} differs in "
                f"{', '.join(diff)} ({where} vs {mine.dir})"
            )
        if _sha256(other_dir / mine.module.name) != _sha256(mine.module):
            raise WorkError(
                f"store conflict for artifact {mine.id}: {mine.module.name} differs "
                f"({where} vs {mine.dir})"
            )

    def import_from(self, source: Store) -> ImportResult:
        """Merge another store (a shard's) into this one; all checked before anything moves."""
        incoming: list[Artifact] = []
        for artifact_id in source.ids():
            artifact = source.get(artifact_id)
            module = artifact.module
            if not module.is_file() or _sha256(module) != artifact.sha256:
                raise WorkError(f"{module}: missing or not the sha256 its {INFO_FILE} records")
            if self.has(artifact_id):
                self._same(artifact.dir, self.get(artifact_id), str(artifact.dir))
            incoming.append(artifact)
        pointers: dict[str, str] = {}
        cells_dir = source.root / CELLS_DIR
        if cells_dir.is_dir():
            for pointer in sorted(cells_dir.iterdir()):
                artifact_id = pointer.read_text(encoding="utf-8").strip()
                mine = self.for_cell(pointer.name)
                if mine is not None and mine.id != artifact_id:
                    raise WorkError(
                        f"store conflict for cell {pointer.name}: built here as {mine.id}, "
                        f"in {source.root} as {artifact_id} (another toolchain or signing key)"
                    )
                pointers[pointer.name] = artifact_id
        added, present = [], []
        for artifact in incoming:
            if self.has(artifact.id):
                present.append(artifact.id)
                continue
            with self.staging() as stage:
                for f in sorted(artifact.dir.iterdir()):
                    if f.is_file():
                        shutil.copyfile(f, stage / f.name)
                self.add(stage, artifact.id)
            added.append(artifact.id)
        for cell_id, artifact_id in pointers.items():
            if self.has(artifact_id):
                self.link_cell(cell_id, artifact_id)
        return ImportResult(tuple(added), tuple(present), len(pointers))
