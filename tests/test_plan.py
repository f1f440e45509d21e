"""The plan: which fixes go into each build's module, and levels that only move up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from project import add_fix, make_project

LIVEGRAFT = [sys.executable, "-m", "livegraft.pipeline.cli"]


def plan(config: Path, *extra: str) -> dict:  # type: ignore[type-arg]
    cp = subprocess.run(
        [*LIVEGRAFT, "plan", "--config", str(config), "--json", *extra],
        capture_output=True,
        text=True,
        check=False,
    )
    assert cp.returncode == 0, cp.stderr
    return json.loads(cp.stdout)  # type: ignore[no-any-return]


def cells(document: dict) -> dict[str, dict]:  # type: ignore[type-arg]
    return {c["uname_r"]: c for c in document["cells"]}


def test_fixes_follow_errata_and_constraints(tmp_path: Path) -> None:
    by_build = cells(plan(make_project(tmp_path)))
    # Sample 1 affects every kernel; sample 2 is constrained to 6.1 and fixed
    # upstream in 6.12.110, so 6.12.117 gets sample 1 only.
    assert by_build["6.1.0-56-amd64"]["fixes"] == ["LGSA-SAMPLE-0001", "LGSA-SAMPLE-0002"]
    assert by_build["6.1.0-56-cloud-amd64"]["fixes"] == ["LGSA-SAMPLE-0001", "LGSA-SAMPLE-0002"]
    assert by_build["6.12.107+deb12-amd64"]["fixes"] == ["LGSA-SAMPLE-0001"]
    assert by_build["6.12.117+deb12-amd64"]["fixes"] == ["LGSA-SAMPLE-0001"]
    why = {d["fix"]: d["reason"] for d in by_build["6.12.107+deb12-amd64"]["decisions"]}
    assert why["LGSA-SAMPLE-0002"].startswith("constraints: upstream 6.12.107 not <")
    cell = by_build["6.1.0-56-amd64"]
    assert cell["level"] == 1
    assert cell["module"] == "livegraft_6_1_0_56_amd64_l1"
    assert cell["cves"] == ["LIVEGRAFT-SAMPLE-0001", "LIVEGRAFT-SAMPLE-0002"]
    assert len(cell["id"]) == 64


def test_fix_for_a_vulnerability_the_kernel_fixed_is_not_planned(tmp_path: Path) -> None:
    config = make_project(tmp_path)
    add_fix(tmp_path, "LGSA-0003", "LIVEGRAFT-SAMPLE-0002", "uptime_proc_show")
    by_build = cells(plan(config))
    # 6.12.107 is below the upstream fix 6.12.110, 6.12.117 is past it.
    assert "LGSA-0003" in by_build["6.12.107+deb12-amd64"]["fixes"]
    assert "LGSA-0003" not in by_build["6.12.117+deb12-amd64"]["fixes"]
    why = {d["fix"]: d["reason"] for d in by_build["6.12.117+deb12-amd64"]["decisions"]}
    assert why["LGSA-0003"] == "LIVEGRAFT-SAMPLE-0002: fixed"


def test_levels_are_kept_and_only_move_up(tmp_path: Path) -> None:
    config = make_project(tmp_path)
    first = cells(plan(config))
    again = cells(plan(config))
    assert again == first, "re-planning the same inputs must change nothing"

    # A new fix for a vulnerability of every build raises every level by one.
    add_fix(tmp_path, "LGSA-0003", "LIVEGRAFT-SAMPLE-0001", "meminfo_proc_show")
    third = cells(plan(config))
    for uname_r, cell in third.items():
        assert cell["level"] == first[uname_r]["level"] + 1
        assert cell["id"] != first[uname_r]["id"]
        assert "LGSA-0003" in cell["fixes"]

    # Removing it again is new content too: the level never goes back to a used number.
    for f in (tmp_path / "fixes" / "LGSA-0003").iterdir():
        f.unlink()
    (tmp_path / "fixes" / "LGSA-0003").rmdir()
    fourth = cells(plan(config))
    assert all(c["level"] == first[u]["level"] + 2 for u, c in fourth.items())

    # Editing one fix's source raises only the builds that carry it.
    src = tmp_path / "fixes" / "LGSA-SAMPLE-0002" / "livepatch.c"
    src.write_text(src.read_text() + "/* v2 */\n")
    fifth = cells(plan(config))
    assert fifth["6.1.0-56-amd64"]["level"] == fourth["6.1.0-56-amd64"]["level"] + 1
    assert fifth["6.12.117+deb12-amd64"] == fourth["6.12.117+deb12-amd64"]


def test_cell_ids_are_deterministic_across_folders(tmp_path: Path) -> None:
    a = cells(plan(make_project(tmp_path / "a")))
    b = cells(plan(make_project(tmp_path / "b")))
    assert {u: c["id"] for u, c in a.items()} == {u: c["id"] for u, c in b.items()}


def test_rebuild_of_one_uname_r_supersedes_the_older(tmp_path: Path) -> None:
    rebuild = (
        '[[kernels]]\nuname_r = "6.1.0-56-amd64"\nfamily = "deb"\n'
        'package_version = "6.1.192-1"\ndist = "bookworm"\n'
    )
    config = make_project(tmp_path)
    config.write_text(config.read_text() + rebuild)
    document = plan(config)
    assert document["superseded"] == [
        {"uname_r": "6.1.0-56-amd64", "package_version": "6.1.192-1", "by": "6.1.192-2"}
    ]
    assert cells(document)["6.1.0-56-amd64"]["package_version"] == "6.1.192-2"


def test_bad_input_writes_nothing(tmp_path: Path) -> None:
    config = make_project(tmp_path)
    config.write_text('flavor = "amd64"\n' + config.read_text())
    cp = subprocess.run(
        [*LIVEGRAFT, "plan", "--config", str(config)], capture_output=True, text=True, check=False
    )
    assert cp.returncode == 2
    assert cp.stderr.count("\n") == 1 and "livegraft.toml: flavor: unknown key" in cp.stderr
    assert not (tmp_path / ".livegraft").exists()


def test_bad_fix_writes_nothing_and_keeps_levels(tmp_path: Path) -> None:
    config = make_project(tmp_path)
    plan(config)
    ledger = (tmp_path / ".livegraft" / "levels.json").read_bytes()
    (tmp_path / "fixes" / "LGSA-SAMPLE-0001" / "livepatch.c").unlink()
    cp = subprocess.run(
        [*LIVEGRAFT, "plan", "--config", str(config)], capture_output=True, text=True, check=False
    )
    assert cp.returncode == 2, cp.stderr
    assert "LGSA-SAMPLE-0001/livepatch.c" in cp.stderr
    assert (tmp_path / ".livegraft" / "levels.json").read_bytes() == ledger


def test_a_new_package_format_gives_every_package_a_new_level(tmp_path: Path) -> None:
    """Packages that change shape (tags, info file) must not reuse a published level."""
    config = make_project(tmp_path)
    first = cells(plan(config))
    code = (
        "import sys, livegraft.pipeline.plan as p; p.PACKAGE_FORMAT += 1; "
        "from livegraft.pipeline.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    cp = subprocess.run(
        [sys.executable, "-c", code, "plan", "--config", str(config), "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert cp.returncode == 0, cp.stderr
    for uname_r, cell in cells(json.loads(cp.stdout)).items():
        assert cell["level"] == first[uname_r]["level"] + 1
