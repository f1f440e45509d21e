"""The kernel CNA's real records (with their sidecars) at many versions.

Every expectation here was worked out by reading the record and its .dyad by hand
(introductions and fixes per branch), not taken from the code's output.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from livegraft.pipeline.errata.load import load_errata
from livegraft.pipeline.errata.model import Vulnerability

OLD_26925 = "CVE-2024-26925.2024-04-24-bippy-d175d3acf727.json"
FIXTURES = Path(__file__).parent / "fixtures" / "errata"
Row = tuple[str, str, str | None]


def one(path: Path, vid: str) -> Vulnerability:
    vuln = load_errata([path]).get(vid)
    assert vuln is not None
    return vuln


def synthetic_cve5() -> dict[str, Any]:
    record: dict[str, Any] = json.loads((FIXTURES / "synthetic-cve5.json").read_text())
    return record


def check(vuln: Vulnerability, table: list[Row]) -> None:
    got = []
    for version, _, _ in table:
        verdict = vuln.status_at(version)
        fixed = str(verdict.fixed_version) if verdict.fixed_version else None
        got.append((version, verdict.reported_status, fixed))
    assert got == table


# dyad: 5.4.262→5.4.274, 5.10.198→5.10.215, 5.15.134→5.15.155, 6.1.56→6.1.86,
# 6.5→6.6.26 / 6.8.5 / 6.9 (mainline), 4.19.316→unfixed, 6.4.13→unfixed.
CVE_2024_26925: list[Row] = [
    ("4.19.300", "unaffected", None),
    ("4.19.316", "affected", None),
    ("4.19.320", "affected", None),
    ("5.4.261", "unaffected", None),
    ("5.4.262", "affected", "5.4.274"),
    ("5.4.274", "unaffected", "5.4.274"),
    ("5.10.197", "unaffected", None),
    ("5.10.200", "affected", "5.10.215"),
    ("5.15.155", "unaffected", "5.15.155"),
    ("6.1.55", "unaffected", None),
    ("6.1.56", "affected", "6.1.86"),
    ("6.1.60", "affected", "6.1.86"),
    ("6.1.85", "affected", "6.1.86"),
    ("6.1.86", "unaffected", "6.1.86"),
    ("6.1.192", "unaffected", "6.1.86"),
    ("6.4.12", "unaffected", None),
    ("6.4.13", "affected", None),
    ("6.5-rc7", "unaffected", None),
    ("6.5", "affected", None),
    ("6.5.13", "affected", None),
    ("6.6.25", "affected", "6.6.26"),
    ("6.6.26", "unaffected", "6.6.26"),
    ("6.7.5", "affected", None),
    ("6.8.4", "affected", "6.8.5"),
    ("6.8.5", "unaffected", "6.8.5"),
    ("6.9-rc2", "affected", "6.9"),
    ("6.9", "unaffected", "6.9"),
    ("6.9.3", "unaffected", "6.9"),
    ("6.10", "unaffected", "6.9"),
]

# dyad: 4.19.316→4.19.316 (bug and fix arrived together), 5.4.262→5.4.269,
# 5.10.190→5.10.210, 5.15.124→5.15.149, 6.1.43→6.1.78, 6.5→6.6.17 / 6.7.5 / 6.8,
# 6.4.8→unfixed.
CVE_2024_26581: list[Row] = [
    ("4.19.315", "unaffected", None),
    ("4.19.316", "unaffected", "4.19.316"),
    ("5.4.261", "unaffected", None),
    ("5.4.262", "affected", "5.4.269"),
    ("5.4.269", "unaffected", "5.4.269"),
    ("5.10.200", "affected", "5.10.210"),
    ("5.15.148", "affected", "5.15.149"),
    ("6.1.42", "unaffected", None),
    ("6.1.43", "affected", "6.1.78"),
    ("6.1.78", "unaffected", "6.1.78"),
    ("6.4.7", "unaffected", None),
    ("6.4.8", "affected", None),
    ("6.5", "affected", None),
    ("6.6.16", "affected", "6.6.17"),
    ("6.6.17", "unaffected", "6.6.17"),
    ("6.7.4", "affected", "6.7.5"),
    ("6.8-rc1", "affected", "6.8"),
    ("6.8", "unaffected", "6.8"),
    ("6.12", "unaffected", "6.8"),
]

# dyad: introduced in 4.1 (mainline); fixed in 4.19.312, 5.4.274, 5.10.215, 5.15.154,
# 6.1.84, 6.6.24, 6.7.12 and 6.8.
CVE_2024_26642: list[Row] = [
    ("4.0", "unaffected", None),
    ("4.1", "affected", None),
    ("4.14.300", "affected", None),
    ("4.19.311", "affected", "4.19.312"),
    ("4.19.312", "unaffected", "4.19.312"),
    ("5.4.274", "unaffected", "5.4.274"),
    ("6.1.83", "affected", "6.1.84"),
    ("6.2", "affected", None),
    ("6.7.11", "affected", "6.7.12"),
    ("6.8", "unaffected", "6.8"),
    ("6.9", "unaffected", "6.8"),
]

# dyad: vulnerable since 3.7 (the .vulnerable override); fixed in 5.4.277, 5.10.211,
# 5.15.150, 6.1.79, 6.6.8 and 6.7.
CVE_2023_52434: list[Row] = [
    ("3.6", "unaffected", None),
    ("3.7", "affected", None),
    ("4.19.300", "affected", None),
    ("5.4.276", "affected", "5.4.277"),
    ("5.4.277", "unaffected", "5.4.277"),
    ("6.1.79", "unaffected", "6.1.79"),
    ("6.6.7", "affected", "6.6.8"),
    ("6.7-rc8", "affected", "6.7"),
    ("6.7", "unaffected", "6.7"),
]


@pytest.mark.parametrize(
    ("vid", "table"),
    [
        ("CVE-2024-26925", CVE_2024_26925),
        ("CVE-2024-26581", CVE_2024_26581),
        ("CVE-2024-26642", CVE_2024_26642),
        ("CVE-2023-52434", CVE_2023_52434),
    ],
)
def test_real_records_with_dyad(shared_errata: Path, vid: str, table: list[Row]) -> None:
    check(one(shared_errata / "kernel-cna" / f"{vid}.json", vid), table)


def test_whole_folder_same_answers(shared_errata: Path) -> None:
    # The first-published form of CVE-2024-26925 merges in (same id) but the dyad wins.
    errata = load_errata([shared_errata / "kernel-cna"])
    vuln = errata.get("CVE-2024-26925")
    assert vuln is not None and len(vuln.records) == 2
    check(vuln, CVE_2024_26925)
    # One vulnerability per published record file (<id>.json); the dated first-published
    # form merges into its id, and the rejected record is skipped. Read from the folder,
    # which grows as records are added to it.
    published = sorted(
        p.name.removesuffix(".json")
        for p in (shared_errata / "kernel-cna").glob("CVE-*.json")
        if p.name.count(".") == 1
    )
    assert {"CVE-2023-52434", "CVE-2024-26581", "CVE-2024-26642", "CVE-2024-26925"} <= set(
        published
    )
    assert [v.id for v in errata.vulnerabilities()] == published


def test_git_block_wins_without_dyad(shared_errata: Path, tmp_path: Path) -> None:
    # Without its sidecars the record is read as the schema says; the git block's
    # backport range (6.1.56 lessThan 6.1.86) overrides the semver block's
    # "0 lessThan 6.5: unaffected".
    shutil.copy(shared_errata / "kernel-cna" / "CVE-2024-26925.json", tmp_path)
    vuln = one(tmp_path / "CVE-2024-26925.json", "CVE-2024-26925")
    check(
        vuln,
        [
            ("4.19.316", "affected", None),
            ("5.4.262", "affected", "5.4.274"),
            ("6.1.55", "unaffected", None),
            ("6.1.60", "affected", "6.1.86"),
            ("6.1.90", "unaffected", "6.1.86"),
            ("6.4.13", "affected", None),
            ("6.6.10", "affected", "6.6.26"),
            ("6.9-rc2", "affected", "6.9"),
            ("6.10", "unaffected", "6.9"),
        ],
    )


def test_first_published_form(shared_errata: Path) -> None:
    # 12-character commits, versionType custom, the fix given as 6.9-rc3. It predates
    # the 4.19 and 6.4 backports of the bug, so it knows nothing of them.
    vuln = one(shared_errata / "kernel-cna" / OLD_26925, "CVE-2024-26925")
    check(
        vuln,
        [
            ("4.19.316", "unaffected", None),
            ("5.4.280", "unaffected", "5.4.274"),
            ("6.4.13", "unaffected", None),
            ("6.5", "affected", None),
            ("6.6.25", "affected", "6.6.26"),
            ("6.7.5", "affected", None),
            ("6.8.4", "affected", "6.8.5"),
            ("6.9-rc2", "affected", "6.9-rc3"),
            ("6.9-rc3", "unaffected", "6.9-rc3"),
            ("6.10", "unaffected", "6.9-rc3"),
        ],
    )
    new = one(shared_errata / "kernel-cna" / "CVE-2024-26925.json", "CVE-2024-26925")
    # 12 and 40 characters name the same commits.
    assert vuln.fix_commits == new.fix_commits
    assert "0d459e2ffb54" in new.fix_commits and len(new.fix_commits) == 7


def test_what_the_plan_and_report_show(shared_errata: Path) -> None:
    vuln = one(shared_errata / "kernel-cna" / "CVE-2024-26925.json", "CVE-2024-26925")
    assert vuln.title == "netfilter: nf_tables: release mutex after nft_gc_seq_end from abort path"
    assert vuln.description.startswith("In the Linux kernel, the following vulnerability")
    assert vuln.severity == "7.8 HIGH"
    assert (
        vuln.cvss is not None and vuln.cvss.vector == "CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:H"
    )
    assert len(vuln.references) == 7
    assert vuln.references[0] == (
        "https://git.kernel.org/stable/c/61ac7284346c32f9a8c8ceac56102f7914060428"
    )
    assert "5d319f7a8143" in vuln.introduced_commits
    smb = one(shared_errata / "kernel-cna" / "CVE-2023-52434.json", "CVE-2023-52434")
    assert "b8c32dbb0deb" in smb.introduced_commits  # from the .vulnerable sidecar


def test_rejected_duplicate_is_skipped(shared_errata: Path, tmp_path: Path) -> None:
    # Its JSON still says PUBLISHED: the kernel CNA files rejected records apart.
    assert (
        load_errata([shared_errata / "kernel-cna" / "rejected-CVE-2024-26609.json"]).get(
            "CVE-2024-26609"
        )
        is None
    )
    layout = tmp_path / "cve" / "rejected" / "2024"
    layout.mkdir(parents=True)
    shutil.copy(
        shared_errata / "kernel-cna" / "rejected-CVE-2024-26609.json",
        layout / "CVE-2024-26609.json",
    )
    assert len(load_errata([tmp_path])) == 0
    record = json.loads((shared_errata / "kernel-cna" / "rejected-CVE-2024-26609.json").read_text())
    record["cveMetadata"]["state"] = "REJECTED"
    (tmp_path / "CVE-2024-26609.json").write_text(json.dumps(record))
    assert len(load_errata([tmp_path / "CVE-2024-26609.json"])) == 0


def test_records_sharing_a_fix_are_one(shared_errata: Path, tmp_path: Path) -> None:
    # CVE-2024-26609 was rejected as a duplicate of CVE-2024-1086: same fix f342de4e2f33.
    # Filed as published (as if the rejection were not known), it still merges into the
    # record that names the same fix, and the lower id is the one kept.
    src = shared_errata / "kernel-cna"
    shutil.copy(src / "rejected-CVE-2024-26609.json", tmp_path / "CVE-2024-26609.json")
    shutil.copy(src / "rejected-CVE-2024-26609.sha1", tmp_path / "CVE-2024-26609.sha1")
    first = synthetic_cve5()
    first["cveMetadata"]["cveId"] = "CVE-2024-1086"
    git_block = first["containers"]["cna"]["affected"][0]
    git_block["versions"][0]["lessThan"] = "f342de4e2f33e0e39165d8639387aa6c19dff660"
    (tmp_path / "CVE-2024-1086.json").write_text(json.dumps(first))
    errata = load_errata([tmp_path])
    assert [(v.id, v.aliases) for v in errata.vulnerabilities()] == [
        ("CVE-2024-1086", ("CVE-2024-26609",))
    ]
    assert errata.get("CVE-2024-26609") is errata.get("CVE-2024-1086")


def test_twelve_and_forty_character_fixes_merge(shared_errata: Path, tmp_path: Path) -> None:
    other = synthetic_cve5()
    other["cveMetadata"]["cveId"] = "CVE-2099-0003"
    other["containers"]["cna"]["affected"][0]["versions"][1]["lessThan"] = "0D459E2FFB54"
    path = tmp_path / "CVE-2099-0003.json"
    path.write_text(json.dumps(other))
    errata = load_errata([shared_errata / "kernel-cna" / "CVE-2024-26925.json", path])
    (vuln,) = errata.vulnerabilities()
    assert (vuln.id, vuln.aliases) == ("CVE-2024-26925", ("CVE-2099-0003",))
    # The dyad-backed record decides over the other record's plain ranges.
    check(vuln, [("6.1.60", "affected", "6.1.86"), ("6.4.13", "affected", None)])
