"""Package names, versions and file names, and the rules a repository holds them to.

One package per kernel build, named from its ``uname -r``:

- RPM: ``kpatch-patch-<V>-<R>`` as RHEL names its kpatch packages: ``.`` becomes ``_``
  and an RPM kernel's dist tag and architecture are dropped (``5.14.0-362.8.1.el9_3.x86_64``
  gives ``kpatch-patch-5_14_0-362_8_1``, see RHEL's OVAL data); a kernel of another
  family keeps its whole ``uname -r`` with ``.`` and ``+`` as ``_``
  (``6.1.0-56-amd64`` gives ``kpatch-patch-6_1_0-56-amd64``), since its flavour is part
  of the build's identity.
- DEB: ``livepatch-<uname -r>`` unchanged.

A name is only ever checked, never repaired beyond the mapping above: a character a
repository cannot hold (a path separator, a macro character, an upper-case letter in a
Debian name) is refused with the rule it breaks.
"""

from __future__ import annotations

import re

from livegraft.client import names as client_names

from ..errors import InputError
from ..kernels.arch import DEB_TO_UNAME
from ..kernels.model import KernelBuild

RPM_PREFIX = "kpatch-patch-"
DEB_PREFIX = "livepatch-"
RPM_RELEASE = "1"

# Debian policy 5.6.1: lower-case letters, digits, + - . ; two characters or more,
# starting with an alphanumeric.
_DEB_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+")
# rpmbuild takes alphanumerics and ._+- (and %{} for macros, which a name given to a spec
# file must not carry); a name is also a file name, so nothing else.
_RPM_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]*")
# A Version (or EVR part) as both dpkg and rpm order it: here always a level N.
_LEVEL = re.compile(r"[1-9][0-9]*")
# A uname -r that is safe as one path component below /usr/lib/livegraft.
_UNAME_R = re.compile(r"[0-9A-Za-z][A-Za-z0-9._+~-]*")
# RHEL's uname -r: V-R.arch, with +variant for rt, debug, 64k … builds.
_RPM_KERNEL = re.compile(
    r"(?P<version>[^-]+)-(?P<release>[^-]+)\.(?P<arch>[a-z0-9_]+)(?:\+(?P<variant>[a-z0-9]+))?"
)
UNAME_TO_DEB = {uname: deb for deb, uname in DEB_TO_UNAME.items()}


def check_uname_r(uname_r: str) -> str:
    if not _UNAME_R.fullmatch(uname_r) or ".." in uname_r:
        raise InputError(
            None,
            "uname_r",
            f"a kernel release that is one safe path component ([0-9A-Za-z][A-Za-z0-9._+~-]*), "
            f"not {uname_r!r}",
        )
    return uname_r


def rpm_name(build: KernelBuild) -> str:
    check_uname_r(build.uname_r)
    match = _RPM_KERNEL.fullmatch(build.uname_r) if build.family == "rpm" else None
    if match and match["arch"] == build.arch:
        numbers = []
        for part in match["release"].split("."):
            if not part.isdigit():
                break  # the dist tag (el9_3, fc39) and whatever follows it
            numbers.append(part)
        release = "_".join(numbers) or _rpm_escape(match["release"])
        name = f"{RPM_PREFIX}{_rpm_escape(match['version'])}-{release}"
        if match["variant"]:
            name += f"-{match['variant']}"
    else:
        name = RPM_PREFIX + _rpm_escape(build.uname_r)
    return check_rpm_name(name)


def _rpm_escape(text: str) -> str:
    return re.sub(r"[.+~]", "_", text)


def check_rpm_name(name: str) -> str:
    if not _RPM_NAME.fullmatch(name):
        raise InputError(
            None,
            "rpm name",
            f"an RPM package name (letters, digits and ._+- only), not {name!r}",
        )
    return name


def rpm_dependency_version(uname_r: str) -> str:
    """``uname -r`` as the version of an RPM dependency (``kpatch-patch = …``).

    The rule lives in ``livegraft.client.names``, which the dnf plugin matches with:
    RPM allows one ``-`` (version-release), so an RPM kernel's ``uname -r`` passes
    unchanged and in another family's (``6.1.0-56-amd64``) every later ``-`` becomes ``_``.
    """
    try:
        return client_names.rpm_dependency_version(uname_r)
    except ValueError:
        raise InputError(
            None, "uname_r", f"a kernel release RPM can compare, not {uname_r!r}"
        ) from None


def deb_name(build: KernelBuild) -> str:
    check_uname_r(build.uname_r)
    return check_deb_name(DEB_PREFIX + build.uname_r)


def check_deb_name(name: str) -> str:
    if not _DEB_NAME.fullmatch(name):
        raise InputError(
            None,
            "deb name",
            "a Debian package name (lower-case letters, digits and +-. only, Debian policy "
            f"5.6.1), not {name!r}",
        )
    return name


def check_level(version: str) -> str:
    if not _LEVEL.fullmatch(version):
        raise InputError(None, "version", f"a level (an integer >= 1), not {version!r}")
    return version


def deb_arch(build: KernelBuild) -> str:
    """The dpkg architecture of the build's machine (x86_64 → amd64)."""
    try:
        return UNAME_TO_DEB[build.arch]
    except KeyError:
        raise InputError(
            None, "arch", f"a machine dpkg has an architecture for, not {build.arch!r}"
        ) from None


def deb_filename(name: str, version: str, arch: str) -> str:
    return f"{name}_{version}_{arch}.deb"


def rpm_filename(name: str, version: str, release: str, arch: str) -> str:
    return f"{name}-{version}-{release}.{arch}.rpm"
