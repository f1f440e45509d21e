"""The coverage report: statuses per build, JSON, and an HTML page seen to render."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from project import make_project

LIVEGRAFT = [sys.executable, "-m", "livegraft.pipeline.cli"]


def report(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LIVEGRAFT, "report", "--config", str(config), *args],
        capture_output=True,
        text=True,
        check=False,
    )


def test_matrix_statuses(tmp_path: Path) -> None:
    cp = report(make_project(tmp_path), "--json")
    assert cp.returncode == 0, cp.stderr
    doc = json.loads(cp.stdout)
    rows = {b["uname_r"]: b for b in doc["builds"]}
    one, two = "LIVEGRAFT-SAMPLE-0001", "LIVEGRAFT-SAMPLE-0002"
    assert rows["6.1.0-56-amd64"]["status"] == {one: "livepatched", two: "livepatched"}
    # constrained out of the 6.1-only sample fix, below the upstream fix: exposed
    assert rows["6.12.107+deb12-amd64"]["status"] == {one: "livepatched", two: "affected"}
    # at or past the upstream fix 6.12.110
    assert rows["6.12.117+deb12-amd64"]["status"] == {one: "livepatched", two: "fixed"}
    assert rows["6.12.107+deb12-amd64"]["counts"] == {
        "fixed": 0,
        "livepatched": 1,
        "affected": 1,
        "unaffected": 0,
        "unknown": 0,
    }
    assert doc["totals"]["livepatched"] == 6
    assert rows["6.1.0-56-amd64"]["level"] == 1
    refs = {v["id"]: v["references"] for v in doc["vulnerabilities"]}
    assert refs[one] == ["https://docs.kernel.org/livepatch/livepatch.html"]
    # The report never records levels: only plan does.
    assert not (tmp_path / ".livegraft" / "levels.json").exists()


def test_real_errata_rows(tmp_path: Path, shared_errata: Path) -> None:
    cp = report(make_project(tmp_path), "--json", "--errata", str(shared_errata / "kernel-cna"))
    assert cp.returncode == 0, cp.stderr
    doc = json.loads(cp.stdout)
    ids = [v["id"] for v in doc["vulnerabilities"]]
    assert "CVE-2024-26925" in ids and "CVE-2024-26609" not in ids  # rejected: skipped
    rows = {b["uname_r"]: b["status"] for b in doc["builds"]}
    # nf_tables CVE-2024-26925: fixed upstream in 6.1.86, so 6.1.192 has the fix.
    assert rows["6.1.0-56-amd64"]["CVE-2024-26925"] == "fixed"


def test_terminal_table(tmp_path: Path) -> None:
    cp = report(make_project(tmp_path))
    assert cp.returncode == 0, cp.stderr
    assert "6.12.107+deb12-amd64" in cp.stdout and "livepatched" in cp.stdout


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    pytest.skip("chromium is not installed (scripts/bootstrap installs it)")


def test_html_renders_in_chromium(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    cp = report(make_project(tmp_path), "--html", str(page))
    assert cp.returncode == 0, cp.stderr
    html = page.read_text()
    # Self-contained: nothing to fetch, nothing to run.
    assert "<script" not in html and "<link" not in html and "src=" not in html
    assert 'href="https://docs.kernel.org/livepatch/livepatch.html"' in html
    assert 'href="#v-LIVEGRAFT-SAMPLE-0002"' in html

    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1200,700",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 700)
    colours = {c for _, c in image.getcolors(maxcolors=1 << 20) or []}
    # The status colours of the page's CSS are on screen: the matrix rendered.
    livepatched, affected, fixed = (0x15, 0x65, 0xC0), (0xC6, 0x28, 0x28), (0x2E, 0x7D, 0x32)
    assert {livepatched, affected, fixed} <= colours
