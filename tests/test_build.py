"""``livegraft build`` for real: kbuild against Debian's own headers packages.

Two real builds (a 6.1 and a 6.12 one) come from the machine's apt sources; their
unpacked trees live in a cache under /tmp shared by every test and every run
(``LIVEGRAFT_TEST_CACHE``), so only the first run downloads. One key, generated once
per session, signs everything, so that builds made in different folders can be
compared byte for byte.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO
from elftools.elf.elffile import ELFFile
from livegraft.pipeline.cli import main
from livegraft.pipeline.kernels.apt_source import discover_apt
from livegraft.pipeline.modinfo import read_modinfo
from livegraft.signing.module_key import CERT_FILE, generate_module_key
from livegraft.signing.module_signature import SIGNATURE_MARKER

CACHE = Path(os.environ.get("LIVEGRAFT_TEST_CACHE", "/tmp/livegraft-cache"))
WANTED = ("6.1.0-56-amd64", "6.12.117+deb12-amd64")
SECRET = "never-print-this-passphrase-9271"


@pytest.fixture(scope="module")
def builds() -> tuple[str, ...]:
    """uname -r of the two builds this machine's apt offers (a 6.1 one, a 6.12 one)."""
    offered = {b.uname_r for b in discover_apt() if b.flavour == "amd64"}
    chosen = [u for u in WANTED if u in offered]
    for series in ("6.1.", "6.12."):
        if not any(u.startswith(series) for u in chosen):
            chosen += sorted(u for u in offered if u.startswith(series))[-1:]
    if not chosen:
        pytest.skip("the machine's apt sources offer no Debian kernel headers")
    return tuple(chosen[:2])


@dataclass
class Project:
    root: Path
    config: Path

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def store(self) -> Path:
        return self.work / "store"

    def artifacts(self) -> list[Path]:
        return sorted(p for p in self.store.glob("[0-9a-f]*") if len(p.name) == 64)


def make_project(
    root: Path,
    builds: tuple[str, ...],
    key: tuple[Path, Path] | None,
    extra: str = "",
) -> Project:
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO / "examples" / "fixes", root / "fixes")
    shutil.copytree(REPO / "examples" / "errata", root / "errata")
    signing = f'[signing]\nmodule_key = "{key[0]}"\nmodule_cert = "{key[1]}"\n' if key else ""
    config = root / "livegraft.toml"
    config.write_text(
        f'name = "test"\nwork_dir = "work"\nerrata = ["errata"]\nfixes = "fixes"\n{extra}\n'
        f'[build]\ncache = "{CACHE}"\n{signing}\n'
        f'[[discover]]\nfrom = "apt"\nuname_r = {json.dumps(list(builds))}\n',
        encoding="utf-8",
    )
    return Project(root, config)


@dataclass
class Run:
    status: int
    out: str
    err: str

    @property
    def cells(self) -> list[dict[str, Any]]:
        value: list[dict[str, Any]] = json.loads(self.out)
        return value


def livegraft(capsys: pytest.CaptureFixture[str], *argv: str) -> Run:
    capsys.readouterr()
    status = main(list(argv))
    captured = capsys.readouterr()
    return Run(status, captured.out, captured.err)


def build_json(capsys: pytest.CaptureFixture[str], project: Project, *more: str) -> Run:
    return livegraft(capsys, "build", "--config", str(project.config), "--json", *more)


@pytest.fixture(scope="module")
def first(
    builds: tuple[str, ...],
    signing_key: tuple[Path, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Project, list[dict[str, Any]]]]:
    """The example plan for the two builds, built once for this module's tests."""
    project = make_project(tmp_path_factory.mktemp("first"), builds, signing_key)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(["build", "--config", str(project.config), "--json"])
    assert status == 0, out.getvalue()
    yield project, json.loads(out.getvalue())


