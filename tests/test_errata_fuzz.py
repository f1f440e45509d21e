"""Fuzzing every errata parser: whatever the input, only InputError may come out.

Random JSON trees, random JSON put in the places a CVE or OSV record is read from,
mutations of the real records, and random text for the tracker lists and dyad files.
Each test is kept to a few seconds.
"""

from __future__ import annotations

import contextlib
import copy
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from conftest import SHARED_ERRATA
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from livegraft.pipeline.errata.cve5 import parse_cve5
from livegraft.pipeline.errata.debian_tracker import Format
from livegraft.pipeline.errata.debian_tracker import parse as parse_tracker
from livegraft.pipeline.errata.jsonfields import Field, load_json
from livegraft.pipeline.errata.load import load_errata
from livegraft.pipeline.errata.model import Record
from livegraft.pipeline.errata.osv import parse_osv
from livegraft.pipeline.errata.sidecars import Sidecars, parse_dyad
from livegraft.pipeline.errors import InputError
from livegraft.pipeline.versions.kernel import KernelVersion

FIXTURES = Path(__file__).parent / "fixtures" / "errata"
NO_SIDECARS = Sidecars(None, frozenset(), frozenset())
PROBES = ("0", "2.6.12", "4.19.316", "5.4.262", "6.1.60", "6.5", "6.9-rc2", "6.9", "6.14")
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

WORDS = st.sampled_from(
    [
        "0",
        "6.1",
        "6.1.94",
        "6.9-rc3",
        "v6.9",
        "6.1.*",
        "*",
        "Linux Kernel 5.17 rc6",
        "affected",
        "unaffected",
        "unknown",
        "git",
        "semver",
        "custom",
        "rpm",
        "original_commit_for_fix",
        "CVE-2024-1234",
        "CVE_RECORD",
        "PUBLISHED",
        "REJECTED",
        "ECOSYSTEM",
        "GIT",
        "Linux",
        "a1" * 20,
        "0d459e2ffb54",
    ]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | WORDS
)
KEYS = st.text(max_size=8) | st.sampled_from(
    ["version", "lessThan", "lessThanOrEqual", "status", "versionType", "changes", "at",
     "defaultStatus", "versions", "introduced", "fixed", "last_affected", "limit", "type",
     "events", "ranges", "package", "ecosystem", "name", "url", "cveId", "state"]
)  # fmt: skip
JSON: st.SearchStrategy[Any] = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=4),
    max_leaves=25,
)


def evaluate(record: Record | None) -> None:
    if record is not None and record.upstream is not None:
        for probe in PROBES:
            record.upstream.evaluate(KernelVersion.parse(probe))


def parse_any(value: Any) -> None:
    for parse in (lambda f: parse_cve5(f, NO_SIDECARS), parse_osv):
        with contextlib.suppress(InputError):
            evaluate(parse(Field(value, "", "fuzz.json")))


def synthetic(name: str) -> dict[str, Any]:
    record: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return record


@FUZZ
@given(JSON)
def test_random_json_trees(value: Any) -> None:
    parse_any(value)


@FUZZ
@given(JSON, JSON, JSON)
def test_random_json_in_record_places(meta: Any, affected: Any, versions: Any) -> None:
    cve = synthetic("synthetic-cve5.json")
    cve["cveMetadata"] = meta if isinstance(meta, dict) and meta else cve["cveMetadata"]
    cve["containers"]["cna"]["affected"][0] = affected
    cve["containers"]["cna"]["affected"][1]["versions"] = versions
    parse_any(cve)
    osv = synthetic("synthetic-osv.json")
    osv["affected"][1]["ranges"] = versions
    osv["affected"][0] = affected
    parse_any(osv)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += paths(child, (*prefix, index))
    return found


def mutate(record: Any, path: tuple[Any, ...], action: str, new: Any) -> Any:
    if not path:
        return new
    result = copy.deepcopy(record)
    parent = result
    for step in path[:-1]:
        parent = parent[step]
    if action == "delete":
        del parent[path[-1]]
    else:
        parent[path[-1]] = new
    return result


