"""livegraftctl on a prepared kernel tree: what a host operator sees for every case the
client must handle, run as a host runs it (the distribution's /usr/bin/python3, no venv).

The kernel is ``fake_kernel.FakeKernel`` (the host's own kernel may not be patched here);
the modules are real ELF objects signed as sign-file signs them.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from conftest import REPO
from fake_kernel import (
    UNAME_R,
    FakeKernel,
    cert_ids,
    install_patch,
    make_module,
    sign_module,
)

SIBLING = "6.1.0-55-amd64"
CONF = "[client]\ntransition_timeout = 2\nbusy_delay = 0.05\ngrace = 0\n"


class Host:
    def __init__(self, tmp: Path, client_path: Path, key: tuple[Path, Path]) -> None:
        self.kernel = FakeKernel.make(tmp / "kernel")
        self.tmp, self.client_path, self.key, self.cert = tmp, client_path, *key
        (self.kernel.root / "etc/livegraft").mkdir(parents=True)
        (self.kernel.root / "etc/livegraft/livegraft.conf").write_text(CONF)

    def module(
        self, level: int, *, uname_r: str = UNAME_R, signed: bool = True, **kw: object
    ) -> Path:
        folder = self.tmp / f"build-{uname_r}-{level}"
        folder.mkdir(exist_ok=True)
        name = f"livegraft_{uname_r.replace('-', '_').replace('.', '_')}_l{level}"
        ko = make_module(folder, name, **kw)  # type: ignore[arg-type]
        if signed:
            sign_module(ko, self.key, self.cert)
        return ko

    def install(self, level: int, **kw: object) -> Path:
        uname_r = str(kw.pop("uname_r", UNAME_R))
        module_kw = {k: kw.pop(k) for k in ("vermagic", "build", "signed") if k in kw}
        ko = self.module(level, uname_r=uname_r, **module_kw)
        return install_patch(self.kernel, ko, level=level, cert=self.cert, uname_r=uname_r, **kw)

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        code = (
            "import sys; sys.path.insert(0, sys.argv.pop(1)); "
            "from livegraft.client.cli import main; sys.exit(main())"
        )
        env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", **self.kernel.env()}
        return subprocess.run(
            ["/usr/bin/python3", "-I", "-c", code, str(self.client_path), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )

    def status(self) -> dict[str, object]:
        cp = self.ctl("status", "--json")
        assert cp.stderr == "", cp.stderr
        doc: dict[str, object] = json.loads(cp.stdout)
        doc["exit"] = cp.returncode
        return doc


@pytest.fixture
def host(tmp_path: Path, client_path: Path, signing_key: tuple[Path, Path]) -> Host:
    return Host(tmp_path, client_path, signing_key)


def one_line(cp: subprocess.CompletedProcess[str]) -> str:
    out = (cp.stdout + cp.stderr).strip()
    assert len(out.splitlines()) == 1, out
    return out


def module_name(level: int, uname_r: str = UNAME_R) -> str:
    return f"livegraft_{uname_r.replace('-', '_').replace('.', '_')}_l{level}"


def test_nothing_installed_is_nothing_to_apply(host: Host) -> None:
    doc = host.status()
    assert doc["exit"] == 0
    assert doc["patch"]["state"] == "nothing-to-apply"  # type: ignore[index]
    assert doc["running"] == {"uname_r": UNAME_R, "build_version": "6.1.192-2", "livepatch": True}
    cp = host.ctl("apply")
    assert cp.returncode == 0 and "nothing-to-apply" in one_line(cp)
    assert host.kernel.log() == []


def test_apply_loads_waits_for_the_transition_and_reports(host: Host) -> None:
    host.install(1)
    before = host.status()
    assert before["exit"] == 1 and before["patch"]["state"] == "not-applied"  # type: ignore[index]
    assert before["reasons"] == ["installed, not loaded yet: run `livegraftctl apply`"]

    cp = host.ctl("apply")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert one_line(cp).startswith(
        f"livegraft: applied: {module_name(1)} (level 1: LGSA-SAMPLE-0001)"
    )
    assert host.kernel.livepatches() == {
        module_name(1): {"enabled": "1", "transition": "0", "force": "0"}
    }
    doc = host.status()
    assert doc["exit"] == 0
    patch = doc["patch"]
    assert patch == {  # type: ignore[comparison-overlap]
        "state": "applied",
        "module": module_name(1),
        "level": 1,
        "enabled": True,
        "fixes": ["LGSA-SAMPLE-0001"],
        "cves": ["CVE-2026-00001"],
        "transition": "done",
    }
    assert doc["effective_version"] == f"{UNAME_R} 6.1.192-2+livegraft.1 (LGSA-SAMPLE-0001)"
    assert doc["reasons"] == []
    state = json.loads((host.kernel.root / "var/lib/livegraft/state.json").read_text())
    assert state["last"]["state"] == "applied" and state["last"]["module"] == module_name(1)
    # Applying again changes nothing.
    again = host.ctl("apply")
    assert again.returncode == 0 and "already in effect" in again.stdout
    assert host.kernel.log() == [f"insmod {module_name(1)}"]
    text = host.ctl("status").stdout
    assert f"effective:  {UNAME_R} 6.1.192-2+livegraft.1" in text and "livepatch:  applied" in text


def test_a_new_level_replaces_the_old_one_and_no_downgrade(host: Host) -> None:
    host.install(1)
    assert host.ctl("apply").returncode == 0
    host.install(2, fixes=("LGSA-SAMPLE-0001", "LGSA-SAMPLE-0002"))
    cp = host.ctl("apply")
    assert cp.returncode == 0, cp.stdout
    assert f"replaced {module_name(1)}" in cp.stdout
    assert list(host.kernel.livepatches()) == [module_name(2)]
    assert host.kernel.loaded() == [module_name(2)]
    assert host.status()["patch"]["level"] == 2  # type: ignore[index]

    host.install(1)  # an older package put back (a downgrade)
    cp = host.ctl("apply")
    assert cp.returncode == 1
    assert f"{module_name(2)} (level 2) is in effect; not going back to level 1" in one_line(cp)
    assert list(host.kernel.livepatches()) == [module_name(2)]
    cp = host.ctl("apply", "--allow-downgrade")
    assert cp.returncode == 0, cp.stdout
    assert list(host.kernel.livepatches()) == [module_name(1)]


def test_another_builds_package_is_never_loaded(host: Host) -> None:
    host.install(
        3,
        uname_r=SIBLING,
        vermagic=f"{SIBLING} SMP ",
        build=f"{SIBLING}@6.1.170-1",
        package_version="6.1.170-1",
    )
    cp = host.ctl("apply")
    assert cp.returncode == 0 and "nothing-to-apply" in cp.stdout
    doc = host.status()
    assert doc["other_builds"] == [SIBLING] and doc["patch"]["state"] == "nothing-to-apply"  # type: ignore[index]
    assert host.kernel.log() == []


@pytest.mark.parametrize(
    ("module_kw", "info_kw", "expected"),
    [
        # A sibling build's module put where the running build's belongs: the kernel
        # would load it (matching CRCs); the client does not.
        (
            {"vermagic": f"{SIBLING} SMP preempt ", "build": f"{SIBLING}@6.1.170-1"},
            {},
            f"built for {SIBLING} (vermagic), not the running {UNAME_R}",
        ),
        (
            {},
            {"package_version": "6.1.190-1"},
            f"the package is for build {UNAME_R} 6.1.190-1, the running kernel is {UNAME_R} "
            "6.1.192-2",
        ),
        ({"build": f"{UNAME_R}@6.1.190-1"}, {}, f"built for {UNAME_R}@6.1.190-1 (livegraft_build)"),
        ({"signed": False}, {}, "not signed"),
        ({"livepatch": False}, {}, "not a livepatch module"),
    ],
)
def test_a_module_for_another_build_or_unsigned_is_refused(
    host: Host, module_kw: dict[str, object], info_kw: dict[str, object], expected: str
) -> None:
    folder = host.tmp / "odd"
    folder.mkdir()
    ko = make_module(
        folder, module_name(1), **{k: v for k, v in module_kw.items() if k != "signed"}
    )  # type: ignore[arg-type]
    if module_kw.get("signed", True):
        sign_module(ko, host.key, host.cert)
    install_patch(host.kernel, ko, level=1, cert=host.cert, **info_kw)  # type: ignore[arg-type]
    cp = host.ctl("apply")
    assert cp.returncode == 1
    assert expected in one_line(cp)
    assert host.kernel.log() == [], "nothing was loaded"
    doc = host.status()
    assert doc["exit"] == 1 and doc["patch"]["state"] == "not-applied"  # type: ignore[index]
    assert any(expected in r for r in doc["reasons"])  # type: ignore[attr-defined]


def test_an_altered_or_missing_module_is_refused(host: Host) -> None:
    info = host.install(1)
    module = info.parent / f"{module_name(1)}.ko"
    module.write_bytes(module.read_bytes() + b"\0")
    cp = host.ctl("apply")
    assert cp.returncode == 1 and "sha256 differs from livepatch.json's" in one_line(cp)
    module.unlink()
    cp = host.ctl("apply")
    assert cp.returncode == 1 and "the module livepatch.json names is missing" in one_line(cp)
    assert host.kernel.log() == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{", "livepatch.json: valid JSON (line 1 column 2"),
        ('{"format": 2}', "livepatch.json: module: the module's name (missing)"),
        ('{"format": 9}', "livepatch.json: format: format 1 or 2 (this client's), not 9"),
    ],
)
def test_a_malformed_info_file_is_one_line_and_exit_2(host: Host, text: str, expected: str) -> None:
    info = host.install(1)
    info.write_text(text)
    cp = host.ctl("apply")
    assert cp.returncode == 2
    assert expected in one_line(cp) and str(info) in cp.stdout
    assert host.kernel.log() == []
    doc = host.status()
    assert doc["exit"] == 1 and any(expected in r for r in doc["reasons"])  # type: ignore[attr-defined]


def test_enforced_signatures_need_a_trusted_key(host: Host) -> None:
    host.install(1)
    host.kernel.enforce(
        trusted={"0011223344556677889900aabbccddeeff001122": "Debian Secure Boot CA"}
    )
    cp = host.ctl("apply")
    assert cp.returncode == 1
    line = one_line(cp)
    assert "the kernel enforces module signatures (module.sig_enforce)" in line
    assert "mokutil --import livegraft-module-signing.der" in line
    assert host.kernel.log() == []
    assert host.status()["security"]["sig_enforce"] is True  # type: ignore[index]

    skid, _ = cert_ids(host.cert)
    host.kernel.enforce(trusted={skid: "tests"})
    cp = host.ctl("apply")
    assert cp.returncode == 0, cp.stdout


def test_lockdown_counts_as_enforcement(host: Host) -> None:
    host.install(1)
    (host.kernel.sysfs / "kernel/security/lockdown").write_text(
        "none [integrity] confidentiality\n"
    )
    cp = host.ctl("apply")
    assert cp.returncode == 1 and "(lockdown=integrity)" in cp.stdout
    assert host.status()["security"]["lockdown"] == "integrity"  # type: ignore[index]


def test_no_livepatch_support(
    tmp_path: Path, client_path: Path, signing_key: tuple[Path, Path]
) -> None:
    host = Host(tmp_path, client_path, signing_key)
    (host.kernel.sysfs / "kernel/livepatch").rmdir()
    host.install(1)
    cp = host.ctl("apply")
    assert cp.returncode == 1 and "has no livepatch support" in one_line(cp)
    assert host.kernel.log() == []


def test_busy_is_retried_then_given_up(host: Host) -> None:
    host.install(1)
    host.kernel.set(busy=2)
    cp = host.ctl("apply")
    assert cp.returncode == 0, cp.stdout
    assert host.kernel.log() == [f"insmod {module_name(1)}"] * 3
    host.ctl("revert")
    host.kernel.set(busy=99)
    cp = host.ctl("apply")
    assert cp.returncode == 1
    assert (
        "Device or resource busy (another transition was in progress; tried 5 times)"
        in one_line(cp)
    )


def test_the_kernel_refusing_the_key_is_reported(host: Host) -> None:
    host.install(1)
    host.kernel.set(refuse="Key was rejected by service")
    cp = host.ctl("apply")
    assert cp.returncode == 1
    assert "Key was rejected by service (the kernel does not trust" in one_line(cp)
    assert host.status()["patch"]["state"] == "failed"  # type: ignore[index]
    assert not (host.kernel.root / "var/lib/livegraft/loading").exists()


def test_a_stalled_transition_names_the_task_and_is_reverted(host: Host) -> None:
    host.install(1)
    host.kernel.set(stall=True)
    started = time.monotonic()
    cp = host.ctl("apply")
    assert cp.returncode == 1
    line = one_line(cp)
    assert f"transition of {module_name(1)} not done after 2 s" in line
    assert "blocking: sleeper[321]" in line and "reverted and unloaded" in line
    assert time.monotonic() - started < 20
    assert host.kernel.livepatches() == {} and host.kernel.loaded() == []
    last = host.status()["last"]
    assert last["blocking_tasks"][0]["comm"] == "sleeper"  # type: ignore[index]
    assert "livegraft_sample_sleep" in last["blocking_tasks"][0]["stack"]  # type: ignore[index]
    # Force is used only when asked.
    assert all(v["force"] == "0" for v in host.kernel.livepatches().values())


def test_crash_loop_guard(host: Host) -> None:
    (host.kernel.root / "etc/livegraft/livegraft.conf").write_text(
        CONF.replace("grace = 0", "grace = 600")
    )
    host.install(1)
    assert host.ctl("apply").returncode == 0
    assert (host.kernel.root / "var/lib/livegraft/loading").exists(), "not settled yet"
    host.kernel.boot("0e9b7c1d-2222-4a86-9d1e-7e0e4c1f7a02")  # went down within the grace time
    cp = host.ctl("apply", "--boot")
    assert cp.returncode == 1
    assert "the machine went down before it settled" in one_line(cp)
    assert host.kernel.loaded() == []
    doc = host.status()
    assert any("crash-loop guard" in r for r in doc["reasons"])  # type: ignore[attr-defined]
    cp = host.ctl("apply")  # by hand
    assert cp.returncode == 0, cp.stdout
    assert host.kernel.loaded() == [module_name(1)]


def test_the_guard_clears_after_the_grace_time(host: Host) -> None:
    (host.kernel.root / "etc/livegraft/livegraft.conf").write_text(
        CONF.replace("grace = 0", "grace = 1")
    )
    host.install(1)
    assert host.ctl("apply").returncode == 0
    guard = host.kernel.root / "var/lib/livegraft/loading"
    assert guard.exists()
    deadline = time.monotonic() + 15
    while guard.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not guard.exists(), "the detached settle did not clear the guard"
    host.kernel.boot("0e9b7c1d-3333-4a86-9d1e-7e0e4c1f7a03")
    cp = host.ctl("apply", "--boot")
    assert cp.returncode == 0, cp.stdout


@pytest.mark.parametrize("how", ["cmdline", "file"])
def test_disabled(host: Host, how: str) -> None:
    host.install(1)
    if how == "cmdline":
        (host.kernel.procfs / "cmdline").write_text("root=/dev/vda livegraft.enable=0\n")
        expected = "livegraft.enable=0 is on the kernel command line"
    else:
        (host.kernel.root / "etc/livegraft/disable").touch()
        expected = "/etc/livegraft/disable exists"
    cp = host.ctl("apply")
    assert cp.returncode == 1 and expected in one_line(cp) and "disabled" in cp.stdout
    assert host.kernel.log() == []
    assert host.status()["patch"]["state"] == "disabled"  # type: ignore[index]


def test_a_corrupt_state_file_is_reported_and_replaced(host: Host) -> None:
    state = host.kernel.root / "var/lib/livegraft/state.json"
    state.parent.mkdir(parents=True)
    state.write_text('{"format": 1, "history": 7')
    host.install(1)
    doc = host.status()
    assert "not a livegraft state file" in doc["state_problem"]  # type: ignore[operator]
    cp = host.ctl("apply")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert json.loads(state.read_text())["last"]["state"] == "applied"
    assert state.with_name("state.json.corrupt").read_text() == '{"format": 1, "history": 7'
    assert host.status()["state_problem"] is None


def test_revert_and_auto(host: Host) -> None:
    host.install(1)
    host.ctl("apply")
    cp = host.ctl("revert")
    assert cp.returncode == 0 and f"disabled and unloaded {module_name(1)}" in one_line(cp)
    assert host.kernel.livepatches() == {} and host.kernel.loaded() == []
    assert host.status()["patch"]["state"] == "not-applied"  # type: ignore[index]
    assert host.ctl("auto", "off").returncode == 0
    assert host.status()["auto"] is False
    conf = (host.kernel.root / "etc/livegraft/livegraft.conf").read_text()
    assert "auto = no" in conf and "transition_timeout = 2" in conf
    assert host.ctl("auto", "on").returncode == 0 and host.status()["auto"] is True


def test_a_bad_setting_is_exit_2(host: Host) -> None:
    (host.kernel.root / "etc/livegraft/livegraft.conf").write_text("[client]\non_stall = maybe\n")
    cp = host.ctl("status")
    assert cp.returncode == 2
    assert "livegraft.conf: [client] on_stall: revert or keep, not 'maybe'" in one_line(cp)


def test_the_boot_unit_is_valid_for_systemd(tmp_path: Path) -> None:
    unit = tmp_path / "livegraft.service"
    unit.write_text((REPO / "client" / "livegraft.service").read_text())
    cp = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    complaints = [
        line
        for line in (cp.stdout + cp.stderr).splitlines()
        # The unit names the installed path, which this machine does not have.
        if "/usr/bin/livegraftctl" not in line and line.strip()
    ]
    # (Its exit status is 1 for that missing command alone.)
    assert complaints == [], cp.stdout + cp.stderr
    text = unit.read_text()
    assert "ExecStart=/usr/bin/livegraftctl apply --boot" in text
    assert "ConditionKernelCommandLine=!livegraft.enable=0" in text


def test_a_clean_shutdown_clears_the_guard(host: Host) -> None:
    (host.kernel.root / "etc/livegraft/livegraft.conf").write_text(
        CONF.replace("grace = 0", "grace = 600")
    )
    host.install(1)
    assert host.ctl("apply").returncode == 0
    guard = host.kernel.root / "var/lib/livegraft/loading"
    assert guard.exists()
    assert host.ctl("settle", "--shutdown").returncode == 0  # the unit's ExecStop
    assert not guard.exists()
    host.kernel.boot("0e9b7c1d-4444-4a86-9d1e-7e0e4c1f7a04")
    assert host.ctl("apply", "--boot").returncode == 0
