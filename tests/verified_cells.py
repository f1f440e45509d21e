"""Plan cells made packageable without a compiler or QEMU: for the package stage's tests.

Each cell of the project's plan gets a store artifact whose module is a stand-in (bytes
ending with the module signature marker), a build.json as the build stage writes it
(signer included), and a verify record saying it was verified on its kernel. What is
under test is what the package stage does with them; building and booting real modules
is proven in test_package_command.py and test_verify*.py.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
from pathlib import Path
from typing import Any

from conftest import REPO
from livegraft.pipeline.build.store import INFO_FILE, Store, info_document
from livegraft.pipeline.build_commands import current_plan, open_store
from livegraft.pipeline.plan import Cell
from livegraft.pipeline.verify.records import save_record
from livegraft.signing.module_signature import SIGNATURE_MARKER

KERNEL = """
[[kernels]]
uname_r = "6.1.0-56-amd64"
family = "deb"
package_version = "6.1.192-2"
dist = "bookworm"
"""


def write_config(root: Path, key: tuple[Path, Path], packages: str) -> Path:
    """A project with the example's fixes and errata, one declared kernel build, the
    module key ``key`` and the ``[packages]`` lines given."""
    for folder in ("fixes", "errata"):
        if not (root / folder).exists():
            shutil.copytree(REPO / "examples" / folder, root / folder)
    config = root / "livegraft.toml"
    config.write_text(
        'name = "test"\nwork_dir = "work"\nerrata = ["errata"]\nfixes = "fixes"\n'
        f'[signing]\nmodule_key = "{key[0]}"\nmodule_cert = "{key[1]}"\n'
        f"[packages]\n{packages}\n{KERNEL}",
        encoding="utf-8",
    )
    return config


def verify_all(config: Path, signer: dict[str, Any]) -> list[Cell]:
    """Every cell of the config's plan built (a stand-in module signed by ``signer``) and
    verified; returns the cells."""
    cfg, plan = current_plan(argparse.Namespace(config=config, errata=[]), None)
    store = open_store(cfg)
    for cell in plan.cells:
        module = b"\x7fELF stand-in for " + cell.id.encode() + SIGNATURE_MARKER
        artifact = hashlib.sha256(f"stand-in {cell.id}".encode()).hexdigest()
        sha256 = hashlib.sha256(module).hexdigest()
        info = {
            "format": 1,
            "artifact": artifact,
            "cell": cell.id,
            "uname_r": cell.build.uname_r,
            "package_version": cell.build.package_version,
            "family": cell.build.family,
            "level": cell.level,
            "module": cell.module_name,
            "file": f"{cell.module_name}.ko",
            "fixes": [f.id for f in cell.fixes],
            "cves": list(cell.cves),
            "signer": signer,
            "sha256": sha256,
            "srcversion": "0123456789ABCDEF0123456",
            "vermagic": f"{cell.build.uname_r} SMP preempt mod_unload modversions",
        }
        _add(store, artifact, info, module)
        store.link_cell(cell.id, artifact)
        save_record(
            cfg.work_dir,
            {
                "artifact": artifact,
                "status": "verified",
                "sha256": sha256,
                "kernel_release": cell.build.uname_r,
                "kernel_version": f"#1 SMP PREEMPT_DYNAMIC Debian {cell.build.package_version}",
            },
        )
    return list(plan.cells)


def _add(store: Store, artifact: str, info: dict[str, Any], module: bytes) -> None:
    folder = store.path(artifact)
    if folder.exists():
        (folder / INFO_FILE).write_text(info_document(info), encoding="utf-8")
        return
    with store.staging() as stage:
        (stage / str(info["file"])).write_bytes(module)
        (stage / INFO_FILE).write_text(info_document(info), encoding="utf-8")
        store.add(stage, artifact)
