"""The livepatch source format: the examples load, and every kind of bad fix is refused
with one line naming the file and the field."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import REPO
from livegraft.pipeline.errors import InputError
from livegraft.pipeline.fixes import combine, load_fixes
from project import add_fix


@pytest.fixture
def fixes_root(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "examples" / "fixes", tmp_path / "fixes")
    return tmp_path / "fixes"


def test_example_fixes_load(fixes_root: Path) -> None:
    fixes = load_fixes(fixes_root)
    assert [f.id for f in fixes] == ["LGSA-SAMPLE-0001", "LGSA-SAMPLE-0002"]
    cmdline, version = fixes
    assert cmdline.sample and cmdline.cves == ("LIVEGRAFT-SAMPLE-0001",)
    assert cmdline.functions[0].name == "cmdline_proc_show"
    assert cmdline.check is not None and cmdline.check.is_file()
    assert version.applies.upstream and version.severity == "moderate"


def test_digest_follows_every_file(fixes_root: Path) -> None:
    before = load_fixes(fixes_root)[0].digest
    src = fixes_root / "LGSA-SAMPLE-0001" / "livepatch.c"
    src.write_text(src.read_text() + "/* edited */\n")
    assert load_fixes(fixes_root)[0].digest != before


def _error(root: Path) -> InputError:
    with pytest.raises(InputError) as info:
        load_fixes(root)
    message = str(info.value)
    assert "\n" not in message
    return info.value


@pytest.mark.parametrize(
    ("edit", "file", "field", "words"),
    [
        ("color = 1\n", "fix.toml", "color", "unknown key"),
        ('severity = "urgent"\n', "fix.toml", "severity", "expected one of"),
        ("cves = []\n", "fix.toml", "cves", "at least one"),
        ('[applies]\nupstream = "newer than 6.1"\n', "fix.toml", "applies.upstream", "OP VERSION"),
        ('[applies]\nupstream = ">= six"\n', "fix.toml", "applies.upstream", ""),
        ('[applies]\nfamilies = ["snap"]\n', "fix.toml", "applies.families", "expected one of"),
        ("[state]\nid = 0\n", "fix.toml", "state.id", "1 to 65535"),
    ],
)
def test_bad_fix_fields(fixes_root: Path, edit: str, file: str, field: str, words: str) -> None:
    toml = fixes_root / "LGSA-SAMPLE-0001" / "fix.toml"
    text = toml.read_text()
    key = edit.split("=")[0].strip()
    if key in ("severity", "cves"):
        text = "\n".join(line for line in text.splitlines() if not line.startswith(key))
        toml.write_text(edit + text)
    elif edit.startswith("["):
        toml.write_text(text + "\n" + edit)
    else:
        toml.write_text(edit + text)
    err = _error(fixes_root)
    assert err.path is not None and err.path.endswith(f"LGSA-SAMPLE-0001/{file}")
    assert err.field == field
    assert words in err.expected


def test_missing_source(fixes_root: Path) -> None:
    (fixes_root / "LGSA-SAMPLE-0002" / "livepatch.c").unlink()
    err = _error(fixes_root)
    assert err.path and err.path.endswith("LGSA-SAMPLE-0002/livepatch.c")
    assert "missing" in err.expected


def test_id_must_match_folder(fixes_root: Path) -> None:
    (fixes_root / "LGSA-SAMPLE-0002").rename(fixes_root / "renamed")
    err = _error(fixes_root)
    assert err.field == "id" and "'renamed'" in err.expected


def test_replacement_must_be_defined(fixes_root: Path) -> None:
    src = fixes_root / "LGSA-SAMPLE-0001" / "livepatch.c"
    src.write_text(src.read_text().replace("livegraft_sample_cmdline_proc_show", "other_name"))
    err = _error(fixes_root)
    assert err.field == "functions[0].replacement"


def test_source_must_not_carry_its_own_module(fixes_root: Path) -> None:
    src = fixes_root / "LGSA-SAMPLE-0001" / "livepatch.c"
    src.write_text(src.read_text() + "module_init(x);\n")
    assert "generates the module" in _error(fixes_root).expected


def test_replacement_symbols_are_unique(fixes_root: Path) -> None:
    folder = add_fix(fixes_root.parent, "LGSA-2", "CVE-1", "cmdline_proc_show")
    toml = folder / "fix.toml"
    toml.write_text(
        toml.read_text().replace("lg_cmdline_proc_show", "livegraft_sample_cmdline_proc_show")
    )
    src = folder / "livepatch.c"
    src.write_text(
        src.read_text().replace("lg_cmdline_proc_show", "livegraft_sample_cmdline_proc_show")
    )
    assert "must be unique" in _error(fixes_root).expected


def test_unknown_supersedes(fixes_root: Path) -> None:
    add_fix(fixes_root.parent, "LGSA-2", "CVE-1", "x", extra='supersedes = ["LGSA-9"]')
    err = _error(fixes_root)
    assert err.field == "supersedes" and "'LGSA-9'" in err.expected


def test_combine_refuses_two_fixes_of_one_function(fixes_root: Path) -> None:
    add_fix(fixes_root.parent, "LGSA-2", "CVE-1", "cmdline_proc_show")
    fixes = load_fixes(fixes_root)
    with pytest.raises(InputError, match="supersedes"):
        combine(fixes)


def test_supersedes_drops_the_older_fix(fixes_root: Path) -> None:
    add_fix(
        fixes_root.parent,
        "LGSA-2",
        "CVE-1",
        "cmdline_proc_show",
        extra='supersedes = ["LGSA-SAMPLE-0001"]',
    )
    chosen = combine(load_fixes(fixes_root))
    assert [f.id for f in chosen] == ["LGSA-2", "LGSA-SAMPLE-0002"]
