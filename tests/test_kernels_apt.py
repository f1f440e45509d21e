"""Kernel discovery from apt's package lists: an isolated archive, then the machine's own."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from kernel_repos import Deb, Suite, make_apt_root
from livegraft.pipeline.kernels.apt_source import discover_apt
from livegraft.pipeline.kernels.filters import Filters
from livegraft.pipeline.kernels.matrix import ordered
from livegraft.pipeline.kernels.model import KernelBuild


def _abi(
    abi: str,
    version: str,
    flavours: tuple[str, ...],
    *,
    source: str = "linux",
    kbuild: str = "linux-kbuild-6.1",
    kbuild_dep: str | None = None,
    arch: str = "amd64",
    unsigned: bool = True,
    common: bool = True,
) -> list[Deb]:
    """The binary packages one Debian kernel upload ships for one ABI, as Debian lays them out."""
    pool = f"main/l/{source}"
    debs = []
    if common:
        debs += [
            Deb(f"linux-headers-{abi}-common", version, "all", source, pool=pool),
            Deb(f"linux-headers-{abi}-common-rt", version, "all", source, pool=pool),
        ]
    for flavour in flavours:
        uname_r = f"{abi}-{flavour}"
        common_pkg = f"linux-headers-{abi}-common" + ("-rt" if flavour.startswith("rt-") else "")
        depends = (
            f"{common_pkg} (= {version}), {kbuild_dep or f'{kbuild} (>= {version})'}, "
            "linux-compiler-gcc-12-x86"
        )
        debs.append(Deb(f"linux-headers-{uname_r}", version, arch, source, depends, pool))
        if unsigned:
            debs.append(Deb(f"linux-image-{uname_r}-unsigned", version, arch, source, pool=pool))
        debs.append(
            Deb(
                f"linux-image-{uname_r}",
                version,
                arch,
                f"linux-signed-{arch} ({version.replace('-', '+')})",
                pool=f"main/l/linux-signed-{arch}",
            )
        )
    return debs


BOOKWORM = Suite(
    "bookworm",
    codename="bookworm",
    suite="oldstable",
    packages=[
        *_abi("6.1.0-50", "6.1.176-1", ("amd64", "cloud-amd64", "rt-amd64")),
        *_abi("6.1.0-50", "6.1.176-1", ("arm64",), arch="arm64", common=False),
        Deb("linux-kbuild-6.1", "6.1.176-1"),
        Deb("linux-kbuild-6.1", "6.1.176-1", arch="arm64"),
        # Metapackages: they name a build, they are not one.
        Deb(
            "linux-headers-amd64", "6.1.176-1", depends="linux-headers-6.1.0-50-amd64 (= 6.1.176-1)"
        ),
        Deb("linux-image-amd64", "6.1.176-1", source="linux-signed-amd64"),
        Deb("hello", "2.10-3", source="hello", pool="main/h/hello"),
    ],
)

SECURITY = Suite(
    "bookworm-security",
    codename="bookworm-security",
    suite="oldstable-security",
    packages=[
        # The same upload also in the security suite: one build seen in two suites.
        *[p for p in _abi("6.1.0-50", "6.1.176-1", ("amd64",)) if "rt" not in p.name],
        Deb("linux-kbuild-6.1", "6.1.176-1"),
        # 6.1.0-56: its rt image only exists signed.
        *_abi("6.1.0-56", "6.1.192-2", ("amd64",)),
        *_abi("6.1.0-56", "6.1.192-2", ("rt-amd64",), unsigned=False, common=False),
        Deb("linux-kbuild-6.1", "6.1.192-2"),
        # 6.1.0-47: the archive has moved on, its own kbuild is gone; the oldest one that
        # still satisfies its dependency is the nearest.
        *_abi("6.1.0-47", "6.1.170-3", ("amd64",)),
        # The 6.12 backport: its own source package and an exact kbuild per ABI.
        *_abi(
            "6.12.117+deb12",
            "6.12.117-1~deb12u1",
            ("cloud-amd64",),
            source="linux-6.12",
            kbuild_dep="linux-kbuild-6.12.117+deb12",
        ),
        Deb("linux-kbuild-6.12.117+deb12", "6.12.117-1~deb12u1", source="linux-6.12"),
        Deb(
            "linux-headers-6.12-amd64",
            "6.12.117-1~deb12u1",
            source="linux-signed-amd64",
            depends="linux-headers-6.12.117+deb12-amd64 (= 6.12.117-1~deb12u1)",
        ),
    ],
)

EXPECTED = {
    # uname_r: (package_version, flavour, arch, suites)
    "6.1.0-50-amd64": ("6.1.176-1", "amd64", "x86_64", ("bookworm", "bookworm-security")),
    "6.1.0-50-cloud-amd64": ("6.1.176-1", "cloud-amd64", "x86_64", ("bookworm",)),
    "6.1.0-50-rt-amd64": ("6.1.176-1", "rt-amd64", "x86_64", ("bookworm",)),
    "6.1.0-50-arm64": ("6.1.176-1", "arm64", "aarch64", ("bookworm",)),
    "6.1.0-47-amd64": ("6.1.170-3", "amd64", "x86_64", ("bookworm-security",)),
    "6.1.0-56-amd64": ("6.1.192-2", "amd64", "x86_64", ("bookworm-security",)),
    "6.1.0-56-rt-amd64": ("6.1.192-2", "rt-amd64", "x86_64", ("bookworm-security",)),
    "6.12.117+deb12-cloud-amd64": (
        "6.12.117-1~deb12u1",
        "cloud-amd64",
        "x86_64",
        ("bookworm-security",),
    ),
}


@pytest.fixture(scope="module")
def apt_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_apt_root(
        tmp_path_factory.mktemp("apt"),
        [BOOKWORM, SECURITY],
        archs=("amd64", "arm64"),
        installed=[Deb("linux-headers-6.1.0-40-amd64", "6.1.150-1")],
    )


_DISCOVER = """
import dataclasses, json, sys
from livegraft.pipeline.kernels.apt_source import discover_apt
from livegraft.pipeline.kernels.filters import Filters
filters = Filters(**{k: tuple(v) for k, v in json.loads(sys.argv[1]).items()})
print(json.dumps([b.to_json() for b in discover_apt(filters)]))
"""


def discover_isolated(apt_config: Path, filters: Filters | None = None) -> tuple[KernelBuild, ...]:
    """discover_apt() against the test archive, in a process of its own.

    libapt computes the architecture list (arm64 is foreign here) once per process, so a
    discovery from the machine's own lists earlier in this process would hide arm64.
    """
    import dataclasses
    import sys

    cp = subprocess.run(
        [sys.executable, "-c", _DISCOVER, json.dumps(dataclasses.asdict(filters or Filters()))],
        env={**_clean_env(), "APT_CONFIG": str(apt_config)},
        capture_output=True,
        text=True,
        check=True,
    )
    return tuple(KernelBuild.from_json(b) for b in json.loads(cp.stdout))


def _by_uname(builds: tuple[KernelBuild, ...]) -> dict[str, KernelBuild]:
    found = {b.uname_r: b for b in builds}
    assert len(found) == len(builds), "one build per uname_r in this archive"
    return found


def test_lists_are_stored_compressed(apt_config: Path) -> None:
    # Acquire::GzipIndexes, as on this machine: apt keeps the lists compressed (lz4
    # here), and discovery must read them as they are.
    lists = list((apt_config.parent / "var/lib/apt/lists").glob("*Packages*"))
    assert len(lists) == 4
    assert all(p.suffix in (".lz4", ".gz", ".xz", ".zst") for p in lists), lists


def test_discovers_every_build_and_nothing_else(apt_config: Path) -> None:
    # In a process of its own: libapt computes the architecture list (arm64 is foreign
    # here) once per process, so an earlier discovery in this one would hide it.
    cp = subprocess.run(
        ["livegraft", "kernels", "discover", "--json"],
        env={**_clean_env(), "APT_CONFIG": str(apt_config)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert cp.returncode == 0, cp.stderr
    builds = {b["uname_r"]: b for b in json.loads(cp.stdout)}
    assert set(builds) == set(EXPECTED)
    for uname_r, (version, flavour, arch, suites) in EXPECTED.items():
        b = builds[uname_r]
        got = (b["package_version"], b["flavour"], b["arch"], tuple(b["suites"]))
        assert got == (version, flavour, arch, suites)
        assert (b["family"], b["dist"], b["origin"]) == ("deb", "bookworm", "apt")


def test_build_fields_and_packages(apt_config: Path) -> None:
    builds = _by_uname(discover_isolated(apt_config))
    b = builds["6.1.0-56-rt-amd64"]
    assert b.upstream_version == "6.1.192"
    assert b.source_package == "linux"
    assert [(h.name, h.version, h.arch) for h in b.headers] == [
        ("linux-headers-6.1.0-56-rt-amd64", "6.1.192-2", "amd64"),
        ("linux-headers-6.1.0-56-common-rt", "6.1.192-2", "all"),
        ("linux-kbuild-6.1", "6.1.192-2", "amd64"),
    ]
    headers = Deb("linux-headers-6.1.0-56-rt-amd64", "6.1.192-2")
    assert b.headers[0].sha256 == headers.sha256
    assert b.headers[0].filename == headers.filename
    # No unsigned image offered for this one: the signed image is the image.
    assert b.image is not None
    assert (b.image.name, b.image.version) == ("linux-image-6.1.0-56-rt-amd64", "6.1.192-2")
    assert b.image.filename is not None and "linux-signed-amd64" in b.image.filename

    b = builds["6.1.0-56-amd64"]
    assert b.image is not None and b.image.name == "linux-image-6.1.0-56-amd64-unsigned"

    b = builds["6.12.117+deb12-cloud-amd64"]
    assert (b.upstream_version, b.flavour, b.source_package) == (
        "6.12.117",
        "cloud-amd64",
        "linux-6.12",
    )
    assert [h.name for h in b.headers] == [
        "linux-headers-6.12.117+deb12-cloud-amd64",
        "linux-headers-6.12.117+deb12-common",
        "linux-kbuild-6.12.117+deb12",
    ]
    assert b.headers[2].version == "6.12.117-1~deb12u1"

    # Exact kbuild when the same upload offers it, else the nearest that satisfies.
    assert builds["6.1.0-50-amd64"].headers[2].version == "6.1.176-1"
    assert builds["6.1.0-47-amd64"].headers[2].version == "6.1.176-1"
    assert builds["6.1.0-50-arm64"].headers[2].arch == "arm64"


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (Filters(arch=("aarch64",)), {"6.1.0-50-arm64"}),
        (Filters(arch=("arm64",)), {"6.1.0-50-arm64"}),
        (Filters(flavour=("rt-*",)), {"6.1.0-50-rt-amd64", "6.1.0-56-rt-amd64"}),
        (Filters(uname_r=("6.12.*",)), {"6.12.117+deb12-cloud-amd64"}),
        (
            Filters(uname_r=("6.1.0-5*",), flavour=("amd64", "cloud-amd64")),
            {"6.1.0-50-amd64", "6.1.0-50-cloud-amd64", "6.1.0-56-amd64"},
        ),
        (Filters(dist=("trixie",)), set()),
        (Filters(dist=("bookworm",), arch=("x86_64",)), set(EXPECTED) - {"6.1.0-50-arm64"}),
    ],
)
def test_filters(apt_config: Path, filters: Filters, expected: set[str]) -> None:
    assert {b.uname_r for b in discover_isolated(apt_config, filters)} == expected


def test_order_is_by_version(apt_config: Path) -> None:
    builds = ordered(discover_isolated(apt_config, Filters(flavour=("amd64",))))
    assert [b.uname_r for b in builds] == [
        "6.1.0-47-amd64",
        "6.1.0-50-amd64",
        "6.1.0-56-amd64",
    ]


def test_cli_json_from_isolated_root(apt_config: Path) -> None:
    cp = subprocess.run(
        ["livegraft", "kernels", "discover", "--flavour", "rt-*", "--json"],
        env={**_clean_env(), "APT_CONFIG": str(apt_config)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert cp.returncode == 0, cp.stderr
    data = json.loads(cp.stdout)
    assert [d["uname_r"] for d in data] == ["6.1.0-50-rt-amd64", "6.1.0-56-rt-amd64"]
    assert data[1]["headers"][1]["name"] == "linux-headers-6.1.0-56-common-rt"


def test_cli_table(apt_config: Path) -> None:
    cp = subprocess.run(
        ["livegraft", "kernels", "discover", "--uname-r", "6.12.*"],
        env={**_clean_env(), "APT_CONFIG": str(apt_config)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.splitlines()[0].strip() == "1 kernel build"
    assert "6.12.117+deb12-cloud-amd64" in cp.stdout
    assert "linux-6.12" in cp.stdout


def _clean_env() -> dict[str, str]:
    import os
    import sys

    env = {k: v for k, v in os.environ.items() if k != "APT_CONFIG"}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return env


# The machine's own lists: the builds Debian really ships, when apt has lists here.
def _machine_builds(monkeypatch: pytest.MonkeyPatch) -> tuple[KernelBuild, ...]:
    monkeypatch.delenv("APT_CONFIG", raising=False)
    builds = discover_apt()
    if not builds:
        pytest.skip("the machine's apt lists offer no linux-headers packages")
    return builds


def test_machine_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    builds = _machine_builds(monkeypatch)
    # Debian bookworm here: 6.1.0-47/50/53/54/55/56 and 6.12.107/111/113/115/117+deb12,
    # each as amd64, cloud-amd64 and rt-amd64.
    assert len(builds) >= 33
    abis: dict[str, set[str]] = {}
    for b in builds:
        abi = b.uname_r[: -len(b.flavour) - 1]
        abis.setdefault(abi, set()).add(b.flavour)
        assert b.family == "deb" and b.dist == "bookworm"
        assert b.headers[0].name == f"linux-headers-{b.uname_r}"
        assert b.headers[0].version == b.package_version and b.headers[0].sha256
        common = f"linux-headers-{abi}-common" + ("-rt" if b.flavour.startswith("rt-") else "")
        assert b.headers[1].name == common and b.headers[1].version == b.package_version
        assert b.headers[2].name.startswith("linux-kbuild-")
        assert b.image is not None and b.image.name.startswith(f"linux-image-{b.uname_r}")
        assert b.upstream_version == b.package_version.split("-")[0]
        assert b.source_package == ("linux-6.12" if abi.startswith("6.12.") else "linux")
    assert {"6.1.0-56", "6.12.117+deb12"} <= set(abis)
    assert sum(1 for a in abis if a.startswith("6.1.0-")) >= 6
    assert sum(1 for a in abis if a.startswith("6.12.")) >= 5
    for abi, flavours in abis.items():
        if abi.startswith(("6.1.0-", "6.12.")):
            assert {"amd64", "cloud-amd64", "rt-amd64"} <= flavours, abi


def test_machine_build_detail(monkeypatch: pytest.MonkeyPatch) -> None:
    builds = {b.key: b for b in _machine_builds(monkeypatch)}
    b = builds.get("6.1.0-56-amd64@6.1.192-2")
    if b is None:
        pytest.skip("the machine's lists no longer offer 6.1.0-56-amd64 at 6.1.192-2")
    assert b.upstream_version == "6.1.192"
    assert b.suites == ("bookworm-security",)
    assert [h.name for h in b.headers] == [
        "linux-headers-6.1.0-56-amd64",
        "linux-headers-6.1.0-56-common",
        "linux-kbuild-6.1",
    ]
    assert b.image is not None and b.image.name == "linux-image-6.1.0-56-amd64-unsigned"
    assert b.image.filename == (
        "pool/updates/main/l/linux/linux-image-6.1.0-56-amd64-unsigned_6.1.192-2_amd64.deb"
    )
