"""A real Debian bookworm system in QEMU for the end-to-end tests.

- The root file system: ``mmdebstrap`` from this machine's own apt configuration (no
  mirror named), holding systemd, kmod, python3, python3-apt, dnf, curl and
  unattended-upgrades, plus the running kernel build's modules from the very image
  package the pipeline boots (``kernel_files.fetch_package``), then an ext4 image made
  with ``mke2fs -d`` (nothing is mounted). Cached under the cache folder, keyed by its
  inputs; each boot writes to a qcow2 overlay of its own.
- The guest has no Debian sources (it is offline) and reaches only two addresses, through
  QEMU user networking with ``restrict=on``: 10.0.2.100:80 is the host's SeaweedFS (the
  livegraft repository) and 10.0.2.101:80 a control server of the test's, both relayed
  to this machine's loopback by ``socat``. Nothing else leaves the guest.
- A small agent (a systemd service) asks the control server for shell commands, runs
  them as root and posts back their exit status and output: ``Guest.run``.
- Its serial console is kept in a file (``console``); a guest that does not come up, or
  stops answering, fails with the phase and the console's last lines, and QEMU is always
  killed.
"""

from __future__ import annotations

import hashlib
import json
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from livegraft.pipeline.verify.initramfs import base_image

PACKAGES = (
    "systemd", "systemd-sysv", "udev", "kmod", "python3", "python3-apt", "dnf", "curl",
    "unattended-upgrades", "ca-certificates", "iproute2", "procps", "rpm",
)  # fmt: skip
REPO_ADDR = "10.0.2.100"
CONTROL_ADDR = "10.0.2.101"
# Modules the initramfs loads to mount the root (the rest udev loads from the root).
# crc32c is a soft dependency of ext4 (a crypto algorithm), not in modules.dep.
ROOT_MODULES = ("virtio_pci", "virtio_blk", "crc32c_generic", "ext4")
IMAGE_FORMAT = 1
# Debian's ovmf: the UEFI firmware without Secure Boot's own checks, whose variable store
# still holds a db the kernel reads into its .platform keyring.
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
# The owner GUID db entries carry (EFI_GLOBAL_VARIABLE's): any GUID would do.
DB_OWNER = "8be4df61-93ca-11d2-aa0d-00e098032b8c"

AGENT = r"""#!/usr/bin/python3
# The end-to-end tests' agent: runs the control server's commands as root, posts results.
import json, subprocess, time, urllib.request
URL = "http://CONTROL"
boot = open("/proc/sys/kernel/random/boot_id").read().strip()
print("livegraft-e2e: agent up, boot " + boot, flush=True)
while True:
    try:
        with urllib.request.urlopen(URL + "/next?boot=" + boot, timeout=30) as r:
            if r.status == 204:
                continue
            job = json.load(r)
    except Exception as exc:
        time.sleep(0.5)
        continue
    try:
        cp = subprocess.run(["/bin/bash", "-c", job["cmd"]], capture_output=True, text=True,
                            timeout=job.get("timeout", 600))
        result = {"id": job["id"], "rc": cp.returncode, "out": cp.stdout + cp.stderr}
    except subprocess.TimeoutExpired as exc:
        result = {"id": job["id"], "rc": -1, "out": "timed out: " + str(exc)}
    body = json.dumps(result).encode()
    req = urllib.request.Request(URL + "/result", data=body, method="POST")
    for _ in range(20):
        try:
            urllib.request.urlopen(req, timeout=30).read()
            break
        except Exception:
            time.sleep(0.5)
""".replace("CONTROL", CONTROL_ADDR)

AGENT_UNIT = """[Unit]
Description=livegraft end-to-end test agent
After=network-online.target livegraft.service
Wants=network-online.target

[Service]
ExecStart=/usr/local/sbin/livegraft-e2e-agent
Restart=always
StandardOutput=journal+console

[Install]
WantedBy=multi-user.target
"""

NETWORK = "[Match]\nName=en*\n\n[Network]\nDHCP=ipv4\n"

