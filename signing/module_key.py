"""The kernel module-signing key: an X.509 certificate and its private key, for sign-file.

Where it comes from, first match wins:

1. the environment: ``LIVEGRAFT_MODULE_KEY`` and ``LIVEGRAFT_MODULE_CERT`` (paths);
2. the config's ``[signing]`` table: ``module_key`` and ``module_cert``;
3. otherwise a key generated on first use in ``<work_dir>/keys/``, the way the kernel's
   own ``certs/Makefile`` makes one for a build that brings none (RSA, sha256, a
   century's validity). That is for the embedded example and for tests; production
   supplies its key, so that every build machine signs with the same one.

The passphrase of an encrypted key comes from ``LIVEGRAFT_MODULE_KEY_PASSPHRASE``,
``LIVEGRAFT_MODULE_KEY_PASSPHRASE_FILE`` or the config's ``module_key_passphrase_file``.
It travels only through environment variables (sign-file reads ``KBUILD_SIGN_PIN``,
openssl ``-passin env:``): never an argument list, a log line or an error message.

What a client checks is the signer: the certificate's sha256 fingerprint (over its
DER encoding), its subject, and the names the kernel and sign-file give it (subject key
id, issuer and serial: ``signing.certificate``).
"""

from __future__ import annotations

import fcntl
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from livegraft.pipeline.config import SigningSettings
from livegraft.pipeline.errors import InputError, WorkError
from livegraft.pipeline.proc import CommandError, run

from .certificate import Certificate, certificate_der, read_certificate

ENV_KEY = "LIVEGRAFT_MODULE_KEY"
ENV_CERT = "LIVEGRAFT_MODULE_CERT"
ENV_PASSPHRASE = "LIVEGRAFT_MODULE_KEY_PASSPHRASE"
ENV_PASSPHRASE_FILE = "LIVEGRAFT_MODULE_KEY_PASSPHRASE_FILE"