def real_records() -> list[Any]:
    if not SHARED_ERRATA.is_dir():
        return []
    names = [
        "kernel-cna/CVE-2024-26925.json",
        "kernel-cna/CVE-2024-26925.2024-04-24-bippy-d175d3acf727.json",
        "cvelistV5/CVE-2022-0847.json",
        "osv/CVE-2025-21772.osv.json",
        "osv/CVE-2025-21772.cve5-input.json",
    ]
    return [json.loads((SHARED_ERRATA / n).read_text()) for n in names]


REAL = real_records()


@pytest.mark.skipif(not REAL, reason="../shared/fixtures/errata is not present")
@FUZZ
@given(st.data())
def test_mutated_real_records(data: st.DataObject) -> None:
    record = data.draw(st.sampled_from(REAL))
    path = data.draw(st.sampled_from(paths(record)))
    action = data.draw(st.sampled_from(["delete", "replace"]))
    parse_any(mutate(record, path, action, data.draw(JSON)))


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes_as_a_file(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        for name in ("record.json", "list", "CVE-2099-0001.dyad"):
            path = Path(folder, name)
            path.write_bytes(raw)
        (Path(folder) / "CVE-2099-0001.json").write_bytes(
            (FIXTURES / "synthetic-cve5.json").read_bytes()
        )
        for target in (Path(folder), Path(folder, "list"), Path(folder, "record.json")):
            with contextlib.suppress(InputError):
                load_errata([target])
        with contextlib.suppress(InputError):
            load_json(Path(folder, "record.json"))


TRACKER_PIECES = st.sampled_from(
    [
        "CVE-2024-38550",
        "CVE-2024-38550 (text)",
        "TEMP-0000000-ABCDEF",
        "[23 Jan 2023] DSA-5324-1 linux - security update",
        "[02 Mar 2023] DLA-3349-1 linux-5.10",
        "\t",
        "        ",
        "[bookworm] ",
        "[unstable] ",
        "- linux ",
        "- curl ",
        "6.1.94-1",
        "1:2.3~rc1+dfsg-4",
        "6.1.94_1",
        "<not-affected> (reason)",
        "<unfixed>",
        "<no-dsa>",
        "<bogus>",
        "{CVE-2022-0847 CVE-2022-0001}",
        "{DSA-1-1}",
        "{}",
        "NOTE: https://git.kernel.org/linus/ea60ab95723f5738e7737b56dda95e6feefa5b50 (6.10-rc1)",
        "NOTE: https://git.kernel.org/linus/ea60ab95723f (garbage)",
        "RESERVED",
        "REJECTED",
        "\n",
    ]
)
TRACKER_TEXT = st.lists(TRACKER_PIECES | st.text(max_size=10), max_size=30).map("".join)


@FUZZ
@given(TRACKER_TEXT)
def test_random_tracker_text(text: str) -> None:
    kinds: tuple[Format, ...] = ("cve-list", "advisories")
    for kind in kinds:
        with contextlib.suppress(InputError):
            parse_tracker(Path("list"), text, kind)


@pytest.mark.skipif(not SHARED_ERRATA.is_dir(), reason="../shared/fixtures/errata is not present")
@FUZZ
@given(st.data())
def test_mutated_real_tracker_lists(data: st.DataObject) -> None:
    name = data.draw(
        st.sampled_from(
            [
                "CVE-list.quoted-excerpt.txt",
                "DSA-list.linux-excerpt.txt",
                "DLA-list.linux-excerpt.txt",
            ]
        )
    )
    lines = (SHARED_ERRATA / "debian" / name).read_text().splitlines()
    index = data.draw(st.integers(min_value=0, max_value=len(lines) - 1))
    lines[index] = data.draw(TRACKER_TEXT | st.just(lines[index][::-1]) | st.just(""))
    text = "\n".join(lines)
    kind: Format = "cve-list" if name.startswith("CVE") else "advisories"
    with contextlib.suppress(InputError):
        parse_tracker(Path(name), text, kind)


DYAD_PIECES = st.sampled_from(
    ["5.4.262", "0", "6.5", "6.9-rc3", ":", "#", "\n", "a1" * 20, "0d459e2ffb54", "zz", " "]
)


@FUZZ
@given(st.lists(DYAD_PIECES | st.text(max_size=6), max_size=30).map("".join))
def test_random_dyad_text(text: str) -> None:
    try:
        dyad = parse_dyad(Path("x.dyad"), text)
    except InputError:
        return
    for probe in PROBES:
        dyad.history.evaluate(KernelVersion.parse(probe))
