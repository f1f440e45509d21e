"""Upstream kernel versions: what parses, how they sort, branches and wildcard bounds."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from livegraft.pipeline.errors import InputError
from livegraft.pipeline.versions.kernel import (
    KernelVersion,
    Wildcard,
    at_most,
    below,
    try_parse_bound,
)


def v(text: str) -> KernelVersion:
    return KernelVersion.parse(text)


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("6.1.94", "6.1.94"),
        ("6.9", "6.9"),
        ("6.9-rc3", "6.9-rc3"),
        ("v6.1", "6.1"),
        ("v6.9-rc1", "6.9-rc1"),
        ("6.9.0", "6.9"),  # OSV writes mainline releases as X.Y.0
        ("6.9.0-rc3", "6.9-rc3"),  # uname -r of a release candidate
        ("0", "0"),
        ("3.0", "3.0"),
        ("2.6.32.71", "2.6.32.71"),
        ("2.6", "2.6.0"),
    ],
)
def test_parses(text: str, canonical: str) -> None:
    assert str(v(text)) == canonical


@pytest.mark.parametrize(
    "text",
    [
        "Linux Kernel 5.17 rc6",
        "5.17 rc6",
        "6.1.*",
        "*",
        "",
        "6",
        "6.1.94-1",  # a Debian package version, not an upstream one
        "6.1.0-56-amd64",  # uname -r
        "6.1.94.1",
        "6.9-rc0",
        "0-rc1",
        "6.9rc3",
        "٦.١",  # digits, but not ASCII ones
        "1" * 20 + ".1",
    ],
)
def test_free_text_is_not_a_version(text: str) -> None:
    assert KernelVersion.try_parse(text) is None
    with pytest.raises(InputError) as caught:
        KernelVersion.parse(text, path="record.json", field="versions[0].version")
    message = str(caught.value)
    assert message.startswith("record.json: versions[0].version: expected an upstream kernel")
    assert "\n" not in message


def test_try_parse_refuses_non_strings() -> None:
    assert KernelVersion.try_parse(6.1) is None
    assert KernelVersion.try_parse(None) is None


def test_release_candidates_sort_before_their_release() -> None:
    ordered = ["5.19.17", "6.0", "6.9-rc1", "6.9-rc3", "6.9", "6.9.1", "6.9.12", "6.10-rc1", "6.10"]
    versions = [v(t) for t in ordered]
    assert sorted(reversed(versions)) == versions
    assert v("0") < v("2.6.12") < v("3.0") < v("6.1")
    assert v("6.9.0") == v("6.9") and hash(v("6.9.0")) == hash(v("6.9"))


def test_branches_and_kinds() -> None:
    assert v("6.1.94").branch_name == "6.1"
    assert v("6.9-rc3").branch_name == "6.9"
    assert v("2.6.32.71").branch_name == "2.6.32"
    assert v("6.1").is_mainline and v("6.9-rc2").is_mainline
    assert v("6.1.94").is_stable and not v("6.1.94").is_mainline
    assert v("6.1.94").same_branch(v("6.1")) and not v("6.1.94").same_branch(v("6.10"))


def test_wildcard_bounds() -> None:
    bound = try_parse_bound("6.1.*")
    assert bound == Wildcard((6, 1))
    assert at_most(v("6.1.300"), bound) and at_most(v("6.1-rc1"), bound)
    assert not at_most(v("6.2-rc1"), bound)
    # The schema's "*" is infinity, not a pattern: lessThan 6.1.* covers the 6.1 series.
    assert below(v("6.1.300"), bound)
    assert try_parse_bound("*") == Wildcard(())
    assert below(v("99.0"), Wildcard(()))
    assert at_most(v("6.9"), v("6.9")) and not below(v("6.9"), v("6.9"))
    assert try_parse_bound("6.x") is None


components = st.integers(min_value=0, max_value=40)
versions = st.builds(
    lambda major, minor, patch, rc: KernelVersion.parse(
        f"{major}.{minor}" + (f".{patch}" if patch else "") + (f"-rc{rc}" if rc else "")
    ),
    st.integers(min_value=3, max_value=9),
    components,
    components,
    st.one_of(st.none(), st.integers(min_value=1, max_value=9)),
)


@settings(max_examples=300, deadline=None)
@given(versions, versions)
def test_order_is_total_and_round_trips(a: KernelVersion, b: KernelVersion) -> None:
    assert KernelVersion.parse(str(a)) == a
    assert (a < b) + (a == b) + (a > b) == 1
    if a.same_branch(b) and a.rc is None and b.rc is None:
        assert (a < b) == (a.numbers < b.numbers)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30))
def test_any_text_parses_or_is_none(text: str) -> None:
    parsed = KernelVersion.try_parse(text)
    if parsed is not None:
        assert KernelVersion.parse(str(parsed)) == parsed
    try_parse_bound(text)
