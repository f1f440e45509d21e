"""The dnf plugin with the real dnf (installroot, real RPM database) against a tree the
pipeline published: install and upgrade apply the running build's livepatch, auto mode
brings the packages of the running, installed and incoming kernels, a package removed on
purpose stays removed, another build's package is never loaded, and a failing load never
fails dnf. The running kernel is ``fake_kernel`` (see there); ``test_e2e`` does it for
real.

Tests run in file order: the last one publishes level 2 and upgrades to it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from dnf_host import (
    RUNNING,
    SIBLING,
    DnfHost,
    Project,
    environ_without_aws,
    livegraft,
    make_project,
    module_name,
    rpm_name,
)
from repo_support import kill_agents_under
from seaweed import SeaweedFS


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    project = make_project(tmp_path_factory.mktemp("dnf") / "project")
    output = project.run()
    assert "rpm  bookworm/x86_64: generation 1, 4 packages" in output, output
    yield project
    kill_agents_under(project.root)


@pytest.fixture
def host(tmp_path: Path, project: Project, client_path: Path, running_version: str) -> DnfHost:
    repo = (project.public / "clients/livegraft.repo").read_text()
    return DnfHost(tmp_path, repo, client_path, version=running_version)


def test_installing_the_running_builds_package_applies_it(host: DnfHost) -> None:
    output = host.dnf("install", rpm_name(RUNNING))
    assert f"livegraft: applied: {module_name(RUNNING, 1)} (level 1: LGSA-SAMPLE-0001" in output
    assert host.kernel.livepatches()[module_name(RUNNING, 1)]["enabled"] == "1"
    status = host.dnf("livegraft", "status")
    assert "livepatch:  applied, livegraft_6_1_0_56_amd64_l1 level 1, transition done" in status
    assert host.state()["last"]["trigger"] == "dnf"  # type: ignore[index]


def test_auto_mode_brings_the_running_and_an_incoming_kernels_packages(host: DnfHost) -> None:
    output = host.dnf("upgrade")
    assert f"livegraft: adding {rpm_name(RUNNING)}" in output, output
    assert host.installed(rpm_name(RUNNING)) == "1"
    assert host.kernel.loaded() == [module_name(RUNNING, 1)]

    host.add_kernel(SIBLING)
    output = host.dnf("install", "kernel-core")
    assert host.installed("kernel-core") is not None
    assert host.installed(rpm_name(SIBLING)) == "1", output
    # Another build's package is installed for when that kernel boots, never loaded here.
    assert host.kernel.loaded() == [module_name(RUNNING, 1)]
    assert all(SIBLING.replace("-", "_").replace(".", "_") not in c for c in host.kernel.log())
    assert SIBLING in host.dnf("livegraft", "status")


def test_a_kernel_installed_before_its_patch_was_offered_gets_it_at_the_next_upgrade(
    host: DnfHost,
) -> None:
    host.add_kernel(SIBLING)
    # The livepatch repository is out of reach while the kernel goes in.
    host.dnf("install", "kernel-core", "--disablerepo=livegraft-*")
    assert host.installed(rpm_name(SIBLING)) is None
    output = host.dnf("upgrade")
    assert host.installed(rpm_name(SIBLING)) == "1", output
    assert host.installed(rpm_name(RUNNING)) == "1"


def test_a_package_removed_on_purpose_is_not_pulled_back(host: DnfHost) -> None:
    host.dnf("upgrade")
    assert host.installed(rpm_name(RUNNING)) == "1"
    host.dnf("remove", rpm_name(RUNNING))
    assert host.installed(rpm_name(RUNNING)) is None
    assert host.state()["declined"] == [rpm_name(RUNNING)]
    output = host.dnf("upgrade")
    assert "Nothing to do" in output and host.installed(rpm_name(RUNNING)) is None
    # Asked for by name: installed again, and auto mode keeps it from then on.
    host.dnf("install", rpm_name(RUNNING))
    assert host.installed(rpm_name(RUNNING)) == "1" and host.state()["declined"] == []


def test_auto_mode_off(host: DnfHost) -> None:
    host.dnf("livegraft", "auto", "off")
    assert "Nothing to do" in host.dnf("upgrade")
    assert host.installed(rpm_name(RUNNING)) is None
    host.dnf("livegraft", "auto", "on")
    host.dnf("upgrade")
    assert host.installed(rpm_name(RUNNING)) == "1"


def test_a_failing_load_is_reported_and_dnf_still_succeeds(host: DnfHost) -> None:
    host.kernel.set(refuse="Key was rejected by service")
    output = host.dnf("install", rpm_name(RUNNING))
    assert "livegraft: failed: loading livegraft_6_1_0_56_amd64_l1: " in output, output
    assert "Key was rejected by service" in output
    assert host.installed(rpm_name(RUNNING)) == "1"
    assert host.kernel.loaded() == []
    status = host.dnf("livegraft", "status", status=1)
    assert "livepatch:  failed" in status and "the last load failed" in status


def test_another_installroot_is_left_alone(host: DnfHost) -> None:
    host.on_target = False  # dnf works on an installroot, not on the running system
    host.dnf("install", rpm_name(RUNNING))
    assert host.kernel.log() == []
    assert host.installed(rpm_name(SIBLING)) is None


def test_a_missing_client_core_never_breaks_dnf(host: DnfHost, tmp_path: Path) -> None:
    host.client_path = tmp_path / "empty"
    host.client_path.mkdir()
    output = host.dnf("install", rpm_name(RUNNING))
    assert host.installed(rpm_name(RUNNING)) == "1"
    assert "livegraft: auto mode skipped: No module named 'livegraft'" in output, output
    assert "livegraft: failed: No module named 'livegraft'" in output
    assert host.kernel.log() == []
    output = host.dnf("livegraft", "status", status=1)
    assert "the client core cannot be loaded" in output and "reinstall livegraft-client" in output


def test_seaweedfs(
    project: Project, seaweedfs: SeaweedFS, tmp_path: Path, client_path: Path, running_version: str
) -> None:
    """The same tree published to a bucket, read by dnf over plain HTTP."""
    seaweedfs.create_bucket("dnf-plugin")
    url = f"{seaweedfs.endpoint}/dnf-plugin/lg"
    status, output = livegraft("index", "--config", str(project.config), "--base-url", url)
    assert status == 0, output
    env = {**environ_without_aws(), **seaweedfs.env()}
    cp = subprocess.run(
        [str(Path(__import__("sys").executable)), "-m", "livegraft.pipeline.cli", "publish",
         "--config", str(project.config), "--to", "s3://dnf-plugin/lg",
         "--endpoint", seaweedfs.endpoint, "--addressing", "path"],
        env=env, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert cp.returncode == 0, cp.stdout + cp.stderr
    repo = seaweedfs.client().get_object(Bucket="dnf-plugin", Key="lg/clients/livegraft.repo")
    host = DnfHost(tmp_path, repo["Body"].read().decode(), client_path, version=running_version)
    output = host.dnf("upgrade")
    assert f"livegraft: applied: {module_name(RUNNING, 1)}" in output, output
    # Back to the folder's URL for the tests after this one.
    status, output = livegraft("index", "--config", str(project.config), "--base-url",
                               project.url)  # fmt: skip
    assert status == 0, output


def test_host_set_up_as_the_readme_says(
    project: Project, tmp_path: Path, client_path: Path, running_version: str
) -> None:
    """The README's three commands (repo file, key, install), with the client and the
    plugin as the packages install them: nothing of this checkout's own files is used."""
    host = DnfHost(tmp_path, "", client_path, version=running_version)
    root = host.root
    # 1. the repository file from the tree's clients/
    shutil.copy(project.public / "clients/livegraft.repo", host.repos / "livegraft.repo")
    # 2. the archive key into the host's RPM database
    subprocess.run(
        ["rpm", "--root", str(root), "--import",
         str(project.public / "keys/livegraft-archive.asc")],
        check=True, env={"HOME": str(host.home), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )  # fmt: skip
    # 3. the client and the plugin, then the first upgrade with the plugin in place
    host.plugin_dir = root / "nonexistent"  # none yet: dnf runs plugin-less, as on a fresh host
    host.dnf("install", "livegraft-client", "python3-dnf-plugin-livegraft")
    installed = root / "usr/lib/python3/dist-packages/dnf-plugins/livegraft.py"
    assert installed.is_file() and (root / "etc/dnf/plugins/livegraft.conf").is_file()
    assert (root / "usr/lib/systemd/system/livegraft.service").is_file()
    host.plugin_dir, host.conf_dir = installed.parent, root / "etc/dnf/plugins"
    host.client_path = root / "usr/share/livegraft/python"
    output = host.dnf("upgrade")
    assert f"livegraft: applied: {module_name(RUNNING, 1)}" in output, output
    # livegraftctl as packaged, on the distribution's python3.
    cp = subprocess.run(
        ["/usr/bin/python3", str(root / "usr/bin/livegraftctl"), "status", "--json"],
        env=host.env(), capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert cp.returncode == 0, cp.stdout + cp.stderr
    doc = json.loads(cp.stdout)
    assert doc["patch"]["state"] == "applied" and doc["patch"]["fixes"] == [
        "LGSA-SAMPLE-0001",
        "LGSA-SAMPLE-0002",
    ]


def test_a_new_level_replaces_the_old_one_on_dnf_upgrade(project: Project, host: DnfHost) -> None:
    host.dnf("install", rpm_name(RUNNING))
    assert host.kernel.loaded() == [module_name(RUNNING, 1)]
    output = project.new_level()
    assert "generation" in output
    output = host.dnf("upgrade")
    assert host.installed(rpm_name(RUNNING)) == "2", output
    assert f"livegraft: applied: {module_name(RUNNING, 2)}" in output, output
    assert f"replaced {module_name(RUNNING, 1)}" in output
    assert list(host.kernel.livepatches()) == [module_name(RUNNING, 2)]
    assert host.kernel.loaded() == [module_name(RUNNING, 2)]
