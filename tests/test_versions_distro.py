"""Distro version order, checked against the distributions' own tools as oracles.

dpkg (``dpkg --compare-versions``) and rpm (its Lua ``rpm.vercmp``, rpmvercmp on
parsed EVRs) decide; our functions must agree on the tools' own edge cases and on
generated versions.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from livegraft.pipeline.errors import InputError
from livegraft.pipeline.versions import debian
from livegraft.pipeline.versions import rpm as rpmver

needs_dpkg = pytest.mark.skipif(shutil.which("dpkg") is None, reason="dpkg not installed")
needs_rpm = pytest.mark.skipif(shutil.which("rpm") is None, reason="rpm not installed")


def dpkg_compare(a: str, b: str) -> int:
    def holds(op: str) -> bool:
        cp = subprocess.run(
            ["dpkg", "--compare-versions", "--", a, op, b], capture_output=True, check=False
        )
        assert cp.returncode in (0, 1), cp.stderr
        return cp.returncode == 0

    return -1 if holds("lt") else 1 if holds("gt") else 0


def dpkg_bad_syntax(version: str) -> bool:
    """True when dpkg calls the version bad (error or warning)."""
    cp = subprocess.run(
        ["dpkg", "--compare-versions", "--", version, "eq", "1"],
        capture_output=True,
        text=True,
        check=False,
    )
    return "bad syntax" in cp.stderr


def rpm_vercmp(pairs: list[tuple[str, str]]) -> list[int]:
    """rpm's answers for many pairs from one rpm process (it takes ~50 ms to start)."""
    # Our versions never hold a quote, backslash or percent sign, so they embed as-is.
    body = " ".join(f'print(tostring(rpm.vercmp("{a}", "{b}")) .. "\\n")' for a, b in pairs)
    out = subprocess.run(
        ["rpm", "--eval", f"%{{lua: {body}}}"], capture_output=True, text=True, check=True
    ).stdout
    return [int(line) for line in out.split()]


# (a, b, expected sign of a - b): dpkg's own test cases (lib/dpkg/t/t-version.c and
# Debian policy's examples) and the forms Debian's kernels take.
DEB_CASES = [
    ("1.0", "1.0", 0),
    ("0:1.0", "1.0", 0),
    ("1:0.1", "2.0", 1),
    ("1:1.0", "1.0-99", 1),
    ("1.0~rc1", "1.0", -1),
    ("1.0~", "1.0", -1),
    ("1.0~~", "1.0~", -1),
    ("1.0~~a", "1.0~~", 1),
    ("1.0~~a", "1.0~", -1),
    ("1.0+", "1.0", 1),
    ("1.0a", "1.0", 1),
    ("1.0a", "1.0+", -1),
    ("1.0.1", "1.0a", 1),
    ("1.0-1", "1.0", 1),
    ("1.0-0", "1.0", 0),
    ("01", "1", 0),
    ("1.001", "1.1", 0),
    ("1.010", "1.9", 1),
    ("2.30-1", "2.3-1", 1),
    ("1.2.3", "1.2.3.0", -1),
    ("1:1:1", "1:1.0", 1),
    ("1.0-1~bpo1", "1.0-1", -1),
    ("6.1.192-2", "6.1.192-1", 1),
    ("6.1.192-1", "6.1.190-1", 1),
    ("6.1.94-1+deb12u1", "6.1.94-1", 1),
    ("6.1.94-1~deb12u1", "6.1.94-1", -1),
    ("6.12.117-1~deb12u1", "6.12.117-1", -1),
    ("6.12.57-1~bpo12+1", "6.12.57-1", -1),
    ("6.12.57-1~bpo12+1", "6.12.57-1~bpo12", 1),
    ("6.12.117-1~deb12u1", "6.12.57-1~bpo12+1", 1),
    ("6.13~rc7-1~exp1", "6.13-1", -1),
    ("5.15.0-91.101", "5.15.0-91.99", 1),
]


@needs_dpkg
@pytest.mark.parametrize(("a", "b", "expected"), DEB_CASES)
def test_debian_compare_matches_dpkg(a: str, b: str, expected: int) -> None:
    assert dpkg_compare(a, b) == expected
    assert debian.compare(a, b) == expected
    assert debian.compare(b, a) == -expected


