"""The signature ``sign-file`` appends to a kernel module, as the kernel reads it back.

A signed module ends with::

    <module> <PKCS#7 signature, sig_len bytes> <struct module_signature, 12 bytes>
    "~Module signature appended~\\n"

where ``struct module_signature`` is ``algo, hash, id_type, signer_len, key_id_len`` (one
byte each), three bytes of padding, and ``sig_len`` as a big-endian u32. For PKCS#7
(``id_type`` 2) every field but ``id_type`` and ``sig_len`` is zero, and the kernel
removes exactly ``sig_len + 12`` bytes before the marker (``mod_verify_sig``).
"""

from __future__ import annotations

import struct
from pathlib import Path

from livegraft.pipeline.errors import InputError

SIGNATURE_MARKER = b"~Module signature appended~\n"
# struct module_signature
_TRAILER = struct.Struct(">BBBBB3xI")
PKEY_ID_PKCS7 = 2


def is_signed(module: Path) -> bool:
    """True if the file ends with the appended-signature marker (read from its end only)."""
    with module.open("rb") as f:
        f.seek(0, 2)
        f.seek(max(0, f.tell() - len(SIGNATURE_MARKER)))
        return f.read() == SIGNATURE_MARKER


def strip_signature(data: bytes, path: Path | None = None) -> bytes:
    """The module as it was before ``sign-file``: the signature and its trailer cut off.

    Refuses (InputError naming ``path``) a module that is not signed, whose trailer is
    not a PKCS#7 one the kernel would accept, or that is still signed after one
    signature is removed (signed twice: the kernel would read the outer one only).
    """
    if not data.endswith(SIGNATURE_MARKER):
        raise InputError(path, None, "a signed module (no appended signature found)")
    body = data[: -len(SIGNATURE_MARKER)]
    if len(body) < _TRAILER.size:
        raise InputError(path, None, "a signed module (its signature trailer is cut short)")
    algo, hash_algo, id_type, signer_len, key_id_len, sig_len = _TRAILER.unpack(
        body[-_TRAILER.size :]
    )
    if id_type != PKEY_ID_PKCS7 or algo or hash_algo or signer_len or key_id_len:
        raise InputError(path, None, "a module signature of the PKCS#7 kind sign-file appends")
    if not 0 < sig_len <= len(body) - _TRAILER.size:
        raise InputError(path, None, f"a signature length within the file (not {sig_len})")
    unsigned = body[: -_TRAILER.size - sig_len]
    if unsigned.endswith(SIGNATURE_MARKER):
        raise InputError(path, None, "a module signed once (this one carries two signatures)")
    return unsigned
