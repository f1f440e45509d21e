"""A prepared tree standing in for the host's kernel in the client's tests.

The host's own kernel may not be patched, so the client's kernel module (``client/kernel.py``)
is pointed at folders laid out as ``/sys``, ``/proc`` and ``/`` are, and at a loader of our
own that behaves as the kernel's livepatch core does where the client can see it: insmod
creates ``/sys/module/<m>`` and ``/sys/kernel/livepatch/<m>/{enabled,transition,force}``,
the transition finishes after a moment (or never, when told to stall, with one task left
unpatched in ``/proc/<pid>/patch_state``), an atomic replace removes the replaced patch's
entry, writing 0 to ``enabled`` reverses the patch and removes its entry, and rmmod refuses a
module whose patch is still there. It can also answer EBUSY a number of times, or refuse a
signature as the kernel does. Every call is logged, so a test can say nothing was loaded.

The same behaviour on a real kernel is proven in the end-to-end VM tests.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from livegraft.client.modfile import read_module

UNAME_R = "6.1.0-56-amd64"
BUILD_VERSION = "6.1.192-2"
UNAME_V = f"#1 SMP PREEMPT_DYNAMIC Debian {BUILD_VERSION} (2026-11-16)"
BOOT_ID = "5b1e8a49-0d3c-4a86-9d1e-7e0e4c1f7a01"

_LOADER = """\
#!{python}
import sys
sys.path.insert(0, {tests!r})
import fake_kernel
sys.exit(fake_kernel.{func}(sys.argv[1:]))
"""


@dataclass
class FakeKernel:
    base: Path

    @property
    def sysfs(self) -> Path:
        return self.base / "sys"

    @property
    def procfs(self) -> Path:
        return self.base / "proc"

    @property
    def root(self) -> Path:
        return self.base / "root"

    @property
    def control(self) -> Path:
        return self.base / "fake-kernel.json"

    @property
    def calls(self) -> Path:
        return self.base / "calls.log"

    @classmethod
    def make(
        cls, base: Path, *, uname_r: str = UNAME_R, uname_v: str = UNAME_V, livepatch: bool = True
    ) -> FakeKernel:
        k = cls(base)
        (k.procfs / "sys/kernel/random").mkdir(parents=True)
        (k.procfs / "sys/kernel/osrelease").write_text(uname_r + "\n")
        (k.procfs / "sys/kernel/version").write_text(uname_v + "\n")
        (k.procfs / "sys/kernel/random/boot_id").write_text(BOOT_ID + "\n")
        (k.procfs / "sys/kernel/tainted").write_text("0\n")
        (k.procfs / "cmdline").write_text("BOOT_IMAGE=/vmlinuz root=/dev/vda ro quiet\n")
        (k.procfs / "keys").write_text("")
        (k.sysfs / "module/module/parameters").mkdir(parents=True)
        (k.sysfs / "module/module/parameters/sig_enforce").write_text("N\n")
        (k.sysfs / "kernel/security").mkdir(parents=True)
        (k.sysfs / "kernel/security/lockdown").write_text("[none] integrity confidentiality\n")
        if livepatch:
            (k.sysfs / "kernel/livepatch").mkdir(parents=True)
        k.root.mkdir()
        k.set()
        for func, name in (("insmod", "insmod"), ("rmmod", "rmmod")):
            script = base / name
            script.write_text(
                _LOADER.format(python=sys.executable, tests=str(Path(__file__).parent), func=func)
            )
            script.chmod(script.stat().st_mode | stat.S_IXUSR)
        return k

    def env(self) -> dict[str, str]:
        return {
            "LIVEGRAFT_SYSFS": str(self.sysfs),
            "LIVEGRAFT_PROCFS": str(self.procfs),
            "LIVEGRAFT_ROOT": str(self.root),
            "LIVEGRAFT_INSMOD": str(self.base / "insmod"),
            "LIVEGRAFT_RMMOD": str(self.base / "rmmod"),
        }

    def set(self, **control: Any) -> None:
        """How the next loads behave: ``busy`` (EBUSY this many times), ``refuse`` (an
        insmod error text), ``stall`` (the transition never finishes),
        ``transition_seconds``."""
        self.control.write_text(json.dumps({"transition_seconds": 0.2, **control}))

    def boot(self, boot_id: str) -> None:
        """A reboot into the same kernel: nothing loaded, a new boot id."""
        for d in (self.sysfs / "kernel/livepatch").glob("*"):
            _rmtree(d)
        for d in (self.sysfs / "module").glob("livegraft_*"):
            _rmtree(d)
        (self.procfs / "sys/kernel/random/boot_id").write_text(boot_id + "\n")

    def enforce(self, *, sig_enforce: bool = True, trusted: dict[str, str] | None = None) -> None:
        (self.sysfs / "module/module/parameters/sig_enforce").write_text(
            "Y\n" if sig_enforce else "N\n"
        )
        lines = [
            f"{i + 1:08x} I------     1 perm 1f030000     0     0 asymmetri {desc}: {skid}: "
            "X509.rsa 3b4e4c9c []"
            for i, (skid, desc) in enumerate((trusted or {}).items())
        ]
        (self.procfs / "keys").write_text("".join(line + "\n" for line in lines))

    def livepatches(self) -> dict[str, dict[str, str]]:
        out = {}
        for d in sorted((self.sysfs / "kernel/livepatch").glob("*")):
            out[d.name] = {f.name: f.read_text().strip() for f in d.iterdir()}
        return out

    def loaded(self) -> list[str]:
        return sorted(p.name for p in (self.sysfs / "module").glob("livegraft_*"))

    def log(self) -> list[str]:
        return self.calls.read_text().splitlines() if self.calls.exists() else []

    def wait_settled(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(v.get("transition") == "0" for v in self.livepatches().values()):
                return
            time.sleep(0.05)


def _rmtree(path: Path) -> None:
    for p in sorted(path.rglob("*"), key=lambda p: -len(p.parts)):
        p.rmdir() if p.is_dir() else p.unlink()
    path.rmdir()


def _base() -> Path:
    return Path(os.environ["LIVEGRAFT_SYSFS"]).parent


def _log(base: Path, line: str) -> None:
    with (base / "calls.log").open("a") as f:
        f.write(line + "\n")


def insmod(argv: list[str]) -> int:
    base = _base()
    module = Path(argv[0])
    control = json.loads((base / "fake-kernel.json").read_text())
    name = read_module(module).name or module.stem
    _log(base, f"insmod {name}")
    if control.get("busy", 0) > 0:
        control["busy"] -= 1
        (base / "fake-kernel.json").write_text(json.dumps(control))
        print(
            f"insmod: ERROR: could not insert module {module}: Device or resource busy",
            file=sys.stderr,
        )
        return 1
    if control.get("refuse"):
        print(
            f"insmod: ERROR: could not insert module {module}: {control['refuse']}", file=sys.stderr
        )
        return 1
    sysfs = base / "sys"
    if (sysfs / "module" / name).exists():
        print(f"insmod: ERROR: could not insert module {module}: File exists", file=sys.stderr)
        return 1
    (sysfs / "module" / name).mkdir(parents=True)
    patch = sysfs / "kernel/livepatch" / name
    patch.mkdir(parents=True)
    (patch / "enabled").write_text("1\n")
    (patch / "transition").write_text("1\n")
    (patch / "force").write_text("0\n")
    if control.get("stall"):
        _stalled_tasks(base / "proc")
    # The kernel finishes the transition in the background: so does this watcher.
    subprocess.Popen(
        [
            sys.executable,
            __file__,
            "watch",
            str(base),
            name,
            str(control.get("transition_seconds", 0.2)),
            "1" if control.get("stall") else "0",
        ],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return 0


def _stalled_tasks(proc: Path) -> None:
    for pid, state, comm in ((1, 1, "systemd"), (200, 1, "sshd"), (321, 0, "sleeper")):
        d = proc / str(pid)
        d.mkdir(parents=True, exist_ok=True)
        (d / "patch_state").write_text(f"{state}\n")
        (d / "comm").write_text(comm + "\n")
        (d / "stack").write_text("[<0>] livegraft_sample_sleep+0x2a/0x40\n[<0>] do_syscall_64\n")


def watch(base: Path, name: str, seconds: float, stall: bool) -> None:
    patch = base / "sys/kernel/livepatch" / name
    start = time.monotonic()
    done = False
    while time.monotonic() - start < 120 and patch.exists():
        enabled = (patch / "enabled").read_text().strip()
        forced = (patch / "force").read_text().strip() == "1"
        if enabled == "0":
            # Reversed or disabled: the patch's entry goes once the reverse transition ends.
            time.sleep(0.1)
            _rmtree(patch)
            return
        if not done and (forced or (not stall and time.monotonic() - start >= seconds)):
            (patch / "transition").write_text("0\n")
            done = True
            # Atomic replace: every other patch's entry goes once this one is in effect.
            for other in (base / "sys/kernel/livepatch").iterdir():
                if other.name != name:
                    _rmtree(other)
        time.sleep(0.02)


def rmmod(argv: list[str]) -> int:
    base = _base()
    name = argv[0]
    _log(base, f"rmmod {name}")
    if (base / "sys/kernel/livepatch" / name).exists():
        print(f"rmmod: ERROR: Module {name} is in use", file=sys.stderr)
        return 1
    module = base / "sys/module" / name
    if not module.exists():
        print(f"rmmod: ERROR: Module {name} is not currently loaded", file=sys.stderr)
        return 1
    _rmtree(module)
    return 0


# -- modules: real ELF objects with a .modinfo, signed as sign-file signs ------------------


def make_module(
    folder: Path,
    name: str,
    *,
    vermagic: str = f"{UNAME_R} SMP preempt mod_unload modversions ",
    build: str | None = f"{UNAME_R}@{BUILD_VERSION}",
    livepatch: bool = True,
) -> Path:
    """An ELF relocatable object with the .modinfo a module of ``name`` carries."""
    entries = [f"vermagic={vermagic}", f"name={name}", "license=GPL"]
    if livepatch:
        entries.append("livepatch=Y")
    if build:
        entries.append(f"livegraft_build={build}")
    source = folder / f"{name}.c"
    source.write_text(
        "".join(
            f'static const char __mod_{i}[] __attribute__((used, section(".modinfo"), '
            f"aligned(1))) = {json.dumps(e)};\n"
            for i, e in enumerate(entries)
        )
        + "int livegraft_text(void) { return 0; }\n"
    )
    out = folder / f"{name}.ko"
    subprocess.run(["gcc", "-c", "-o", str(out), str(source)], check=True)
    return out


def sign_module(module: Path, key: Path, cert: Path) -> None:
    """Append a signature as the kernel's sign-file does: detached PKCS#7 (issuer and
    serial, no attributes, no certificates), the 12-byte trailer, the marker."""
    sig = module.with_suffix(".p7s")
    subprocess.run(
        [
            "openssl",
            "cms",
            "-sign",
            "-binary",
            "-noattr",
            "-nocerts",
            "-nosmimecap",
            "-outform",
            "DER",
            "-md",
            "sha256",
            "-signer",
            str(cert),
            "-inkey",
            str(key),
            "-in",
            str(module),
            "-out",
            str(sig),
        ],
        check=True,
    )
    data = sig.read_bytes()
    trailer = bytes([0, 0, 2, 0, 0, 0, 0, 0]) + len(data).to_bytes(4, "big")
    module.write_bytes(module.read_bytes() + data + trailer + b"~Module signature appended~\n")


def cert_ids(cert: Path) -> tuple[str, str]:
    """(subject key id, serial) of a certificate, as openssl prints them."""
    out = subprocess.run(
        ["openssl", "x509", "-in", str(cert), "-noout", "-serial", "-ext", "subjectKeyIdentifier"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    serial = out.split("serial=")[1].split()[0].lower().lstrip("0")
    skid = out.strip().splitlines()[-1].strip().replace(":", "").lower()
    return skid, serial


def install_patch(
    kernel: FakeKernel,
    module: Path,
    *,
    level: int,
    cert: Path,
    uname_r: str = UNAME_R,
    package_version: str = BUILD_VERSION,
    fixes: tuple[str, ...] = ("LGSA-SAMPLE-0001",),
    **overrides: Any,
) -> Path:
    """What a livepatch package puts on disk: the module and its livepatch.json."""
    import hashlib

    folder = kernel.root / "usr/lib/livegraft" / uname_r
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.ko"):
        old.unlink()
    target = folder / module.name
    target.write_bytes(module.read_bytes())
    skid, serial = cert_ids(cert)
    doc: dict[str, Any] = {
        "format": 2,
        "package": {"name": f"livepatch-{uname_r}", "version": str(level), "type": "deb"},
        "level": level,
        "module": module.stem,
        "file": module.name,
        "sha256": hashlib.sha256(target.read_bytes()).hexdigest(),
        "build": {"uname_r": uname_r, "package_version": package_version},
        "fixes": [
            {"id": f, "title": f"{f} title", "cves": [f"CVE-2026-{i:05d}"], "severity": "low"}
            for i, f in enumerate(fixes, 1)
        ],
        "cves": [f"CVE-2026-{i:05d}" for i in range(1, len(fixes) + 1)],
        "signer": {"subject": "CN=tests,O=livegraft", "subject_key_id": skid, "serial": serial},
    }
    doc.update(overrides)
    info = folder / "livepatch.json"
    info.write_text(textwrap.dedent(json.dumps(doc, indent=1)))
    return info


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "watch":
    watch(Path(sys.argv[2]), sys.argv[3], float(sys.argv[4]), sys.argv[5] == "1")
