"""The archive signer against the real verifiers: gpgv (what apt runs) and rpm -K."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from livegraft.pipeline.config import SigningSettings, load_config
from livegraft.pipeline.errors import InputError
from livegraft.signing import gpg
from livegraft.signing.gpg import ArchiveSigner, load_archive_signer

PASSPHRASE = "correct horse battery staple"


def agents_for(home: Path) -> list[int]:
    """Live gpg-agent processes serving ``home`` (zombies awaiting their reaper aside)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        serves = str(home).encode() in b" ".join(argv)
        if argv[0].endswith(b"gpg-agent") and state != "Z" and serves:
            found.append(int(proc.name))
    return found


def assert_no_agent(home: Path) -> None:
    deadline = time.monotonic() + 5
    while agents_for(home) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert agents_for(home) == []


def gpgv(keyring: Path, *files: Path) -> tuple[int, str]:
    cp = subprocess.run(
        ["gpgv", "--status-fd", "1", "--keyring", str(keyring), *map(str, files)],
        capture_output=True,
        text=True,
        check=False,
    )
    return cp.returncode, cp.stdout


def good_signers(status: str) -> set[str]:
    return {ln.split()[2] for ln in status.splitlines() if ln.startswith("[GNUPG:] VALIDSIG ")}


@pytest.fixture(scope="module")
def key_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], list[str]]:
    """Two passphrase-protected archive keys, as armored secret-key files."""
    root = tmp_path_factory.mktemp("keys")
    paths, fps = [], []
    for i in (1, 2):
        home = root / f"home{i}"
        fp = gpg.generate_key(home, f"Archive {i}", f"archive{i}@example.invalid", PASSPHRASE)
        path = root / f"archive{i}.asc"
        gpg.export_secret_key(home, fp, path, passphrase=PASSPHRASE)
        assert_no_agent(home)
        paths.append(path)
        fps.append(fp)
    return paths, fps


@pytest.fixture
def example_signer(tmp_path: Path) -> Iterator[ArchiveSigner]:
    signer = load_archive_signer(SigningSettings(), tmp_path / "work", name="Test", environ={})
    yield signer
    signer.close()


def configured(paths: list[Path], work: Path, passphrase: str | None = PASSPHRASE) -> ArchiveSigner:
    env = {} if passphrase is None else {gpg.ENV_PASSPHRASE: passphrase}
    return load_archive_signer(
        SigningSettings(archive_keys=tuple(paths)), work, name="Test", environ=env
    )


def test_example_key_generated_once_private_rsa3072_two_years(tmp_path: Path) -> None:
    work = tmp_path / "work"
    with load_archive_signer(SigningSettings(), work, name="Test", environ={}) as first:
        assert first.generated and len(first.fingerprints) == 1
        assert first.home == work / "gnupg"
        asc = first.public_asc()
    secret = work / "keys" / "archive-secret.asc"
    assert secret.stat().st_mode & 0o777 == 0o600
    assert b"PRIVATE KEY BLOCK" in secret.read_bytes()
    with load_archive_signer(SigningSettings(), work, name="Test", environ={}) as again:
        assert again.fingerprints == first.fingerprints

    scratch = tmp_path / "show"
    scratch.mkdir(mode=0o700)
    cp = subprocess.run(
        ["gpg", "--homedir", str(scratch), "--show-keys", "--with-colons"],
        input=asc,
        capture_output=True,
        check=True,
    )
    pub = next(ln for ln in cp.stdout.decode().splitlines() if ln.startswith("pub:"))
    fields = pub.split(":")
    assert (fields[2], fields[3]) == ("3072", "1")  # RSA 3072
    lifetime = int(fields[6]) - int(fields[5])
    assert 729 * 86400 <= lifetime <= 732 * 86400
    assert_no_agent(work / "gnupg")


def test_exports_verify_signatures_with_gpgv(example_signer: ArchiveSigner, tmp_path: Path) -> None:
    keyring = tmp_path / "archive.gpg"
    keyring.write_bytes(example_signer.public_keyring())
    # The armored export, de-armored by gpg itself, is the same key.
    dearmored = tmp_path / "from-asc.gpg"
    subprocess.run(
        ["gpg", "--dearmor", "--output", str(dearmored)],
        input=example_signer.public_asc(),
        check=True,
        capture_output=True,
    )
    data = tmp_path / "Release"
    data.write_bytes(b"Origin: test\nSuite: stable\n")
    armored = tmp_path / "Release.gpg"
    armored.write_bytes(example_signer.detach_sign(data.read_bytes()))
    assert armored.read_bytes().startswith(b"-----BEGIN PGP SIGNATURE-----")
    binary = tmp_path / "Release.sig"
    binary.write_bytes(example_signer.detach_sign(data.read_bytes(), armor=False))
    assert not binary.read_bytes().startswith(b"-----")
    [fp] = example_signer.fingerprints
    for ring in (keyring, dearmored):
        for sig in (armored, binary):
            rc, status = gpgv(ring, sig, data)
            assert rc == 0 and good_signers(status) == {fp}, status
    # The digest is SHA256 (8), never SHA-1, which apt and RHEL 9 refuse.
    validsig = next(ln for ln in status.splitlines() if "VALIDSIG" in ln).split()
    assert validsig[9] == "8"
    data.write_bytes(b"Origin: tampered\nSuite: stable\n")
    rc, status = gpgv(keyring, armored, data)
    assert rc != 0 and "BADSIG" in status