INIT = """#!/bin/sh
# Mount the real root and hand over to systemd.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in %(modules)s; do insmod /lib/modules/$m; done
for i in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/vda ] && break; sleep 0.5; done
mkdir -p /newroot
if ! mount -t ext4 -o rw /dev/vda /newroot; then
    echo "livegraft-e2e: cannot mount /dev/vda"; poweroff -f
fi
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/init
"""


class GuestError(AssertionError):
    pass


def _run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    cp = subprocess.run(argv, capture_output=True, text=True, check=False, **kw)
    if cp.returncode != 0:
        raise GuestError(f"{' '.join(argv[:3])} … exited {cp.returncode}: {cp.stderr[-2000:]}")
    return cp


def _module_order(modules: Path, wanted: tuple[str, ...]) -> list[str]:
    """Module files (relative to modules/<uname -r>) for ``wanted`` and their dependencies,
    dependencies first, from modules.dep."""
    deps: dict[str, list[str]] = {}
    for line in (modules / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
    by_name = {Path(p).name.split(".ko")[0].replace("-", "_"): p for p in deps}
    order: list[str] = []

    def visit(path: str) -> None:
        for dep in reversed(deps.get(path, [])):
            visit(dep)
        if path not in order:
            order.append(path)

    for name in wanted:
        visit(by_name[name])
    return order


@dataclass(frozen=True)
class GuestImage:
    disk: Path
    kernel: Path
    initrd: Path
    uname_r: str


def build_image(cache: Path, kernel_deb: Path, uname_r: str) -> GuestImage:
    """The guest's disk, kernel and initramfs, built once per set of inputs."""
    mmdebstrap = _run(["mmdebstrap", "--version"]).stdout.strip()
    key = hashlib.sha256(
        json.dumps(
            {
                "format": IMAGE_FORMAT, "packages": PACKAGES, "mmdebstrap": mmdebstrap,
                "kernel": hashlib.sha256(kernel_deb.read_bytes()).hexdigest(),
                "agent": AGENT, "unit": AGENT_UNIT, "network": NETWORK, "init": INIT,
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()[:16]  # fmt: skip
    final = cache / "e2e-guest" / key
    image = GuestImage(final / "disk.ext4", final / "vmlinuz", final / "initrd.gz", uname_r)
    if image.disk.is_file():
        return image
    work = cache / "e2e-guest" / f".{key}.tmp"
    shutil.rmtree(work, ignore_errors=True)
    root = work / "root"
    work.mkdir(parents=True)
    # The machine's own apt configuration: no mirror argument.
    _run(
        ["mmdebstrap", "--quiet", "--variant=minbase", f"--include={','.join(PACKAGES)}",
         "bookworm", str(root)],
        timeout=1800,
    )  # fmt: skip
    # Unpacked beside the root, then moved in: dpkg-deb -x into the root itself would put
    # a real /lib folder where merged /usr has the link /lib -> usr/lib.
    unpacked = work / "kernel"
    _run(["dpkg-deb", "-x", str(kernel_deb), str(unpacked)])
    shutil.move(unpacked / "lib/modules" / uname_r, root / "usr/lib/modules" / uname_r)
    for vmlinuz in (unpacked / "boot").glob("vmlinuz-*"):
        shutil.move(vmlinuz, root / "boot" / vmlinuz.name)
    # The guest's own depmod (kmod is in it), as its postinst would run it.
    _run(["chroot", str(root), "depmod", uname_r], env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    # Offline: the only repository will be the one the README's set-up adds.
    for sources in (root / "etc/apt").glob("sources.list*"):
        shutil.rmtree(sources) if sources.is_dir() else sources.unlink()
    (root / "etc/apt/sources.list.d").mkdir()
    (root / "etc/hostname").write_text("livegraft-e2e\n")
    (root / "etc/fstab").write_text("/dev/vda / ext4 rw,errors=remount-ro 0 1\n")
    (root / "etc/systemd/network/20-wired.network").write_text(NETWORK)
    agent = root / "usr/local/sbin/livegraft-e2e-agent"
    agent.write_text(AGENT)
    agent.chmod(0o755)
    (root / "etc/systemd/system/livegraft-e2e-agent.service").write_text(AGENT_UNIT)
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (wants / "livegraft-e2e-agent.service").symlink_to(
        "/etc/systemd/system/livegraft-e2e-agent.service"
    )
    (wants / "systemd-networkd.service").symlink_to("/lib/systemd/system/systemd-networkd.service")
    # On Debian, rpm keeps its database under ~ unless told: dnf's hosts set it once.
    (root / "root/.rpmmacros").write_text("%_dbpath /var/lib/rpm\n")
    # No automatic apt runs of the distribution's own while a test drives apt.
    for timer in ("apt-daily.timer", "apt-daily-upgrade.timer"):
        (root / "etc/systemd/system" / timer).symlink_to("/dev/null")
    modules = root / "lib/modules" / uname_r
    initrd = base_image()
    order = _module_order(modules, ROOT_MODULES)
    for rel in order:
        initrd.add_file(f"/lib/modules/{rel}", (modules / rel).read_bytes())
    initrd.add_file("/init", (INIT % {"modules": " ".join(order)}).encode(), 0o755)
    out = work / "out"
    out.mkdir()
    (out / "initrd.gz").write_bytes(initrd.gzipped())
    shutil.copy(next((root / "boot").glob("vmlinuz-*")), out / "vmlinuz")
    _run(
        ["mke2fs", "-q", "-t", "ext4", "-L", "root", "-d", str(root), str(out / "disk.ext4"), "4G"]
    )
    shutil.rmtree(root)
    if not final.exists():
        out.rename(final)
    shutil.rmtree(work, ignore_errors=True)
    return image


def firmware_vars(out: Path, db_certs: tuple[Path, ...] = ()) -> Path:
    """A UEFI variable store: OVMF's stock one, plus ``db_certs`` (DER or PEM) in db, as
    an administrator enrols a certificate in the firmware (``virt-fw-vars``, virt-firmware's
    tool, installed beside this interpreter)."""
    tool = Path(sys.executable).parent / "virt-fw-vars"
    argv = [str(tool), "--input", str(OVMF_VARS), "--output", str(out)]
    for cert in db_certs:
        argv += ["--add-db", DB_OWNER, str(cert)]
    _run(argv)
    return out


def uefi(vars_file: Path) -> tuple[str, ...]:
    """QEMU arguments that boot through OVMF with ``vars_file`` as its variable store;
    ``-kernel`` still names the kernel (OVMF's loader starts it)."""
    return (
        "-machine", "q35",
        "-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
        "-drive", f"if=pflash,format=raw,file={vars_file}",
    )  # fmt: skip


class Control(ThreadingHTTPServer):
    """The agent's side of the wire: one command at a time."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.jobs: queue.Queue[dict[str, Any]] = queue.Queue()
        self.results: queue.Queue[dict[str, Any]] = queue.Queue()
        self.polls = 0
        self.boot_ids: list[str] = []


class _Handler(BaseHTTPRequestHandler):
    server: Control

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        boot = re.search(r"boot=([0-9a-f-]+)", self.path)
        self.server.polls += 1
        if boot and (not self.server.boot_ids or self.server.boot_ids[-1] != boot.group(1)):
            self.server.boot_ids.append(boot.group(1))
        try:
            job = self.server.jobs.get(timeout=10)
        except queue.Empty:
            self.send_response(204)
            self.end_headers()
            return
        body = json.dumps(job).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self.server.results.put(json.loads(self.rfile.read(length)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


@dataclass
class Result:
    rc: int
    out: str


class Guest:
    """One QEMU boot of the image; ``run`` executes a shell command inside it."""

    def __init__(
        self, image: GuestImage, work: Path, repo_port: int, *, name: str,
        append: str = "", extra: tuple[str, ...] = (), overlay: Path | None = None,
    ) -> None:  # fmt: skip
        self.image, self.work, self.name = image, work, name
        self.console = work / f"console-{name}.log"
        self.overlay = overlay or work / "overlay.qcow2"
        self.repo_port = repo_port
        self.append = append
        self.extra = extra
        self.control = Control()
        self._thread = threading.Thread(target=self.control.serve_forever, daemon=True)
        self.process: subprocess.Popen[bytes] | None = None
        self._seq = 0

    def _relay(self, port: int) -> str:
        return f"cmd:socat STDIO TCP:127.0.0.1:{port}"

    def start(self, timeout: float = 300) -> None:
        if not self.overlay.exists():
            _run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                  str(self.image.disk), str(self.overlay)])  # fmt: skip
        self._thread.start()
        control_port = self.control.server_address[1]
        netdev = (
            "user,id=n0,restrict=on,"
            f"guestfwd=tcp:{REPO_ADDR}:80-{self._relay(self.repo_port)},"
            f"guestfwd=tcp:{CONTROL_ADDR}:80-{self._relay(control_port)}"
        )
        argv = [
            "qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-m", "2048", "-smp", "2",
            "-nographic", "-no-reboot", "-kernel", str(self.image.kernel),
            "-initrd", str(self.image.initrd),
            "-append", f"console=ttyS0 root=/dev/vda rw panic=-1 {self.append}".strip(),
            "-drive", f"file={self.overlay},if=virtio,format=qcow2",
            "-netdev", netdev, "-device", "virtio-net-pci,netdev=n0",
            "-serial", f"file:{self.console}", "-monitor", "none", *self.extra,
        ]  # fmt: skip
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self._wait_up(timeout)

    def _wait_up(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.control.polls:
                return
            if self.process is not None and self.process.poll() is not None:
                raise GuestError(self.failure("boot", f"QEMU exited {self.process.returncode}"))
            time.sleep(0.5)
        raise GuestError(self.failure("boot", f"the agent did not answer within {timeout:.0f} s"))

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.console.read_text(errors="replace")
        except OSError:
            return "(no console output)"
        return "\n".join(text.splitlines()[-lines:])

    def failure(self, phase: str, why: str) -> str:
        return f"guest {self.name}: {phase}: {why}\n--- last console lines ---\n{self.tail()}"

    def run(self, cmd: str, *, timeout: float = 600, ok: bool = True) -> Result:
        self._seq += 1
        self.control.jobs.put({"id": self._seq, "cmd": cmd, "timeout": timeout})
        deadline = time.monotonic() + timeout + 60
        while True:
            try:
                result = self.control.results.get(timeout=1)
            except queue.Empty:
                if self.process is not None and self.process.poll() is not None:
                    raise GuestError(self.failure(cmd, "QEMU exited")) from None
                if time.monotonic() > deadline:
                    raise GuestError(self.failure(cmd, "no answer")) from None
                continue
            if result["id"] == self._seq:
                break
        done = Result(int(result["rc"]), str(result["out"]))
        if ok and done.rc != 0:
            raise GuestError(self.failure(cmd, f"exit {done.rc}:\n{done.out[-3000:]}"))
        return done

    def reboot(
        self, how: str = "systemctl reboot", *, extra: tuple[str, ...] | None = None
    ) -> None:
        """Ask the guest to go down (QEMU exits: -no-reboot), then boot the same disk
        (with other QEMU arguments ``extra``: another firmware, say)."""
        if extra is not None:
            self.extra = extra
        self._seq += 1
        self.control.jobs.put({"id": self._seq, "cmd": how, "timeout": 60})
        self.wait_exit()
        self.control.polls = 0
        self._thread_restart()
        self.start()

    def _thread_restart(self) -> None:
        self._stop_control()
        self.control = Control()
        self._thread = threading.Thread(target=self.control.serve_forever, daemon=True)

    def wait_exit(self, timeout: float = 180) -> None:
        assert self.process is not None
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise GuestError(
                self.failure("shutdown", f"still running after {timeout:.0f} s")
            ) from None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._stop_control()

    def _stop_control(self) -> None:
        # shutdown() waits for serve_forever, which never ran if the boot failed early.
        if self._thread.is_alive():
            self.control.shutdown()
        self.control.server_close()


@contextmanager
def booted(image: GuestImage, work: Path, repo_port: int, **kw: Any) -> Iterator[Guest]:
    guest = Guest(image, work, repo_port, **kw)
    try:
        guest.start()
        yield guest
    finally:
        guest.stop()
