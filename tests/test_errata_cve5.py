"""CVE JSON 5 ranges as the schema defines them, other CNAs' records, and bad records."""

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
    record: dict[str, Any] = json.loads((FIXTURES / "synthetic-cve5.json").read_text())
    return record


def load(tmp_path: Path, record: dict[str, Any], name: str = "CVE-2099-0001.json") -> Vulnerability:
    return load_one(tmp_path, record, name)


def test_both_blocks(tmp_path: Path) -> None:
    vuln = load(tmp_path, synthetic())
    assert answers(vuln, "5.9 5.10 5.15.99 5.15.100 6.1.19 6.1.20 6.2.5 6.3-rc2 6.3 6.5") == [
        ("unaffected", None),  # 0 lessThan 5.10: unaffected
        ("affected", None),  # 5.10: affected, no fix on the 5.10 branch
        ("affected", "5.15.100"),  # defaultStatus affected; 5.15.100 fixes the branch
        ("fixed", "5.15.100"),  # 5.15.100 lessThanOrEqual 5.15.*: unaffected
        ("affected", None),
        ("affected", None),  # the git block's backport range agrees
        ("affected", None),
        ("affected", "6.3"),  # on the branch of the mainline fix
        ("fixed", "6.3"),  # original_commit_for_fix 6.3 lessThanOrEqual *
        ("fixed", "6.3"),
    ]
    assert vuln.severity == "5.5 MEDIUM"
    assert vuln.fix_commits == ("b2b2b2b2b2b2", "c3c3c3c3c3c3")
    assert vuln.introduced_commits == ("a1a1a1a1a1a1", "d4d4d4d4d4d4")


def test_backport_range_overrides_semver_block(tmp_path: Path) -> None:
    record = synthetic()
    semver = record["containers"]["cna"]["affected"][1]["versions"]
    semver[1]["lessThan"] = "6.3"  # now 0 lessThan 6.3: unaffected, as CVE-2024-26925 says
    vuln = load(tmp_path, record)
    assert answers(vuln, "6.1.19 6.1.20 6.1.99 6.2") == [
        ("unaffected", None),
        ("affected", None),
        ("affected", None),
        ("unaffected", None),  # 6.1.20 lessThan 6.2 ends with its branch, fixes nothing
    ]


def test_changes_and_first_match(tmp_path: Path) -> None:
    record = synthetic()
    record["containers"]["cna"]["affected"] = [
        {
            "vendor": "Linux",
            "product": "Linux",
            "versions": [
                {
                    "version": "5.0",
                    "lessThan": "6.*",
                    "status": "affected",
                    "versionType": "semver",
                    "changes": [
                        {"at": "5.10.50", "status": "unaffected"},
                        {"at": "5.4", "status": "unaffected"},
                    ],
                },
                # Overlaps the first entry, which decides where both match.
                {"version": "5.2", "lessThan": "5.3", "status": "unknown", "versionType": "semver"},
            ],
        }
    ]
    vuln = load(tmp_path, record)
    assert answers(vuln, "4.19 5.0 5.2.1 5.4 6.12 7.0") == [
        ("unknown", None),  # below every entry and no defaultStatus
        ("affected", None),
        ("affected", None),
        ("fixed", "5.4"),  # changes are re-sorted before they apply
        ("fixed", "5.4"),
        ("unknown", None),  # past 6.* and no defaultStatus
    ]


def test_last_affected_entry(tmp_path: Path) -> None:
    record = synthetic()
    record["containers"]["cna"]["affected"] = [
        {
            "product": "Linux",
            "defaultStatus": "unaffected",
            "versions": [
                {
                    "version": "5.15",
                    "lessThanOrEqual": "5.15.20",
                    "status": "affected",
                    "versionType": "custom",
                }
            ],
        }
    ]
    vuln = load(tmp_path, record)
    assert answers(vuln, "5.14.9 5.15 5.15.20 5.15.21") == [
        ("unaffected", None),
        ("affected", None),
        ("affected", None),
        ("unaffected", None),
    ]


