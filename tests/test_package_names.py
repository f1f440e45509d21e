"""Package names and versions as repositories hold them, and the ``[packages]`` config table.

RPM names are checked against RHEL's own: the errata fixture's build matrix (from Red
Hat's OVAL data) pairs each kernel's ``uname -r`` (minus arch) with its kpatch package.
"""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import pytest
from livegraft.pipeline.config import DEFAULT_SOURCE_DATE_EPOCH, load_config
from livegraft.pipeline.errors import InputError
from livegraft.pipeline.kernels.model import KernelBuild
from livegraft.pipeline.package.names import (
    check_deb_name,
    check_rpm_name,
    check_uname_r,
    deb_arch,
    deb_filename,
    deb_name,
    rpm_dependency_version,
    rpm_filename,
    rpm_name,
)
from project import make_project

DEBIAN = KernelBuild(
    uname_r="6.1.0-56-amd64",
    family="deb",
    package_version="6.1.192-2",
    upstream_version="6.1.192",
    flavour="amd64",
    arch="x86_64",
    dist="bookworm",
    source_package="linux",
)


def rhel(uname_r: str) -> KernelBuild:
    return replace(
        DEBIAN,
        uname_r=uname_r,
        family="rpm",
        package_version=uname_r.rsplit(".", 1)[0],
        flavour="default",
        dist="el9",
        source_package="kernel",
    )


def test_rpm_names_are_rhels_for_every_kernel_of_its_oval_data(shared_errata: Path) -> None:
    matrix = shared_errata / "build-matrix" / "rhel-kpatch-matrix-from-oval.csv"
    with matrix.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert rows
    for row in rows:
        uname_r = row["kernel_nvr (uname -r minus arch)"] + ".x86_64"
        assert rpm_name(rhel(uname_r)) == row["kpatch_package"], uname_r


@pytest.mark.parametrize(
    ("uname_r", "expected"),
    [
        ("5.14.0-362.8.1.el9_3.x86_64", "kpatch-patch-5_14_0-362_8_1"),
        ("5.14.0-362.el9.x86_64", "kpatch-patch-5_14_0-362"),
        ("6.5.6-300.fc39.x86_64", "kpatch-patch-6_5_6-300"),
        ("5.14.0-362.8.1.el9_3.x86_64+rt", "kpatch-patch-5_14_0-362_8_1-rt"),
    ],
)
def test_rpm_kernels_drop_dist_tag_and_arch(uname_r: str, expected: str) -> None:
    assert rpm_name(rhel(uname_r)) == expected
    # An RPM kernel's uname -r is a valid dependency version as it stands.
    assert rpm_dependency_version(uname_r) == uname_r


def test_debian_kernels_keep_their_flavour_in_both_formats() -> None:
    assert rpm_name(DEBIAN) == "kpatch-patch-6_1_0-56-amd64"
    assert deb_name(DEBIAN) == "livepatch-6.1.0-56-amd64"
    backport = replace(DEBIAN, uname_r="6.12.117+deb12-cloud-amd64", flavour="cloud-amd64")
    assert rpm_name(backport) == "kpatch-patch-6_12_117_deb12-cloud-amd64"
    assert deb_name(backport) == "livepatch-6.12.117+deb12-cloud-amd64"
    # RPM takes one '-' in a dependency's version: the later ones become '_'.
    assert rpm_dependency_version("6.1.0-56-amd64") == "6.1.0-56_amd64"
    assert rpm_dependency_version("6.12.117+deb12-cloud-amd64") == "6.12.117+deb12-cloud_amd64"
    assert deb_arch(DEBIAN) == "amd64"
    assert deb_filename("livepatch-6.1.0-56-amd64", "3", "amd64") == (
        "livepatch-6.1.0-56-amd64_3_amd64.deb"
    )
    assert rpm_filename("kpatch-patch-5_14_0-362_8_1", "3", "1", "x86_64") == (
        "kpatch-patch-5_14_0-362_8_1-3-1.x86_64.rpm"
    )


@pytest.mark.parametrize(
    "uname_r", ["6.1.0-56/../../etc", "6.1.0-56-amd64/x", "../6.1.0", ".hidden", "6.1 0", ""]
)
def test_a_path_separator_or_odd_character_is_refused_everywhere(uname_r: str) -> None:
    build = replace(DEBIAN, uname_r=uname_r)
    with pytest.raises(InputError, match=r"deb name|uname_r"):
        deb_name(build)
    with pytest.raises(InputError, match=r"rpm name|uname_r"):
        rpm_name(build)
    with pytest.raises(InputError, match="uname_r"):
        check_uname_r(uname_r)


def test_names_a_repository_cannot_hold_are_refused_with_the_rule() -> None:
    # Debian policy: lower case only, no '_' (an RPM kernel's uname -r has one).
    with pytest.raises(InputError, match=r"Debian policy 5\.6\.1.*'livepatch-6\.1\.0-56-AMD64'"):
        deb_name(replace(DEBIAN, uname_r="6.1.0-56-AMD64"))
    with pytest.raises(InputError, match="Debian package name"):
        deb_name(rhel("5.14.0-362.8.1.el9_3.x86_64"))
    for bad in ("kpatch-patch-%{evil}", "kpatch patch", "kpatch/patch", "-x"):
        with pytest.raises(InputError, match="RPM package name"):
            check_rpm_name(bad)
    for bad in ("Livepatch-x", "livepatch_x", "x", "livepatch-x/y"):
        with pytest.raises(InputError, match="Debian package name"):
            check_deb_name(bad)
    with pytest.raises(InputError, match="dpkg has an architecture"):
        deb_arch(replace(DEBIAN, arch="vax"))


def test_packages_table_defaults_and_values(tmp_path: Path) -> None:
    config = load_config(make_project(tmp_path))
    assert config.packages.formats == ()
    assert config.packages.source_date_epoch == DEFAULT_SOURCE_DATE_EPOCH
    (tmp_path / "b").mkdir()
    config = load_config(
        make_project(
            tmp_path / "b",
            '[packages]\nformats = ["rpm", "deb"]\nmaintainer = "Ops <ops@example.org>"\n'
            'vendor = "Example"\nsource_date_epoch = 1700000000\n',
        )
    )
    assert config.packages.formats == ("rpm", "deb")
    assert config.packages.maintainer == "Ops <ops@example.org>"
    assert config.packages.vendor == "Example"
    assert config.packages.source_date_epoch == 1700000000


@pytest.mark.parametrize(
    ("table", "field"),
    [
        ('formats = ["deb", "tgz"]', "packages.formats"),
        ('formats = ["deb", "deb"]', "packages.formats"),
        ('maintainer = "no email"', "packages.maintainer"),
        ('maintainer = "A <a@b>\\nX: y"', "packages.maintainer"),
        ('vendor = ""', "packages.vendor"),
        ("source_date_epoch = -1", "packages.source_date_epoch"),
        ("source_date_epoch = true", "packages.source_date_epoch"),
        ("format = []", "packages.format"),
    ],
)
def test_bad_packages_table_names_its_field(tmp_path: Path, table: str, field: str) -> None:
    config = make_project(tmp_path, f"[packages]\n{table}\n")
    with pytest.raises(InputError) as caught:
        load_config(config)
    assert caught.value.field == field, str(caught.value)
    assert str(caught.value).startswith(f"{config}: {field}: ")