@needs_dpkg
@pytest.mark.parametrize(
    "bad",
    [
        "1.0-",
        "1:",
        ":1.0",
        "1.0 1",
        "x:1.0",
        "1.0-a_b",
        "1.0-1:2",
        "1.0_1",
        "a1.0",
        "99999999999:1",
        "-1",
    ],
)
def test_debian_rejects_what_dpkg_calls_bad(bad: str) -> None:
    assert dpkg_bad_syntax(bad)
    with pytest.raises(InputError) as info:
        debian.validate(bad, path="kernels.toml", field="kernels[0].package_version")
    assert str(info.value).startswith("kernels.toml: kernels[0].package_version: ")


def test_debian_parse_parts() -> None:
    assert debian.parse("1:6.12.57-1~bpo12+1") == debian.DebVersion(1, "6.12.57", "1~bpo12+1")
    assert debian.parse("1.0-1-2") == debian.DebVersion(0, "1.0-1", "2")
    assert debian.parse("1.0") == debian.DebVersion(0, "1.0", "")
    assert str(debian.parse("0:1.0-1")) == "1.0-1"
    with pytest.raises(InputError):
        debian.parse("")


@pytest.mark.parametrize(
    ("package_version", "upstream"),
    [
        ("6.1.192-2", "6.1.192"),
        ("6.12.117-1~deb12u1", "6.12.117"),
        ("6.12.57-1~bpo12+1", "6.12.57"),
        ("6.1.94-1+deb12u1", "6.1.94"),
        ("1:6.1.192-2", "6.1.192"),
        ("6.13~rc7-1~exp1", "6.13-rc7"),
        ("4.19.0+1-1", "4.19.0"),
        ("5.15.0-91.101", "5.15.0"),
    ],
)
def test_upstream_of(package_version: str, upstream: str) -> None:
    assert debian.upstream_of(package_version) == upstream


@pytest.mark.parametrize("bad", ["foo-1", "6.1.192a-1", "6-1", "6.1.192-", ""])
def test_upstream_of_rejects_non_kernel_versions(bad: str) -> None:
    with pytest.raises(InputError, match=r"kernels\.toml: kernels\[1\]\.package_version: "):
        debian.upstream_of(bad, path="kernels.toml", field="kernels[1].package_version")


def test_debian_sort_key_orders_like_dpkg() -> None:
    versions = ["6.12.117-1~deb12u1", "6.1.192-2", "6.1.192-1", "6.1.94-1+deb12u1", "6.1.94-1"]
    assert sorted(versions, key=debian.sort_key) == [
        "6.1.94-1",
        "6.1.94-1+deb12u1",
        "6.1.192-1",
        "6.1.192-2",
        "6.12.117-1~deb12u1",
    ]


_DEB_UPSTREAM_TAIL = "0123456789abzAZ.+~"
_DEB_REVISION = "0123456789abz.+~"


@st.composite
def deb_versions(draw: st.DrawFn) -> str:
    epoch = draw(st.sampled_from(["", "0:", "1:", "2:", "10:"]))
    revision = draw(st.one_of(st.just(""), st.text(_DEB_REVISION, min_size=1, max_size=6)))
    tail_alphabet = _DEB_UPSTREAM_TAIL + ("-" if revision else "") + (":" if epoch else "")
    upstream = draw(st.sampled_from("0123456789")) + draw(st.text(tail_alphabet, max_size=8))
    return f"{epoch}{upstream}-{revision}" if revision else f"{epoch}{upstream}"


@needs_dpkg
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(deb_versions(), deb_versions())
def test_debian_compare_property(a: str, b: str) -> None:
    debian.validate(a)
    debian.validate(b)
    assert debian.compare(a, b) == dpkg_compare(a, b)


@needs_dpkg
@settings(max_examples=150, deadline=None)
@given(st.text("0123456789ab.+~:-_ ", min_size=1, max_size=10))
def test_debian_validation_agrees_with_dpkg(text: str) -> None:
    try:
        debian.validate(text)
    except InputError:
        accepted = False
    else:
        accepted = True
    # We refuse everything dpkg calls bad syntax, and nothing else, except surrounding
    # blanks, which dpkg strips and a version in a config file should not carry.
    if text != text.strip():
        assert not accepted
    else:
        assert accepted == (not dpkg_bad_syntax(text))


