"""What a kernel module file says about itself: its ``.modinfo`` and its appended signature.

Read with the standard library alone: the ELF section table for ``.modinfo`` (the
``key=value`` strings modinfo(8) prints, vermagic among them), and the signature
``sign-file`` appends::

    <module> <PKCS#7 SignedData, sig_len bytes> <struct module_signature, 12 bytes>
    "~Module signature appended~\\n"

whose SignerInfo names the signing certificate by issuer and serial number, which is
how the kernel finds the key to check it with.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

SIGNATURE_MARKER = b"~Module signature appended~\n"
# struct module_signature: algo, hash, id_type, signer_len, key_id_len, pad[3], sig_len.
_TRAILER = struct.Struct(">BBBBB3xI")
_PKEY_ID_PKCS7 = 2
_OID_COMMON_NAME = bytes.fromhex("550403")
_OID_ORGANIZATION = bytes.fromhex("55040a")


class ModuleFileError(Exception):
    """The file is not a module this client can read; the message says what is wrong."""


@dataclass(frozen=True)
class Signature:
    # The signing certificate's serial number (lowercase hex, no leading zeros) and the
    # issuer's common name and organisation, as the PKCS#7 SignerInfo names them.
    serial: str
    issuer_cn: str
    issuer_o: str


@dataclass(frozen=True)
class ModuleFile:
    path: Path
    modinfo: dict[str, list[str]]
    signature: Signature | None

    def first(self, key: str) -> str | None:
        values = self.modinfo.get(key)
        return values[0] if values else None

    @property
    def vermagic(self) -> str | None:
        return self.first("vermagic")

    @property
    def name(self) -> str | None:
        return self.first("name")


def read_module(path: Path) -> ModuleFile:
    """Parse ``path``; ModuleFileError when it is not an ELF module with a ``.modinfo``."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModuleFileError(f"cannot read it ({exc.strerror})") from None
    signature = None
    body = data
    if data.endswith(SIGNATURE_MARKER):
        body, signature = _split_signature(data)
    return ModuleFile(path, _modinfo(body), signature)


def _split_signature(data: bytes) -> tuple[bytes, Signature]:
    body = data[: -len(SIGNATURE_MARKER)]
    if len(body) < _TRAILER.size:
        raise ModuleFileError("its signature trailer is cut short")
    algo, hash_algo, id_type, signer_len, key_id_len, sig_len = _TRAILER.unpack(
        body[-_TRAILER.size :]
    )
    if id_type != _PKEY_ID_PKCS7 or algo or hash_algo or signer_len or key_id_len:
        raise ModuleFileError("its signature is not of the PKCS#7 kind sign-file appends")
    if not 0 < sig_len <= len(body) - _TRAILER.size:
        raise ModuleFileError(f"its signature length {sig_len} runs past the file")
    end = len(body) - _TRAILER.size
    return body[: end - sig_len], _signer(body[end - sig_len : end])


# -- ELF ----------------------------------------------------------------------------------


def _modinfo(elf: bytes) -> dict[str, list[str]]:
    if elf[:4] != b"\x7fELF" or len(elf) < 64:
        raise ModuleFileError("not an ELF file")
    is64 = elf[4] == 2
    order = "<" if elf[5] == 1 else ">"
    try:
        if is64:
            (shoff,) = struct.unpack_from(order + "Q", elf, 0x28)
            shentsize, shnum, shstrndx = struct.unpack_from(order + "HHH", elf, 0x3A)
            header = struct.Struct(order + "IIQQQQ")
        else:
            (shoff,) = struct.unpack_from(order + "I", elf, 0x20)
            shentsize, shnum, shstrndx = struct.unpack_from(order + "HHH", elf, 0x2E)
            header = struct.Struct(order + "IIIIII")
        sections = []
        for i in range(shnum):
            name, _type, _flags, _addr, offset, size = header.unpack_from(
                elf, shoff + i * shentsize
            )
            sections.append((name, offset, size))
        _, str_off, str_size = sections[shstrndx]
        names = elf[str_off : str_off + str_size]
    except (struct.error, IndexError):
        raise ModuleFileError("its ELF section table is cut short") from None
    for name, offset, size in sections:
        end = names.find(b"\0", name)
        if names[name:end] == b".modinfo":
            if offset + size > len(elf):
                raise ModuleFileError("its .modinfo section runs past the file")
            info: dict[str, list[str]] = {}
            for entry in elf[offset : offset + size].split(b"\0"):
                key, eq, value = entry.decode("utf-8", "replace").partition("=")
                if eq:
                    info.setdefault(key, []).append(value)
            return info
    raise ModuleFileError("it has no .modinfo section (not a kernel module)")


# -- DER, just enough of PKCS#7 to name the signer ----------------------------------------


def _tlv(data: bytes, pos: int) -> tuple[int, bytes, int]:
    """(tag, contents, position after) of the DER element at ``pos``."""
    if pos + 2 > len(data):
        raise ModuleFileError("its PKCS#7 signature is cut short")
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        if n == 0 or n > 4 or pos + n > len(data):
            raise ModuleFileError("its PKCS#7 signature has a bad length")
        length = int.from_bytes(data[pos : pos + n], "big")
        pos += n
    if pos + length > len(data):
        raise ModuleFileError("its PKCS#7 signature is cut short")
    return tag, data[pos : pos + length], pos + length


def _children(data: bytes) -> list[tuple[int, bytes]]:
    out, pos = [], 0
    while pos < len(data):
        tag, value, pos = _tlv(data, pos)
        out.append((tag, value))
    return out


def _signer(pkcs7: bytes) -> Signature:
    tag, content_info, _ = _tlv(pkcs7, 0)
    parts = _children(content_info) if tag == 0x30 else []
    if len(parts) < 2 or parts[1][0] != 0xA0:
        raise ModuleFileError("its signature is not a PKCS#7 ContentInfo")
    _, signed_data, _ = _tlv(parts[1][1], 0)
    fields = _children(signed_data)
    # version, digestAlgorithms, encapContentInfo, [0] certificates?, [1] crls?, signerInfos
    signer_infos = fields[-1] if fields else (0, b"")
    if signer_infos[0] != 0x31:
        raise ModuleFileError("its PKCS#7 signature has no SignerInfos")
    infos = _children(signer_infos[1])
    if len(infos) != 1:
        raise ModuleFileError(f"its PKCS#7 signature has {len(infos)} signers, not one")
    sid = _children(infos[0][1])[1]
    if sid[0] != 0x30:
        raise ModuleFileError("its signer is named by key id, not by issuer and serial")
    issuer, serial = _children(sid[1])[:2]
    if serial[0] != 0x02:
        raise ModuleFileError("its signer's serial number is not an INTEGER")
    number = int.from_bytes(serial[1], "big", signed=False)
    attrs = _name_attributes(issuer[1])
    return Signature(
        format(number, "x"), attrs.get(_OID_COMMON_NAME, ""), attrs.get(_OID_ORGANIZATION, "")
    )


def _name_attributes(name: bytes) -> dict[bytes, str]:
    found: dict[bytes, str] = {}
    for rdn_tag, rdn in _children(name):
        if rdn_tag != 0x31:
            continue
        for _, pair in _children(rdn):
            items = _children(pair)
            if len(items) == 2 and items[0][0] == 0x06:
                found[items[0][1]] = items[1][1].decode("utf-8", "replace")
    return found
