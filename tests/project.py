"""A small pipeline project in a temporary folder: the example's fixes and errata, and
kernel builds declared in the config (so tests do not depend on the machine's apt lists)."""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest import REPO

KERNELS = """
[[kernels]]
uname_r = "6.1.0-56-amd64"
family = "deb"
package_version = "6.1.192-2"
dist = "bookworm"

[[kernels]]
uname_r = "6.1.0-56-cloud-amd64"
family = "deb"
package_version = "6.1.192-2"
dist = "bookworm"

[[kernels]]
uname_r = "6.12.107+deb12-amd64"
family = "deb"
package_version = "6.12.107-1~deb12u1"
dist = "bookworm"
source_package = "linux-6.12"

[[kernels]]
uname_r = "6.12.117+deb12-amd64"
family = "deb"
package_version = "6.12.117-1~deb12u1"
dist = "bookworm"
source_package = "linux-6.12"
"""


def make_project(root: Path, extra: str = "") -> Path:
    """Copy the example's fixes and errata under root; return the config's path."""
    shutil.copytree(REPO / "examples" / "fixes", root / "fixes")
    shutil.copytree(REPO / "examples" / "errata", root / "errata")
    config = root / "livegraft.toml"
    config.write_text(
        f'name = "test"\nerrata = ["errata"]\nfixes = "fixes"\n{extra}\n{KERNELS}',
        encoding="utf-8",
    )
    return config


def add_fix(root: Path, fix_id: str, cve: str, function: str, extra: str = "") -> Path:
    folder = root / "fixes" / fix_id
    folder.mkdir(parents=True)
    (folder / "fix.toml").write_text(
        f'id = "{fix_id}"\ntitle = "test fix"\ncves = ["{cve}"]\nseverity = "important"\n'
        f"{extra}\n"
        f'[[functions]]\nobject = "vmlinux"\nname = "{function}"\n'
        f'replacement = "lg_{function}"\n',
        encoding="utf-8",
    )
    (folder / "livepatch.c").write_text(
        f"int lg_{function}(void *m, void *v)\n{{\n\treturn 0;\n}}\n", encoding="utf-8"
    )
    return folder
