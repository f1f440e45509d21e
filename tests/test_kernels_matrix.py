"""The config's kernel matrix: declared builds, discovery rules, and bad input."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kernel_repos import Deb, Srpm, Suite, kernel_rpms, make_apt_root, make_rpm_repo
from livegraft.pipeline.errors import InputError
from livegraft.pipeline.kernels.filters import Filters
from livegraft.pipeline.kernels.matrix import (
    DiscoverRule,
    load_kernels_from_config,
    load_matrix,
    parse_discover,
)
from livegraft.pipeline.kernels.model import PackageRef
from project import make_project

CONFIG = Path("/srv/pipeline/livegraft.toml")


def load(text: str, path: Path = CONFIG) -> tuple[Any, ...]:
    return load_kernels_from_config(tomllib.loads(text), path)


def test_declared_deb_build_derives_the_rest() -> None:
    (b,) = load(
        """
        [[kernels]]
        uname_r = "6.12.117+deb12-cloud-amd64"
        family = "deb"
        package_version = "6.12.117-1~deb12u1"
        dist = "bookworm"
        source_package = "linux-6.12"
        """
    )
    assert (b.uname_r, b.family, b.package_version, b.dist) == (
        "6.12.117+deb12-cloud-amd64",
        "deb",
        "6.12.117-1~deb12u1",
        "bookworm",
    )
    assert (b.upstream_version, b.flavour, b.arch, b.source_package) == (
        "6.12.117",
        "cloud-amd64",
        "x86_64",
        "linux-6.12",
    )
    assert b.headers == (
        PackageRef("linux-headers-6.12.117+deb12-cloud-amd64", "6.12.117-1~deb12u1"),
    )
    assert b.image is None
    assert b.origin == "apt"


def test_declared_build_with_everything_given() -> None:
    (b,) = load(
        """
        [[kernels]]
        uname_r = "6.1.0-56-rt-amd64"
        family = "deb"
        package_version = "6.1.192-2"
        upstream_version = "6.1.192"
        dist = "bookworm"
        flavour = "rt-amd64"
        arch = "x86_64"
        source_package = "linux"
        headers = ["linux-headers-6.1.0-56-rt-amd64=6.1.192-2",
                   "linux-headers-6.1.0-56-common-rt=6.1.192-2",
                   "linux-kbuild-6.1=6.1.192-2"]
        image = "linux-image-6.1.0-56-rt-amd64-unsigned=6.1.192-2"
        origin = "apt"
        """
    )
    assert [h.name for h in b.headers] == [
        "linux-headers-6.1.0-56-rt-amd64",
        "linux-headers-6.1.0-56-common-rt",
        "linux-kbuild-6.1",
    ]
    assert b.image == PackageRef("linux-image-6.1.0-56-rt-amd64-unsigned", "6.1.192-2")


def test_declared_rpm_build() -> None:
    (b,) = load(
        """
        [[kernels]]
        uname_r = "5.14.0-362.8.1.el9_3.x86_64+rt"
        family = "rpm"
        package_version = "5.14.0-362.8.1.el9_3"
        dist = "el9"
        origin = "https://repo.example.invalid/rhel9/"
        image = "kernel-rt-core=5.14.0-362.8.1.el9_3"
        """
    )
    assert (b.upstream_version, b.flavour, b.arch, b.source_package) == (
        "5.14.0",
        "rt",
        "x86_64",
        "kernel",
    )
    assert b.headers == (PackageRef("kernel-rt-devel", "5.14.0-362.8.1.el9_3"),)
    assert b.origin == "https://repo.example.invalid/rhel9/"


def test_rpm_origin_path_is_relative_to_the_config(tmp_path: Path) -> None:
    (b,) = load(
        """
        [[kernels]]
        uname_r = "5.14.0-362.8.1.el9_3.aarch64"
        family = "rpm"
        package_version = "5.14.0-362.8.1.el9_3"
        dist = "el9"
        origin = "repos/el9"
        """,
        tmp_path / "livegraft.toml",
    )
    assert b.origin == (tmp_path / "repos" / "el9").as_uri()
    assert b.arch == "aarch64"


def test_order_and_deduplication() -> None:
    builds = load(
        """
        [[kernels]]
        uname_r = "6.1.0-56-amd64"
        family = "deb"
        package_version = "6.1.192-2"
        dist = "bookworm"
        source_package = "first"

        [[kernels]]
        uname_r = "5.14.0-362.8.1.el9_3.x86_64"
        family = "rpm"
        package_version = "5.14.0-362.8.1.el9_3"
        dist = "el9"
        origin = "file:///srv/el9"

        [[kernels]]
        uname_r = "6.1.0-56-amd64"
        family = "deb"
        package_version = "6.1.192-2"
        dist = "bookworm"
        source_package = "second"

        [[kernels]]
        uname_r = "6.12.57+bpo-amd64"
        family = "deb"
        package_version = "6.12.57-1~bpo12+1"
        dist = "bookworm"

        [[kernels]]
        uname_r = "6.1.0-9-amd64"
        family = "deb"
        package_version = "6.1.27-1"
        dist = "bookworm"

        [[kernels]]
        uname_r = "6.1.0-56-cloud-amd64"
        family = "deb"
        package_version = "6.1.192-2"
        dist = "bookworm"

        [[kernels]]
        uname_r = "4.19.0-27-amd64"
        family = "deb"
        package_version = "4.19.316-1"
        dist = "buster"
        """
    )
    assert [(b.uname_r, b.source_package) for b in builds] == [
        # Within a family by dist name, then dpkg order (6.1.27 < 6.1.192, not string
        # order); one version: by uname_r.
        ("6.1.0-9-amd64", "linux"),
        ("6.1.0-56-amd64", "first"),
        ("6.1.0-56-cloud-amd64", "linux"),
        ("6.12.57+bpo-amd64", "linux"),
        ("4.19.0-27-amd64", "linux"),
        ("5.14.0-362.8.1.el9_3.x86_64", "kernel"),
    ]


BAD = [
    (
        '[[kernels]]\nuname_r = "6.1.0-56-amd64"\nfamily = "deb"\npackage_version = "6.1.192-2"\n'
        'dist = "bookworm"\nflavor = "amd64"',
        "kernels[0].flavor: unknown key (expected one of uname_r, family, package_version, "
        "dist, upstream_version, flavour, arch, source_package, headers, image, origin)",
    ),
    (
        '[[kernels]]\nuname_r = "6.1.0-56-amd64"\nfamily = "deb"\ndist = "bookworm"',
        "kernels[0].package_version: required key is missing",
    ),
    (
        '[[kernels]]\nuname_r = "6.1.0-56-amd64"\nfamily = "dpkg"\npackage_version = "1"\n'
        'dist = "bookworm"',
        "kernels[0].family: one of deb, rpm",
    ),
    (
        '[[kernels]]\nuname_r = "6.1.0-56-amd64"\nfamily = "deb"\npackage_version = "6.1.192-"\n'
        'dist = "bookworm"',
        "kernels[0].package_version: invalid revision in Debian version '6.1.192-'",
    ),
    (
        '[[kernels]]\nuname_r = "6.1.0-56-amd64"\nfamily = "deb"\npackage_version = "linux-2"\n'
        'dist = "bookworm"',
        "kernels[0].package_version: upstream version must start with a digit and use only "
        "A-Za-z0-9.+~-: in Debian version 'linux-2'",
    ),
    (
        '[[kernels]]\nuname_r = "5.14.0-1.el9.x86_64"\nfamily = "rpm"\n'
        'package_version = "5.14.0-1-el9"\ndist = "el9"\norigin = "file:///r"',
        "kernels[0].package_version: invalid version (A-Za-z0-9._+~^ only) in RPM version "
        "'5.14.0-1-el9'",
    ),
    (
        '[[kernels]]\nuname_r = "6.1.0-56-amd64"\nfamily = "deb"\npackage_version = 6\n'
        'dist = "bookworm"',
        "kernels[0].package_version: a non-empty string, not a int",
    ),
    (
        '[[kernels]]\nuname_r = "linux 6.1"\nfamily = "deb"\npackage_version = "6.1.192-2"\n'
        'dist = "bookworm"',
        "kernels[0].uname_r: a kernel release as `uname -r` prints it, not 'linux 6.1'",
    ),
    (
        '[[kernels]]\nuname_r = "6.1.0-amd64"\nfamily = "deb"\npackage_version = "6.1.192-2"\n'
        'dist = "bookworm"',
        "kernels[0].flavour: given explicitly: cannot derive it from uname_r '6.1.0-amd64' "
        "(expected ABI-flavour, such as 6.1.0-56-amd64)",
    ),
    (
        '[[kernels]]\nuname_r = "6.1.0-56-amd64"\nfamily = "deb"\npackage_version = "6.1.192-2"\n'
        'dist = "bookworm"\nupstream_version = "6.1.x"',
        "kernels[0].upstream_version: a kernel.org version such as 6.1.192, not '6.1.x'",
    ),
    (
        '[[kernels]]\nuname_r = "6.1.0-56-amd64"\nfamily = "deb"\npackage_version = "6.1.192-2"\n'
        'dist = "bookworm"\nheaders = ["linux-headers-6.1.0-56-amd64"]',
        "kernels[0].headers[0]: \"name=version\", not 'linux-headers-6.1.0-56-amd64'",
    ),
    (
        '[[kernels]]\nuname_r = "6.1.0-56-amd64"\nfamily = "deb"\npackage_version = "6.1.192-2"\n'
        'dist = "bookworm"\nheaders = "linux-headers-6.1.0-56-amd64=6.1.192-2"',
        'kernels[0].headers: a non-empty list of "name=version" strings',
    ),
    (
        '[[kernels]]\nuname_r = "6.1.0-56-amd64"\nfamily = "deb"\npackage_version = "6.1.192-2"\n'
        'dist = "bookworm"\nimage = "linux-image-6.1.0-56-amd64=:1"',
        "kernels[0].image: epoch is not a number in Debian version ':1'",
    ),
    (
        '[[kernels]]\nuname_r = "5.14.0-1.el9.x86_64"\nfamily = "rpm"\n'
        'package_version = "5.14.0-1.el9"\ndist = "el9"',
        "kernels[0].origin: a repository URL (required for rpm builds)",
    ),
    (
        '[[kernels]]\nuname_r = "5.14.0-1.el9.x86_64"\nfamily = "rpm"\n'
        'package_version = "5.14.0-1.el9"\ndist = "el9"\norigin = "file:///r"\narch = "aarch64"',
        "kernels[0].arch: 'x86_64', as uname_r '5.14.0-1.el9.x86_64' says",
    ),
    (
        '[[kernels]]\nuname_r = "6.1.0-56-amd64"\nfamily = "deb"\npackage_version = "6.1.192-2"\n'
        'dist = "bookworm"\norigin = "ftp://mirror/debian"',
        "kernels[0].origin: an http(s):// or file:// URL or a folder, not 'ftp://mirror/debian'",
    ),
    ('kernels = "6.1.0-56-amd64"', "kernels: an array of tables ([[kernels]])"),
    ("kernels = [1]", "kernels[0]: a table"),
    (
        '[[discover]]\nfrom = "apt"\nflavor = ["amd64"]',
        "discover[0].flavor: unknown key (expected one of from, url, dist, arch, flavour, uname_r)",
    ),
    ('[[discover]]\nfrom = "yum"', 'discover[0].from: "apt" or "rpm"'),
    ("[[discover]]\ndist = []", 'discover[0].from: required key is missing ("apt" or "rpm")'),
    (
        '[[discover]]\nfrom = "rpm"',
        'discover[0].url: a repository URL (required with from = "rpm")',
    ),
    (
        '[[discover]]\nfrom = "apt"\nurl = "file:///srv"',
        'discover[0].url: no url with from = "apt" (apt uses its own sources)',
    ),
    (
        '[[discover]]\nfrom = "apt"\nflavour = "amd64"',
        "discover[0].flavour: a list of non-empty strings",
    ),
    ('[[discover]]\nfrom = "apt"\narch = [""]', "discover[0].arch: a list of non-empty strings"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_input_names_file_and_field(text: str, message: str) -> None:
    with pytest.raises(InputError) as info:
        load(text)
    assert str(info.value) == f"{CONFIG}: {message}"
    assert info.value.exit_status == 2


def test_discovery_waits_for_the_whole_config_to_validate(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[str] = []
    monkeypatch.setattr(DiscoverRule, "run", lambda self: ran.append(self.source) or ())
    with pytest.raises(InputError, match=r"discover\[1\]\.from"):
        load('[[discover]]\nfrom = "apt"\n\n[[discover]]\nfrom = "dnf"')
    assert ran == []


def test_parse_discover_rule() -> None:
    rule = parse_discover(
        {"from": "rpm", "url": "https://x.invalid/el9", "arch": ["x86_64"], "uname_r": ["5.14.*"]},
        "discover[0]",
        CONFIG,
    )
    assert rule == DiscoverRule(
        "rpm", Filters(arch=("x86_64",), uname_r=("5.14.*",)), "https://x.invalid/el9"
    )


# Discovery through the config, against real (small) repositories.


@pytest.fixture(scope="module")
def apt_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    debs = []
    for abi, version in (("6.1.0-55", "6.1.192-1"), ("6.1.0-56", "6.1.192-2")):
        debs.append(Deb(f"linux-headers-{abi}-common", version, "all"))
        debs.append(Deb("linux-kbuild-6.1", version))
        for flavour in ("amd64", "cloud-amd64"):
            debs.append(
                Deb(
                    f"linux-headers-{abi}-{flavour}",
                    version,
                    depends=f"linux-headers-{abi}-common (= {version}), "
                    f"linux-kbuild-6.1 (>= {version})",
                )
            )
    suite = Suite("bookworm-security", "bookworm-security", "oldstable-security", debs)
    return make_apt_root(tmp_path_factory.mktemp("apt"), [suite])


@pytest.fixture(scope="module")
def rpm_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_rpm_repo(
        tmp_path_factory.mktemp("rpm") / "el9",
        [Srpm("kernel", "5.14.0", "362.8.1.el9_3", kernel_rpms("5.14.0-362.8.1.el9_3.x86_64"))],
    )


def test_config_with_declared_and_discovered_builds(
    apt_config: Path, rpm_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APT_CONFIG", str(apt_config))
    config = rpm_repo.parent / "livegraft.toml"
    builds = load(
        """
        [[kernels]]
        uname_r = "6.1.0-56-amd64"
        family = "deb"
        package_version = "6.1.192-2"
        dist = "bookworm"
        source_package = "declared"

        [[discover]]
        from = "apt"
        flavour = ["amd64"]

        [[discover]]
        from = "rpm"
        url = "el9"
        """,
        config,
    )
    assert [(b.uname_r, b.package_version, b.source_package) for b in builds] == [
        ("6.1.0-55-amd64", "6.1.192-1", "linux"),
        # Declared and discovered: the declaration wins, once.
        ("6.1.0-56-amd64", "6.1.192-2", "declared"),
        ("5.14.0-362.8.1.el9_3.x86_64", "5.14.0-362.8.1.el9_3", "kernel"),
    ]
    assert builds[-1].origin == rpm_repo.as_uri()
    assert builds[0].headers[1].name == "linux-headers-6.1.0-55-common"


def test_load_matrix_takes_a_loaded_config(
    apt_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    @dataclass(frozen=True)
    class Loaded:
        path: Path
        kernels: tuple[dict[str, Any], ...]
        discover: tuple[dict[str, Any], ...]

    monkeypatch.setenv("APT_CONFIG", str(apt_config))
    builds = load_matrix(Loaded(CONFIG, (), ({"from": "apt", "uname_r": ["*-56-*"]},)))
    assert [b.uname_r for b in builds] == ["6.1.0-56-amd64", "6.1.0-56-cloud-amd64"]
    with pytest.raises(
        InputError, match=r"^/srv/pipeline/livegraft\.toml: kernels\[0\]\.uname_r: "
    ):
        load_matrix(Loaded(CONFIG, ({"arch": 1},), ()))


def test_cli_reports_bad_kernel_config_in_one_line(tmp_path: Path) -> None:
    config = make_project(tmp_path)
    with config.open("a", encoding="utf-8") as f:
        f.write(
            '\n[[kernels]]\nuname_r = "6.1.0-56-rt-amd64"\nfamily = "deb"\n'
            'package_version = "6.1.192-2"\ndist = "bookworm"\nflavor = "rt-amd64"\n'
        )
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    cp = subprocess.run(
        ["livegraft", "plan", "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert cp.returncode == 2, cp.stderr
    (line,) = cp.stderr.strip().splitlines()
    assert line.startswith(f"livegraft: error: {config}: kernels[4].flavor: unknown key")
    assert cp.stdout == ""
