"""``livegraft errata status``: the JSON a user reads, the table, and one-line errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from livegraft.pipeline.cli import main

FIXTURES = Path(__file__).parent / "fixtures" / "errata"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(["errata", "status", *args])
    out, err = capsys.readouterr()
    return status, out, err


def test_json_for_the_kernel_cna_folder(
    capsys: pytest.CaptureFixture[str], shared_errata: Path
) -> None:
    status, out, err = run(
        capsys, "--upstream-version", "6.1.60", "--json", str(shared_errata / "kernel-cna")
    )
    assert (status, err) == (0, "")
    expected = [
        {
            "id": "CVE-2023-52434",
            "upstream_version": "6.1.60",
            "status": "affected",
            "fixed_version": "6.1.79",
            "aliases": [],
        },
        {
            "id": "CVE-2024-26581",
            "upstream_version": "6.1.60",
            "status": "affected",
            "fixed_version": "6.1.78",
            "aliases": [],
        },
        {
            "id": "CVE-2024-26642",
            "upstream_version": "6.1.60",
            "status": "affected",
            "fixed_version": "6.1.84",
            "aliases": [],
        },
        {
            "id": "CVE-2024-26925",
            "upstream_version": "6.1.60",
            "status": "affected",
            "fixed_version": "6.1.86",
            "aliases": [],
        },
    ]
    found = {entry["id"]: entry for entry in json.loads(out)}
    # The folder grows as records are added to it: each of its record files is one
    # vulnerability, and the ones checked by hand keep their answers.
    published = {
        p.name.removesuffix(".json")
        for p in (shared_errata / "kernel-cna").glob("CVE-*.json")
        if p.name.count(".") == 1
    }
    assert set(found) == published
    for entry in expected:
        assert found[entry["id"]] == entry


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("4.19.300", ("unaffected", None)),
        ("4.19.316", ("affected", None)),
        ("5.4.274", ("unaffected", "5.4.274")),
        ("6.1.86", ("unaffected", "6.1.86")),
        ("6.9-rc2", ("affected", "6.9")),
        ("v6.10", ("unaffected", "6.9")),
    ],
)
def test_one_record_with_sidecars(
    capsys: pytest.CaptureFixture[str],
    shared_errata: Path,
    version: str,
    expected: tuple[str, str | None],
) -> None:
    record = shared_errata / "kernel-cna" / "CVE-2024-26925.json"
    status, out, _ = run(capsys, "--json", "--upstream-version", version, str(record))
    assert status == 0
    (row,) = json.loads(out)
    # The version is echoed as given.
    assert row["upstream_version"] == version
    assert (row["status"], row["fixed_version"]) == expected


def test_whole_shared_tree_loads(capsys: pytest.CaptureFixture[str], shared_errata: Path) -> None:
    # Other advisory formats (CSAF, USN, updateinfo XML, CSV, mbox) are passed over.
    status, out, err = run(capsys, "--json", "--upstream-version", "5.10.92", str(shared_errata))
    assert (status, err) == (0, "")
    rows = {r["id"]: r for r in json.loads(out)}
    ids = [r["id"] for r in json.loads(out)]
    assert ids == sorted(ids)
    assert "CVE-2024-26609" not in rows
    assert rows["CVE-2022-0847"]["status"] == "unknown"
    assert rows["CVE-2025-21772"]["status"] == "affected"
    assert rows["CVE-2025-21772"]["fixed_version"] == "5.10.235"


def test_table(capsys: pytest.CaptureFixture[str], shared_errata: Path) -> None:
    status, out, _ = run(capsys, "--upstream-version", "6.4.13", str(shared_errata / "kernel-cna"))
    assert status == 0
    assert "CVE-2024-26925" in out and "affected" in out and "6.4.13" in out


def one_line_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    status, out, err = run(capsys, *args)
    assert status == 2
    assert out == ""  # nothing half-printed
    assert err.startswith("livegraft: error: ") and err.endswith("\n") and err.count("\n") == 1
    return err


def test_bad_upstream_version(capsys: pytest.CaptureFixture[str]) -> None:
    err = one_line_error(capsys, "--upstream-version", "5.17 rc6", str(FIXTURES))
    assert "--upstream-version: expected an upstream kernel version" in err


def test_bad_inputs_each_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    shutil.copy(FIXTURES / "synthetic-cve5.json", good)
    record = json.loads(good.read_text())

    broken = tmp_path / "broken.json"
    broken.write_text('{"dataType": ')
    err = one_line_error(capsys, "--upstream-version", "6.1", str(good), str(broken))
    assert f"{broken}: line 1 column 14: expected valid JSON" in err

    record["containers"]["cna"]["affected"][1]["versions"][3]["versionType"] = "kernel"
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps(record))
    err = one_line_error(capsys, "--upstream-version", "6.1", str(good), str(odd))
    assert (
        f"{odd}: containers.cna.affected[1].versions[3].versionType: expected a versionType" in err
    )

    record["containers"]["cna"]["affected"][1]["versions"][3]["versionType"] = "semver"
    record["containers"]["cna"]["affected"][1]["versions"] = {"version": "6.3"}
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps(record))
    err = one_line_error(capsys, "--upstream-version", "6.1", str(wrong))
    assert f"{wrong}: containers.cna.affected[1].versions: expected an array, got an object" in err

    err = one_line_error(capsys, "--upstream-version", "6.1", str(tmp_path / "missing"))
    assert "missing: no such file or folder" in err

    text = tmp_path / "notes.txt"
    text.write_text("not a record\n")
    err = one_line_error(capsys, "--upstream-version", "6.1", str(text))
    assert f"{text}: expected a CVE JSON 5 record, an OSV record or a Debian" in err


def test_console_script(shared_errata: Path) -> None:
    cp = subprocess.run(
        [
            sys.executable,
            "-m",
            "livegraft.pipeline.cli",
            "errata",
            "status",
            "--json",
            "--upstream-version",
            "6.9-rc2",
            str(shared_errata / "osv"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert cp.returncode == 0, cp.stderr
    assert json.loads(cp.stdout) == [
        {
            "id": "CVE-2025-21772",
            "upstream_version": "6.9-rc2",
            "status": "affected",
            "fixed_version": None,
            "aliases": [],
        }
    ]
    cp = subprocess.run(
        [
            sys.executable,
            "-m",
            "livegraft.pipeline.cli",
            "errata",
            "status",
            "--upstream-version",
            "six",
            str(shared_errata / "osv"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert cp.returncode == 2 and cp.stdout == "" and cp.stderr.count("\n") == 1
    assert "Traceback" not in cp.stderr
