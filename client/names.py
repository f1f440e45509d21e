"""Names the pipeline and the client agree on: where a package installs its module, and
how a ``uname -r`` appears as an RPM dependency version.

The pipeline imports these from here (the client is the leaf), so the two cannot drift.
"""

from __future__ import annotations

import re

# /usr/lib/livegraft/<uname -r>/{livepatch.json,<module>.ko}: one folder per kernel build.
INSTALL_ROOT = "/usr/lib/livegraft"
INFO_NAME = "livepatch.json"
# What every livepatch RPM provides, with the build's uname -r as the version, and what a
# kernel-core package provides: the pair the dnf plugin matches on.
RPM_PATCH_PROVIDE = "kpatch-patch"
RPM_KERNEL_PROVIDE = "kernel-uname-r"
# Where the packaged client's Python code lives on a host (the distribution's own
# site-packages differ between distributions; this folder does not).
CLIENT_PYTHON_DIR = "/usr/share/livegraft/python"

_RPM_EVR = re.compile(r"[A-Za-z0-9._+~^]+(?:-[A-Za-z0-9._+~^]+)?")


def rpm_dependency_version(uname_r: str) -> str:
    """``uname -r`` as the version of an RPM dependency (``kpatch-patch = …``).

    RPM allows one ``-`` (version-release): an RPM kernel's ``uname -r`` passes
    unchanged; in another family's (``6.1.0-56-amd64``) every later ``-`` becomes ``_``.
    Raises ValueError for a release RPM cannot compare.
    """
    version, dash, release = uname_r.partition("-")
    evr = version + dash + release.replace("-", "_")
    if not _RPM_EVR.fullmatch(evr):
        raise ValueError(f"a kernel release RPM can compare, not {uname_r!r}")
    return evr