KEYS_DIR = "keys"
KEY_FILE = "module-signing.key"
CERT_FILE = "module-signing.crt"
# The variable through which openssl reads the passphrase in this process's children.
_OPENSSL_PASS_VAR = "LIVEGRAFT_OPENSSL_PASSIN"
# As the kernel's certs/default_x509.genkey, plus the code-signing usage UEFI tools expect.
_GENKEY = """\
[ req ]
default_bits = 4096
distinguished_name = req_distinguished_name
prompt = no
string_mask = utf8only
x509_extensions = myexts

[ req_distinguished_name ]
O = livegraft
CN = {cn}

[ myexts ]
basicConstraints = critical,CA:FALSE
keyUsage = digitalSignature
extendedKeyUsage = codeSigning
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""
_VALIDITY_DAYS = "36500"


@dataclass(frozen=True)
class ModuleKey:
    key: Path
    cert: Path
    # sha256 over the certificate's DER encoding, lowercase hex.
    fingerprint: str
    # RFC 2253, as ``openssl x509 -subject -nameopt RFC2253`` prints it.
    subject: str
    generated: bool
    # Also issuer, serial and subject key id: see signing.certificate.
    certificate: Certificate = field(repr=False)
    passphrase: str | None = field(default=None, repr=False)

    def signer(self) -> dict[str, str | None]:
        """The signer identity recorded with every module it signs (build.json)."""
        return self.certificate.signer()

    def sign_env(self) -> dict[str, str]:
        """Environment for sign-file: the passphrase, when there is one."""
        return {"KBUILD_SIGN_PIN": self.passphrase} if self.passphrase is not None else {}

    def cert_der(self) -> bytes:
        return certificate_der(self.cert, "module_cert")


def load_module_key(
    settings: SigningSettings,
    work_dir: Path,
    *,
    config_path: Path | None = None,
    name: str = "livegraft",
    environ: Mapping[str, str] | None = None,
) -> ModuleKey:
    """The configured key, checked (files, passphrase, key matches cert); else the generated one."""
    env = os.environ if environ is None else environ
    if env.get(ENV_KEY) or env.get(ENV_CERT):
        if not (env.get(ENV_KEY) and env.get(ENV_CERT)):
            raise InputError(None, f"{ENV_KEY}/{ENV_CERT}", "expected both variables, or neither")
        key, cert = Path(env[ENV_KEY]), Path(env[ENV_CERT])
        fields = (ENV_KEY, ENV_CERT)
    elif settings.module_key is not None and settings.module_cert is not None:
        key, cert = settings.module_key, settings.module_cert
        fields = ("signing.module_key", "signing.module_cert")
    else:
        keys = work_dir / KEYS_DIR
        generate_module_key(keys, name)
        return _checked(keys / KEY_FILE, keys / CERT_FILE, None, ("key", "cert"), generated=True)
    for path, fld in zip((key, cert), fields, strict=True):
        if not path.is_file():
            raise InputError(path, fld, "module-signing file not found")
    return _checked(key, cert, _passphrase(settings, env), fields, generated=False)


def configured_certificate(
    settings: SigningSettings, work_dir: Path, environ: Mapping[str, str] | None = None
) -> Certificate | None:
    """The module certificate the build would sign with, read without its private key.

    Same order as ``load_module_key``; None when none is configured and none was
    generated yet. For stages that only need the signer's identity (package).
    """
    env = os.environ if environ is None else environ
    if env.get(ENV_CERT):
        cert, fld = Path(env[ENV_CERT]), ENV_CERT
    elif settings.module_cert is not None:
        cert, fld = settings.module_cert, "signing.module_cert"
    else:
        cert, fld = work_dir / KEYS_DIR / CERT_FILE, "cert"
        if not cert.is_file():
            return None
    if not cert.is_file():
        raise InputError(cert, fld, "module-signing file not found")
    return read_certificate(cert, fld)


def _passphrase(settings: SigningSettings, env: Mapping[str, str]) -> str | None:
    if ENV_PASSPHRASE in env:
        return env[ENV_PASSPHRASE]
    source: tuple[Path, str] | None = None
    if env.get(ENV_PASSPHRASE_FILE):
        source = (Path(env[ENV_PASSPHRASE_FILE]), ENV_PASSPHRASE_FILE)
    elif settings.module_key_passphrase_file is not None:
        source = (settings.module_key_passphrase_file, "signing.module_key_passphrase_file")
    if source is None:
        return None
    try:
        # One trailing newline is how editors save a one-line file, not part of the secret.
        return source[0].read_text(encoding="utf-8").removesuffix("\n")
    except (OSError, UnicodeDecodeError):
        raise InputError(source[0], source[1], "a readable passphrase file") from None


def _checked(
    key: Path, cert: Path, passphrase: str | None, fields: tuple[str, str], *, generated: bool
) -> ModuleKey:
    certificate = read_certificate(cert, fields[1])
    try:
        key_pubkey = run(
            ["openssl", "pkey", "-in", key, "-pubout", "-passin", f"env:{_OPENSSL_PASS_VAR}"],
            env={_OPENSSL_PASS_VAR: passphrase or ""},
        ).stdout
    except CommandError:
        # openssl's own message is left out: nothing about the secret may leak.
        raise InputError(
            key, fields[0], "a PEM private key readable with the passphrase given (if any)"
        ) from None
    if key_pubkey.strip() != certificate.public_key:
        raise InputError(key, fields[0], f"the private key of the certificate {cert}")
    return ModuleKey(
        key, cert, certificate.fingerprint, certificate.subject, generated, certificate, passphrase
    )


def generate_module_key(keys: Path, name: str) -> None:
    """Make the key pair in ``keys`` unless it is there; safe against a concurrent run."""
    if (keys / KEY_FILE).is_file() and (keys / CERT_FILE).is_file():
        return
    keys.mkdir(mode=0o700, parents=True, exist_ok=True)
    with (keys / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (keys / KEY_FILE).is_file() and (keys / CERT_FILE).is_file():
            return
        # A CN is at most 64 characters; keep the config's name readable but harmless.
        label = re.sub(r"[^A-Za-z0-9 ._-]", "", name)[:28]
        cn = f"livegraft module signing key ({label})" if label else "livegraft module signing key"
        with tempfile.TemporaryDirectory(dir=keys, prefix=".gen-") as tmp:
            genkey = Path(tmp) / "x509.genkey"
            genkey.write_text(_GENKEY.format(cn=cn), encoding="utf-8")
            try:
                run(
                    [
                        "openssl",
                        "req",
                        "-new",
                        "-nodes",
                        "-utf8",
                        "-sha256",
                        "-days",
                        _VALIDITY_DAYS,
                        "-batch",
                        "-x509",
                        "-config",
                        genkey,
                        "-outform",
                        "PEM",
                        "-out",
                        Path(tmp) / CERT_FILE,
                        "-keyout",
                        Path(tmp) / KEY_FILE,
                    ],
                    timeout=300,
                )
            except CommandError as exc:
                raise WorkError(f"generating the module-signing key failed: {exc}") from None
            os.chmod(Path(tmp) / KEY_FILE, 0o600)
            os.chmod(Path(tmp) / CERT_FILE, 0o644)
            # The key first: a cert without its key is never seen as a complete pair.
            os.replace(Path(tmp) / KEY_FILE, keys / KEY_FILE)
            os.replace(Path(tmp) / CERT_FILE, keys / CERT_FILE)
