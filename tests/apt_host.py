"""An apt host for the hook tests: a livegraft project published to SeaweedFS, and an
isolated apt root (``apt_client.AptRoot``) with the hook, whose running kernel is played
by ``fake_kernel``.

The project is the example's two SAMPLE fixes for two real Debian builds (the running one
and a sibling), built, verified in QEMU, packaged as DEBs and published by ``livegraft
run`` to a bucket, read by apt over plain HTTP.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from apt_client import AptRoot
from conftest import REPO
from dnf_host import CACHE, CLIENT_CONF, RUNNING, SIBLING, edit_sample, livegraft
from fake_kernel import FakeKernel
from livegraft.signing.module_key import CERT_FILE, KEY_FILE, generate_module_key
from seaweed import SeaweedFS

HOOK = "usr/libexec/livegraft/apt-hook"
# What a Debian host has already and the isolated root's dpkg database lacks: the
# client's dependencies, and the kernels installed.
HOST_PACKAGES = ("python3", "python3-apt", "kmod")


@contextlib.contextmanager
def environ(extra: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(extra)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@dataclass
class AptProject:
    root: Path
    config: Path
    server: SeaweedFS
    bucket: str

    @property
    def url(self) -> str:
        return f"{self.server.endpoint}/{self.bucket}/lg"

    def run(self) -> str:
        with environ(self.server.env()):
            status, output = livegraft("run", "--config", str(self.config))
        assert status == 0, output
        return output

    def new_level(self) -> str:
        edit_sample(self.root)
        return self.run()

    def get(self, key: str) -> bytes:
        body = self.server.client().get_object(Bucket=self.bucket, Key=f"lg/{key}")["Body"]
        return bytes(body.read())


def make_apt_project(
    root: Path,
    server: SeaweedFS,
    bucket: str,
    *,
    formats: tuple[str, ...] = ("deb",),
    base_url: str | None = None,
) -> AptProject:
    """``base_url``: where clients read the bucket (default: this machine's view of it)."""
    root.mkdir(parents=True)
    shutil.copytree(REPO / "examples" / "fixes", root / "fixes")
    shutil.copytree(REPO / "examples" / "errata", root / "errata")
    keys = root / "module-key"
    generate_module_key(keys, "tests")
    server.create_bucket(bucket)
    config = root / "livegraft.toml"
    config.write_text(
        'name = "apt-tests"\nwork_dir = "work"\nerrata = ["errata"]\nfixes = "fixes"\n'
        f'[build]\ncache = "{CACHE}"\n'
        f'[signing]\nmodule_key = "{keys / KEY_FILE}"\nmodule_cert = "{keys / CERT_FILE}"\n'
        f"[packages]\nformats = {json.dumps(list(formats))}\n"
        f'[publish]\nto = "s3://{bucket}/lg"\nendpoint = "{server.endpoint}"\n'
        f'addressing = "path"\nbase_url = "{base_url or f"{server.endpoint}/{bucket}/lg"}"\n'
        f'[[discover]]\nfrom = "apt"\nuname_r = {json.dumps([RUNNING, SIBLING])}\n',
        encoding="utf-8",
    )
    return AptProject(root, config, server, bucket)


class AptHost(AptRoot):
    """The isolated apt root is the host's / for the client (``LIVEGRAFT_ROOT``)."""

    def __init__(self, tmp: Path, project: AptProject, client_path: Path, *, version: str) -> None:
        self.kernel = FakeKernel.make(
            tmp / "kernel", uname_r=RUNNING, uname_v=f"#1 SMP PREEMPT_DYNAMIC Debian {version}"
        )
        sources = project.get("clients/livegraft.sources").decode()
        if "Signed-By: /" in sources:  # a keyring path: put the keyring there, in the root
            keyring = self.kernel.root / "usr/share/keyrings/livegraft-archive.gpg"
            keyring.parent.mkdir(parents=True)
            keyring.write_bytes(project.get("keys/livegraft-archive.gpg"))
            sources = sources.replace("Signed-By: /", f"Signed-By: {self.kernel.root}/")
        super().__init__(self.kernel.root, sources)
        (self.root / "etc/livegraft").mkdir(parents=True, exist_ok=True)
        (self.root / "etc/livegraft/livegraft.conf").write_text(CLIENT_CONF)
        self.client_path = client_path
        self.on_target = True
        self.fake_installed(*HOST_PACKAGES)

    def fake_installed(self, *names: str) -> None:
        """dpkg status entries for packages a real host has (python3, a kernel image)."""
        with (self.root / "var/lib/dpkg/status").open("a") as f:
            for name in names:
                f.write(
                    f"Package: {name}\nStatus: install ok installed\nPriority: optional\n"
                    "Section: misc\nMaintainer: tests <tests@example.invalid>\n"
                    "Architecture: amd64\nVersion: 99\nDescription: on the host already\n\n"
                )

    def install_hook(self) -> None:
        """The hook and its apt.conf.d lines as apt-livegraft installs them, with the root's
        path in place of /usr/libexec (apt runs hooks on this machine, not in the root)."""
        hook = self.root / HOOK
        hook.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "plugins/apt/apt_hook.py", hook)
        hook.chmod(0o755)
        self.point_conf_at_root((REPO / "plugins/apt/20livegraft").read_text())

    def point_conf_at_root(self, text: str) -> None:
        conf = self.root / "etc/apt/apt.conf.d/20livegraft"
        conf.write_text(text.replace("/usr/libexec/", f"{self.root}/usr/libexec/"))

    def env(self) -> dict[str, str]:
        env = {
            "APT_CONFIG": str(self.config), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C", "DEBIAN_FRONTEND": "noninteractive",
            "LIVEGRAFT_CLIENT_PATH": str(self.client_path), **self.kernel.env(),
            "LIVEGRAFT_APT_HOOK": str(self.root / HOOK),
        }  # fmt: skip
        if not self.on_target:
            del env["LIVEGRAFT_ROOT"]
        return env

    def apt(self, *args: str, status: int = 0, cwd: Path | None = None) -> str:
        cp = subprocess.run(
            ["apt-get", "-y", *args], env=self.env(), capture_output=True, text=True,
            timeout=300, check=False, cwd=cwd,
        )  # fmt: skip
        output = cp.stdout + cp.stderr
        assert cp.returncode == status, output
        assert "Traceback" not in output, output
        return output

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        code = (
            "import sys; sys.path.insert(0, sys.argv.pop(1)); "
            "from livegraft.client.cli import main; sys.exit(main())"
        )
        return subprocess.run(
            ["/usr/bin/python3", "-I", "-c", code, str(self.client_path), *args],
            env=self.env(), capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip

    def hook(
        self, *args: str, stdin: str = "", python: tuple[str, ...] = ()
    ) -> subprocess.CompletedProcess[str]:
        argv = [*python, str(self.root / HOOK), *args] if python else [str(self.root / HOOK), *args]
        return subprocess.run(
            argv, input=stdin, env=self.env(), capture_output=True, text=True, timeout=120,
            check=False,
        )  # fmt: skip

    def state(self) -> dict[str, object]:
        path = self.root / "var/lib/livegraft/state.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def commit_with_python_apt(self, name: str) -> subprocess.CompletedProcess[str]:
        """What unattended-upgrades does: python-apt's Cache.commit()."""
        code = (
            "import sys, apt; c = apt.Cache(); c.update(); c.open(); "
            "c[sys.argv[1]].mark_install(); c.commit()"
        )
        return subprocess.run(
            ["/usr/bin/python3", "-c", code, name], env=self.env(), capture_output=True,
            text=True, timeout=300, check=False,
        )  # fmt: skip
