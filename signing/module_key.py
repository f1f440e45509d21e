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
DER encoding) and its subject.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from livegraft.pipeline.config import SigningSettings
from livegraft.pipeline.errors import InputError, WorkError
from livegraft.pipeline.proc import CommandError, run

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
_PEM_CERT = re.compile(
    rb"-----BEGIN CERTIFICATE-----\s*(.+?)\s*-----END CERTIFICATE-----", re.DOTALL
)


@dataclass(frozen=True)
class ModuleKey:
    key: Path
    cert: Path
    # sha256 over the certificate's DER encoding, lowercase hex.
    fingerprint: str
    # RFC 2253, as ``openssl x509 -subject -nameopt RFC2253`` prints it.
    subject: str
    generated: bool
    passphrase: str | None = field(default=None, repr=False)

    def signer(self) -> dict[str, str]:
        """The signer identity recorded with every module it signs."""
        return {"fingerprint": self.fingerprint, "subject": self.subject}

    def sign_env(self) -> dict[str, str]:
        """Environment for sign-file: the passphrase, when there is one."""
        return {"KBUILD_SIGN_PIN": self.passphrase} if self.passphrase is not None else {}

    def cert_der(self) -> bytes:
        return _cert_der(self.cert, "module_cert")


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


def _cert_der(cert: Path, fld: str) -> bytes:
    try:
        data = cert.read_bytes()
    except OSError as exc:
        raise InputError(cert, fld, f"cannot read ({exc.strerror})") from None
    m = _PEM_CERT.search(data)
    if m is None:
        # DER: an ASN.1 SEQUENCE with a long-form length.
        if data[:1] == b"\x30" and len(data) > 2 and 0x81 <= data[1] <= 0x84:
            return data
        raise InputError(cert, fld, "an X.509 certificate, PEM or DER")
    try:
        return base64.b64decode(b"".join(m.group(1).split()), validate=True)
    except binascii.Error:
        raise InputError(cert, fld, "an X.509 certificate with valid PEM base64") from None


def _checked(
    key: Path, cert: Path, passphrase: str | None, fields: tuple[str, str], *, generated: bool
) -> ModuleKey:
    der = _cert_der(cert, fields[1])
    fingerprint = hashlib.sha256(der).hexdigest()
    inform = "PEM" if _PEM_CERT.search(cert.read_bytes()) else "DER"
    try:
        shown = run(
            [
                "openssl",
                "x509",
                "-inform",
                inform,
                "-in",
                cert,
                "-noout",
                "-subject",
                "-nameopt",
                "RFC2253",
                "-pubkey",
            ]
        )
    except CommandError:
        raise InputError(cert, fields[1], "an X.509 certificate openssl can read") from None
    subject_line, _, cert_pubkey = shown.stdout.partition("\n")
    subject = subject_line.removeprefix("subject=").strip()
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
    if key_pubkey.strip() != cert_pubkey.strip():
        raise InputError(key, fields[0], f"the private key of the certificate {cert}")
    return ModuleKey(key, cert, fingerprint, subject, generated, passphrase)


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
