"""Whether the installed livepatch may be loaded into the running kernel, and if not, why.

Each check is what a careful operator would do by hand before ``insmod``: the module is
the one the package recorded (sha256), built for exactly this kernel build (vermagic,
the build's version, livegraft's own build stamp), signed by the key the package names,
and, where the kernel enforces signatures, by a key the kernel trusts. The kernel itself
accepts a module of a sibling build whose symbol CRCs match, so none of this is left to
it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .installed import Installed
from .kernel import Kernel
from .modfile import ModuleFileError, read_module

ENROL_HINT = (
    "enrol livegraft's module-signing certificate (keys/livegraft-module-signing.der in the "
    "repository) with `mokutil --import livegraft-module-signing.der`, reboot and confirm "
    "the enrolment, then run `livegraftctl apply`"
)


@dataclass(frozen=True)
class Trust:
    sig_enforce: bool | None
    lockdown: str | None
    secure_boot: bool | None

    @property
    def enforcing(self) -> bool:
        return bool(self.sig_enforce) or self.lockdown in ("integrity", "confidentiality")

    def why(self) -> str:
        said = []
        if self.sig_enforce:
            said.append("module.sig_enforce")
        if self.lockdown in ("integrity", "confidentiality"):
            said.append(f"lockdown={self.lockdown}")
        return " and ".join(said)


def trust_of(kernel: Kernel) -> Trust:
    return Trust(kernel.sig_enforce(), kernel.lockdown(), kernel.secure_boot())


def sha256_file(path: object) -> str:
    h = hashlib.sha256()
    with open(str(path), "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def refusals(kernel: Kernel, installed: Installed) -> list[str]:
    """Every reason not to load ``installed`` (empty: it may be loaded)."""
    reasons: list[str] = []
    uname_r = kernel.uname_r()
    if not kernel.livepatch_supported():
        return [f"the running kernel {uname_r} has no livepatch support (no /sys/kernel/livepatch)"]
    module = installed.module_path
    if not module.is_file():
        return [f"{module}: the module livepatch.json names is missing"]
    if sha256_file(module) != installed.sha256:
        return [f"{module}: sha256 differs from livepatch.json's (altered or not the package's)"]
    try:
        ko = read_module(module)
    except ModuleFileError as exc:
        return [f"{module}: {exc}"]
    vermagic = (ko.vermagic or "").split(" ")[0]
    if vermagic != uname_r:
        reasons.append(
            f"{module}: built for {vermagic or 'an unknown kernel'} (vermagic), "
            f"not the running {uname_r}"
        )
    if ko.first("livepatch") != "Y":
        reasons.append(f"{module}: not a livepatch module (modinfo livepatch=Y missing)")
    running = kernel.build_version()
    if running is None:
        reasons.append(
            f"cannot tell the running build's version from uname -v "
            f"({kernel.uname_v()!r}): the exact build cannot be checked"
        )
    elif running != installed.package_version:
        reasons.append(
            f"the package is for build {uname_r} {installed.package_version}, the running "
            f"kernel is {uname_r} {running} (same name, another build)"
        )
    stamp = ko.first("livegraft_build")
    if stamp is not None and stamp != f"{uname_r}@{installed.package_version}":
        reasons.append(
            f"{module}: built for {stamp} (livegraft_build), not "
            f"{uname_r}@{installed.package_version}"
        )
    if ko.signature is None:
        reasons.append(f"{module}: not signed")
    elif installed.signer_serial and ko.signature.serial != installed.signer_serial:
        reasons.append(
            f"{module}: signed by certificate serial {ko.signature.serial} "
            f"({ko.signature.issuer_cn}), livepatch.json names serial "
            f"{installed.signer_serial}"
        )
    trust = trust_of(kernel)
    if trust.enforcing and ko.signature is not None:
        keys = kernel.trusted_key_ids()
        subject = installed.signer_subject or ko.signature.issuer_cn
        if installed.signer_key_id is None:
            reasons.append(
                f"the kernel enforces module signatures ({trust.why()}) and "
                "livepatch.json does not record the signer's key id to check "
                "it against the trusted keys"
            )
        elif keys is None:
            reasons.append(
                f"the kernel enforces module signatures ({trust.why()}) and the "
                "keys it trusts cannot be read (/proc/keys)"
            )
        elif installed.signer_key_id not in keys:
            reasons.append(
                f"the kernel enforces module signatures ({trust.why()}) and does "
                f"not trust the signing key {subject} (key id "
                f"{installed.signer_key_id}): {ENROL_HINT}"
            )
    return reasons
