"""ruff and mypy run as part of the suite, so a lint or type error fails CI like a bug."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO

PACKAGES = {
    "pipeline": "livegraft.pipeline",
    "signing": "livegraft.signing",
    "client": "livegraft.client",
}
# Code that runs on a host's own /usr/bin/python3 (3.9 on RHEL 9), not in the venv.
HOST_CODE = ["client", "plugins"]


def _tool(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def test_ruff_clean() -> None:
    cp = subprocess.run(
        [_tool("ruff"), "check", *PACKAGES, "plugins", "tests", "bench", "--no-cache"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert cp.returncode == 0, cp.stdout + cp.stderr


def test_ruff_format_clean() -> None:
    cp = subprocess.run(
        [_tool("ruff"), "format", "--check", *PACKAGES, "plugins", "tests", "bench", "--no-cache"],
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
    # The dnf plugin is one file dnf imports by path: checked as a module of its own name.
    (tmp_path / "livegraft_dnf_plugin.py").symlink_to(REPO / "plugins" / "dnf" / "livegraft.py")
    args += ["-m", "livegraft_dnf_plugin"]
    cp = subprocess.run(
        [_tool("mypy"), "--cache-dir", str(tmp_path / "cache"), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "MYPYPATH": str(tmp_path)},
    )
    assert cp.returncode == 0, cp.stdout + cp.stderr


def test_host_code_runs_on_python_3_9() -> None:
    # vermin reads the syntax and the standard library calls each file needs.
    cp = subprocess.run(
        [_tool("vermin"), "--no-tips", "--violations", "-t=3.9-", *HOST_CODE],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert cp.returncode == 0, cp.stdout + cp.stderr


def test_client_imports_only_the_standard_library() -> None:
    # The client must not pull the pipeline (or anything from PyPI) onto a host.
    import ast

    allowed = set(sys.stdlib_module_names) | {"livegraft"}
    for path in (REPO / "client").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in allowed, f"{path}: imports {name}"
                assert not name.startswith("livegraft.") or name.startswith("livegraft.client"), (
                    f"{path}: imports {name}"
                )
