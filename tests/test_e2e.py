"""End to end on a real kernel: a Debian bookworm system booted in QEMU with the real
kernel of a shipped build (6.1.0-56-amd64), set up as the README says, livepatched by
``apt`` and ``dnf`` from a tree the pipeline published to SeaweedFS, with no reboot.

The guest is ``guest_vm`` (see there). The host runs the pipeline between the guest's
steps (a new level is a fix's source edited and ``livegraft run`` again). Each phase's
time is printed; the guests' console logs are kept under ``.livegraft/e2e/`` in the
checkout (CI keeps them). Run alone with ``scripts/e2e``.

Tests run in file order and share the project: the apt boot, then the dnf boot.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from apt_host import AptProject, make_apt_project
from conftest import REPO
from dnf_host import CACHE, RUNNING, module_name
from guest_vm import REPO_ADDR, Guest, GuestImage, booted, build_image, firmware_vars, uefi
from livegraft.pipeline.kernel_files import complete_from_apt, fetch_package
from livegraft.pipeline.kernels.apt_source import discover_apt
from livegraft.pipeline.kernels.filters import Filters
from livegraft.signing.certificate import read_certificate
from seaweed import SeaweedFS

ARTIFACTS = REPO / ".livegraft" / "e2e"
SAMPLE_EFFECT = "livepatched by livegraft (LGSA-SAMPLE-0001)"


class Phases:
    def __init__(self, request: pytest.FixtureRequest) -> None:
        self.reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        self.capture = request.config.pluginmanager.get_plugin("capturemanager")
        self.times: list[tuple[str, float]] = []

    def __call__(self, name: str) -> _Phase:
        return _Phase(self, name)

    def say(self, line: str) -> None:
        """A line on the terminal as it happens, past pytest's capture of the test."""
        if self.reporter is None:
            return
        if self.capture is not None:
            with self.capture.global_and_fixture_disabled():
                self.reporter.write_line(line)
        else:
            self.reporter.write_line(line)


class _Phase:
    def __init__(self, phases: Phases, name: str) -> None:
        self.phases, self.name = phases, name

    def __enter__(self) -> None:
        self.start = time.monotonic()

    def __exit__(self, *exc: object) -> None:
        took = time.monotonic() - self.start
        self.phases.times.append((self.name, took))
        self.phases.say(f"e2e phase {self.name}: {took:.1f} s{' (failed)' if exc[0] else ''}")


@pytest.fixture(scope="module")
def phases(request: pytest.FixtureRequest) -> Iterator[Phases]:
    recorder = Phases(request)
    yield recorder
    total = sum(t for _, t in recorder.times)
    recorder.say(f"e2e phases: {len(recorder.times)}, {total:.1f} s in all")


@pytest.fixture(scope="module")
def image(phases: Phases) -> GuestImage:
    with phases("guest image (cached by its inputs)"):
        build = complete_from_apt(
            next(b for b in discover_apt(Filters(uname_r=(RUNNING,))) if b.image is not None)
        )
        assert build.image is not None
        deb = fetch_package(build, build.image, CACHE)
        return build_image(CACHE, deb, RUNNING)


@pytest.fixture(scope="module")
def project(
    seaweedfs: SeaweedFS, tmp_path_factory: pytest.TempPathFactory, phases: Phases
) -> Iterator[AptProject]:
    bucket = f"e2e-{uuid.uuid4().hex[:8]}"
    with phases("pipeline: level 1 for two builds, DEB and RPM, published"):
        project = make_apt_project(
            tmp_path_factory.mktemp("e2e") / "project", seaweedfs, bucket,
            formats=("deb", "rpm"), base_url=f"http://{REPO_ADDR}/{bucket}/lg",
        )  # fmt: skip
        project.run()
    yield project


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("e2e-work")
    yield folder
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for log in folder.glob("console-*.log"):
        shutil.copy(log, ARTIFACTS / log.name)


def port_of(server: SeaweedFS) -> int:
    return int(server.endpoint.rsplit(":", 1)[1])


def status(guest: Guest) -> dict[str, object]:
    out = guest.run("livegraftctl status --json", ok=False).out
    doc: dict[str, object] = json.loads(out[out.index("{") :])
    return doc


def wait_for_level(guest: Guest, level: int, timeout: float = 300) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    doc: dict[str, object] = {}
    while time.monotonic() < deadline:
        doc = status(guest)
        patch = doc["patch"]
        if isinstance(patch, dict) and patch["state"] == "applied" and patch["level"] == level:
            return doc
        time.sleep(3)
    raise AssertionError(f"level {level} not applied after {timeout:.0f} s: {doc}\n{guest.tail()}")


