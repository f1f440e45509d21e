"""The apt hook with the real apt (an isolated root) against a tree the pipeline published
to SeaweedFS: install and upgrade apply the running build's livepatch, python-apt's
commit() (what unattended-upgrades uses) does too, auto mode offers the packages after
``apt update``, another build's package is never loaded, and nothing livegraft does makes
apt fail. The running kernel is ``fake_kernel`` (see there).

Tests run in file order: the last ones publish new levels and upgrade to them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from apt_host import HOOK, AptHost, AptProject, make_apt_project
from conftest import REPO
from dnf_host import RUNNING, SIBLING, module_name
from repo_support import kill_agents_under
from seaweed import SeaweedFS

PATCH = f"livepatch-{RUNNING}"
UNATTENDED = """
import importlib.machinery, importlib.util, optparse, sys
loader = importlib.machinery.SourceFileLoader("uu", "/usr/bin/unattended-upgrade")
uu = importlib.util.module_from_spec(importlib.util.spec_from_loader("uu", loader))
loader.exec_module(uu)
options = optparse.Values(dict(debug=True, apt_debug=False, verbose=True, dry_run=False,
                               download_only=False, minimal_upgrade_steps=True))
sys.exit(uu.main(options, rootdir=sys.argv[1]))
"""
OTHER = f"livepatch-{SIBLING}"


@pytest.fixture(scope="module")
def project(seaweedfs: SeaweedFS, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AptProject]:
    project = make_apt_project(
        tmp_path_factory.mktemp("apt") / "project", seaweedfs, f"apt-{uuid.uuid4().hex[:8]}"
    )
    output = project.run()
    assert "deb  bookworm (amd64): " in output, output
    yield project
    kill_agents_under(project.root)


@pytest.fixture
def host(tmp_path: Path, project: AptProject, client_path: Path, running_version: str) -> AptHost:
    host = AptHost(tmp_path, project, client_path, version=running_version)
    host.install_hook()
    host.apt("update")
    return host


def test_installing_the_running_builds_package_applies_it(host: AptHost) -> None:
    output = host.apt("install", PATCH)
    assert f"livegraft: applied: {module_name(RUNNING, 1)} (level 1: " in output, output
    assert host.kernel.livepatches()[module_name(RUNNING, 1)]["enabled"] == "1"
    assert host.state()["last"]["trigger"] == "apt"  # type: ignore[index]
    assert not (host.root / "run/livegraft/apt-pending.json").exists()


def test_python_apt_commit_applies_it(host: AptHost) -> None:
    cp = host.commit_with_python_apt(PATCH)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert f"livegraft: applied: {module_name(RUNNING, 1)}" in cp.stdout, cp.stdout + cp.stderr
    assert host.kernel.loaded() == [module_name(RUNNING, 1)]


def test_another_builds_package_is_never_loaded(host: AptHost) -> None:
    output = host.apt("install", OTHER)
    assert "livegraft:" not in output, output
    assert host.kernel.log() == []


def test_a_failing_load_is_reported_and_apt_succeeds(host: AptHost) -> None:
    host.kernel.set(refuse="Key was rejected by service")
    output = host.apt("install", PATCH)
    assert "livegraft: failed: loading livegraft_6_1_0_56_amd64_l1: " in output, output
    assert host.version(PATCH) == "1" and host.kernel.loaded() == []
    assert host.ctl("status").returncode == 1


def test_auto_mode_after_update_and_a_package_removed_on_purpose(host: AptHost) -> None:
    host.fake_installed(f"linux-image-{SIBLING}")
    host.forget_lists()
    output = host.apt("update")
    assert f"livegraft: {OTHER} {PATCH} offered for this machine's kernels: run " in output
    cp = host.ctl("sync")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert host.version(PATCH) == "1" and host.version(OTHER) == "1"
    assert f"livegraft: applied: {module_name(RUNNING, 1)}" in cp.stdout
    assert host.kernel.loaded() == [module_name(RUNNING, 1)]

    host.apt("remove", PATCH)
    assert host.state()["declined"] == [PATCH]
    host.forget_lists()
    output = host.apt("update")
    assert "offered" not in output, output
    # Asked for by name again: off the list.
    host.apt("install", PATCH)
    assert host.state()["declined"] == []


def test_auto_off(host: AptHost) -> None:
    assert host.ctl("auto", "off").returncode == 0
    host.forget_lists()
    assert "offered" not in host.apt("update")


def test_another_root_is_left_alone(host: AptHost) -> None:
    host.on_target = False
    output = host.apt("install", PATCH)
    assert "livegraft:" not in output and host.kernel.log() == []


@pytest.mark.parametrize(
    ("stdin", "expected"),
    [
        ("VERSION 2\nfoo\n", "input not understood: expected 'VERSION 3'"),
        ("VERSION 3\nDir=/\n\ngarbage line\n", "package line 1 has not the 9 fields"),
    ],
)
def test_bad_hook_input_is_logged_and_never_fatal(host: AptHost, stdin: str, expected: str) -> None:
    cp = host.hook("pre-install", stdin=stdin)
    assert cp.returncode == 0 and expected in cp.stdout, cp.stdout + cp.stderr


def test_missing_python_apt_or_client_core_is_logged_and_never_fatal(
    host: AptHost, tmp_path: Path
) -> None:
    # No site-packages: python3-apt cannot be imported.
    cp = host.hook("post-update", python=("/usr/bin/python3", "-I", "-S"))
    assert cp.returncode == 0 and "python3-apt cannot be loaded" in cp.stdout, cp.stdout
    host.client_path = tmp_path / "empty"
    host.client_path.mkdir()
    output = host.apt("install", PATCH)
    assert "apt hook skipped: the client core (livegraft-client) cannot be loaded" in output
    assert host.version(PATCH) == "1"


def test_a_removed_hook_whose_conffile_stays_does_not_stop_apt(host: AptHost) -> None:
    """apt-livegraft removed but not purged: its apt.conf.d lines stay, the hook is gone."""
    (host.root / HOOK).unlink()
    output = host.apt("install", PATCH)
    assert host.version(PATCH) == "1" and "livegraft:" not in output
    assert host.kernel.log() == []


def test_a_corrupt_state_file_does_not_stop_apt(host: AptHost) -> None:
    state = host.root / "var/lib/livegraft/state.json"
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text("{ not json")
    output = host.apt("install", PATCH)
    assert f"livegraft: applied: {module_name(RUNNING, 1)}" in output, output
    assert (host.root / "var/lib/livegraft/state.json.corrupt").read_text() == "{ not json"


def test_a_new_level_replaces_the_old_one_on_apt_upgrade(
    project: AptProject, host: AptHost
) -> None:
    host.apt("install", PATCH)
    assert host.kernel.loaded() == [module_name(RUNNING, 1)]
    project.new_level()
    host.forget_lists()
    host.apt("update")
    output = host.apt("upgrade")
    assert host.version(PATCH) == "2", output
    assert f"livegraft: applied: {module_name(RUNNING, 2)}" in output, output
    assert f"replaced {module_name(RUNNING, 1)}" in output
    assert host.kernel.loaded() == [module_name(RUNNING, 2)]


def test_unattended_upgrades_brings_the_next_level(project: AptProject, host: AptHost) -> None:
    """Debian's unattended-upgrades itself, allowed livegraft's origin by apt-livegraft's
    drop-in (and nothing else), upgrades the livepatch package and the hook applies it."""
    shutil.copy(
        REPO / "plugins/apt/51livegraft-unattended-upgrades", host.root / "etc/apt/apt.conf.d"
    )
    for folder in ("var/run", "var/log/unattended-upgrades", "usr/bin"):
        (host.root / folder).mkdir(parents=True, exist_ok=True)
    # python-apt with a rootdir runs that root's dpkg: this machine's, as in a chroot.
    (host.root / "usr/bin/dpkg").symlink_to("/usr/bin/dpkg")
    host.apt("install", PATCH)
    level = int(host.version(PATCH) or 0)
    project.new_level()
    host.forget_lists()
    host.apt("update")
    # unattended-upgrade as its own test suite drives it for another root: main() with
    # rootdir (its command line always works on /).
    cp = subprocess.run(
        ["/usr/bin/python3", "-c", UNATTENDED, str(host.root)], env=host.env(),
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    output = cp.stdout + cp.stderr
    assert cp.returncode == 0, output
    assert host.version(PATCH) == str(level + 1), output
    assert host.kernel.loaded() == [module_name(RUNNING, level + 1)], output
    assert host.state()["last"]["level"] == level + 1  # type: ignore[index]


def test_host_set_up_as_the_readme_says_and_plain_dpkg(
    project: AptProject, tmp_path: Path, client_path: Path, running_version: str
) -> None:
    """The README's commands with the client and the hook as apt-livegraft installs them
    (only /usr/libexec in its apt.conf.d lines pointed into the root, since apt runs hooks
    on this machine), then a plain `dpkg -i` applied through apt-livegraft's trigger."""
    host = AptHost(tmp_path, project, client_path, version=running_version)
    # 1. the source file, exactly as published (its key is inline)
    sources = project.get("clients/livegraft.sources").decode()
    assert (host.root / "etc/apt/sources.list.d/livegraft.sources").read_text() == sources
    # 2. the hook
    host.apt("update")
    host.apt("install", "apt-livegraft")
    assert host.version("livegraft-client") and host.version("apt-livegraft")
    host.point_conf_at_root((host.root / "etc/apt/apt.conf.d/20livegraft").read_text())
    host.client_path = host.root / "usr/share/livegraft/python"
    # 3. the running build's livepatch
    output = host.apt("install", PATCH)
    assert output.count("livegraft: applied:") == 1, output  # the hook, not also the trigger
    # The project's current level (tests before this one may have published more).
    level = int(host.version(PATCH) or 0)
    assert f"livegraft: applied: {module_name(RUNNING, level)}" in output
    cp = subprocess.run(
        ["/usr/bin/python3", str(host.root / "usr/bin/livegraftctl"), "status", "--json"],
        env=host.env(), capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert cp.returncode == 0 and json.loads(cp.stdout)["patch"]["state"] == "applied", cp.stdout

    # A plain dpkg -i of a livepatch package, no apt: the trigger applies it.
    host.ctl("revert")
    host.apt("remove", PATCH)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    host.apt("download", PATCH, cwd=downloads)
    (deb,) = downloads.glob(f"{PATCH}_*.deb")
    cp = subprocess.run(
        ["dpkg", f"--root={host.root}", "--force-script-chrootless", "-i", str(deb)],
        env=host.env(), capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert f"livegraft: applied: {module_name(RUNNING, level)}" in cp.stdout, cp.stdout + cp.stderr
    assert host.kernel.loaded() == [module_name(RUNNING, level)]
