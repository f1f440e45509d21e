"""The module-signing key: generated on first use, or supplied by config or environment."""

from __future__ import annotations

import hashlib
import stat
import subprocess
from pathlib import Path

import pytest
from livegraft.pipeline.config import SigningSettings
from livegraft.pipeline.errors import InputError
from livegraft.signing.module_key import (
    ENV_CERT,
    ENV_KEY,
    ENV_PASSPHRASE,
    ENV_PASSPHRASE_FILE,
    KEY_FILE,
    generate_module_key,
    load_module_key,
)

SECRET = "correct horse battery staple 7"
NONE = SigningSettings()


def _openssl(*args: str, env: dict[str, str] | None = None) -> bytes:
    return subprocess.run(["openssl", *args], check=True, capture_output=True, env=env).stdout


def _pair(folder: Path, passphrase: str | None = None) -> tuple[Path, Path]:
    """A small RSA key (fast) and its self-signed certificate."""
    folder.mkdir(parents=True, exist_ok=True)
    key, cert = folder / "key.pem", folder / "cert.pem"
    env = {"PATH": "/usr/bin:/bin", "PW": passphrase or ""}
    cipher = ["-aes256", "-pass", "env:PW"] if passphrase else []
    _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
             "-out", str(key), *cipher, env=env)  # fmt: skip
    passin = ["-passin", "env:PW"] if passphrase else []
    _openssl("req", "-new", "-x509", "-key", str(key), *passin, "-subj", "/CN=test signer",
             "-days", "2", "-out", str(cert), env=env)  # fmt: skip
    return key, cert


def test_generated_on_first_use(tmp_path: Path) -> None:
    key = load_module_key(NONE, tmp_path, name="example", environ={})
    assert key.generated and key.key == tmp_path / "keys" / KEY_FILE
    assert stat.S_IMODE(key.key.stat().st_mode) == 0o600
    assert "livegraft" in key.subject and "example" in key.subject
    der = _openssl("x509", "-in", str(key.cert), "-outform", "DER")
    assert (
        key.fingerprint
        == hashlib.sha256(der).hexdigest()
        == hashlib.sha256(key.cert_der()).hexdigest()
    )
    text = _openssl("x509", "-in", str(key.cert), "-noout", "-text").decode()
    assert "Signature Algorithm: sha256WithRSAEncryption" in text
    assert "Code Signing" in text and "CA:FALSE" in text
    # Used again, not made again.
    assert load_module_key(NONE, tmp_path, environ={}).fingerprint == key.fingerprint
    generate_module_key(tmp_path / "keys", "example")
    assert load_module_key(NONE, tmp_path, environ={}).fingerprint == key.fingerprint


def test_supplied_by_config_and_environment(tmp_path: Path) -> None:
    k1, c1 = _pair(tmp_path / "one")
    k2, c2 = _pair(tmp_path / "two")
    settings = SigningSettings(module_key=k1, module_cert=c1)
    from_config = load_module_key(settings, tmp_path / "w", environ={})
    assert not from_config.generated and from_config.subject == "CN=test signer"
    assert not (tmp_path / "w" / "keys").exists()
    # The environment wins over the config.
    from_env = load_module_key(
        settings, tmp_path / "w", environ={ENV_KEY: str(k2), ENV_CERT: str(c2)}
    )
    assert from_env.key == k2 and from_env.fingerprint != from_config.fingerprint
    # A DER certificate is as good as PEM.
    der = tmp_path / "two" / "cert.der"
    der.write_bytes(_openssl("x509", "-in", str(c2), "-outform", "DER"))
    assert load_module_key(SigningSettings(k2, der), tmp_path, environ={}).fingerprint == (
        from_env.fingerprint
    )


