"""An X.509 certificate read with openssl: what identifies the signer of a module.

Three names for one signer, because three readers look for it differently:

- ``fingerprint``: sha256 over the DER encoding, what livegraft itself compares;
- ``subject_key_id``: the subjectKeyIdentifier, lowercase hex without colons: the kernel
  lists a trusted key in ``/proc/keys`` as ``<CN>: <skid>`` (None when the certificate
  has none; the kernel then names the key by its serial);
- ``serial`` and ``issuer``: what sign-file's PKCS#7 carries (IssuerAndSerialNumber),
  the serial as lowercase hex without leading zeros, the issuer as RFC 2253.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from livegraft.pipeline.errors import InputError
from livegraft.pipeline.proc import CommandError, run

_PEM_CERT = re.compile(
    rb"-----BEGIN CERTIFICATE-----\s*(.+?)\s*-----END CERTIFICATE-----", re.DOTALL
)
_PUBLIC_KEY = re.compile(r"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", re.DOTALL)
_SKID_HEADER = "X509v3 Subject Key Identifier:"
_HEX = re.compile(r"[0-9a-f]+")


@dataclass(frozen=True)
class Certificate:
    path: Path
    der: bytes
    # sha256 over the DER encoding, lowercase hex.
    fingerprint: str
    # RFC 2253, as ``openssl x509 -subject -nameopt RFC2253`` prints it.
    subject: str
    issuer: str
    # Lowercase hex, no leading zeros ("0" for zero).
    serial: str
    # Lowercase hex, no colons; None when the certificate has no subjectKeyIdentifier.
    subject_key_id: str | None
    # The public key, PEM, to match a private key against.
    public_key: str

    def signer(self) -> dict[str, str | None]:
        """The signer identity recorded with every module it signs (build.json)."""
        return {
            "fingerprint": self.fingerprint,
            "subject": self.subject,
            "issuer": self.issuer,
            "serial": self.serial,
            "subject_key_id": self.subject_key_id,
        }


def certificate_der(cert: Path, fld: str) -> bytes:
    """The DER bytes of a PEM or DER certificate file (InputError naming ``fld`` if not one)."""
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


def read_certificate(cert: Path, fld: str) -> Certificate:
    der = certificate_der(cert, fld)
    try:
        inform = "PEM" if _PEM_CERT.search(cert.read_bytes()) else "DER"
        shown = run(
            ["openssl", "x509", "-inform", inform, "-in", cert, "-noout", "-nameopt", "RFC2253",
             "-subject", "-issuer", "-serial", "-ext", "subjectKeyIdentifier", "-pubkey"]
        ).stdout  # fmt: skip
    except CommandError:
        raise InputError(cert, fld, "an X.509 certificate openssl can read") from None
    lines = shown.splitlines()
    values: dict[str, str] = {}
    skid: str | None = None
    for i, line in enumerate(lines):
        for key in ("subject", "issuer", "serial"):
            if line.startswith(f"{key}=") and key not in values:
                values[key] = line.removeprefix(f"{key}=").strip()
        if line.strip() == _SKID_HEADER and i + 1 < len(lines):
            skid = lines[i + 1].strip().replace(":", "").lower()
    pem = _PUBLIC_KEY.search(shown)
    # openssl prints the serial in upper case, padded to whole bytes; the kernel and the
    # client compare it as a number written in lowercase hex.
    serial = values.get("serial", "").lower().lstrip("0") or "0"
    if set(values) != {"subject", "issuer", "serial"} or not pem or not _HEX.fullmatch(serial):
        raise InputError(cert, fld, "an X.509 certificate with a subject, issuer and serial")
    if skid is not None and not _HEX.fullmatch(skid):
        raise InputError(cert, fld, f"a subjectKeyIdentifier in hex, not {skid!r}")
    return Certificate(
        path=cert,
        der=der,
        fingerprint=hashlib.sha256(der).hexdigest(),
        subject=values["subject"],
        issuer=values["issuer"],
        serial=serial,
        subject_key_id=skid,
        public_key=pem.group(0),
    )