def test_clearsign_verified_by_gpgv(example_signer: ArchiveSigner, tmp_path: Path) -> None:
    keyring = tmp_path / "archive.gpg"
    keyring.write_bytes(example_signer.public_keyring())
    text = b"Origin: test\nLabel: test\n- a dashed line\n"
    inrelease = tmp_path / "InRelease"
    inrelease.write_bytes(example_signer.clearsign(text))
    assert inrelease.read_bytes().startswith(b"-----BEGIN PGP SIGNED MESSAGE-----")
    cp = subprocess.run(
        ["gpgv", "--keyring", str(keyring), "--output", "-", str(inrelease)],
        capture_output=True,
        check=True,
    )
    assert cp.stdout == text


def test_two_keys_sign_at_once_either_public_key_suffices(
    key_files: tuple[list[Path], list[str]], tmp_path: Path
) -> None:
    paths, fps = key_files
    rings = []
    for i, path in enumerate(paths):
        with configured([path], tmp_path / f"only{i}") as one:
            assert one.fingerprints == (fps[i],)
            ring = tmp_path / f"only{i}.gpg"
            ring.write_bytes(one.public_keyring())
            rings.append(ring)
    with configured(paths, tmp_path / "both") as both:
        assert both.fingerprints == tuple(fps)
        inrelease = tmp_path / "InRelease"
        inrelease.write_bytes(both.clearsign(b"Suite: stable\n"))
        data = tmp_path / "repomd.xml"
        data.write_bytes(b"<repomd/>\n")
        detached = tmp_path / "repomd.xml.asc"
        detached.write_bytes(both.detach_sign(data.read_bytes()))
        both_ring = tmp_path / "both.gpg"
        both_ring.write_bytes(both.public_keyring())
        assert both.public_asc().count(b"BEGIN PGP PUBLIC KEY BLOCK") == 1
        home = both.home
    assert_no_agent(home)
    for files in ((inrelease,), (detached, data)):
        rc, status = gpgv(both_ring, *files)
        assert rc == 0 and good_signers(status) == set(fps)
        for fp, ring in zip(fps, rings, strict=True):
            # gpgv itself exits non-zero for the signature whose key it lacks; apt and
            # librepo accept a file with at least one good signature from a trusted key
            # (asserted with the real clients in test_repo_apt / test_repo_rpm).
            _, status = gpgv(ring, *files)
            assert good_signers(status) == {fp}
            assert "BADSIG" not in status


def test_environment_names_several_keys(
    key_files: tuple[list[Path], list[str]], tmp_path: Path
) -> None:
    paths, fps = key_files
    env = {gpg.ENV_KEY: os.pathsep.join(map(str, paths)), gpg.ENV_PASSPHRASE: PASSPHRASE}
    settings = SigningSettings(archive_keys=(tmp_path / "ignored.asc",))
    with load_archive_signer(settings, tmp_path / "w", name="T", environ=env) as signer:
        assert signer.fingerprints == tuple(fps)
        assert not signer.generated


def test_passphrase_from_file_named_in_config(
    key_files: tuple[list[Path], list[str]], tmp_path: Path
) -> None:
    paths, fps = key_files
    (tmp_path / "pass").write_text(PASSPHRASE + "\n")
    config = tmp_path / "livegraft.toml"
    config.write_text(
        f'errata = []\n[signing]\narchive_keys = ["{paths[1]}"]\n'
        'archive_key_passphrase_file = "pass"\n[[kernels]]\nuname_r = "x"\n'
    )
    settings = load_config(config).signing
    assert settings.archive_keys == (paths[1],)
    assert settings.archive_key_passphrase_file == tmp_path / "pass"
    with load_archive_signer(settings, tmp_path / "w", name="T", environ={}) as signer:
        assert signer.fingerprints == (fps[1],)


@pytest.mark.parametrize("value", ['"one.asc"', '["a.asc", "a.asc"]', "[1]"])
def test_config_refuses_bad_archive_keys(tmp_path: Path, value: str) -> None:
    config = tmp_path / "livegraft.toml"
    config.write_text(f'[signing]\narchive_keys = {value}\n[[kernels]]\nuname_r = "x"\n')
    with pytest.raises(InputError, match=r"signing\.archive_keys: expected a list"):
        load_config(config)