def test_bad_supplied_keys(tmp_path: Path) -> None:
    k1, c1 = _pair(tmp_path / "one")
    _, c2 = _pair(tmp_path / "two")
    with pytest.raises(InputError) as err:
        load_module_key(SigningSettings(tmp_path / "nope.pem", c1), tmp_path, environ={})
    assert err.value.field == "signing.module_key" and "not found" in str(err.value)
    with pytest.raises(InputError, match=ENV_CERT):
        load_module_key(NONE, tmp_path, environ={ENV_KEY: str(k1)})
    with pytest.raises(InputError, match="private key of the certificate"):
        load_module_key(SigningSettings(k1, c2), tmp_path, environ={})
    (tmp_path / "junk.pem").write_text("not a certificate\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"X\.509"):
        load_module_key(SigningSettings(k1, tmp_path / "junk.pem"), tmp_path, environ={})


def test_passphrase_from_environment_or_file_never_shown(tmp_path: Path) -> None:
    key, cert = _pair(tmp_path / "enc", passphrase=SECRET)
    settings = SigningSettings(module_key=key, module_cert=cert)
    loaded = load_module_key(settings, tmp_path, environ={ENV_PASSPHRASE: SECRET})
    assert loaded.sign_env() == {"KBUILD_SIGN_PIN": SECRET}
    assert SECRET not in repr(loaded)

    pw_file = tmp_path / "pw"
    pw_file.write_text(SECRET + "\n", encoding="utf-8")
    via_file = SigningSettings(key, cert, module_key_passphrase_file=pw_file)
    assert load_module_key(via_file, tmp_path, environ={}).sign_env() == {"KBUILD_SIGN_PIN": SECRET}
    env_file = {ENV_PASSPHRASE_FILE: str(pw_file)}
    assert load_module_key(settings, tmp_path, environ=env_file).passphrase == SECRET

    for environ in ({ENV_PASSPHRASE: SECRET + "x"}, {}):
        with pytest.raises(InputError) as err:
            load_module_key(settings, tmp_path, environ=environ)
        assert "passphrase" in str(err.value) and SECRET not in str(err.value)


def _keys_init(config: Path, **env: str) -> subprocess.CompletedProcess[str]:
    import os
    import sys

    return subprocess.run(
        [sys.executable, "-m", "livegraft.pipeline.cli", "keys", "init", "--config", str(config),
         "--json"],
        capture_output=True, text=True, check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("LIVEGRAFT_")} | env,
    )  # fmt: skip


def test_keys_init_makes_one_key_for_every_shard(tmp_path: Path) -> None:
    from project import make_project

    config = make_project(tmp_path)
    first, again = _keys_init(config), _keys_init(config)
    assert first.returncode == 0, first.stderr
    import json

    one, two = json.loads(first.stdout), json.loads(again.stdout)
    assert one["generated"] and one["fingerprint"] == two["fingerprint"]
    key, cert = _pair(tmp_path / "supplied", SECRET)
    bad = _keys_init(config, **{ENV_KEY: str(key)})
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert f"{ENV_KEY}/{ENV_CERT}" in bad.stderr
    wrong = _keys_init(
        config, **{ENV_KEY: str(key), ENV_CERT: str(cert), ENV_PASSPHRASE: "wrong-pass-xyz"}
    )
    assert wrong.returncode == 2 and wrong.stderr.count("\n") == 1
    assert "readable with the passphrase" in wrong.stderr and "wrong-pass-xyz" not in wrong.stderr
    ok = _keys_init(config, **{ENV_KEY: str(key), ENV_CERT: str(cert), ENV_PASSPHRASE: SECRET})
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["subject"] == "CN=test signer" and SECRET not in ok.stdout


def _openssl_names(cert: Path) -> tuple[str, str | None]:
    """serial and subjectKeyIdentifier as openssl prints them, unconverted."""
    text = _openssl("x509", "-in", str(cert), "-noout", "-serial", "-ext", "subjectKeyIdentifier")
    lines = text.decode().splitlines()
    serial = lines[0].removeprefix("serial=")
    skid = lines[2].strip() if len(lines) > 2 else None
    return serial, skid


def test_the_signer_names_the_kernel_and_sign_file_use(tmp_path: Path) -> None:
    key = load_module_key(NONE, tmp_path, name="example", environ={})
    serial, skid = _openssl_names(key.cert)
    assert skid is not None and ":" in skid and serial.isupper()
    signer = key.signer()
    # /proc/keys shows "<CN>: <skid>" in lowercase hex without colons; PKCS#7 carries
    # the serial as a number (lowercase hex, no leading zeros).
    assert signer["subject_key_id"] == skid.replace(":", "").lower()
    assert signer["serial"] == serial.lower().lstrip("0")
    assert signer["issuer"] == signer["subject"] == key.subject
    assert signer["fingerprint"] == key.fingerprint
    assert set(signer) == {"fingerprint", "subject", "issuer", "serial", "subject_key_id"}


def test_a_certificate_without_key_id_and_with_a_zero_led_serial(tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    _openssl("req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
             "-out", str(cert), "-subj", "/O=Example/CN=no key id", "-days", "2",
             "-set_serial", "0x00ab", "-addext", "subjectKeyIdentifier=none")  # fmt: skip
    assert _openssl_names(cert) == ("AB", None)
    signer = load_module_key(SigningSettings(key, cert), tmp_path, environ={}).signer()
    assert (signer["serial"], signer["subject_key_id"]) == ("ab", None)
    assert signer["issuer"] == "CN=no key id,O=Example"
