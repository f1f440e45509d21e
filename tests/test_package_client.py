"""The client packages as ``livegraft package`` builds them beside the livepatch packages,
and as ``livegraft index`` publishes them: ``livegraft-client`` (RPM and DEB),
``python3-dnf-plugin-livegraft`` (RPM) and ``apt-livegraft`` (DEB; its own tests are in
test_package_apt_livegraft.py), read back with rpm and dpkg-deb, checked with
``rpm -K``, installed by real dnf from the indexed tree and seen by real apt.

No compiler and no QEMU: the plan's one cell is a stand-in module marked verified
(``verified_cells``); the client's files come from a copy of the source tree
(``client_source``).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import shutil
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from apt_client import AptRoot
from cli_support import Run, livegraft
from client_source import client_source
from livegraft.pipeline.config import SigningSettings, load_config
from livegraft.pipeline.errors import InputError
from livegraft.pipeline.package import advisories, load_records
from livegraft.pipeline.proc import run
from livegraft.signing.gpg import load_archive_signer
from livegraft.signing.module_key import load_module_key
from repo_support import DnfRoot, kill_agents_under
from verified_cells import verify_all, write_config

VERSION = importlib.metadata.version("livegraft")
# EL9's pluginpath, to prove the setting (Debian's is the default).
PLUGIN_DIR = "/usr/lib/python3.9/site-packages/dnf-plugins"
CODE = "/usr/share/livegraft/python/livegraft/client"
CLIENT = "livegraft-client"
PLUGIN = "python3-dnf-plugin-livegraft"
APT_HOOK = "apt-livegraft"
LIVEPATCH_RPM = "kpatch-patch-6_1_0-56-amd64"


@dataclass
class Project:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "livegraft.toml"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def packages(self) -> Path:
        return self.work / "packages"

    @property
    def source(self) -> Path:
        return self.root / "source"

    def package(self) -> Run:
        return livegraft("package", "--config", str(self.config), "--json")

    def copy(self, dest: Path, *, packages: bool = True) -> Project:
        skip = {"gnupg"} | (set() if packages else {"packages"})
        shutil.copytree(self.root, dest, ignore=lambda d, names: skip & set(names))
        return Project(dest)


def clients(result: Run) -> list[dict[str, Any]]:
    return [p for p in result.packages if p["kind"] == "client"]


def client_path(result: Run, kind: str, name: str) -> Path:
    return Path(
        next(p["path"] for p in clients(result) if (p["format"], p["name"]) == (kind, name))
    )


def rpm(*argv: str | Path, home: Path) -> str:
    return run(["rpm", *argv], env={"HOME": str(home)}).stdout


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(folder: Path) -> dict[str, tuple[int, str]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, sha256(p))
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def python_files(source: Path) -> list[str]:
    code = source / "client"
    return sorted(
        f"{CODE}/{p.relative_to(code).as_posix()}"
        for p in code.rglob("*.py")
        if "__pycache__" not in p.parts
    )


@pytest.fixture(scope="module")
def packaged(
    tmp_path_factory: pytest.TempPathFactory, signing_key: tuple[Path, Path]
) -> tuple[Project, Run]:
    project = Project(tmp_path_factory.mktemp("client") / "project")
    project.root.mkdir()
    client_source(project.source)
    write_config(
        project.root,
        signing_key,
        f'formats = ["deb", "rpm"]\nclient_source = "source"\ndnf_plugin_dir = "{PLUGIN_DIR}"',
    )
    key = load_module_key(SigningSettings(*signing_key), project.work, environ={})
    verify_all(project.config, key.signer())
    done = project.package()
    assert done.status == 0, done.out + done.err
    return project, done


def test_client_packages_are_listed_after_the_livepatches(
    packaged: tuple[Project, Run],
) -> None:
    project, done = packaged
    assert [(p["kind"], p["format"], p["status"]) for p in done.packages] == [
        ("livepatch", "deb", "built"),
        ("livepatch", "rpm", "built"),
        ("client", "deb", "built"),
        ("client", "deb", "built"),
        ("client", "rpm", "built"),
        ("client", "rpm", "built"),
    ]
    assert [
        (p["name"], p["version"], p["release"], p["revision"], p["uname_r"], p["level"])
        for p in clients(done)
    ] == [
        (CLIENT, f"{VERSION}-1", "", 1, None, None),
        (APT_HOOK, f"{VERSION}-1", "", 1, None, None),
        (CLIENT, VERSION, "1", 1, None, None),
        (PLUGIN, VERSION, "1", 1, None, None),
    ]
    assert [Path(p["path"]).name for p in clients(done)] == [
        f"{CLIENT}_{VERSION}-1_all.deb",
        f"{APT_HOOK}_{VERSION}-1_all.deb",
        f"{CLIENT}-{VERSION}-1.noarch.rpm",
        f"{PLUGIN}-{VERSION}-1.noarch.rpm",
    ]
    assert all(sha256(Path(p["path"])) == p["sha256"] for p in done.packages)
    # What index reads: client records have no build, and no advisory names them.
    records = load_records(project.work)
    client_records = [r for r in records if r.is_client]
    assert [(r.type, r.name, r.version, r.release) for r in client_records] == [
        ("deb", APT_HOOK, f"{VERSION}-1", ""),
        ("deb", CLIENT, f"{VERSION}-1", ""),
        ("rpm", CLIENT, VERSION, "1"),
        ("rpm", PLUGIN, VERSION, "1"),
    ]
    document = client_records[2].document
    assert set(document) == {
        "format", "kind", "type", "name", "version", "release", "arch", "filename", "path",
        "sha256", "size", "content", "input", "signer", "project_version", "revision",
    }  # fmt: skip
    assert (document["kind"], document["revision"], document["arch"]) == ("client", 1, "noarch")
    assert document["signer"] is not None and client_records[0].document["signer"] is None
    assert all(not r.is_client for a in advisories(records) for r in a.packages)
    # The terminal output names them too.
    shown = livegraft("package", "--config", str(project.config))
    assert shown.status == 0 and f"client: {CLIENT}" in shown.out and PLUGIN in shown.out
    assert f"client: {APT_HOOK}" in shown.out


def test_client_rpm_files_modes_and_ties(packaged: tuple[Project, Run], tmp_path: Path) -> None:
    project, done = packaged
    package = client_path(done, "rpm", CLIENT)
    listed = rpm("-qp", "--nosignature", "--qf",
                 "[%{FILEMODES:perms} %{FILENAMES} -> %{FILELINKTOS}\n]", package,
                 home=tmp_path).splitlines()  # fmt: skip
    expected = [
        "drwxr-xr-x /etc/livegraft -> ",
        "-rwxr-xr-x /usr/bin/livegraftctl -> ",
        "-rw-r--r-- /usr/lib/systemd/system/livegraft.service -> ",
        "lrwxrwxrwx /usr/lib/systemd/system/multi-user.target.wants/livegraft.service"
        " -> ../livegraft.service",
        "drwxr-xr-x /usr/share/livegraft -> ",
        "drwxr-xr-x /usr/share/livegraft/python -> ",
        "drwxr-xr-x /usr/share/livegraft/python/livegraft -> ",
        f"drwxr-xr-x {CODE} -> ",
        *(f"-rw-r--r-- {path} -> " for path in python_files(project.source)),
        "drwx------ /var/lib/livegraft -> ",
    ]
    assert sorted(listed) == sorted(expected)
    # livegraft is a namespace package: no __init__.py of its own.
    assert not any(line.endswith("/livegraft/__init__.py -> ") for line in listed)
    query = "%{NAME}|%{VERSION}|%{RELEASE}|%{ARCH}"
    assert rpm("-qp", "--nosignature", "--qf", query, package, home=tmp_path) == (
        f"{CLIENT}|{VERSION}|1|noarch"
    )
    requires = rpm("-qp", "--nosignature", "--requires", package, home=tmp_path).splitlines()
    assert all(r.startswith("rpmlib(") for r in requires), requires
    recommends = rpm("-qp", "--nosignature", "--recommends", package, home=tmp_path).split()
    assert sorted(recommends) == ["kmod", "python3"]
    assert rpm("-qp", "--nosignature", "--scripts", "--triggers", package, home=tmp_path) == ""
    # The payload's bytes are the source tree's.
    copy = tmp_path / "copy.rpm"
    shutil.copy(package, copy)
    run(["rpm2archive", "--nocompression", copy], cwd=tmp_path, env={"HOME": str(tmp_path)})
    with tarfile.open(tmp_path / "copy.rpm.tar") as tar:
        files = {
            "/" + m.name.removeprefix("./"): f.read()
            for m in tar
            if (f := tar.extractfile(m)) is not None and m.isfile()
        }
    source = project.source / "client"
    assert files == {
        "/usr/bin/livegraftctl": (source / "livegraftctl").read_bytes(),
        "/usr/lib/systemd/system/livegraft.service": (source / "livegraft.service").read_bytes(),
        **{
            p: (source / p.removeprefix(f"{CODE}/")).read_bytes()
            for p in python_files(source.parent)
        },
    }


def test_dnf_plugin_rpm(packaged: tuple[Project, Run], tmp_path: Path) -> None:
    _, done = packaged
    package = client_path(done, "rpm", PLUGIN)
    listed = rpm("-qp", "--nosignature", "--qf",
                 "[%{FILEMODES:perms} %{FILEFLAGS:fflags} %{FILENAMES}\n]", package,
                 home=tmp_path).splitlines()  # fmt: skip
    assert listed == [
        "-rw-r--r-- cn /etc/dnf/plugins/livegraft.conf",
        f"-rw-r--r--  {PLUGIN_DIR}/livegraft.py",
    ]
    requires = rpm("-qp", "--nosignature", "--requires", package, home=tmp_path).splitlines()
    assert [r for r in requires if not r.startswith("rpmlib(")] == [f"{CLIENT} = {VERSION}-1"]
    assert rpm("-qp", "--nosignature", "--qf", "%{ARCH}", package, home=tmp_path) == "noarch"
    assert rpm("-qp", "--nosignature", "--scripts", "--triggers", package, home=tmp_path) == ""


def test_client_rpms_are_signed_by_the_archive_key(
    packaged: tuple[Project, Run], tmp_path: Path
) -> None:
    project, done = packaged
    cfg = load_config(project.config)
    with load_archive_signer(cfg.signing, cfg.work_dir, name=cfg.name) as signer:
        (tmp_path / "key.asc").write_bytes(signer.public_asc())
    db = tmp_path / "db"
    rpm("--dbpath", db, "--initdb", home=tmp_path)
    for name in (CLIENT, PLUGIN):
        package = client_path(done, "rpm", name)
        unknown = run(["rpm", "--dbpath", db, "-K", package], env={"HOME": str(tmp_path)},
                      check=False)  # fmt: skip
        assert unknown.returncode == 1 and "SIGNATURES NOT OK" in unknown.stdout
    rpm("--dbpath", db, "--import", tmp_path / "key.asc", home=tmp_path)
    for name in (CLIENT, PLUGIN):
        package = client_path(done, "rpm", name)
        said = rpm("--dbpath", db, "-K", package, home=tmp_path).strip()
        assert said == f"{package}: digests signatures OK"
        how = rpm("-qp", "--nosignature", "--qf", "%{RSAHEADER:pgpsig}", package, home=tmp_path)
        assert how.startswith("RSA/SHA256, "), how


def test_client_deb_fields_tree_and_install(packaged: tuple[Project, Run], tmp_path: Path) -> None:
    project, done = packaged
    package = client_path(done, "deb", CLIENT)
    fields = run(["dpkg-deb", "--field", package]).stdout
    for line in (
        f"Package: {CLIENT}",
        f"Version: {VERSION}-1",
        "Architecture: all",
        "Depends: python3 (>= 3.9), kmod",
        "Section: admin",
    ):
        assert f"\n{line}\n" in f"\n{fields}", line
    for absent in ("Pre-Depends", "Recommends", "Conflicts", "Breaks", "Enhances"):
        assert f"\n{absent}:" not in f"\n{fields}", absent
    listing = {}
    for line in run(["dpkg-deb", "--contents", package]).stdout.splitlines():
        parts = line.split()
        listing[parts[5].removeprefix(".").rstrip("/") or "/"] = (parts[0], parts[1], parts[6:])
    assert listing["/var/lib/livegraft"][0] == "drwx------"
    assert listing["/usr/bin/livegraftctl"][0] == "-rwxr-xr-x"
    link = "/usr/lib/systemd/system/multi-user.target.wants/livegraft.service"
    assert listing[link][0] == "lrwxrwxrwx" and listing[link][2] == ["->", "../livegraft.service"]
    assert {p for p, v in listing.items() if v[0].startswith("-")} == {
        "/usr/bin/livegraftctl",
        "/usr/lib/systemd/system/livegraft.service",
        *python_files(project.source),
    }
    assert {v[1] for v in listing.values()} == {"root/root"}
    run(["dpkg-deb", "--control", package, tmp_path / "DEBIAN"])
    assert sorted(p.name for p in (tmp_path / "DEBIAN").iterdir()) == ["control", "md5sums"]

    # Into an isolated dpkg root (python3 and kmod are not in it: their check is forced).
    root = tmp_path / "root"
    admin = root / "var/lib/dpkg"
    (admin / "info").mkdir(parents=True)
    (admin / "updates").mkdir()
    (admin / "status").touch()
    run(["dpkg", f"--root={root}", f"--admindir={admin}", "--force-script-chrootless",
         "--force-depends", f"--log={tmp_path / 'dpkg.log'}", "--install", package])  # fmt: skip
    assert stat.S_IMODE((root / "var/lib/livegraft").stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "usr/bin/livegraftctl").stat().st_mode) == 0o755
    assert (root / link.lstrip("/")).readlink() == Path("../livegraft.service")
    assert (root / "etc/livegraft").is_dir()
    assert not (root / "usr/share/livegraft/python/livegraft/__init__.py").exists()


def test_a_rerun_is_cached(packaged: tuple[Project, Run]) -> None:
    project, _ = packaged
    before = snapshot(project.packages)
    ledger = project.work / "client-revisions.json"
    written = (ledger.stat().st_mtime_ns, ledger.read_bytes())
    again = project.package()
    assert again.status == 0, again.out + again.err
    assert [p["status"] for p in clients(again)] == ["cached"] * 4
    assert snapshot(project.packages) == before
    assert (ledger.stat().st_mtime_ns, ledger.read_bytes()) == written


def test_the_same_content_gives_the_same_packages(
    packaged: tuple[Project, Run], tmp_path: Path
) -> None:
    project, done = packaged
    other = project.copy(tmp_path / "p", packages=False)
    again = other.package()
    assert again.status == 0, again.out + again.err
    assert [(p["status"], p["revision"]) for p in clients(again)] == [("built", 1)] * 4
    for name in (CLIENT, APT_HOOK):
        assert client_path(again, "deb", name).read_bytes() == (
            client_path(done, "deb", name).read_bytes()
        ), name
    # The OpenPGP signature carries the time it was made; the header does not.
    header = "%{SHA256HEADER} %{PAYLOADSHA256}"
    for name in (CLIENT, PLUGIN):
        mine, theirs = (
            rpm("-qp", "--nosignature", "--qf", header, client_path(r, "rpm", name), home=tmp_path)
            for r in (done, again)
        )
        assert mine == theirs, name


def test_new_content_gets_a_new_revision(packaged: tuple[Project, Run], tmp_path: Path) -> None:
    project, done = packaged
    other = project.copy(tmp_path / "p")
    names = other.source / "client" / "names.py"
    names.write_text(names.read_text(encoding="utf-8") + "\n# revision 2\n", encoding="utf-8")
    second = other.package()
    assert second.status == 0, second.out + second.err
    assert [p["status"] for p in second.packages if p["kind"] == "livepatch"] == ["cached"] * 2
    assert [(p["name"], p["version"], p["release"], p["status"]) for p in clients(second)] == [
        (CLIENT, f"{VERSION}-2", "", "built"),
        # Its own files did not change either: it depends on exactly the new client.
        (APT_HOOK, f"{VERSION}-2", "", "built"),
        (CLIENT, VERSION, "2", "built"),
        # The plugin's own files did not change, but it requires exactly the new client.
        (PLUGIN, VERSION, "2", "built"),
    ]
    plugin = client_path(second, "rpm", PLUGIN)
    requires = rpm("-qp", "--nosignature", "--requires", plugin, home=tmp_path).splitlines()
    assert f"{CLIENT} = {VERSION}-2" in requires
    # Revision 1 stays: it may be published and held by clients.
    for p in clients(done):
        assert (other.packages / Path(p["path"]).relative_to(project.packages)).is_file()

    # Only the plugin's config changes: only the plugin moves on.
    conf = other.source / "plugins" / "dnf" / "livegraft.conf"
    conf.write_text(conf.read_text(encoding="utf-8") + "# edited\n", encoding="utf-8")
    third = other.package()
    assert third.status == 0, third.out + third.err
    assert [(p["name"], p["release"] or p["version"], p["status"]) for p in clients(third)] == [
        (CLIENT, f"{VERSION}-2", "cached"),
        (APT_HOOK, f"{VERSION}-2", "cached"),
        (CLIENT, "2", "cached"),
        (PLUGIN, "3", "built"),
    ]
    ledger = json.loads((other.work / "client-revisions.json").read_text(encoding="utf-8"))
    assert {k: v["level"] for k, v in ledger["packages"].items()} == {
        f"deb:{CLIENT}:{VERSION}": 2,
        f"deb:{APT_HOOK}:{VERSION}": 2,
        f"rpm:{CLIENT}:{VERSION}": 2,
        f"rpm:{PLUGIN}:{VERSION}": 3,
    }


def test_the_same_version_with_other_content_is_refused(
    packaged: tuple[Project, Run], tmp_path: Path
) -> None:
    project, _ = packaged
    other = project.copy(tmp_path / "p")
    before = snapshot(other.packages)
    # The ledger is lost and the client changed: revision 1 again, with other bytes.
    (other.work / "client-revisions.json").unlink()
    names = other.source / "client" / "names.py"
    names.write_text(names.read_text(encoding="utf-8") + "\n# other\n", encoding="utf-8")
    refused = other.package()
    assert refused.status == 2, refused.out + refused.err
    deb = other.packages / "deb" / f"{CLIENT}_{VERSION}-1_all.deb"
    assert refused.out == ""
    assert refused.err == (
        f"livegraft: error: {deb}: {CLIENT} {VERSION}-1 was already produced with other "
        "content; a package version never changes (new content gets a new revision from "
        f"{other.work / 'client-revisions.json'}: was it lost?)\n"
    )
    assert snapshot(other.packages) == before
    assert not (other.work / "client-revisions.json").exists()


def test_a_missing_launcher_is_refused_and_nothing_written(
    packaged: tuple[Project, Run], tmp_path: Path
) -> None:
    other = packaged[0].copy(tmp_path / "p", packages=False)
    launcher = other.source / "client" / "livegraftctl"
    launcher.unlink()
    refused = other.package()
    assert refused.status == 2, refused.out + refused.err
    assert refused.err == (
        f"livegraft: error: {launcher}: packages.client_source: the launcher "
        "(client/livegraftctl in the livegraft source tree); not found\n"
    )
    assert not other.packages.exists()


def test_no_packaged_cell_no_client_package(packaged: tuple[Project, Run], tmp_path: Path) -> None:
    other = packaged[0].copy(tmp_path / "p", packages=False)
    # DEB only: no RPM client either.
    text = other.config.read_text(encoding="utf-8")
    other.config.write_text(text.replace('["deb", "rpm"]', '["deb"]'), encoding="utf-8")
    deb_only = other.package()
    assert deb_only.status == 0, deb_only.out + deb_only.err
    assert [(p["format"], p["name"]) for p in clients(deb_only)] == [
        ("deb", CLIENT),
        ("deb", APT_HOOK),
    ]
    shutil.rmtree(other.packages)
    # Nothing verified: nothing packaged, not even the client.
    shutil.rmtree(other.work / "verify")
    skipped = other.package()
    assert skipped.status == 0, skipped.out + skipped.err
    assert [(p["kind"], p["status"]) for p in skipped.packages] == [("livepatch", "skipped")]
    assert not other.packages.exists()


def test_index_publishes_them_and_real_clients_install_them(
    packaged: tuple[Project, Run], tmp_path: Path
) -> None:
    other = packaged[0].copy(tmp_path / "p")
    tree = other.work / "repo"
    indexed = livegraft("index", "--config", str(other.config), "--base-url", tree.as_uri(),
                        "--json")  # fmt: skip
    assert indexed.status == 0, indexed.out + indexed.err
    try:
        result = json.loads(indexed.out)
        # The kernel's livepatch, the client and its apt hook.
        assert [(s["suite"], s["packages"]) for s in result["deb"]] == [("bookworm", 3)]
        assert [(r["dist"], r["arch"], r["packages"]) for r in result["rpm"]] == [
            ("bookworm", "x86_64", 3)
        ]
        advisories_index = tree / "deb/dists/bookworm/main/advisories/Advisories"
        assert CLIENT not in advisories_index.read_text(encoding="utf-8")

        dnf = DnfRoot(tmp_path / "dnf", (tree / "clients/livegraft.repo").read_text())
        dnf("install", CLIENT, PLUGIN)
        assert dnf.installed() == [
            f"{CLIENT}-{VERSION}-1.noarch",
            f"{PLUGIN}-{VERSION}-1.noarch",
        ]
        root = dnf.root
        for path in python_files(other.source):
            assert (root / path.lstrip("/")).is_file(), path
        assert stat.S_IMODE((root / "usr/bin/livegraftctl").stat().st_mode) == 0o755
        unit = root / "usr/lib/systemd/system"
        assert (unit / "multi-user.target.wants/livegraft.service").resolve() == (
            unit / "livegraft.service"
        ).resolve()
        assert stat.S_IMODE((root / "var/lib/livegraft").stat().st_mode) == 0o700
        assert (root / "etc/livegraft").is_dir()
        assert (root / PLUGIN_DIR.lstrip("/") / "livegraft.py").read_bytes() == (
            other.source / "plugins/dnf/livegraft.py"
        ).read_bytes()
        assert (root / "etc/dnf/plugins/livegraft.conf").is_file()
        # The kernel's patch is in the same repository, beside them.
        assert LIVEPATCH_RPM in dnf("list", "--available", LIVEPATCH_RPM)

        # The sources file as published: the archive key is inline, nothing to rewrite.
        apt = AptRoot(tmp_path / "apt", (tree / "clients/livegraft.sources").read_text())
        apt.run("update")
        packages_list = apt.list_file("_binary-amd64_Packages")
        assert packages_list is not None
        stanzas = packages_list.read_text().split("\n\n")
        [stanza] = [s for s in stanzas if f"Package: {CLIENT}\n" in s + "\n"]
        assert f"Version: {VERSION}-1\n" in stanza and "Architecture: all\n" in stanza
    finally:
        kill_agents_under(tmp_path)


def test_config_dnf_plugin_dir(tmp_path: Path, signing_key: tuple[Path, Path]) -> None:
    default = write_config(tmp_path, signing_key, "")
    assert load_config(default).packages.dnf_plugin_dir == (
        "/usr/lib/python3/dist-packages/dnf-plugins"
    )
    assert load_config(default).packages.client_source is None
    for bad in ('"relative/dir"', '"/usr/lib/x y"', '"/usr/../etc"', "3", '"/a/"'):
        config = write_config(tmp_path, signing_key, f"dnf_plugin_dir = {bad}")
        with pytest.raises(InputError, match=r"packages\.dnf_plugin_dir: an absolute folder"):
            load_config(config)