def _verify_signature(ko: Path, cert: Path, tmp: Path) -> subprocess.CompletedProcess[str]:
    """Split the appended PKCS#7 off as the kernel does and check it with openssl."""
    data = ko.read_bytes()
    assert data.endswith(SIGNATURE_MARKER)
    body = data[: -len(SIGNATURE_MARKER)]
    # struct module_signature: algo, hash, id_type, signer_len, key_id_len, pad[3], be32 len
    _, _, id_type, _, _, sig_len = struct.unpack(">BBBBB3xI", body[-12:])
    assert id_type == 2  # PKEY_ID_PKCS7
    (tmp / "sig.p7").write_bytes(body[-12 - sig_len : -12])
    (tmp / "content").write_bytes(body[: -12 - sig_len])
    return subprocess.run(
        ["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", str(tmp / "sig.p7"),
         "-content", str(tmp / "content"), "-certfile", str(cert), "-nointern", "-noverify",
         "-out", "/dev/null"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


def test_example_cells_build_with_their_modinfo(
    first: tuple[Project, list[dict[str, Any]]], builds: tuple[str, ...]
) -> None:
    project, cells = first
    assert sorted(c["uname_r"] for c in cells) == sorted(builds)
    for cell in cells:
        assert set(cell) >= {
            "uname_r", "package_version", "level", "status", "reason", "module", "path",
            "sha256", "artifact",
        }  # fmt: skip
        assert cell["status"] == "built" and cell["reason"] == ""
        ko = Path(cell["path"])
        assert ko.parent == project.store / cell["artifact"]
        assert ko.name == f"{cell['module']}.ko"
        info = read_modinfo(ko)
        assert info["vermagic"][0].split()[0] == cell["uname_r"]
        assert info["livepatch"] == ["Y"]
        assert info["name"] == [cell["module"]]
        assert info["livegraft_build"] == [f"{cell['uname_r']}@{cell['package_version']}"]
        assert info["livegraft_level"] == [str(cell["level"])]
        fixes = info["livegraft_fixes"][0].split(",")
        assert "LGSA-SAMPLE-0001" in fixes
        assert ("LGSA-SAMPLE-0002" in fixes) == cell["uname_r"].startswith("6.1.")
        assert "LIVEGRAFT-SAMPLE-0001" in info["livegraft_cves"][0].split(",")
        recorded = json.loads((ko.parent / "build.json").read_text(encoding="utf-8"))
        assert recorded["sha256"] == cell["sha256"]
        assert recorded["srcversion"] == info["srcversion"][0] != ""
        assert recorded["vermagic"] == info["vermagic"][0]
        assert recorded["fixes"] == fixes and recorded["module"] == cell["module"]
        assert recorded["toolchain"]["compiler"].startswith(
            recorded["toolchain"]["kernel_compiler"].split()[0]
        )
        assert (ko.parent / "build.log").read_text(encoding="utf-8").count("$ make") == 1


def test_modules_are_stripped_and_signed(
    first: tuple[Project, list[dict[str, Any]]], signing_key: tuple[Path, Path], tmp_path: Path
) -> None:
    _, cells = first
    for cell in cells:
        ko = Path(cell["path"])
        with ko.open("rb") as f:
            names = [s.name for s in ELFFile(f).iter_sections()]
        assert ".modinfo" in names and ".gnu.linkonce.this_module" in names
        assert not [n for n in names if n.startswith((".debug", ".rela.debug"))], names
        ok = _verify_signature(ko, signing_key[1], tmp_path)
        assert ok.returncode == 0, ok.stderr
        recorded = json.loads((ko.parent / "build.json").read_text(encoding="utf-8"))
        assert recorded["signer"]["subject"].startswith("CN=livegraft module signing key")
    # Against another certificate the signature does not verify.
    other = tmp_path / "other"
    generate_module_key(other, "other")
    assert _verify_signature(Path(cells[0]["path"]), other / CERT_FILE, tmp_path).returncode != 0


def test_noop_rerun_is_cached(
    first: tuple[Project, list[dict[str, Any]]], capsys: pytest.CaptureFixture[str]
) -> None:
    project, cells = first
    before = {p: p.stat().st_mtime_ns for p in project.store.rglob("*")}
    started = time.monotonic()
    rerun = build_json(capsys, project)
    elapsed = time.monotonic() - started
    assert rerun.status == 0
    assert [c["status"] for c in rerun.cells] == ["cached"] * len(cells)
    assert [c["sha256"] for c in rerun.cells] == [c["sha256"] for c in cells]
    assert {p: p.stat().st_mtime_ns for p in project.store.rglob("*")} == before
    assert elapsed < 5, elapsed  # no make ran (one make alone takes about a second)


def test_rebuild_in_another_folder_is_byte_identical(
    first: tuple[Project, list[dict[str, Any]]],
    builds: tuple[str, ...],
    signing_key: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, cells = first
    again = make_project(tmp_path / "a" / "much" / "deeper" / "folder", builds, signing_key)
    run = build_json(capsys, again)
    assert run.status == 0, run.err
    assert [c["status"] for c in run.cells] == ["built"] * len(cells)
    for mine, theirs in zip(run.cells, cells, strict=True):
        assert mine["artifact"] == theirs["artifact"]
        assert Path(mine["path"]).read_bytes() == Path(theirs["path"]).read_bytes()
        assert (Path(mine["path"]).parent / "build.json").read_bytes() == (
            Path(theirs["path"]).parent / "build.json"
        ).read_bytes()


def test_fix_that_does_not_compile_fails_only_its_cell(
    builds: tuple[str, ...],
    signing_key: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    project = make_project(tmp_path, builds, signing_key)
    broken = project.root / "fixes" / "LGSA-BROKEN-0001"
    broken.mkdir()
    (broken / "fix.toml").write_text(
        'id = "LGSA-BROKEN-0001"\ntitle = "does not compile"\n'
        'cves = ["LIVEGRAFT-SAMPLE-0001"]\nseverity = "low"\n'
        '[[functions]]\nobject = "vmlinux"\nname = "meminfo_proc_show"\n'
        'replacement = "lg_meminfo_proc_show"\n'
        f'[applies]\nuname_r = ["{builds[0]}"]\n',
        encoding="utf-8",
    )
    (broken / "livepatch.c").write_text(
        "int lg_meminfo_proc_show(void *m, void *v)\n{\n\treturn undeclared_thing;\n}\n",
        encoding="utf-8",
    )
    run = build_json(capsys, project)
    assert run.status == 1
    by_build = {c["uname_r"]: c for c in run.cells}
    failed = by_build[builds[0]]
    assert failed["status"] == "failed"
    assert failed["reason"].startswith("fixes/LGSA-BROKEN-0001/livepatch.c:3:")
    assert "error: 'undeclared_thing' undeclared" in failed["reason"]
    assert failed["path"] is None and failed["artifact"] is None
    others = [c for u, c in by_build.items() if u != builds[0]]
    assert others and all(c["status"] == "built" for c in others)
    # Nothing of the failed cell in the store; its log beside it, for a human.
    assert len(project.artifacts()) == len(others)
    assert len(list((project.store / "cells").iterdir())) == len(others)
    log = project.work / "failed" / f"{failed['module']}.log"
    assert "undeclared_thing" in log.read_text(encoding="utf-8")
    # Without --json: a table, and the same exit status.
    plain = livegraft(capsys, "build", "--config", str(project.config))
    assert plain.status == 1 and "failed" in plain.out and "undeclared_thing" in plain.out


def test_shards_together_are_the_full_build_and_merge(
    first: tuple[Project, list[dict[str, Any]]],
    builds: tuple[str, ...],
    signing_key: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, full = first
    one = make_project(tmp_path / "one", builds, signing_key)
    # A shard builds part of a saved plan.
    refused = build_json(capsys, one, "--shard", "1/2")
    assert refused.status == 2 and "run livegraft plan first" in refused.err
    assert livegraft(capsys, "plan", "--config", str(one.config)).status == 0
    # The other machine gets the same project and the plan's work_dir state.
    shutil.copytree(one.root, tmp_path / "two")
    two = Project(tmp_path / "two", tmp_path / "two" / "livegraft.toml")
    first_half = build_json(capsys, one, "--shard", "1/2")
    second_half = build_json(capsys, two, "--shard", "2/2")
    assert first_half.status == second_half.status == 0
    assert len(first_half.cells) + len(second_half.cells) == len(full)
    halves = {c["artifact"] for c in first_half.cells + second_half.cells}
    assert halves == {c["artifact"] for c in full}

    merged = livegraft(capsys, "store", "import", "--config", str(one.config), str(two.work))
    assert merged.status == 0 and "1 artifacts added" in merged.out
    again = livegraft(capsys, "store", "import", "--config", str(one.config), str(two.store))
    assert again.status == 0 and "0 artifacts added" in again.out
    for cell in full:
        mine = one.store / cell["artifact"] / Path(cell["path"]).name
        assert mine.read_bytes() == Path(cell["path"]).read_bytes()
    # After the merge the whole plan is there: a full build builds nothing.
    rerun = build_json(capsys, one)
    assert [c["status"] for c in rerun.cells] == ["cached"] * len(full)

    # A shard whose module differs from ours under the same id does not merge.
    tampered = two.store / second_half.cells[0]["artifact"]
    ko = tampered / Path(second_half.cells[0]["path"]).name
    ko.write_bytes(ko.read_bytes() + b"\0")
    bad = livegraft(capsys, "store", "import", "--config", str(one.config), str(two.work))
    assert bad.status == 1 and "not the sha256" in bad.err


def test_configured_key_missing_is_bad_input(
    builds: tuple[str, ...], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = (tmp_path / "absent.key", tmp_path / "absent.crt")
    project = make_project(tmp_path / "p", builds[:1], missing)
    run = livegraft(capsys, "build", "--config", str(project.config))
    assert run.status == 2
    assert run.err.count("\n") == 1 and "signing.module_key" in run.err
    assert "Traceback" not in run.err and not project.store.exists()


def test_passphrase_never_in_output(
    builds: tuple[str, ...],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key, cert = tmp_path / "enc.key", tmp_path / "enc.crt"
    env = {"PATH": "/usr/bin:/bin", "PW": SECRET}
    subprocess.run(
        ["openssl", "req", "-new", "-x509", "-newkey", "rsa:2048", "-keyout", str(key),
         "-passout", "env:PW", "-subj", "/CN=encrypted test key", "-days", "2", "-out", str(cert)],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    project = make_project(tmp_path / "p", builds[:1], (key, cert))
    monkeypatch.setenv("LIVEGRAFT_MODULE_KEY_PASSPHRASE", SECRET)
    run = livegraft(capsys, "-v", "build", "--config", str(project.config), "--json")
    assert run.status == 0, run.err
    (cell,) = run.cells
    assert _verify_signature(Path(cell["path"]), cert, tmp_path).returncode == 0
    texts = [run.out, run.err, *(p.read_text("utf-8") for p in project.store.rglob("build.*"))]
    assert not [t for t in texts if SECRET in t]

    monkeypatch.setenv("LIVEGRAFT_MODULE_KEY_PASSPHRASE", SECRET + "-wrong")
    wrong = livegraft(capsys, "build", "--config", str(project.config))
    assert wrong.status == 2 and "passphrase" in wrong.err and SECRET not in wrong.err


def test_source_diff_fix_needs_kpatch_build(
    builds: tuple[str, ...],
    signing_key: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if shutil.which("kpatch-build"):
        pytest.skip("kpatch-build is installed here")
    project = make_project(tmp_path, builds[:1], signing_key)
    folder = project.root / "fixes" / "LGSA-DIFF-0001"
    folder.mkdir()
    (folder / "fix.toml").write_text(
        'id = "LGSA-DIFF-0001"\ntitle = "a source diff"\ncves = ["LIVEGRAFT-SAMPLE-0001"]\n'
        'severity = "low"\n',
        encoding="utf-8",
    )
    (folder / "fix.patch").write_text(
        "--- a/fs/proc/cmdline.c\n+++ b/fs/proc/cmdline.c\n@@ -1 +1 @@\n-x\n+y\n",
        encoding="utf-8",
    )
    run = build_json(capsys, project)
    assert run.status == 1
    (cell,) = run.cells
    assert cell["status"] == "failed"
    assert cell["reason"].startswith("kpatch-build is not installed")
    assert project.artifacts() == []


def test_missing_headers_fail_the_cell(
    signing_key: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = make_project(tmp_path, (), signing_key)
    text = project.config.read_text(encoding="utf-8")
    declared = (
        '[[kernels]]\nuname_r = "6.1.0-56-amd64"\nfamily = "deb"\n'
        'package_version = "6.1.192-99"\ndist = "bookworm"\n'
    )
    project.config.write_text(text.split("[[discover]]")[0] + declared, encoding="utf-8")
    run = build_json(capsys, project)
    assert run.status == 1
    (cell,) = run.cells
    assert cell["status"] == "failed"
    assert "linux-headers-6.1.0-56-amd64=6.1.192-99" in cell["reason"]
    assert project.artifacts() == []
