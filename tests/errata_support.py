"""Helpers shared by the errata tests: load one record, ask it about many versions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from livegraft.pipeline.errata.load import load_errata
from livegraft.pipeline.errata.model import Vulnerability


def load_one(tmp_path: Path, record: dict[str, Any], name: str) -> Vulnerability:
    path = tmp_path / name
    path.write_text(json.dumps(record))
    (vuln,) = load_errata([path]).vulnerabilities()
    return vuln


def answers(vuln: Vulnerability, versions: str) -> list[tuple[str, str | None]]:
    """(status, fixed version) at each of the space-separated versions."""
    out = []
    for version in versions.split():
        verdict = vuln.status_at(version)
        out.append((verdict.status, str(verdict.fixed_version) if verdict.fixed_version else None))
    return out