def test_free_text_versions_are_unknown(shared_errata: Path) -> None:
    # Red Hat's Dirty Pipe record names "Linux Kernel 5.17 rc6": not a version.
    errata = load_errata([shared_errata / "cvelistV5"])
    assert [v.id for v in errata.vulnerabilities()] == ["CVE-2022-0847", "CVE-2023-0386"]
    for vuln in errata.vulnerabilities():
        for version in ("5.10.92", "5.17-rc6", "6.2-rc6", "6.10"):
            assert vuln.status_at(version).status == "unknown"
    dirty_pipe = errata.get("CVE-2022-0847")
    assert dirty_pipe is not None and dirty_pipe.severity == "7.8 HIGH"  # CISA's ADP metric
    assert dirty_pipe.title.startswith("A flaw was found in the way the")


def test_coarse_range_from_another_cna(tmp_path: Path) -> None:
    record = synthetic()
    record["containers"]["cna"]["affected"] = [
        {
            "vendor": "n/a",
            "product": "kernel",
            "versions": [
                {"version": "Linux Kernel 5.17 rc6", "status": "affected"},
                {
                    "version": "5.8",
                    "lessThan": "5.16.11",
                    "status": "affected",
                    "versionType": "semver",
                },
            ],
        }
    ]
    vuln = load(tmp_path, record)
    # Within the range: affected. Elsewhere the free-text entry might apply: unknown.
    assert answers(vuln, "5.10 5.16.10 5.16.11 5.7") == [
        ("affected", None),
        ("affected", "5.16.11"),
        ("unknown", None),
        ("unknown", None),
    ]


@pytest.mark.parametrize("version_type", ["rpm", "maven", "python", "RPM"])
def test_known_but_foreign_version_types_are_unknown(tmp_path: Path, version_type: str) -> None:
    record = synthetic()
    record["containers"]["cna"]["affected"] = [
        {
            "product": "kernel",
            "defaultStatus": "unaffected",
            "versions": [
                {
                    "version": "0",
                    "lessThan": "5.14.0-362.8.1.el9_3",
                    "status": "affected",
                    "versionType": version_type,
                }
            ],
        }
    ]
    assert answers(load(tmp_path, record), "5.14") == [("unknown", None)]


def test_cve_id_spelled_cveID(tmp_path: Path) -> None:
    record = synthetic()
    record["cveMetadata"]["cveID"] = record["cveMetadata"].pop("cveId")
    assert load(tmp_path, record).id == "CVE-2099-0001"


def bad(tmp_path: Path, record: object) -> str:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(record))
    with pytest.raises(InputError) as caught:
        load_errata([path])
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    return message


def test_unknown_version_type(tmp_path: Path) -> None:
    record = synthetic()
    record["containers"]["cna"]["affected"][1]["versions"][3]["versionType"] = "kernelver"
    message = bad(tmp_path, record)
    assert ": containers.cna.affected[1].versions[3].versionType: expected a versionType" in message
    assert "'kernelver'" in message


@pytest.mark.parametrize(
    ("mutate", "field", "expected"),
    [
        (lambda r: r["cveMetadata"].pop("cveId"), "cveMetadata.cveId", "required field is missing"),
        (lambda r: r["containers"].pop("cna"), "containers.cna", "required field is missing"),
        (
            lambda r: r["containers"]["cna"].pop("affected"),
            "containers.cna.affected",
            "required field is missing",
        ),
        (
            lambda r: r["containers"]["cna"]["affected"][1]["versions"][2].pop("status"),
            "containers.cna.affected[1].versions[2].status",
            "required field is missing",
        ),
        (
            lambda r: r["containers"]["cna"]["affected"][1].__setitem__("versions", "5.10"),
            "containers.cna.affected[1].versions",
            "expected an array, got a string",
        ),
        (
            lambda r: r["containers"]["cna"]["affected"][0]["versions"][0].__setitem__(
                "version", 510
            ),
            "containers.cna.affected[0].versions[0].version",
            "expected a string, got a number",
        ),
        (
            lambda r: r["containers"]["cna"]["affected"][1]["versions"][1].__setitem__(
                "status", "vulnerable"
            ),
            "containers.cna.affected[1].versions[1].status",
            "expected one of affected, unaffected, unknown",
        ),
        (
            lambda r: r["containers"]["cna"]["affected"][1]["versions"][1].pop("versionType"),
            "containers.cna.affected[1].versions[1].versionType",
            "required for a range",
        ),
        (
            lambda r: r["cveMetadata"].__setitem__("cveId", "CVE-24-1"),
            "cveMetadata.cveId",
            "expected a CVE id",
        ),
        (
            lambda r: r["cveMetadata"].__setitem__("state", "DRAFT"),
            "cveMetadata.state",
            "expected one of PUBLISHED, REJECTED",
        ),
        (
            lambda r: r["containers"]["cna"]["metrics"][0]["cvssV3_1"].__setitem__(
                "baseScore", "high"
            ),
            "containers.cna.metrics[0].cvssV3_1.baseScore",
            "expected a number",
        ),
    ],
)
def test_bad_records_name_file_field_and_expectation(
    tmp_path: Path, mutate: Any, field: str, expected: str
) -> None:
    record = synthetic()
    mutate(record)
    message = bad(tmp_path, record)
    assert f": {field}: {expected}" in message


