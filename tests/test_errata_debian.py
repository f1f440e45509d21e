"""The Debian security tracker's lists, and distro backport data overriding upstream ranges."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from livegraft.pipeline.errata.debian_tracker import DistroEntry, parse, sniff
from livegraft.pipeline.errata.load import load_errata
from livegraft.pipeline.errors import InputError
from livegraft.pipeline.kernels.model import KernelBuild

CVE_LIST = "CVE-list.quoted-excerpt.txt"


def build(
    dist: str,
    package_version: str,
    upstream: str,
    source: str = "linux",
    family: str = "deb",
) -> KernelBuild:
    return KernelBuild(
        uname_r="6.1.0-99-amd64",
        family="deb" if family == "deb" else "rpm",
        package_version=package_version,
        upstream_version=upstream,
        flavour="amd64",
        arch="x86_64",
        dist=dist,
        source_package=source,
    )


def entries(path: Path) -> dict[tuple[str, str, str], DistroEntry]:
    text = path.read_text()
    kind = sniff(text)
    assert kind is not None
    return {(e.cve, e.suite, e.package): e for e in parse(path, text, kind).entries}


def test_cve_list_with_spaces_or_tab(shared_errata: Path, tmp_path: Path) -> None:
    quoted = shared_errata / "debian" / CVE_LIST
    spaced = entries(quoted)
    tabbed_file = tmp_path / "list"
    tabbed_file.write_text(quoted.read_text().replace("        ", "\t"))
    tabbed = entries(tabbed_file)
    assert {k: (e.state, e.version) for k, e in spaced.items()} == {
        k: (e.state, e.version) for k, e in tabbed.items()
    }
    bookworm = spaced["CVE-2024-38550", "bookworm", "linux"]
    assert (bookworm.state, bookworm.version) == ("fixed", "6.1.94-1")
    assert spaced["CVE-2024-38550", "sid", "linux"].version == "6.8.12-1"
    assert spaced["CVE-2024-38550", "bullseye", "linux"].state == "not-affected"
    assert spaced["CVE-2024-6197", "bookworm", "curl"].state == "not-affected"


def test_dsa_and_dla_lists(shared_errata: Path) -> None:
    dsa = entries(shared_errata / "debian" / "DSA-list.linux-excerpt.txt")
    # Dirty Pipe: Debian shipped the fix in 5.10.92-2, upstream in 5.10.102.
    dirty_pipe = dsa["CVE-2022-0847", "bullseye", "linux"]
    assert (dirty_pipe.version, dirty_pipe.detail) == ("5.10.92-2", "DSA-5092-1")
    dla = entries(shared_errata / "debian" / "DLA-list.linux-excerpt.txt")
    assert dla["CVE-2022-2873", "buster", "linux-5.10"].version == "5.10.162-1~deb10u1"
    assert dla["CVE-2021-3609", "stretch", "linux-4.19"].version == "4.19.194-3~deb9u1"


def test_errata_list_debian_only_kernel_cves(shared_errata: Path) -> None:
    errata = load_errata([shared_errata / "debian"])
    assert errata.get("CVE-2024-38550") is not None
    assert errata.get("CVE-2024-6197") is None  # curl's: not a kernel vulnerability
    # The NOTE line gives the mainline fix (6.10-rc1), nothing about the introduction.
    vuln = errata.get("CVE-2024-38550")
    assert vuln is not None
    assert vuln.status_at("6.10").status == "fixed"
    assert vuln.status_at("6.9").status == "unknown"


UPSTREAM_38550 = {
    # Synthetic upstream ranges for the test: introduced in 6.1, fixed in 6.10-rc1.
    "schema_version": "1.6.0",
    "id": "CVE-2024-38550",
    "modified": "2099-01-01T00:00:00Z",
    "affected": [
        {
            "package": {"ecosystem": "Linux", "name": "Kernel"},
            "ranges": [
                {"type": "ECOSYSTEM", "events": [{"introduced": "6.1"}, {"fixed": "6.10-rc1"}]}
            ],
        }
    ],
}


def test_distro_backport_overrides_upstream(shared_errata: Path, tmp_path: Path) -> None:
    upstream = tmp_path / "CVE-2024-38550.osv.json"
    upstream.write_text(json.dumps(UPSTREAM_38550))
    errata = load_errata([shared_errata / "debian" / CVE_LIST, upstream])
    assert errata.status_at("CVE-2024-38550", "6.1.90").status == "affected"
    cases = [
        # bookworm's linux 6.1.94-1 has the fix although 6.1.90 upstream does not.
        (build("bookworm", "6.1.94-1", "6.1.90"), "fixed"),
        (build("bookworm", "6.1.99-1", "6.1.99"), "fixed"),
        (build("bookworm", "6.1.90-1", "6.1.90"), "affected"),
        (build("bookworm-security", "6.1.94-1", "6.1.90"), "fixed"),
        (build("bullseye", "5.10.1-1", "6.1.90"), "unaffected"),  # <not-affected>
        # No tracker line for trixie, or for another source package: upstream decides.
        (build("trixie", "6.1.94-1", "6.1.90"), "affected"),
        (build("bookworm", "6.12.90-1~deb12u1", "6.12.90", "linux-6.12"), "fixed"),
        (build("bookworm", "6.1.94-1", "6.1.90", family="rpm"), "affected"),
    ]
    for kernel, expected in cases:
        assert errata.status_for_build("CVE-2024-38550", kernel) == expected, kernel
    assert errata.status_for_build("CVE-2099-9999", cases[0][0]) == "unknown"


def test_dirty_pipe_fixed_by_backport(shared_errata: Path) -> None:
    errata = load_errata([shared_errata / "cvelistV5", shared_errata / "debian"])
    assert errata.status_at("CVE-2022-0847", "5.10.92").status == "unknown"  # free text upstream
    fixed = build("bullseye", "5.10.92-2", "5.10.92")
    assert errata.status_for_build("CVE-2022-0847", fixed) == "fixed"
    older = build("bullseye", "5.10.92-1", "5.10.92")
    assert errata.status_for_build("CVE-2022-0847", older) == "affected"


TRACKER = """\
CVE-2099-1000 (Synthetic: example)
\t- linux <unfixed>
\t[bookworm] - linux <no-dsa> (Minor issue)
\t[bullseye] - linux <ignored> (Too intrusive to backport)
\t[buster] - linux <postponed> (Revisit when fixed upstream)
\t[stretch] - linux <undetermined>
\tNOTE: https://git.kernel.org/linus/e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5 (6.12-rc1)
\tTODO: check
CVE-2099-1001
\tRESERVED
CVE-2099-1002 (Synthetic: rejected)
\tREJECTED
\t- linux 6.1.1-1
CVE-2099-1003 [Synthetic: bracketed description]
\t{DSA-9999-1}
\t- linux 6.11.2-1 (bug #1000000)
\t[bookworm] - linux 6.1.112-1
"""

ADVISORIES = """\
[01 Jan 2099] DSA-9999-2 linux - regression update
\t[bookworm] - linux 6.1.113-1
[01 Jan 2099] DSA-9999-1 linux - security update
\t{CVE-2099-1003 CVE-2099-1004}
\t[bookworm] - linux 6.1.115-1
[01 Dec 2098] DSA-9998-1 linux - security update
\t{CVE-2099-1004}
\t[bookworm] - linux 6.1.114-1
\tNOTE: an old advisory
"""


def test_open_states_and_precedence(tmp_path: Path) -> None:
    (tmp_path / "list").write_text(TRACKER)
    (tmp_path / "DSA").mkdir()
    (tmp_path / "DSA" / "list").write_text(ADVISORIES)
    errata = load_errata([tmp_path])
    assert [v.id for v in errata.vulnerabilities()] == [
        "CVE-2099-1000",
        "CVE-2099-1003",
        "CVE-2099-1004",
    ]
    status = errata.status_for_build
    for dist in ("sid", "bookworm", "bullseye", "buster"):
        assert status("CVE-2099-1000", build(dist, "6.1.200-1", "6.1.200")) == "affected"
    # <undetermined> says nothing: upstream (only the 6.12-rc1 fix is known) decides.
    assert status("CVE-2099-1000", build("stretch", "6.1.200-1", "6.1.200")) == "unknown"
    assert status("CVE-2099-1000", build("stretch", "6.12.1-1", "6.12.1")) == "fixed"
    # data/CVE/list (6.1.112-1) wins over the DSA list (6.1.115-1) ...
    assert status("CVE-2099-1003", build("bookworm", "6.1.112-1", "6.1.112")) == "fixed"
    # ... and among advisories the first fixed upload counts.
    assert status("CVE-2099-1004", build("bookworm", "6.1.114-1", "6.1.114")) == "fixed"
    assert status("CVE-2099-1004", build("bookworm", "6.1.113-1", "6.1.113")) == "affected"
    entry = errata.distro_entry("CVE-2099-1004", build("bookworm", "6.1.1-1", "6.1.1"))
    assert entry == (
        DistroEntry(
            "CVE-2099-1004",
            "bookworm",
            "linux",
            "fixed",
            "6.1.114-1",
            "DSA-9998-1",
            str(tmp_path / "DSA" / "list"),
            False,
        )
    )


@pytest.mark.parametrize(
    ("text", "line", "expected"),
    [
        ("CVE-2099-1000 (x)\n\t- linux\n", 2, "expected a package line"),
        ("CVE-2099-1000 (x)\n\t[bookworm] - linux <fixed-later>\n", 2, "expected a known <tag>"),
        ("CVE-2099-1000 (x)\n\t[bookworm] - linux 6.1.94_1\n", 2, "Debian version"),
        (
            "CVE-2099-1000 (x)\n\t- linux 1.0-1\nnot a header\n",
            3,
            "expected a CVE id starting a stanza",
        ),
        ("CVE-2099-1000 (x)\n\t- linux 1.0-1\n\t[bookworm] linux 1.0-1\n", 3, "expected"),
        ("[01 Jan 2099] DSA-1-1 linux - x\n\t{CVE-1 x}\n", 2, "expected CVE ids in braces"),
        ("[01 Jan 2099] DSA-1-1 linux - x\n\t- linux 1.0-1\n", 2, "expected a package line"),
    ],
)
def test_bad_tracker_lines(tmp_path: Path, text: str, line: int, expected: str) -> None:
    path = tmp_path / "list"
    path.write_text(text)
    with pytest.raises(InputError) as caught:
        load_errata([path])
    message = str(caught.value)
    assert message.startswith(f"{path}: line {line}: ") and expected in message
    assert "\n" not in message
