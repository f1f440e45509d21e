"""A copy of the livegraft source tree the client packages are built from.

The client, the dnf plugin and the apt hook are written beside this work: the copy takes
what the checkout has (``client/``, ``plugins/dnf/``, ``plugins/apt/``) and adds a small
stand-in only for a file the builder requires that is not there yet, so the package tests
do not depend on how far the client is. Tests point ``[packages] client_source`` at the copy.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest import REPO

STAND_INS = {
    "client/livegraftctl": (
        "#!/usr/bin/python3 -I\nimport sys\n\nsys.path.insert(0, '/usr/share/livegraft/python')\n"
        "from livegraft.client.cli import main  # noqa: E402\n\nsys.exit(main())\n"
    ),
    "client/livegraft.service": (
        "[Unit]\nDescription=Apply the livegraft livepatch (stand-in)\n\n[Service]\n"
        "Type=oneshot\nExecStart=/usr/bin/livegraftctl apply --boot\n\n"
        "[Install]\nWantedBy=multi-user.target\n"
    ),
    "plugins/dnf/livegraft.py": '"""The livegraft dnf plugin (stand-in)."""\n',
    "plugins/dnf/livegraft.conf": "[main]\nenabled=1\n",
    "plugins/apt/apt_hook.py": '#!/usr/bin/python3 -I\n"""The livegraft apt hook (stand-in)."""\n',
    "plugins/apt/20livegraft": '// livegraft (stand-in)\nDPkg::Post-Invoke { "true"; };\n',
    "plugins/apt/51livegraft-unattended-upgrades": (
        'Unattended-Upgrade::Origins-Pattern { "origin=livegraft"; };\n'
    ),
    "plugins/apt/triggers": "interest-noawait /usr/lib/livegraft\n",
    "plugins/apt/postinst": "#!/bin/sh\nset -e\nexit 0\n",
}


def client_source(dest: Path) -> Path:
    """``dest`` holding client/ and plugins/{dnf,apt}/ as the checkout has them, completed."""
    ignore = shutil.ignore_patterns("__pycache__", ".*")
    shutil.copytree(REPO / "client", dest / "client", ignore=ignore)
    for name in ("dnf", "apt"):
        plugins = REPO / "plugins" / name
        if plugins.is_dir():
            shutil.copytree(plugins, dest / "plugins" / name, ignore=ignore)
    for rel, text in STAND_INS.items():
        path = dest / rel
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    return dest