def livepatches(guest: Guest) -> dict[str, str]:
    out = guest.run(
        'for d in /sys/kernel/livepatch/*/; do [ -d "$d" ] || continue; '
        'echo "$(basename $d) $(cat $d/enabled) $(cat $d/transition)"; done'
    ).out
    return {line.split()[0]: " ".join(line.split()[1:]) for line in out.splitlines() if line}


def test_apt(
    image: GuestImage, project: AptProject, seaweedfs: SeaweedFS, work: Path, phases: Phases
) -> None:
    base = f"http://{REPO_ADDR}/{project.bucket}/lg"
    with booted(image, work, port_of(seaweedfs), name="apt") as guest:
        with phases("apt: the README's set-up; apt-get update brings the patch (auto mode)"):
            guest.run(
                "curl -fsSLo /etc/apt/sources.list.d/livegraft.sources "
                f'"{base}/clients/livegraft.sources"'
            )
            guest.run("apt-get update && apt-get install -y apt-livegraft")
            out = guest.run("apt-get update").out
            assert "livegraft: installing livepatch-6.1.0-56-amd64 once apt is done" in out, out
            doc = wait_for_level(guest, 1)
        assert livepatches(guest) == {module_name(RUNNING, 1): "1 0"}
        assert SAMPLE_EFFECT in guest.run("cat /proc/cmdline").out
        patch = doc["patch"]
        assert isinstance(patch, dict)
        assert patch["fixes"] == ["LGSA-SAMPLE-0001", "LGSA-SAMPLE-0002"]
        assert patch["cves"] == ["LIVEGRAFT-SAMPLE-0001", "LIVEGRAFT-SAMPLE-0002"]
        assert patch["transition"] == "done"
        assert doc["running"] == {
            "uname_r": RUNNING,
            "build_version": "6.1.192-2",
            "livepatch": True,
        }

        with phases("apt: level 2 published, apt-get upgrade replaces level 1, no reboot"):
            project.new_level()
            out = guest.run("apt-get update && apt-get upgrade -y").out
            assert f"livegraft: applied: {module_name(RUNNING, 2)}" in out, out
            assert f"replaced {module_name(RUNNING, 1)}" in out
        assert livepatches(guest) == {module_name(RUNNING, 2): "1 0"}
        assert module_name(RUNNING, 1) not in guest.run("cat /proc/modules").out

        with phases("apt: level 3 published, unattended-upgrade brings it"):
            project.new_level()
            guest.run("apt-get update && unattended-upgrade -v")
            wait_for_level(guest, 3)
        assert livepatches(guest) == {module_name(RUNNING, 3): "1 0"}

        with phases("apt: reboot into the same kernel, the boot unit applies level 3"):
            guest.reboot()
            wait_for_level(guest, 3, timeout=120)
            assert "active" in guest.run("systemctl is-active livegraft.service").out

        with phases("apt: a crash while a load is new, then the next boot does not load it"):
            guest.run("livegraftctl revert && livegraftctl apply")
            assert guest.run("test -e /var/lib/livegraft/loading", ok=False).rc == 0
            guest.reboot("echo 1 > /proc/sys/kernel/sysrq; echo b > /proc/sysrq-trigger")
            doc = status(guest)
            assert doc["patch"]["state"] == "not-applied"  # type: ignore[index]
            assert any("crash-loop guard" in r for r in doc["reasons"])  # type: ignore[attr-defined]
            assert livepatches(guest) == {}
            guest.run("livegraftctl apply")
            wait_for_level(guest, 3)

        with phases("apt: a sibling build's module put in by hand is refused"):
            guest.run(
                "cd /tmp && apt-get download livepatch-6.1.0-55-amd64 && "
                "dpkg-deb -x livepatch-6.1.0-55-amd64_*.deb sib && "
                "d=/usr/lib/livegraft/6.1.0-56-amd64 && livegraftctl revert && "
                "cp sib/usr/lib/livegraft/6.1.0-55-amd64/*.ko $d/ && "
                "python3 - <<'EOF'\n"
                "import hashlib, json, pathlib\n"
                "d = pathlib.Path('/usr/lib/livegraft/6.1.0-56-amd64')\n"
                "info = json.loads((d / 'livepatch.json').read_text())\n"
                "ko = next(p for p in d.glob('*.ko') if '6_1_0_55' in p.name)\n"
                "info['file'] = ko.name; info['module'] = ko.stem\n"
                "info['sha256'] = hashlib.sha256(ko.read_bytes()).hexdigest()\n"
                "(d / 'livepatch.json').write_text(json.dumps(info))\n"
                "EOF"
            )
            result = guest.run("livegraftctl apply", ok=False)
            assert result.rc == 1, result.out
            assert (
                "built for 6.1.0-55-amd64 (vermagic), not the running 6.1.0-56-amd64" in result.out
            )
            assert livepatches(guest) == {}
            doc = status(guest)
            assert any("6.1.0-55-amd64" in r for r in doc["reasons"])  # type: ignore[attr-defined]

        with phases("apt: a tampered package in the bucket is refused"):
            tamper(project, seaweedfs, "deb/pool/main/l/livepatch-6.1.0-55-amd64/", ".deb")
            result = guest.run(
                "apt-get update && apt-get install -y livepatch-6.1.0-55-amd64", ok=False
            )
            assert result.rc != 0 and "Hash Sum mismatch" in result.out, result.out
            assert livepatches(guest) == {}


