"""The info file installed beside each module: what it is, from the installed package alone.

``/usr/lib/livegraft/<uname -r>/livepatch.json`` beside ``<module>.ko``: a client (or a
person) can check the module's exact kernel build, sha256, level and signer, the fixes
and CVEs it carries and how it was verified, without the repository or the pipeline.
Deterministic: sorted keys, no time of the run, so the same level packages the same bytes.

The signer is named every way a reader meets it: its fingerprint and subject (what
livegraft compares), its subject key id (how ``/proc/keys`` lists a trusted key,
``<CN>: <skid>``) and its issuer and serial (what the module's PKCS#7 signature carries),
so the client can tell whether the kernel trusts the key before it loads the module.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any, Literal

from livegraft.client.names import INFO_NAME as INFO_NAME
from livegraft.client.names import INSTALL_ROOT as _INSTALL_ROOT
from livegraft.signing.certificate import Certificate

from ..build.store import INFO_FILE as BUILD_INFO_FILE
from ..build.store import Artifact
from ..errors import InputError
from ..plan import Cell

# 2: the signer's subject_key_id, serial and issuer.
INFO_FORMAT = 2
SIGNER_FIELDS = ("fingerprint", "subject", "subject_key_id", "serial", "issuer")
# What build.json of a build before format 2 of this file lacks.
_LATER_SIGNER_FIELDS = ("subject_key_id", "serial", "issuer")
# Where the client looks for them: one name for both sides (livegraft.client.names).
INSTALL_ROOT = PurePosixPath(_INSTALL_ROOT)

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
    signer: dict[str, str | None],
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
        "signer": {key: signer.get(key) for key in SIGNER_FIELDS},
        "artifact": artifact.id,
        "verification": {
            "status": verification.get("status"),
            "kernel_release": verification.get("kernel_release"),
            "kernel_version": verification.get("kernel_version"),
        },
    }


def signer_identity(
    artifact: Artifact, certificate: Callable[[], Certificate | None]
) -> dict[str, str | None]:
    """The module's signer as build.json records it, completed for an older build.

    A build made before the subject key id, serial and issuer were recorded has only
    the fingerprint and subject: those come from the configured module certificate
    (``certificate``, read only then) when its fingerprint is the recorded one, since
    only that certificate's fields describe this signature.
    """
    recorded = artifact.info.get("signer")
    if not recorded:
        # An unsigned module (signing not configured): no signer to name.
        return dict.fromkeys(SIGNER_FIELDS)
    if not isinstance(recorded, dict):
        raise InputError(artifact.dir / BUILD_INFO_FILE, "signer", "an object")
    missing = [key for key in _LATER_SIGNER_FIELDS if key not in recorded]
    if not missing:
        return {key: _text(recorded.get(key)) for key in SIGNER_FIELDS}
    cert = certificate()
    fingerprint = recorded.get("fingerprint")
    if cert is None or cert.fingerprint != fingerprint:
        which = f"is {cert.fingerprint}" if cert else "is not there"
        raise InputError(
            artifact.dir / BUILD_INFO_FILE,
            f"signer.{missing[0]}",
            f"the signer's {', '.join(missing)}; this build predates them and only its "
            f"signer's certificate (sha256 {fingerprint}) can give them, but the configured "
            f"module certificate {which}",
        )
    return cert.signer()


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def render_info(document: dict[str, Any]) -> bytes:
    return (json.dumps(document, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode()
