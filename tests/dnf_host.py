"""A dnf host for the plugin tests: a published livegraft project, and an installroot whose
dnf loads the livegraft plugin with the running kernel played by ``fake_kernel``.

The project is the example's two SAMPLE fixes for two real Debian builds (the running one
and a sibling), built, verified in QEMU, packaged as RPMs and published by ``livegraft
run`` to a folder (a ``file://`` tree, as the embedded default does). Its headers and
kernel images come from the verify tests' warm cache under /tmp.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO
from fake_kernel import FakeKernel
from livegraft.client.names import rpm_dependency_version
from livegraft.pipeline.cli import main
from livegraft.pipeline.kernels.apt_source import discover_apt
from livegraft.pipeline.kernels.filters import Filters
from livegraft.signing.module_key import CERT_FILE, KEY_FILE, generate_module_key
from repo_support import kill_agents_under

CACHE = Path(tempfile.gettempdir()) / "livegraft-test-verify-cache"
RUNNING = "6.1.0-56-amd64"
SIBLING = "6.1.0-55-amd64"
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
CLIENT_CONF = "[client]\ntransition_timeout = 5\nbusy_delay = 0.1\ngrace = 0\n"


def rpm_name(uname_r: str) -> str:
    return "kpatch-patch-" + uname_r.replace(".", "_")


def module_name(uname_r: str, level: int) -> str:
    return f"livegraft_{uname_r.replace('-', '_').replace('.', '_')}_l{level}"


def livegraft(*argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue() + err.getvalue()


def build_version(uname_r: str) -> str:
    found = discover_apt(Filters(uname_r=(uname_r,)))
    if not found:
        pytest.fail(f"the machine's apt sources offer no {uname_r}")
    return sorted(found, key=lambda b: b.package_version)[-1].package_version


@dataclass
class Project:
    root: Path
    config: Path
    public: Path

    @property
    def url(self) -> str:
        return self.public.resolve().as_uri()

    def run(self) -> str:
        status, output = livegraft("run", "--config", str(self.config))
        assert status == 0, output
        return output

    def new_level(self) -> str:
        edit_sample(self.root)
        return self.run()


def edit_sample(project_root: Path) -> None:
    """New content for a sample fix, so the next run makes every package a new level."""
    source = project_root / "fixes" / "LGSA-SAMPLE-0001" / "livepatch.c"
    source.write_text(source.read_text() + "\n/* next level of the sample */\n")


def make_project(root: Path) -> Project:
    root.mkdir(parents=True)
    shutil.copytree(REPO / "examples" / "fixes", root / "fixes")
    shutil.copytree(REPO / "examples" / "errata", root / "errata")
    keys = root / "module-key"
    generate_module_key(keys, "tests")
    config = root / "livegraft.toml"
    config.write_text(
        'name = "dnf-tests"\nwork_dir = "work"\nerrata = ["errata"]\nfixes = "fixes"\n'
        f'[build]\ncache = "{CACHE}"\n'
        f'[signing]\nmodule_key = "{keys / KEY_FILE}"\nmodule_cert = "{keys / CERT_FILE}"\n'
        '[packages]\nformats = ["rpm"]\n'
        '[publish]\nto = "public"\n'
        f'[[discover]]\nfrom = "apt"\nuname_r = {json.dumps([RUNNING, SIBLING])}\n',
        encoding="utf-8",
    )
    return Project(root, config, root / "public")


def kernel_core(out: Path, uname_r: str) -> Path:
    """A metadata-only kernel-core RPM that provides ``kernel-uname-r`` for ``uname_r``,
    as a distribution's kernel package does (in the RPM dependency form)."""
    evr = rpm_dependency_version(uname_r)
    version, release = evr.split("-", 1)
    top = out / f"rpmbuild-{uname_r}"
    (top / "SPECS").mkdir(parents=True)
    spec = top / "SPECS" / "kernel-core.spec"
    spec.write_text(
        f"Name: kernel-core\nVersion: {version}\nRelease: {release}\n"
        f"Summary: kernel {uname_r} (metadata only)\nLicense: GPL-2.0-only\n"
        f"Provides: kernel-uname-r = {evr}\nProvides: installonlypkg(kernel)\n"
        f"%description\nThe kernel {uname_r}, metadata only, for the plugin tests.\n%files\n"
    )
    subprocess.run(
        ["rpmbuild", "-bb", "--target", "x86_64", "--define", f"_topdir {top}", str(spec)],
        check=True, capture_output=True, env={"HOME": str(top), "PATH": PATH},
    )  # fmt: skip
    return next((top / "RPMS").rglob("*.rpm"))