def test_malformed_json(tmp_path: Path) -> None:
    path = tmp_path / "CVE-2099-0001.json"
    path.write_text('{"dataType": "CVE_RECORD",\n "cveMetadata": }')
    with pytest.raises(InputError) as caught:
        load_errata([tmp_path])
    assert str(caught.value).startswith(f"{path}: line 2 column 17: expected valid JSON")


def test_dyad_errors_name_the_line(tmp_path: Path) -> None:
    (tmp_path / "CVE-2099-0001.json").write_text(json.dumps(synthetic()))
    (tmp_path / "CVE-2099-0001.dyad").write_text("# comment\n5.10:abc:5.15.100\n")
    with pytest.raises(InputError) as caught:
        load_errata([tmp_path])
    assert str(caught.value).startswith(f"{tmp_path / 'CVE-2099-0001.dyad'}: line 2: expected")


def test_dyad_replaces_the_ranges(tmp_path: Path) -> None:
    (tmp_path / "CVE-2099-0001.json").write_text(json.dumps(synthetic()))
    (tmp_path / "CVE-2099-0001.dyad").write_text(
        "# dyad\n"
        f"0:0:5.15.100:{'c3' * 20}\n"  # as old as history
        f"5.10:{'a1' * 20}:6.3:{'b2' * 20}\n"
        "6.1.20:" + "d4" * 20 + ":0:0\n"
    )
    (tmp_path / "CVE-2099-0001.sha1").write_text("e5" * 20 + "\n")
    (vuln,) = load_errata([tmp_path]).vulnerabilities()
    assert answers(vuln, "4.4 5.15.100 6.1.19 6.1.20 6.3") == [
        ("affected", None),
        ("fixed", "5.15.100"),
        ("affected", None),
        ("affected", None),
        ("fixed", "6.3"),
    ]
    assert "e5e5e5e5e5e5" in vuln.fix_commits


def test_other_products_are_not_the_kernel(tmp_path: Path) -> None:
    record = synthetic()
    curl = {
        "vendor": "curl",
        "product": "curl",
        "defaultStatus": "unaffected",
        "versions": [
            {"version": "6.0", "lessThan": "8.9.0", "status": "affected", "versionType": "semver"}
        ],
    }
    record["containers"]["cna"]["affected"] = [curl]
    assert answers(load(tmp_path, record), "6.1 8.9") == [("unknown", None), ("unknown", None)]
    # Still read strictly.
    curl["versions"][0]["versionType"] = "curlver"
    assert "versions[0].versionType: expected a versionType" in bad(tmp_path, record)


def test_folders_pass_over_what_is_not_a_record(tmp_path: Path) -> None:
    (tmp_path / "CVE-2099-0001.json").write_text(json.dumps(synthetic()))
    (tmp_path / "CVE-2099-0001.mbox").write_text("From bippy-1.2.0 Mon Sep 17 00:00:00 2001\n")
    (tmp_path / "NOTES").write_text("CVE-2099-0001 is synthetic\nsee the README\n")
    (tmp_path / "vex.json").write_text('{"document": {}, "vulnerabilities": []}')
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "broken.json").write_text("{")
    assert [v.id for v in load_errata([tmp_path]).vulnerabilities()] == ["CVE-2099-0001"]
    # Named on their own, companions are passed over too, anything else is refused.
    assert len(load_errata([tmp_path / "CVE-2099-0001.mbox"])) == 0
    for name in ("NOTES", "vex.json"):
        with pytest.raises(InputError, match="expected a CVE JSON 5 record, an OSV record"):
            load_errata([tmp_path / name])
