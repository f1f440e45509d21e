"""apt-livegraft, the apt hook's DEB, as ``livegraft package`` builds it beside
livegraft-client whenever DEBs are packaged, and as ``livegraft index`` publishes it: its
files and modes, conffiles, trigger and postinst, its tie to the exact client built in
the same run, reproducible bytes, a new revision when ``plugins/apt`` changes, and real
apt seeing it in the suite and downloading it with the client.

No compiler and no QEMU: the plan's one cell is a stand-in module marked verified
(``verified_cells``); the files come from a copy of the source tree (``client_source``).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
import stat
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest
from apt_client import AptRoot
from cli_support import Run, livegraft
from client_source import client_source
from livegraft.pipeline.config import SigningSettings, load_config
from livegraft.pipeline.errors import WorkError
from livegraft.pipeline.package import load_records
from livegraft.pipeline.package.client_deb import check_client_deb
from livegraft.pipeline.package.client_item import RevisionLedger, client_items, revisions_file
from livegraft.pipeline.proc import run, run_bytes
from livegraft.signing.module_key import load_module_key
from repo_support import http_server, kill_agents_under
from test_package_client import Project, client_path, clients, snapshot
from verified_cells import verify_all, write_config

VERSION = importlib.metadata.version("livegraft")
CLIENT = "livegraft-client"
APT_HOOK = "apt-livegraft"
HOOK = "/usr/libexec/livegraft/apt-hook"
CONF = "/etc/apt/apt.conf.d/20livegraft"
UNATTENDED = "/etc/apt/apt.conf.d/51livegraft-unattended-upgrades"
# Where each installed file comes from in the source tree.
SOURCES = {
    HOOK: "plugins/apt/apt_hook.py",
    CONF: "plugins/apt/20livegraft",
    UNATTENDED: "plugins/apt/51livegraft-unattended-upgrades",
}
# What a Debian host has already and the isolated apt root's dpkg database lacks.
HOST_PACKAGES = ("python3", "python3-apt", "kmod")


@pytest.fixture(scope="module")
def packaged(
    tmp_path_factory: pytest.TempPathFactory, signing_key: tuple[Path, Path]
) -> tuple[Project, Run]:
    project = Project(tmp_path_factory.mktemp("apt-livegraft") / "project")
    project.root.mkdir()
    client_source(project.source)
    write_config(project.root, signing_key, 'formats = ["deb"]\nclient_source = "source"')
    key = load_module_key(SigningSettings(*signing_key), project.work, environ={})
    verify_all(project.config, key.signer())
    done = project.package()
    assert done.status == 0, done.out + done.err
    return project, done


def hook_deb(result: Run) -> Path:
    return client_path(result, "deb", APT_HOOK)


def fields(package: Path) -> dict[str, str]:
    out = run(["dpkg-deb", "--field", package]).stdout
    found: dict[str, str] = {}
    for line in out.splitlines():
        if line[:1] not in (" ", "\t") and ":" in line:
            key, _, value = line.partition(":")
            found[key] = value.strip()
    return found


def test_built_with_the_client_whenever_debs_are(packaged: tuple[Project, Run]) -> None:
    project, done = packaged
    assert [(p["kind"], p["format"], p["status"]) for p in done.packages] == [
        ("livepatch", "deb", "built"),
        ("client", "deb", "built"),
        ("client", "deb", "built"),
    ]
    assert [(p["name"], p["version"], p["release"], p["revision"]) for p in clients(done)] == [
        (CLIENT, f"{VERSION}-1", "", 1),
        (APT_HOOK, f"{VERSION}-1", "", 1),
    ]
    assert hook_deb(done) == project.packages / "deb" / f"{APT_HOOK}_{VERSION}-1_all.deb"
    [record] = [r for r in load_records(project.work) if r.name == APT_HOOK]
    assert (record.type, record.is_client, record.document["revision"]) == ("deb", True, 1)
    # A DEB is signed by the index that names it, not by itself.
    assert record.document["signer"] is None
    assert record.sha256 == hashlib.sha256(hook_deb(done).read_bytes()).hexdigest()


def test_fields_depend_on_exactly_the_client_built(packaged: tuple[Project, Run]) -> None:
    _, done = packaged
    said = fields(hook_deb(done))
    client = fields(client_path(done, "deb", CLIENT))
    assert {k: said[k] for k in ("Package", "Version", "Architecture", "Section")} == {
        "Package": APT_HOOK,
        "Version": f"{VERSION}-1",
        "Architecture": "all",
        "Section": "admin",
    }
    assert said["Depends"] == f"{CLIENT} (= {client['Version']}), python3-apt"
    for absent in ("Pre-Depends", "Recommends", "Conflicts", "Breaks", "Enhances"):
        assert absent not in said, absent


def test_files_modes_and_bytes(packaged: tuple[Project, Run], tmp_path: Path) -> None:
    project, done = packaged
    package = hook_deb(done)
    listing = {}
    for line in run(["dpkg-deb", "--contents", package]).stdout.splitlines():
        parts = line.split()
        listing[parts[5].removeprefix(".").rstrip("/") or "/"] = (parts[0], parts[1])
    assert {p: v[0] for p, v in listing.items() if not v[0].startswith("d")} == {
        HOOK: "-rwxr-xr-x",
        CONF: "-rw-r--r--",
        UNATTENDED: "-rw-r--r--",
    }
    # Every folder is a plain parent of those three.
    parents = {str(p) for path in SOURCES for p in Path(path).parents}
    folders = {p: v[0] for p, v in listing.items() if v[0].startswith("d")}
    assert set(folders) == parents and set(folders.values()) == {"drwxr-xr-x"}
    assert {v[1] for v in listing.values()} == {"root/root"}
    tar = tmp_path / "data.tar"
    tar.write_bytes(run_bytes(["dpkg-deb", "--fsys-tarfile", package], input=b""))
    with tarfile.open(tar) as archive:
        files = {
            m.name.removeprefix("."): f.read()
            for m in archive
            if m.isfile() and (f := archive.extractfile(m)) is not None
        }
    assert files == {path: (project.source / rel).read_bytes() for path, rel in SOURCES.items()}


def test_control_members_conffiles_trigger_and_postinst(
    packaged: tuple[Project, Run], tmp_path: Path
) -> None:
    project, done = packaged
    meta = tmp_path / "DEBIAN"
    run(["dpkg-deb", "--control", hook_deb(done), meta])
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in meta.iterdir()}
    assert modes == {
        "conffiles": 0o644,
        "control": 0o644,
        "md5sums": 0o644,
        "postinst": 0o755,
        "triggers": 0o644,
    }
    assert (meta / "conffiles").read_text() == f"{CONF}\n{UNATTENDED}\n"
    source = project.source / "plugins/apt"
    assert (meta / "triggers").read_bytes() == (source / "triggers").read_bytes()
    assert (meta / "postinst").read_bytes() == (source / "postinst").read_bytes()
    md5sums = sorted((meta / "md5sums").read_text().splitlines())
    assert md5sums == sorted(
        f"{hashlib.md5((project.source / rel).read_bytes()).hexdigest()}  {path.lstrip('/')}"
        for path, rel in SOURCES.items()
    )
    # The livegraft-client DEB keeps exactly control and md5sums: no scripts.
    run(["dpkg-deb", "--control", client_path(done, "deb", CLIENT), tmp_path / "client"])
    assert sorted(p.name for p in (tmp_path / "client").iterdir()) == ["control", "md5sums"]


def test_the_read_back_wants_exactly_the_declared_members(
    packaged: tuple[Project, Run], tmp_path: Path
) -> None:
    project, done = packaged
    cfg = load_config(project.config)
    ledger = RevisionLedger.load(revisions_file(cfg.work_dir))
    client, hook = client_items("deb", cfg.packages, cfg.name, ledger, VERSION)
    package = hook_deb(done)
    check_client_deb(package, hook, tmp_path / "as-built")
    check_client_deb(client_path(done, "deb", CLIENT), client, tmp_path / "client")
    postinst = next(m for m in hook.control if m.name == "postinst")
    others = tuple(m for m in hook.control if m.name != "postinst")
    for i, (wrong, message) in enumerate(
        [
            ((), "control members conffiles, control, md5sums, postinst, triggers, expected "
                 "control, md5sums"),
            ((*others, replace(postinst, mode=0o644)),
             "control member postinst is a file of mode 755, expected a file of mode 644"),
            ((*others, replace(postinst, data=b"#!/bin/sh\n")),
             "control member postinst is not the one given"),
        ]
    ):  # fmt: skip
        with pytest.raises(WorkError, match=re.escape(f"{package}: {message}")):
            check_client_deb(package, replace(hook, control=wrong), tmp_path / str(i))


def test_dpkg_registers_its_conffiles_and_trigger(
    packaged: tuple[Project, Run], tmp_path: Path
) -> None:
    """Into an isolated dpkg root (its dependencies are not there: their check is forced).
    The postinst runs with "configure", where it does nothing; no trigger fires."""
    project, done = packaged
    root = tmp_path / "root"
    admin = root / "var/lib/dpkg"
    (admin / "info").mkdir(parents=True)
    (admin / "updates").mkdir()
    (admin / "status").touch()
    run(["dpkg", f"--root={root}", f"--admindir={admin}", "--force-script-chrootless",
         "--force-depends", f"--log={tmp_path / 'dpkg.log'}", "--install",
         hook_deb(done)])  # fmt: skip
    status = (admin / "status").read_text()
    assert f"Package: {APT_HOOK}\nStatus: install ok installed\n" in status
    registered = status.split("Conffiles:\n", 1)[1].splitlines()[:3]
    assert registered[:2] == [
        f" {path} {hashlib.md5((project.source / SOURCES[path]).read_bytes()).hexdigest()}"
        for path in (CONF, UNATTENDED)
    ]
    assert not registered[2].startswith(" /")
    # Its interest in /usr/lib/livegraft, where livepatch packages put their modules.
    assert (admin / "triggers/File").read_text() == f"/usr/lib/livegraft {APT_HOOK}/noawait\n"
    assert stat.S_IMODE((root / HOOK.lstrip("/")).stat().st_mode) == 0o755


def test_the_same_source_gives_the_same_bytes(
    packaged: tuple[Project, Run], tmp_path: Path
) -> None:
    project, done = packaged
    again = project.copy(tmp_path / "p", packages=False).package()
    assert again.status == 0, again.out + again.err
    assert [(p["name"], p["status"], p["revision"]) for p in clients(again)] == [
        (CLIENT, "built", 1),
        (APT_HOOK, "built", 1),
    ]
    assert hook_deb(again).read_bytes() == hook_deb(done).read_bytes()
    # And a re-run in place builds nothing.
    before = snapshot(project.packages)
    cached = project.package()
    assert [p["status"] for p in clients(cached)] == ["cached", "cached"]
    assert snapshot(project.packages) == before


def test_plugins_apt_changes_give_it_a_new_revision(
    packaged: tuple[Project, Run], tmp_path: Path
) -> None:
    project, done = packaged
    other = project.copy(tmp_path / "p")
    conf = other.source / "plugins/apt/20livegraft"
    conf.write_text(conf.read_text(encoding="utf-8") + "// edited\n", encoding="utf-8")
    second = other.package()
    assert second.status == 0, second.out + second.err
    # Only the hook moves on; the client it depends on is the same.
    assert [(p["name"], p["version"], p["status"]) for p in clients(second)] == [
        (CLIENT, f"{VERSION}-1", "cached"),
        (APT_HOOK, f"{VERSION}-2", "built"),
    ]
    assert fields(hook_deb(second))["Depends"] == f"{CLIENT} (= {VERSION}-1), python3-apt"
    # Revision 1 stays: it may be published and held by hosts.
    assert (other.packages / "deb" / hook_deb(done).name).is_file()

    # The postinst too; and a new client gives a new hook that depends on it.
    postinst = other.source / "plugins/apt/postinst"
    postinst.write_text(postinst.read_text(encoding="utf-8") + "# edited\n", encoding="utf-8")
    names = other.source / "client/names.py"
    names.write_text(names.read_text(encoding="utf-8") + "\n# revision 2\n", encoding="utf-8")
    third = other.package()
    assert third.status == 0, third.out + third.err
    assert [(p["name"], p["version"], p["status"]) for p in clients(third)] == [
        (CLIENT, f"{VERSION}-2", "built"),
        (APT_HOOK, f"{VERSION}-3", "built"),
    ]
    assert fields(hook_deb(third))["Depends"] == f"{CLIENT} (= {VERSION}-2), python3-apt"
    ledger = json.loads((other.work / "client-revisions.json").read_text(encoding="utf-8"))
    assert {k: v["level"] for k, v in ledger["packages"].items()} == {
        f"deb:{CLIENT}:{VERSION}": 2,
        f"deb:{APT_HOOK}:{VERSION}": 3,
    }


@pytest.mark.parametrize(
    ("rel", "what"),
    [
        ("plugins/apt/apt_hook.py", "the apt hook"),
        ("plugins/apt/20livegraft", "the apt hook's apt.conf.d lines"),
        (
            "plugins/apt/51livegraft-unattended-upgrades",
            "the apt hook's unattended-upgrades drop-in",
        ),
        ("plugins/apt/triggers", "the apt hook's dpkg triggers"),
        ("plugins/apt/postinst", "the apt hook's postinst"),
    ],
)
def test_a_missing_file_is_refused_and_nothing_written(
    packaged: tuple[Project, Run], tmp_path: Path, rel: str, what: str
) -> None:
    other = packaged[0].copy(tmp_path / "p", packages=False)
    missing = other.source / rel
    missing.unlink()
    refused = other.package()
    assert refused.status == 2, refused.out + refused.err
    assert refused.err == (
        f"livegraft: error: {missing}: packages.client_source: {what} "
        f"({rel} in the livegraft source tree); not found\n"
    )
    assert not other.packages.exists()


def test_index_publishes_it_and_real_apt_downloads_it(
    packaged: tuple[Project, Run], tmp_path: Path
) -> None:
    other = packaged[0].copy(tmp_path / "p")
    tree = other.work / "repo"
    tree.mkdir()
    deb = hook_deb(packaged[1])
    # Over HTTP: apt reads a file:// archive in place and puts nothing in its cache.
    with http_server(tree) as url:
        try:
            indexed = livegraft("index", "--config", str(other.config), "--base-url", url,
                                "--json")  # fmt: skip
            assert indexed.status == 0, indexed.out + indexed.err
            result = json.loads(indexed.out)
            assert [(s["suite"], s["packages"]) for s in result["deb"]] == [("bookworm", 3)]
            pooled = tree / f"deb/pool/main/a/{APT_HOOK}/{deb.name}"
            assert pooled.read_bytes() == deb.read_bytes()
            advisories = tree / "deb/dists/bookworm/main/advisories/Advisories"
            assert APT_HOOK not in advisories.read_text(encoding="utf-8")

            # The sources file exactly as published.
            apt = AptRoot(tmp_path / "apt", (tree / "clients/livegraft.sources").read_text())
            fake_installed(apt, HOST_PACKAGES)
            apt.run("update")
            listed = apt.list_file("_binary-amd64_Packages")
            assert listed is not None
            [stanza] = [
                s for s in listed.read_text().split("\n\n") if f"Package: {APT_HOOK}\n" in s
            ]
            assert f"Version: {VERSION}-1\n" in stanza and "Architecture: all\n" in stanza
            assert f"Depends: {CLIENT} (= {VERSION}-1), python3-apt\n" in stanza
            apt.run("install", "--download-only", APT_HOOK)
        finally:
            kill_agents_under(tmp_path)
    archives = apt.root / "var/cache/apt/archives"
    assert sorted(p.name for p in archives.glob("*.deb")) == sorted(
        [deb.name, client_path(packaged[1], "deb", CLIENT).name]
    )
    assert (archives / deb.name).read_bytes() == deb.read_bytes()
    # Downloaded only: nothing installed.
    assert apt.version(APT_HOOK) is None and apt.version(CLIENT) is None


def fake_installed(apt: AptRoot, names: tuple[str, ...]) -> None:
    """dpkg status entries for packages a real host has, so apt can resolve the hook."""
    with (apt.root / "var/lib/dpkg/status").open("a") as status:
        for name in names:
            status.write(
                f"Package: {name}\nStatus: install ok installed\nPriority: optional\n"
                "Section: misc\nMaintainer: tests <tests@example.invalid>\n"
                "Architecture: amd64\nVersion: 99\nDescription: on the host already\n\n"
            )
