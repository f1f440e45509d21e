"""The artifact store's contract, with small synthetic artifacts (no compiler needed)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from livegraft.pipeline.build.store import Store, info_document
from livegraft.pipeline.errors import WorkError

A1, A2 = "a" * 64, "b" * 64
CELL = "c" * 64


def _put(store: Store, aid: str, payload: bytes, cell: str = CELL, **extra: str) -> None:
    info = {
        "artifact": aid,
        "cell": cell,
        "file": "m.ko",
        "sha256": hashlib.sha256(payload).hexdigest(),
        **extra,
    }
    with store.staging() as stage:
        (stage / "m.ko").write_bytes(payload)
        (stage / "build.json").write_text(info_document(info), encoding="utf-8")
        (stage / "build.log").write_text(f"log at {stage}\n", encoding="utf-8")
        store.add(stage, aid)
    store.link_cell(cell, aid)


def test_add_get_and_cell_pointer(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    assert store.for_cell(CELL) is None and not store.has(A1)
    _put(store, A1, b"module one")
    artifact = store.get(A1)
    assert store.has(A1) and artifact.module.read_bytes() == b"module one"
    assert store.for_cell(CELL) == artifact
    assert store.ids() == [A1]
    # No staging leftovers beside the artifacts.
    assert sorted(p.name for p in store.root.iterdir()) == [A1, "cells"]


def test_same_id_same_content_is_no_conflict(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    _put(store, A1, b"module one")
    _put(store, A1, b"module one")  # a concurrent writer of the same artifact
    with pytest.raises(WorkError, match="store conflict"):
        _put(store, A1, b"module two")
    assert store.get(A1).module.read_bytes() == b"module one"


def test_import_merges_and_refuses_conflicts(tmp_path: Path) -> None:
    mine, shard = Store(tmp_path / "mine"), Store(tmp_path / "shard")
    _put(mine, A1, b"one")
    _put(shard, A1, b"one")  # the same artifact, its log differs: not a conflict
    _put(shard, A2, b"two", cell="d" * 64)
    result = mine.import_from(shard)
    assert result.added == (A2,) and result.present == (A1,) and result.cells == 2
    assert mine.for_cell("d" * 64) is not None
    assert mine.import_from(shard).added == ()

    # A module that is not what its build.json says is refused before anything moves.
    other = Store(tmp_path / "other")
    _put(other, "e" * 64, b"three", cell="f" * 64)
    (other.path("e" * 64) / "m.ko").write_bytes(b"tampered")
    with pytest.raises(WorkError, match="not the sha256"):
        mine.import_from(other)
    assert not mine.has("e" * 64)

    # The same id with other bytes: a conflict, named.
    clash = Store(tmp_path / "clash")
    _put(clash, A2, b"TWO", cell="d" * 64)
    with pytest.raises(WorkError, match=f"store conflict for artifact {A2}"):
        mine.import_from(clash)

    # The same cell built as another artifact (another toolchain or key): a conflict.
    rebuilt = Store(tmp_path / "rebuilt")
    _put(rebuilt, "9" * 64, b"one, by another compiler")
    with pytest.raises(WorkError, match=f"store conflict for cell {CELL}"):
        mine.import_from(rebuilt)


def test_build_json_must_name_its_artifact(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    _put(store, A1, b"one")
    info = json.loads((store.path(A1) / "build.json").read_text(encoding="utf-8"))
    info["artifact"] = A2
    (store.path(A1) / "build.json").write_text(json.dumps(info), encoding="utf-8")
    with pytest.raises(Exception, match="artifact"):
        store.get(A1)