def tamper(project: AptProject, server: SeaweedFS, prefix: str, suffix: str) -> str:
    """Flip one byte of the newest matching object in the bucket, in place."""
    client = server.client()
    keys = sorted(
        item["Key"]
        for item in client.list_objects_v2(Bucket=project.bucket, Prefix=f"lg/{prefix}").get(
            "Contents", []
        )
        if item["Key"].endswith(suffix)
    )
    assert keys, prefix
    key = keys[-1]
    data = bytearray(client.get_object(Bucket=project.bucket, Key=key)["Body"].read())
    data[len(data) // 2] ^= 0xFF
    client.put_object(Bucket=project.bucket, Key=key, Body=bytes(data))
    return key


def test_dnf(
    image: GuestImage, project: AptProject, seaweedfs: SeaweedFS, work: Path, phases: Phases
) -> None:
    base = f"http://{REPO_ADDR}/{project.bucket}/lg"
    level = 1
    with booted(image, work, port_of(seaweedfs), name="dnf", overlay=work / "dnf.qcow2") as guest:
        with phases("dnf: the README's set-up, dnf upgrade applies the patch (auto mode)"):
            guest.run(
                # Debian's dnf does not make the folder a Fedora host has.
                "mkdir -p /etc/yum.repos.d && curl -fsSLo /etc/yum.repos.d/livegraft.repo "
                f'"{base}/clients/livegraft.repo"'
            )
            guest.run(f'rpm --import "{base}/keys/livegraft-archive.asc"')
            out = guest.run(
                "dnf install -y livegraft-client python3-dnf-plugin-livegraft && dnf upgrade -y"
            ).out
            assert "livegraft: adding kpatch-patch-6_1_0-56-amd64" in out, out
            assert "livegraft: applied: " in out, out
        doc = status(guest)
        current = doc["patch"]["level"]  # type: ignore[index]
        assert isinstance(current, int) and current >= level
        assert livepatches(guest) == {module_name(RUNNING, current): "1 0"}
        assert SAMPLE_EFFECT in guest.run("cat /proc/cmdline").out

        with phases("dnf: a new level published, dnf upgrade replaces the old one"):
            project.new_level()
            out = guest.run("dnf upgrade -y --refresh").out
            assert f"livegraft: applied: {module_name(RUNNING, current + 1)}" in out, out
            assert f"replaced {module_name(RUNNING, current)}" in out
        assert livepatches(guest) == {module_name(RUNNING, current + 1): "1 0"}

        with phases("dnf: a tampered package in the bucket is refused"):
            tamper(project, seaweedfs, "rpm/bookworm/x86_64/pool/kpatch-patch-6_1_0-55", ".rpm")
            result = guest.run("dnf install -y --refresh kpatch-patch-6_1_0-55-amd64", ok=False)
            assert result.rc != 0, result.out
            assert livepatches(guest) == {module_name(RUNNING, current + 1): "1 0"}
            assert guest.run("rpm -q kpatch-patch-6_1_0-55-amd64", ok=False).rc != 0


def dmesg(guest: Guest) -> str:
    return guest.run("dmesg").out


def wait_for(
    guest: Guest, what: str, done: Callable[[dict[str, Any]], bool], timeout: float = 300
) -> dict[str, Any]:
    """The status document once ``done`` says so."""
    deadline = time.monotonic() + timeout
    doc: dict[str, Any] = {}
    while time.monotonic() < deadline:
        doc = status(guest)
        if done(doc):
            return doc
        time.sleep(3)
    raise AssertionError(f"{what}: not so after {timeout:.0f} s: {doc}\n{guest.tail()}")


# Strips the appended signature (module, signature, 12-byte trailer, magic) off the
# installed module and records the unsigned copy's sha256, so that only the signature is
# missing; a copy of the signed one stays for the kernel's own refusal.
STRIP = r"""
import hashlib, json, pathlib, struct
d = pathlib.Path('/usr/lib/livegraft/6.1.0-56-amd64')
info = json.loads((d / 'livepatch.json').read_text())
ko = d / info['file']
data = ko.read_bytes()
magic = b'~Module signature appended~\n'
assert data.endswith(magic)
sig_len = struct.unpack('>I', data[-len(magic) - 4:-len(magic)])[0]
data = data[:len(data) - len(magic) - 12 - sig_len]
ko.write_bytes(data)
pathlib.Path('/tmp/unsigned.ko').write_bytes(data)
info['sha256'] = hashlib.sha256(data).hexdigest()
(d / 'livepatch.json').write_text(json.dumps(info))
"""


def test_secure_boot(
    image: GuestImage, project: AptProject, seaweedfs: SeaweedFS, work: Path, phases: Phases
) -> None:
    """UEFI (OVMF) with ``module.sig_enforce=1``: the kernel takes only modules signed by a
    key it trusts, and livegraft's certificate is trusted once it is in the firmware's db
    (the kernel's .platform keyring, which Debian's kernel trusts for modules)."""
    base = f"http://{REPO_ADDR}/{project.bucket}/lg"
    cert = work / "livegraft-module-signing.der"
    cert.write_bytes(project.get("keys/livegraft-module-signing.der"))
    key_id = read_certificate(cert, "keys/livegraft-module-signing.der").subject_key_id
    stock = firmware_vars(work / "vars-stock.fd")
    enrolled = firmware_vars(work / "vars-enrolled.fd", (cert,))
    with booted(
        image, work, port_of(seaweedfs), name="secureboot", overlay=work / "secureboot.qcow2",
        append="module.sig_enforce=1", extra=uefi(stock),
    ) as guest:  # fmt: skip
        with phases("secure boot: certificate not in db, the client refuses before loading"):
            guest.run(
                "curl -fsSLo /etc/apt/sources.list.d/livegraft.sources "
                f'"{base}/clients/livegraft.sources"'
            )
            guest.run("apt-get update && apt-get install -y apt-livegraft && apt-get update")
            doc = wait_for(
                guest, "the apt hook's load attempt recorded",
                lambda d: bool(d["last"]) and d["last"]["action"] == "apply",
            )  # fmt: skip
            assert doc["patch"]["state"] == "not-applied"
            assert "does not trust the signing key" in doc["last"]["message"], doc
            assert doc["security"] == {  # the kernel's own view, through the client
                "secure_boot": False, "sig_enforce": True, "lockdown": "none",
            }  # fmt: skip
            result = guest.run("livegraftctl apply", ok=False)
            assert result.rc == 1, result.out
            assert "does not trust the signing key" in result.out, result.out
            assert key_id in result.out and "mokutil --import" in result.out, result.out
            assert livepatches(guest) == {}
            # The client's refusal is the kernel's: insmod of the same module is rejected.
            kernel = guest.run("insmod /usr/lib/livegraft/6.1.0-56-amd64/*.ko", ok=False)
            assert kernel.rc != 0 and "Key was rejected by service" in kernel.out, kernel.out
            assert "Loading of module with unavailable key is rejected" in dmesg(guest)
            assert livepatches(guest) == {}

        with phases("secure boot: certificate enrolled in db, the boot unit loads the patch"):
            guest.reboot(extra=uefi(enrolled))
            doc = wait_for(
                guest, "applied at boot", lambda d: d["patch"]["state"] == "applied", timeout=120
            )
            assert key_id in guest.run("cat /proc/keys").out
            assert doc["security"]["sig_enforce"] is True
            assert livepatches(guest) == {doc["patch"]["module"]: "1 0"}
            assert SAMPLE_EFFECT in guest.run("cat /proc/cmdline").out

        with phases("secure boot: an unsigned module is refused, by the client and the kernel"):
            guest.run("livegraftctl revert")
            guest.run(f"python3 - <<'EOF'{STRIP}EOF")
            result = guest.run("livegraftctl apply", ok=False)
            assert result.rc == 1, result.out
            assert "not signed" in result.out, result.out
            assert livepatches(guest) == {}
            kernel = guest.run("insmod /tmp/unsigned.ko", ok=False)
            assert kernel.rc != 0 and "Key was rejected by service" in kernel.out, kernel.out
            assert "Loading of unsigned module is rejected" in dmesg(guest)
            assert livepatches(guest) == {}
