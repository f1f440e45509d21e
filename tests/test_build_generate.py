"""The generated module sources (no compiler needed): what main.c and Kbuild say."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO
from livegraft.pipeline.build.generate import c_string, main_c, module_sources
from livegraft.pipeline.build.kbuild import BuildFailed, check_modinfo
from livegraft.pipeline.build.runner import parse_shard, shard_cells
from livegraft.pipeline.errors import InputError
from livegraft.pipeline.fixes import load_fix, load_fixes
from livegraft.pipeline.kernels.model import KernelBuild
from livegraft.pipeline.plan import Cell

BUILD = KernelBuild(
    uname_r="6.1.0-56-amd64",
    family="deb",
    package_version="6.1.192-2",
    upstream_version="6.1.192",
    flavour="amd64",
    arch="x86_64",
    dist="bookworm",
    source_package="linux",
)


def _fix(root: Path, fix_id: str, body: str, source: str | None = "") -> Path:
    folder = root / fix_id
    folder.mkdir(parents=True)
    (folder / "fix.toml").write_text(
        f'id = "{fix_id}"\ntitle = "t"\ncves = ["CVE-2099-0001"]\nseverity = "low"\n{body}',
        encoding="utf-8",
    )
    if source is not None:
        (folder / "livepatch.c").write_text(source, encoding="utf-8")
    return folder


def _cell(fixes: tuple[object, ...], level: int = 3, build: KernelBuild = BUILD) -> Cell:
    return Cell("c" * 64, build, level, fixes, ())  # type: ignore[arg-type]


def test_example_module_sources() -> None:
    fixes = load_fixes(REPO / "examples" / "fixes")
    cell = _cell(fixes)
    sources = module_sources(cell)
    assert sorted(sources.files) == [
        "Kbuild",
        "fixes/LGSA-SAMPLE-0001/livepatch.c",
        "fixes/LGSA-SAMPLE-0002/livepatch.c",
        "livegraft_main.c",
    ]
    kbuild = sources.files["Kbuild"].decode()
    assert "obj-m := livegraft_6_1_0_56_amd64_l3.o" in kbuild
    assert (
        "livegraft_6_1_0_56_amd64_l3-y := livegraft_main.o "
        "fixes/LGSA-SAMPLE-0001/livepatch.o fixes/LGSA-SAMPLE-0002/livepatch.o"
    ) in kbuild
    main = sources.files["livegraft_main.c"].decode()
    assert ".replace = true," in main
    assert "{ .name = NULL, .funcs = livegraft_funcs_vmlinux }" in main
    assert '.old_name = "cmdline_proc_show", .new_func = livegraft_sample_cmdline_proc_show' in main
    assert 'MODULE_INFO(livepatch, "Y");' in main
    assert 'MODULE_INFO(livegraft_fixes, "LGSA-SAMPLE-0001,LGSA-SAMPLE-0002");' in main
    assert 'MODULE_INFO(livegraft_cves, "LIVEGRAFT-SAMPLE-0001,LIVEGRAFT-SAMPLE-0002");' in main
    assert 'MODULE_INFO(livegraft_level, "3");' in main
    assert 'MODULE_INFO(livegraft_build, "6.1.0-56-amd64@6.1.192-2");' in main
    # The exact-build checks: release, and the Debian build version as a whole word.
    assert "strcmp(uts->release, LIVEGRAFT_UNAME_R)" in main
    assert '#define LIVEGRAFT_BUILD_VERSION " 6.1.192-2 "' in main
    assert "strstr(uts->version, LIVEGRAFT_BUILD_VERSION)" in main
    assert "klp_state" not in main
    # A pure function of the cell: the same bytes every time.
    assert module_sources(cell).files == sources.files


def test_objects_grouped_sympos_and_states(tmp_path: Path) -> None:
    a = _fix(
        tmp_path,
        "FIX-A",
        '[[functions]]\nobject = "ext4"\nname = "ext4_foo"\nreplacement = "lg_ext4_foo"\n'
        "sympos = 2\n"
        '[[functions]]\nobject = "vmlinux"\nname = "do_bar"\nreplacement = "lg_do_bar"\n'
        "[state]\nid = 7\nversion = 2\n",
        "int lg_ext4_foo(void) { return 0; }\nint lg_do_bar(void) { return 0; }\n",
    )
    b = _fix(
        tmp_path,
        "FIX-B",
        '[[functions]]\nobject = "ext4"\nname = "ext4_baz"\nreplacement = "lg_ext4_baz"\n',
        "int lg_ext4_baz(void) { return 0; }\n",
    )
    (b / "helper.h").write_text("#define X 1\n", encoding="utf-8")
    rpm_build = KernelBuild(
        uname_r="5.14.0-362.8.1.el9_3.x86_64",
        family="rpm",
        package_version="5.14.0-362.8.1.el9_3",
        upstream_version="5.14.0",
        flavour="default",
        arch="x86_64",
        dist="el9",
        source_package="kernel",
    )
    cell = _cell((load_fix(a), load_fix(b)), level=1, build=rpm_build)
    main = main_c(cell)
    # vmlinux first, then modules by name; every fix's functions under their object.
    assert main.index("livegraft_funcs_vmlinux[]") < main.index("livegraft_funcs_ext4[]")
    ext4 = main[main.index("livegraft_funcs_ext4[]") :]
    assert '.old_name = "ext4_foo", .new_func = lg_ext4_foo, .old_sympos = 2 }, /* FIX-A */' in ext4
    assert '.old_name = "ext4_baz", .new_func = lg_ext4_baz, .old_sympos = 0 }, /* FIX-B */' in ext4
    assert '{ .name = "ext4", .funcs = livegraft_funcs_ext4 },' in main
    assert "{ .id = 7, .version = 2 }, /* FIX-A */" in main
    assert ".states = livegraft_states," in main
    # RPM builds carry the whole release in uname -r: no uname -v check.
    assert "LIVEGRAFT_BUILD_VERSION" not in main
    assert "fixes/FIX-B/helper.h" in module_sources(cell).files


def test_c_string_escapes() -> None:
    assert c_string('a"b\\c') == '"a\\"b\\\\c"'
    assert c_string("é\n") == '"\\303\\251\\012"'


def test_modinfo_checks() -> None:
    good = {"vermagic": ["6.1.0-56-amd64 SMP preempt mod_unload modversions "], "livepatch": ["Y"]}
    assert check_modinfo({**good, "srcversion": ["ABC"]}, BUILD)[1] == "ABC"
    with pytest.raises(BuildFailed, match="vermagic"):
        check_modinfo({**good, "vermagic": ["6.1.0-55-amd64 SMP preempt"]}, BUILD)
    # A prefix of the release is not the release.
    with pytest.raises(BuildFailed, match="vermagic"):
        check_modinfo({**good, "vermagic": ["6.1.0-56-amd64x SMP"]}, BUILD)
    with pytest.raises(BuildFailed, match="livepatch=Y"):
        check_modinfo({"vermagic": good["vermagic"]}, BUILD)


def test_shards_partition_the_plan() -> None:
    cells = [Cell(f"{i:064x}", BUILD, 1, (), ()) for i in (5, 3, 9, 1, 7)]
    for n in (1, 2, 3, 7):
        parts = [shard_cells(cells, (i, n)) for i in range(1, n + 1)]
        assert sorted(c.id for p in parts for c in p) == sorted(c.id for c in cells)
        # The same members whatever the input order, listed in the input's order.
        flipped = [shard_cells(list(reversed(cells)), (i, n)) for i in range(1, n + 1)]
        assert [{c.id for c in p} for p in parts] == [{c.id for c in p} for p in flipped]
        assert all(list(p) == [c for c in cells if c in p] for p in parts)
    assert parse_shard("2/3") == (2, 3)
    for bad in ("0/2", "3/2", "1", "a/b", "1/0"):
        with pytest.raises(InputError, match="--shard"):
            parse_shard(bad)


def test_fix_as_source_diff(tmp_path: Path) -> None:
    folder = _fix(tmp_path, "FIX-DIFF", "", source=None)
    (folder / "fix.patch").write_text("--- a/x.c\n+++ b/x.c\n", encoding="utf-8")
    fix = load_fix(folder)
    assert fix.diff and fix.functions == () and fix.patch == folder / "fix.patch"
    (folder / "livepatch.c").write_text("int f(void) { return 0; }\n", encoding="utf-8")
    with pytest.raises(InputError, match="not both"):
        load_fix(folder)
