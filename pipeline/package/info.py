"""The info file installed beside each module: what it is, from the installed package alone.

``/usr/lib/livegraft/<uname -r>/livepatch.json`` beside ``<module>.ko``: a client (or a
person) can check the module's exact kernel build, sha256, level and signer, the fixes
and CVEs it carries and how it was verified, without the repository or the pipeline.
Deterministic: sorted keys, no time of the run, so the same level packages the same bytes.
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Any, Literal

from ..build.store import INFO_FILE as BUILD_INFO_FILE
from ..build.store import Artifact
from ..errors import InputError
from ..plan import Cell

INFO_FORMAT = 1
INSTALL_ROOT = PurePosixPath("/usr/lib/livegraft")
INFO_NAME = "livepatch.json"

PackageType = Literal["deb", "rpm"]


def install_dir(uname_r: str) -> PurePosixPath:
    return INSTALL_ROOT / uname_r


def info_document(
    *,
    package_type: PackageType,
    name: str,
    version: str,
    cell: Cell,
    artifact: Artifact,
    verification: dict[str, Any],
) -> dict[str, Any]:
    """The info file's content for one package of one verified cell.

    The plan cell gives what build.json does not hold (fix titles and severities, the
    build's arch and dist); the two must describe the same module.
    """
    info = artifact.info
    build = cell.build
    expected = {
        "uname_r": build.uname_r,
        "package_version": build.package_version,
        "level": cell.level,
        "module": cell.module_name,
        "fixes": [f.id for f in cell.fixes],
    }
    for key, value in expected.items():
        if info.get(key) != value:
            raise InputError(
                artifact.dir / BUILD_INFO_FILE,
                key,
                f"{value!r} as plan cell {cell.id} says, not {info.get(key)!r}",
            )
    signer = info.get("signer") or {}
    return {
        "format": INFO_FORMAT,
        "package": {"name": name, "version": version, "type": package_type},
        "level": cell.level,
        "module": cell.module_name,
        "file": str(info["file"]),
        "path": str(install_dir(build.uname_r) / str(info["file"])),
        "sha256": artifact.sha256,
        "srcversion": info.get("srcversion"),
        "vermagic": info.get("vermagic"),
        "build": {
            "uname_r": build.uname_r,
            "package_version": build.package_version,
            "family": build.family,
            "arch": build.arch,
            "dist": build.dist,
        },
        "fixes": [
            {"id": f.id, "title": f.title, "cves": list(f.cves), "severity": f.severity}
            for f in cell.fixes
        ],
        "cves": list(cell.cves),
        "signer": {"fingerprint": signer.get("fingerprint"), "subject": signer.get("subject")},
        "artifact": artifact.id,
        "verification": {
            "status": verification.get("status"),
            "kernel_release": verification.get("kernel_release"),
            "kernel_version": verification.get("kernel_version"),
        },
    }


def render_info(document: dict[str, Any]) -> bytes:
    return (json.dumps(document, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode()