# (a, b, expected): rpm's own cases (tests/rpmvercmp.at) and RHEL kernel versions.
RPM_CASES = [
    ("1.0", "1.0", 0),
    ("1.0", "2.0", -1),
    ("2.0.1", "2.0", 1),
    ("2.0.1a", "2.0.1", 1),
    ("5.5p1", "5.5p2", -1),
    ("5.5p10", "5.5p1", 1),
    ("10xyz", "10.1xyz", -1),
    ("xyz10", "xyz10.1", -1),
    ("xyz.4", "8", -1),
    ("1.0aa", "1.0a", 1),
    ("1.a", "1.1", -1),
    ("a", "1", -1),
    ("1.01", "1.1", 0),
    ("1.010", "1.9", 1),
    ("1.0~rc1", "1.0", -1),
    ("1.0~rc1~git123", "1.0~rc1", -1),
    ("1.0^", "1.0", 1),
    ("1.0^git1", "1.0", 1),
    ("1.0^git1", "1.01", -1),
    ("1.0^20160101", "1.0.1", -1),
    ("1.0~rc1^git1", "1.0~rc1", 1),
    ("1.0^git1~pre", "1.0^git1", -1),
    ("1.0", "1.0-1", -1),
    ("1.0-1", "1.0-1", 0),
    ("0:1.0-1", "1.0-1", 0),
    ("1:1.0", "2.0", 1),
    ("1:1.0-1", "1:1.0-2", -1),
    ("5.14.0-362.8.1.el9_3", "5.14.0-427.13.1.el9_4", -1),
    ("5.14.0-362.8.1.el9_3", "5.14.0-362.8.1.el9_2", 1),
    ("5.14.0-362.el9", "5.14.0-362.8.1.el9_3", -1),
    ("5.14.0-362.8.1.el9_3", "5.14.0-362.8.1.el9", 1),
    ("4.18.0-513.5.1.rt7.307.el8_9", "4.18.0-513.5.1.el8_9", 1),
]


@needs_rpm
def test_rpm_compare_matches_rpm() -> None:
    oracle = rpm_vercmp([(a, b) for a, b, _ in RPM_CASES])
    for (a, b, expected), answer in zip(RPM_CASES, oracle, strict=True):
        assert (answer, rpmver.compare(a, b), rpmver.compare(b, a)) == (
            expected,
            expected,
            -expected,
        ), (a, b)


def test_rpm_vercmp_on_bare_versions() -> None:
    assert rpmver.vercmp("1.0~rc1", "1.0") == -1
    assert rpmver.vercmp("362.8.1.el9_3", "362.8.1.el9") == 1
    assert rpmver.vercmp("1.01", "1.1") == 0


def test_rpm_parse_and_format() -> None:
    assert rpmver.parse_evr("5.14.0-362.8.1.el9_3") == rpmver.EVR(None, "5.14.0", "362.8.1.el9_3")
    assert rpmver.parse_evr("1:2.0") == rpmver.EVR(1, "2.0", None)
    assert str(rpmver.parse_evr("1:2.0-3")) == "1:2.0-3"
    assert rpmver.format_evr(0, "5.14.0", "362.el9") == "5.14.0-362.el9"
    assert rpmver.format_evr("0", "5.14.0", "362.el9") == "5.14.0-362.el9"
    assert rpmver.format_evr(2, "5.14.0", "362.el9") == "2:5.14.0-362.el9"
    assert rpmver.format_evr(None, "5.14.0", None) == "5.14.0"


@pytest.mark.parametrize(
    "bad", ["", "1.0-", "-1", "x:1.0", ":1.0", "1.0 1", "1.0/1", "1:", "1.0-1%2", "1.0-1-2"]
)
def test_rpm_rejects_malformed(bad: str) -> None:
    with pytest.raises(InputError, match=r"^c\.toml: kernels\[0\]\.package_version: "):
        rpmver.validate(bad, path="c.toml", field="kernels[0].package_version")


_RPM_PART = st.text("0123456789abzAZ._+~^", min_size=1, max_size=7)


@st.composite
def rpm_evrs(draw: st.DrawFn) -> str:
    epoch = draw(st.sampled_from(["", "0:", "1:", "3:"]))
    release = draw(st.one_of(st.just(""), _RPM_PART.map(lambda r: f"-{r}")))
    return f"{epoch}{draw(_RPM_PART)}{release}"


@needs_rpm
@settings(max_examples=10, deadline=None)
@given(st.lists(st.tuples(rpm_evrs(), rpm_evrs()), min_size=20, max_size=20))
def test_rpm_compare_property(pairs: list[tuple[str, str]]) -> None:
    # Ten batches of twenty pairs: ~200 comparisons, one rpm process per batch.
    oracle = rpm_vercmp(pairs)
    ours = [rpmver.compare(a, b) for a, b in pairs]
    assert ours == oracle, [p for p, x, y in zip(pairs, ours, oracle, strict=True) if x != y]