class DnfHost:
    """An installroot (the host's /) with the tree's clients/livegraft.repo, a local
    repository of kernel-core packages, and the plugin loaded from ``plugin_dir`` with the
    client from ``client_path``; the running kernel is ``kernel``."""

    def __init__(
        self, tmp: Path, repo_file: str, client_path: Path, *, version: str,
        plugin_dir: Path = REPO / "plugins" / "dnf", conf_dir: Path | None = None,
    ) -> None:  # fmt: skip
        self.kernel = FakeKernel.make(
            tmp / "kernel", uname_r=RUNNING, uname_v=f"#1 SMP PREEMPT_DYNAMIC Debian {version}"
        )
        self.root = self.kernel.root
        self.home, self.repos, self.kernels = tmp / "home", tmp / "repos.d", tmp / "kernels"
        for d in (self.home, self.repos, self.kernels):
            d.mkdir(parents=True)
        (self.home / ".rpmmacros").write_text("%_dbpath /var/lib/rpm\n")
        (self.repos / "livegraft.repo").write_text(repo_file)
        (self.root / "etc/livegraft").mkdir(parents=True)
        (self.root / "etc/livegraft/livegraft.conf").write_text(CLIENT_CONF)
        self.client_path = client_path
        self.plugin_dir = plugin_dir
        self.conf_dir = conf_dir or plugin_dir
        self.on_target = True

    def add_kernel(self, uname_r: str) -> None:
        shutil.copy(kernel_core(self.kernels / "build", uname_r), self.kernels)
        subprocess.run(["createrepo_c", "-q", str(self.kernels)], check=True)
        (self.repos / "kernels.repo").write_text(
            f"[kernels]\nname=kernels\nbaseurl={self.kernels.as_uri()}\ngpgcheck=0\n"
        )

    def env(self) -> dict[str, str]:
        env = {"HOME": str(self.home), "PATH": PATH, "LANG": "C",
               "LIVEGRAFT_CLIENT_PATH": str(self.client_path), **self.kernel.env()}  # fmt: skip
        if not self.on_target:
            del env["LIVEGRAFT_ROOT"]
        return env

    def dnf(self, *args: str, status: int = 0) -> str:
        argv = [
            "dnf", "--installroot", str(self.root), "--releasever", "12", "--refresh", "-y",
            f"--setopt=reposdir={self.repos}", f"--setopt=pluginpath={self.plugin_dir}",
            f"--setopt=pluginconfpath={self.conf_dir}", *args,
        ]  # fmt: skip
        try:
            cp = subprocess.run(argv, env=self.env(), capture_output=True, text=True,
                                timeout=300, check=False)  # fmt: skip
        finally:
            kill_agents_under(self.root)
        output = cp.stdout + cp.stderr
        assert cp.returncode == status, output
        assert "Traceback" not in output, output
        return output

    def installed(self, name: str) -> str | None:
        cp = subprocess.run(
            ["rpm", "--root", str(self.root), "-q", "--qf", "%{VERSION}", name],
            env={"HOME": str(self.home), "PATH": PATH}, capture_output=True, text=True,
            check=False,
        )  # fmt: skip
        return cp.stdout if cp.returncode == 0 else None

    def state(self) -> dict[str, object]:
        path = self.root / "var/lib/livegraft/state.json"
        return json.loads(path.read_text()) if path.exists() else {}


def client_tree(top: Path) -> Path:
    """The client's import path laid out as the package installs it."""
    (top / "livegraft").mkdir(parents=True)
    (top / "livegraft" / "client").symlink_to(REPO / "client")
    return top


def environ_without_aws() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
