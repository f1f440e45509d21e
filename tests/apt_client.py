"""An isolated apt for the tests: its own lists, cache and dpkg database under one folder,
driven through APT_CONFIG, never the host's apt configuration."""

from __future__ import annotations

import subprocess
from pathlib import Path

FOLDERS = (
    "etc/apt/apt.conf.d", "etc/apt/preferences.d", "etc/apt/sources.list.d",
    "var/lib/apt/lists/partial", "var/cache/apt/archives/partial", "var/lib/dpkg/info",
    "var/lib/dpkg/updates", "var/log/apt",
)  # fmt: skip


class AptRoot:
    def __init__(self, root: Path, sources: str) -> None:
        """``sources``: the one deb822 source this apt knows (with its Signed-By)."""
        self.root = root
        for folder in FOLDERS:
            (root / folder).mkdir(parents=True, exist_ok=True)
        (root / "var/lib/dpkg/status").touch()
        (root / "etc/apt/sources.list.d/livegraft.sources").write_text(sources)
        self.config = root / "apt.conf"
        self.config.write_text(
            f'Dir "{root}/";\nDir::State::status "{root}/var/lib/dpkg/status";\n'
            'Dir::Bin::Methods "/usr/lib/apt/methods";\n'
            'APT::Architecture "amd64";\nAPT::Architectures { "amd64"; };\n'
            'APT::Sandbox::User "root";\nAcquire::Languages "none";\n'
            f'DPkg::Options {{ "--root={root}"; "--force-script-chrootless";'
            f' "--log={root}/var/log/dpkg.log"; }};\n'
            # What apt-livegraft would ship: fetch the advisory index, checked against
            # the signed Release like every other index.
            "Acquire::IndexTargets::deb::Livegraft-Advisories {\n"
            '  MetaKey "$(COMPONENT)/advisories/Advisories";\n'
            '  ShortDescription "Advisories";\n'
            '  Description "$(RELEASE)/$(COMPONENT) livegraft advisories";\n'
            "};\n"
        )

    def run(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        """``apt-get -y ARGS``; with ok, it must succeed without an ``E:`` line, else fail."""
        cp = subprocess.run(
            ["apt-get", "-y", *args],
            env={
                "APT_CONFIG": str(self.config), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                "LANG": "C", "DEBIAN_FRONTEND": "noninteractive",
            },
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        output = cp.stdout + cp.stderr
        if ok:
            assert cp.returncode == 0 and "\nE: " not in "\n" + output, output
        else:
            assert cp.returncode != 0, output
        return cp

    def forget_lists(self) -> None:
        """apt asks with If-Modified-Since at one-second resolution: a republish within
        the same second would look unchanged."""
        for path in (self.root / "var/lib/apt/lists").iterdir():
            if path.is_file() and path.name != "lock":
                path.unlink()

    def list_file(self, suffix: str) -> Path | None:
        found = list((self.root / "var/lib/apt/lists").glob(f"*{suffix}"))
        return found[0] if found else None

    def version(self, name: str) -> str | None:
        """The installed version of package ``name`` per the dpkg database, or None."""
        status = (self.root / "var/lib/dpkg/status").read_text()
        for stanza in status.split("\n\n"):
            if f"Package: {name}\n" in stanza + "\n" and "Status: install ok installed" in stanza:
                return stanza.split("Version: ", 1)[1].split("\n", 1)[0]
        return None
