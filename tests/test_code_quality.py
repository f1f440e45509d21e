"""ruff and mypy run as part of the suite, so a lint or type error fails CI like a bug."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO

PACKAGES = {"pipeline": "livegraft.pipeline", "signing": "livegraft.signing"}


def _tool(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def test_ruff_clean() -> None:
    cp = subprocess.run(
        [_tool("ruff"), "check", *PACKAGES, "tests", "bench", "--no-cache"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert cp.returncode == 0, cp.stdout + cp.stderr


def test_ruff_format_clean() -> None:
    cp = subprocess.run(
        [_tool("ruff"), "format", "--check", *PACKAGES, "tests", "bench", "--no-cache"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert cp.returncode == 0, cp.stdout + cp.stderr


def test_mypy_strict(tmp_path: Path) -> None:
    # The card's folders are installed as livegraft.<folder>; mypy cannot follow the
    # editable install's import hook, so give it the same view through symlinks.
    root = tmp_path / "livegraft"
    root.mkdir()
    for folder, _ in PACKAGES.items():
        (root / folder).symlink_to(REPO / folder)
    args = [arg for pkg in PACKAGES.values() for arg in ("-p", pkg)]
    cp = subprocess.run(
        [_tool("mypy"), "--cache-dir", str(tmp_path / "cache"), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "MYPYPATH": str(tmp_path)},
    )
    assert cp.returncode == 0, cp.stdout + cp.stderr
