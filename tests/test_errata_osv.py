"""OSV records in the Linux ecosystem, and their agreement with the CVE record they came from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from errata_support import answers, load_one
from livegraft.pipeline.errata.load import load_errata
from livegraft.pipeline.errata.model import Vulnerability
from livegraft.pipeline.errors import InputError

FIXTURES = Path(__file__).parent / "fixtures" / "errata"


def synthetic() -> dict[str, Any]:
    record: dict[str, Any] = json.loads((FIXTURES / "synthetic-osv.json").read_text())
    return record


def load(tmp_path: Path, record: dict[str, Any], name: str = "record.osv.json") -> Vulnerability:
    return load_one(tmp_path, record, name)


def test_events_and_versions(tmp_path: Path) -> None:
    vuln = load(tmp_path, synthetic())
    assert answers(
        vuln,
        "4.19 4.19.1 5.0-rc1 5.0-rc2 5.0 5.4 5.4.199 5.4.200 5.5 6.1.50 6.1.51 6.6 6.7.3 6.8 3.10",
    ) == [
        ("affected", None),  # listed as v4.19
        ("unaffected", None),  # not listed, in no range
        ("affected", None),  # listed as v5.0-rc1 (the list is not sorted)
        ("unaffected", None),
        ("unaffected", None),
        ("affected", "5.4.200"),  # introduced 5.4.0 (= 5.4), fixed 5.4.200
        ("affected", "5.4.200"),
        ("fixed", "5.4.200"),
        ("unaffected", None),
        ("affected", None),  # last_affected 6.1.50 is still affected
        ("unaffected", None),
        ("affected", None),  # introduced 6.6, limit 6.8
        ("affected", None),
        ("unaffected", None),
        ("unaffected", None),  # the PyPI package's range is not the kernel's
    ]
    assert (vuln.id, vuln.aliases) == ("CVE-2099-0002", ("LIVEGRAFT-TEST-0002",))
    assert vuln.fix_commits == ("e5e5e5e5e5e5",)
    assert vuln.introduced_commits == ("d4d4d4d4d4d4",)
    assert vuln.title == "SYNTHETIC: example: fix a leak in example_open()"
    assert vuln.severity == "CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:N/I:N/A:H"


def test_git_only_record_is_unknown(tmp_path: Path) -> None:
    record = synthetic()
    record["affected"] = record["affected"][:1]
    assert answers(load(tmp_path, record), "5.4 6.1") == [("unknown", None), ("unknown", None)]


def test_unparsable_versions_make_unknown(tmp_path: Path) -> None:
    record = synthetic()
    record["affected"][1]["versions"].append("Kernel 5.17 rc6")
    # Listed and ranged versions still answer; the rest might be the unreadable one.
    assert answers(load(tmp_path, record), "4.19 5.5") == [("affected", None), ("unknown", None)]


def test_withdrawn_record_is_skipped(tmp_path: Path) -> None:
    record = synthetic()
    record["withdrawn"] = "2099-02-01T00:00:00Z"
    path = tmp_path / "withdrawn.json"
    path.write_text(json.dumps(record))
    assert len(load_errata([path])) == 0


@pytest.mark.parametrize(
    ("mutate", "field", "expected"),
    [
        (lambda r: r.pop("modified"), "modified", "required field is missing"),
        (
            lambda r: r["affected"][1]["ranges"][0].__setitem__("type", "SEMVER2"),
            "affected[1].ranges[0].type",
            "expected one of ECOSYSTEM, SEMVER, GIT",
        ),
        (
            lambda r: r["affected"][1]["ranges"][0]["events"][0].__setitem__("fixed", "5.4.1"),
            "affected[1].ranges[0].events[0]",
            "expected an object with exactly one of",
        ),
        (
            lambda r: r["affected"][1]["ranges"][0].__setitem__("events", [{"fixed": "5.4.1"}]),
            "affected[1].ranges[0].events",
            "expected at least one introduced event",
        ),
        (
            lambda r: r["affected"][1].__setitem__("versions", [5.4]),
            "affected[1].versions[0]",
            "expected a string, got a number",
        ),
        (lambda r: r.__setitem__("aliases", "CVE-1"), "aliases", "expected an array"),
    ],
)
def test_bad_records(tmp_path: Path, mutate: Any, field: str, expected: str) -> None:
    record = synthetic()
    mutate(record)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(record))
    with pytest.raises(InputError) as caught:
        load_errata([path])
    assert str(caught.value).startswith(f"{path}: {field}: {expected}")


def test_real_osv_record(shared_errata: Path) -> None:
    (vuln,) = load_errata([shared_errata / "osv" / "CVE-2025-21772.osv.json"]).vulnerabilities()
    # introduced 0 → fixed 5.4.291; 5.5.0 → 5.10.235; 5.11.0 → 5.15.179; 5.16.0 → 6.1.129;
    # 6.2.0 → 6.6.79; 6.7.0 → 6.12.16; 6.13.0 → 6.13.4.
    assert answers(vuln, "2.6.12 5.4.290 5.4.291 5.9 6.1.129 6.12.15 6.13 6.13.4") == [
        ("affected", None),
        ("affected", "5.4.291"),
        ("fixed", "5.4.291"),
        ("affected", None),
        ("fixed", "6.1.129"),
        ("affected", "6.12.16"),
        ("affected", "6.13.4"),
        ("fixed", "6.13.4"),
    ]
    assert vuln.title == "partitions: mac: fix handling of bogus partition table"
    assert len(vuln.fix_commits) == 8  # from the GIT range


AGREEMENT_VERSIONS = [
    "2.6.12",
    "3.16.80",
    "4.4.300",
    "4.19.325",
    "5.4.1",
    "5.4.290",
    "5.4.291",
    "5.4.300",
    "5.5",
    "5.9.16",
    "5.10",
    "5.10.234",
    "5.10.235",
    "5.11",
    "5.15.178",
    "5.15.179",
    "5.16",
    "6.0.19",
    "6.1",
    "6.1.128",
    "6.1.129",
    "6.1.200",
    "6.2",
    "6.5.13",
    "6.6.78",
    "6.6.79",
    "6.7",
    "6.11.11",
    "6.12",
    "6.12.15",
    "6.12.16",
    "6.13",
    "6.13.3",
    "6.13.4",
    "6.13.12",
]


def test_osv_agrees_with_its_cve_record(shared_errata: Path) -> None:
    folder = shared_errata / "osv"
    osv = load_errata([folder / "CVE-2025-21772.osv.json"]).get("CVE-2025-21772")
    cve = load_errata([folder / "CVE-2025-21772.cve5-input.json"]).get("CVE-2025-21772")
    assert osv is not None and cve is not None
    for version in AGREEMENT_VERSIONS:
        assert osv.status_at(version) == cve.status_at(version), version
    assert osv.fix_commits == cve.fix_commits
    # Where they part: osv.dev's converter dropped the mainline fix (6.14), so by its
    # ECOSYSTEM ranges 6.14's release candidates are outside every range.
    assert cve.status_at("6.14-rc1").status == "affected"
    assert osv.status_at("6.14-rc1").status == "unaffected"
    assert cve.status_at("6.14").reported_status == osv.status_at("6.14").reported_status


def test_osv_and_cve_record_merge(shared_errata: Path) -> None:
    errata = load_errata([shared_errata / "osv"])
    (vuln,) = errata.vulnerabilities()
    assert {r.kind for r in vuln.records} == {"osv", "cve5"}
    # The CVE record's ranges decide (its mainline fix is known).
    assert vuln.status_at("6.14-rc1").status == "affected"