def test_wrong_passphrase_is_one_line_input_error_without_it(
    key_files: tuple[list[Path], list[str]], tmp_path: Path
) -> None:
    paths, fps = key_files
    wrong = "hunter2-not-it"
    with pytest.raises(InputError) as caught:
        configured(paths, tmp_path / "w1", passphrase=wrong)
    message = str(caught.value)
    assert caught.value.exit_status == 2
    assert "\n" not in message and wrong not in message and PASSPHRASE not in message
    assert message == f"<input>: {gpg.ENV_PASSPHRASE}: does not unlock archive key {fps[0]}"
    assert_no_agent(tmp_path / "w1" / "gnupg")

    pass_file = tmp_path / "pass"
    pass_file.write_text(wrong)
    settings = SigningSettings(archive_keys=(paths[1],), archive_key_passphrase_file=pass_file)
    with pytest.raises(InputError) as caught:
        load_archive_signer(settings, tmp_path / "w2", name="T", environ={})
    expected = f"signing.archive_key_passphrase_file: does not unlock archive key {fps[1]}"
    assert str(caught.value) == f"{pass_file}: {expected}"

    with pytest.raises(InputError, match="is protected: expected a passphrase") as caught:
        configured(paths[:1], tmp_path / "w3", passphrase=None)
    assert str(paths[0]) in str(caught.value)


def test_refuses_public_key_and_missing_file(example_signer: ArchiveSigner, tmp_path: Path) -> None:
    public = tmp_path / "public.asc"
    public.write_bytes(example_signer.public_asc())
    with pytest.raises(InputError, match="found only public keys"):
        configured([public], tmp_path / "w1", passphrase=None)
    with pytest.raises(InputError, match="archive key file not found"):
        configured([tmp_path / "absent.asc"], tmp_path / "w2", passphrase=None)


def test_close_leaves_no_agent_and_no_passphrase_file(
    key_files: tuple[list[Path], list[str]], tmp_path: Path
) -> None:
    paths, _ = key_files
    signer = configured(paths, tmp_path / "w")
    signer.clearsign(b"x\n")
    macros = signer.rpm_macros()
    extra = next(m for m in macros if m.startswith("_gpg_sign_cmd_extra_args "))
    pass_file = Path(extra.split("--passphrase-file ", 1)[1])
    assert pass_file.read_text() == PASSPHRASE
    assert pass_file.stat().st_mode & 0o777 == 0o600
    assert PASSPHRASE not in " ".join(macros)
    assert agents_for(signer.home)
    signer.close()
    assert_no_agent(signer.home)
    assert not pass_file.exists()
    signer.close()


def test_rpm_macros_sign_a_package_rpm_accepts(
    key_files: tuple[list[Path], list[str]], tmp_path: Path
) -> None:
    """rpmsign with the macros and a protected key; rpm -K checks it with the public key."""
    paths, _ = key_files
    top = tmp_path / "rpmbuild"
    (top / "SPECS").mkdir(parents=True)
    spec = top / "SPECS" / "t.spec"
    spec.write_text(
        "Name: lg-sign-test\nVersion: 1\nRelease: 1\nSummary: t\nLicense: MIT\n"
        "BuildArch: noarch\n%description\nt\n%install\nmkdir -p %{buildroot}/opt\n"
        "echo hi > %{buildroot}/opt/lg-sign-test\n%files\n/opt/lg-sign-test\n"
    )
    subprocess.run(
        ["rpmbuild", "-bb", "--define", f"_topdir {top}", str(spec)],
        check=True,
        capture_output=True,
    )
    [rpm_file] = (top / "RPMS" / "noarch").glob("*.rpm")
    with configured(paths, tmp_path / "w") as signer:
        subprocess.run(
            ["rpmsign", "--addsign", *signer.rpm_macros(), str(rpm_file)],
            check=True,
            capture_output=True,
        )
        asc = tmp_path / "archive.asc"
        asc.write_bytes(signer.public_asc())
    db = tmp_path / "rpmdb"
    db.mkdir()
    rpm = ["rpm", "--dbpath", str(db)]
    subprocess.run([*rpm, "--initdb"], check=True)
    subprocess.run([*rpm, "--import", str(asc)], check=True)
    cp = subprocess.run([*rpm, "-Kv", str(rpm_file)], capture_output=True, text=True, check=True)
    assert "Header V4 RSA/SHA256 Signature" in cp.stdout and "OK" in cp.stdout
    assert "NOKEY" not in cp.stdout and "BAD" not in cp.stdout


def test_deep_work_dir_signs_from_a_short_scratch_home(
    key_files: tuple[list[Path], list[str]], tmp_path: Path
) -> None:
    """An agent socket path holds 107 bytes: a deep work_dir gets a short home of its own."""
    paths, fps = key_files
    work = tmp_path / ("d" * 60) / ("e" * 60)
    signer = configured(paths[:1], work)
    home = signer.home
    assert not home.is_relative_to(work) and len(str(home)) < 60
    keyring = tmp_path / "k.gpg"
    keyring.write_bytes(signer.public_keyring())
    signed = tmp_path / "InRelease"
    signed.write_bytes(signer.clearsign(b"x\n"))
    rc, status = gpgv(keyring, signed)
    assert rc == 0 and good_signers(status) == {fps[0]}
    signer.close()
    assert not home.exists()
    assert_no_agent(home)
