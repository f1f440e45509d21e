"""The archive key: OpenPGP signatures on packages and repository metadata, through GnuPG.

Everything runs in a private GNUPGHOME (``<work_dir>/gnupg``), never the user's
``~/.gnupg``: keys are imported into it from armored secret-key files, and the
gpg-agent it starts is killed by :meth:`ArchiveSigner.close`.

Where the keys come from, first match wins:

1. the environment: ``LIVEGRAFT_ARCHIVE_KEY``, one path or several separated by ``:``;
2. the config's ``[signing] archive_keys`` list;
3. otherwise a key generated on first use into ``<work_dir>/keys/archive-secret.asc``
   (RSA 3072, which every RHEL 9 rpm and every apt accepts; two years' validity). That is
   for the embedded example and for tests: production brings its own key.

Two keys during a rotation: repository metadata (``InRelease``, ``Release.gpg``,
``repomd.xml.asc``) carries a signature by each, so a client that trusts either accepts
it. An RPM header holds one OpenPGP signature, so packages are signed by the first key.

The passphrase (one for all archive keys) comes from ``LIVEGRAFT_ARCHIVE_KEY_PASSPHRASE``,
``LIVEGRAFT_ARCHIVE_KEY_PASSPHRASE_FILE`` or the config's ``archive_key_passphrase_file``.
It reaches gpg on a pipe (python-gnupg's ``--passphrase-fd 0``) or, for rpmsign, in a
0600 file in a private temporary folder: never in an argument list, a log or an error.
The agent is told to cache nothing, so a wrong passphrase is never rescued by a cached one.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import gnupg
from livegraft.pipeline.config import SigningSettings
from livegraft.pipeline.errors import InputError, WorkError
from livegraft.pipeline.proc import run

log = logging.getLogger("livegraft.signing.gpg")

ENV_KEY = "LIVEGRAFT_ARCHIVE_KEY"
ENV_PASSPHRASE = "LIVEGRAFT_ARCHIVE_KEY_PASSPHRASE"
ENV_PASSPHRASE_FILE = "LIVEGRAFT_ARCHIVE_KEY_PASSPHRASE_FILE"

GNUPG_DIR = "gnupg"
KEYS_DIR = "keys"
SECRET_FILE = "archive-secret.asc"
GPG = "/usr/bin/gpg"

KEY_TYPE = "RSA"
KEY_LENGTH = 3072
KEY_EXPIRY = "2y"
DIGEST = "SHA256"

# gpg puts its agent's sockets in the home when /run/user/<uid> is absent (root, CI);
# a Unix socket path holds at most 107 bytes, and the longest name is S.gpg-agent.browser.
_MAX_HOME_LEN = 107 - len("/S.gpg-agent.browser")
# No cached passphrase: every signature is made with the passphrase given to it.
_AGENT_CONF = "allow-loopback-pinentry\ndefault-cache-ttl 0\nmax-cache-ttl 0\n"
# Except while making a key: gpg protects it, then self-signs relying on the passphrase
# the agent just cached; with no cache that second step asks again and fails in batch mode.
_AGENT_CONF_KEYGEN = "allow-loopback-pinentry\n"
_SIG_CREATED = re.compile(r"^\[GNUPG:\] SIG_CREATED ", re.MULTILINE)


def _prepare_home(home: Path, *, cache: bool = False) -> None:
    home.mkdir(parents=True, exist_ok=True)
    # gpg warns about (and agent refuses) a home others can read.
    home.chmod(0o700)
    conf = home / "gpg-agent.conf"
    text = _AGENT_CONF_KEYGEN if cache else _AGENT_CONF
    if not conf.is_file() or conf.read_text(encoding="utf-8") != text:
        conf.write_text(text, encoding="utf-8")


def _gpg(home: Path) -> Any:
    # Loopback always: even without a passphrase, gpg must never look for a pinentry.
    return gnupg.GPG(gpgbinary=GPG, gnupghome=str(home), options=["--pinentry-mode", "loopback"])


def kill_agent(home: Path) -> None:
    """Stop the gpg-agent (and any dirmngr) started for ``home``; harmless when none runs."""
    run(["gpgconf", "--homedir", home, "--kill", "all"], check=False, timeout=30)


def _status_tail(stderr: str) -> str:
    """gpg's last human-readable complaint (never holds the passphrase: gpg does not echo it)."""
    lines = [ln for ln in stderr.splitlines() if ln.startswith("gpg: ")]
    return lines[-1].removeprefix("gpg: ") if lines else "gpg failed"


def _gpg_passphrase_ok(value: str) -> bool:
    # It travels as one line on a pipe: a newline would end it early.
    return not any(c in value for c in "\n\r\0")


def generate_key(home: Path, name: str, email: str, passphrase: str | None = None) -> str:
    """Make a signing key (RSA 3072, expires in two years) in ``home``; return its fingerprint.

    ``home`` is a scratch home for making keys (export with :func:`export_secret_key`), not
    a signer's: its agent may cache a passphrase for its default time while it runs.
    """
    _prepare_home(home, cache=True)
    gpg = _gpg(home)
    params: dict[str, Any] = {
        "key_type": KEY_TYPE,
        "key_length": KEY_LENGTH,
        "key_usage": "sign",
        "name_real": name,
        "name_email": email,
        "expire_date": KEY_EXPIRY,
    }
    if passphrase is None:
        params["no_protection"] = True
    else:
        if not _gpg_passphrase_ok(passphrase):
            raise InputError(None, "passphrase", "expected one line (no newline or NUL)")
        params["passphrase"] = passphrase
    try:
        result = gpg.gen_key(gpg.gen_key_input(**params))
    finally:
        kill_agent(home)
    if not result.fingerprint:
        raise WorkError(f"gpg --gen-key in {home}: {_status_tail(result.stderr)}")
    return str(result.fingerprint)


def export_secret_key(
    home: Path, fingerprint: str, dest: Path, *, passphrase: str | None = None
) -> None:
    """Write the armored secret key to ``dest`` (mode 0600, replaced atomically)."""
    gpg = _gpg(home)
    try:
        armored = gpg.export_keys(
            [fingerprint], secret=True, passphrase=passphrase, expect_passphrase=False
        )
    finally:
        kill_agent(home)
    if "PRIVATE KEY BLOCK" not in armored:
        raise WorkError(f"gpg --export-secret-keys {fingerprint}: nothing exported")
    _write_private(dest, armored.encode("ascii"))


def _write_private(dest: Path, data: bytes) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ArchiveSigner:
    """Signs with every archive key at once; built by :func:`load_archive_signer`.

    Read-only after construction; use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        home: Path,
        fingerprints: Sequence[str],
        passphrase: str | None,
        *,
        generated: bool = False,
        scratch_home: bool = False,
    ) -> None:
        if not fingerprints:
            raise ValueError("an ArchiveSigner needs at least one key")
        self._home = home
        self._fingerprints = tuple(fingerprints)
        # "" means no passphrase (see _Passphrase): never hand python-gnupg an empty one.
        self._passphrase = passphrase or None
        self._generated = generated
        self._scratch_home = scratch_home
        self._gpg = _gpg(home)
        self._passphrase_dir: Path | None = None

    def __repr__(self) -> str:
        return f"ArchiveSigner(home={self._home!s}, fingerprints={self._fingerprints})"

    @property
    def fingerprints(self) -> tuple[str, ...]:
        return self._fingerprints

    @property
    def home(self) -> Path:
        return self._home

    @property
    def generated(self) -> bool:
        """True for the example key made on first use, not a key the config supplied."""
        return self._generated

    # -- signatures --------------------------------------------------------------------

    def clearsign(self, data: bytes) -> bytes:
        """``InRelease``: the data with every key's signature around it, armored."""
        return self._sign(data, clearsign=True, detach=False, binary=False)

    def detach_sign(self, data: bytes, *, armor: bool = True) -> bytes:
        """``Release.gpg`` / ``repomd.xml.asc``: every key's signature over the data."""
        return self._sign(data, clearsign=False, detach=True, binary=not armor)

    def _sign(self, data: bytes, *, clearsign: bool, detach: bool, binary: bool) -> bytes:
        return self._sign_with(
            self._fingerprints, data, clearsign=clearsign, detach=detach, binary=binary
        )

    def _sign_with(
        self,
        fingerprints: Sequence[str],
        data: bytes,
        *,
        clearsign: bool,
        detach: bool,
        binary: bool,
    ) -> bytes:
        args = ["--digest-algo", DIGEST]
        for fp in fingerprints:
            args += ["--local-user", fp]
        result = self._gpg.sign(
            data,
            passphrase=self._passphrase,
            clearsign=clearsign,
            detach=detach,
            binary=binary,
            extra_args=args,
        )
        made = len(_SIG_CREATED.findall(result.stderr or ""))
        if result.returncode != 0 or made != len(fingerprints) or not result.data:
            raise WorkError(f"gpg signing in {self._home}: {_status_tail(result.stderr or '')}")
        return bytes(result.data)

    # -- public keys -------------------------------------------------------------------

    def public_asc(self) -> bytes:
        """Every archive key's public half, armored (``keys/…asc``, dnf's ``gpgkey=``)."""
        data = self._gpg.export_keys(list(self._fingerprints), armor=True)
        if "PUBLIC KEY BLOCK" not in data:
            raise WorkError(f"gpg --export in {self._home}: nothing exported")
        return str(data).encode("ascii")

    def public_keyring(self) -> bytes:
        """The same keys as a binary OpenPGP keyring, as apt's ``Signed-By`` and gpgv read."""
        data = self._gpg.export_keys(list(self._fingerprints), armor=False)
        if not data:
            raise WorkError(f"gpg --export in {self._home}: nothing exported")
        return bytes(data)

    # -- rpmsign -----------------------------------------------------------------------

    def rpm_macros(self, fingerprint: str | None = None) -> list[str]:
        """``--define`` arguments for ``rpmsign --addsign``: sha256, this home, no prompt.

        Signs with ``fingerprint`` or, by default, the first archive key. The passphrase
        reaches gpg through ``--passphrase-file`` naming a 0600 file in a private folder
        that :meth:`close` removes.
        """
        fp = fingerprint or self._fingerprints[0]
        if fp not in self._fingerprints:
            raise ValueError(f"{fp} is not one of this signer's keys")
        extra = "--batch --pinentry-mode loopback"
        if self._passphrase is not None:
            extra += f" --passphrase-file {self._passphrase_file()}"
        return [
            "--define",
            f"_gpg_name {fp}",
            "--define",
            f"_gpg_path {self._home}",
            "--define",
            f"__gpg {GPG}",
            "--define",
            "_gpg_digest_algo sha256",
            "--define",
            f"_gpg_sign_cmd_extra_args {extra}",
        ]

    def _passphrase_file(self) -> Path:
        assert self._passphrase is not None
        if self._passphrase_dir is None:
            self._passphrase_dir = Path(tempfile.mkdtemp(prefix="livegraft-gpg-pass-"))
            path = self._passphrase_dir / "passphrase"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(self._passphrase)
        return self._passphrase_dir / "passphrase"

    # -- life cycle --------------------------------------------------------------------

    def close(self) -> None:
        """Kill this home's gpg-agent and remove the passphrase file; safe to call twice."""
        kill_agent(self._home)
        if self._passphrase_dir is not None:
            shutil.rmtree(self._passphrase_dir, ignore_errors=True)
            self._passphrase_dir = None
        if self._scratch_home:
            shutil.rmtree(self._home, ignore_errors=True)

    def __enter__(self) -> ArchiveSigner:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# -- loading ---------------------------------------------------------------------------


def load_archive_signer(
    settings: SigningSettings,
    work_dir: Path,
    *,
    name: str,
    environ: Mapping[str, str] | None = None,
) -> ArchiveSigner:
    """Import the configured keys (or the generated example key) and prove each one signs.

    A wrong or missing passphrase, a file with no secret key, an expired key: InputError.
    """
    env = os.environ if environ is None else environ
    generated = False
    if env.get(ENV_KEY):
        sources = [(Path(p), ENV_KEY) for p in env[ENV_KEY].split(os.pathsep) if p]
    elif settings.archive_keys:
        sources = [(p, "signing.archive_keys") for p in settings.archive_keys]
    else:
        sources = [(_example_key(work_dir, name), "generated archive key")]
        generated = True
    passphrase = _Passphrase() if generated else _passphrase(settings, env)
    if passphrase.value is not None and not _gpg_passphrase_ok(passphrase.value):
        raise InputError(passphrase.path, passphrase.where, "expected one line (no newline or NUL)")

    home = work_dir / GNUPG_DIR
    scratch = len(str(home.resolve())) > _MAX_HOME_LEN
    if scratch:
        # Too deep for the agent's sockets: a short-lived home of our own instead.
        home = Path(tempfile.mkdtemp(prefix="livegraft-gnupg-"))
        log.debug("gnupg home %s (work_dir too deep for agent sockets)", home)
    _prepare_home(home)
    signer: ArchiveSigner | None = None
    try:
        fingerprints = [_import(home, path, fld) for path, fld in sources]
        if len(set(fingerprints)) != len(fingerprints):
            raise InputError(sources[0][0], sources[0][1], "the same key listed twice")
        signer = ArchiveSigner(
            home, fingerprints, passphrase.value, generated=generated, scratch_home=scratch
        )
        for fp, (path, fld) in zip(fingerprints, sources, strict=True):
            _check_usable(signer, fp, path, fld, passphrase)
    except BaseException:
        if signer is not None:
            signer.close()
        else:
            kill_agent(home)
            if scratch:
                shutil.rmtree(home, ignore_errors=True)
        raise
    log.info("archive keys: %s", ", ".join(fingerprints))
    return signer


@dataclass(frozen=True)
class _Passphrase:
    # None for an unprotected key. Never "": python-gnupg would then leave gpg reading
    # its passphrase from the data on the same pipe.
    value: str | None = field(default=None, repr=False)
    # Where it came from, for errors: a file (path) or a variable (path None, its name).
    path: Path | None = None
    where: str = ENV_PASSPHRASE


def _passphrase(settings: SigningSettings, env: Mapping[str, str]) -> _Passphrase:
    if ENV_PASSPHRASE in env:
        return _Passphrase(env[ENV_PASSPHRASE] or None)
    source: tuple[Path, str] | None = None
    if env.get(ENV_PASSPHRASE_FILE):
        source = (Path(env[ENV_PASSPHRASE_FILE]), ENV_PASSPHRASE_FILE)
    elif settings.archive_key_passphrase_file is not None:
        source = (settings.archive_key_passphrase_file, "signing.archive_key_passphrase_file")
    if source is None:
        return _Passphrase()
    try:
        # One trailing newline is how editors save a one-line file, not part of the secret.
        value = source[0].read_text(encoding="utf-8").removesuffix("\n")
    except (OSError, UnicodeDecodeError):
        raise InputError(source[0], source[1], "a readable passphrase file") from None
    return _Passphrase(value or None, source[0], source[1])


def _import(home: Path, path: Path, fld: str) -> str:
    """Import one armored secret key file; return its primary key's fingerprint."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(path, fld, "archive key file not found") from None
    except OSError as exc:
        raise InputError(path, fld, f"cannot read archive key ({exc.strerror})") from None
    gpg = _gpg(home)
    scanned = gpg.scan_keys(str(path))
    secret = [k["fingerprint"] for k in scanned if k.get("type") == "sec"]
    if not scanned:
        raise InputError(path, fld, "expected an OpenPGP secret key (armored), found no key")
    if len(secret) != 1:
        found = "only public keys" if not secret else f"{len(secret)} secret keys"
        raise InputError(path, fld, f"expected one OpenPGP secret key per file, found {found}")
    result = gpg.import_keys(data)
    fp = str(secret[0])
    have = {k["fingerprint"] for k in gpg.list_keys(secret=True)}
    if fp not in have:
        raise InputError(path, fld, f"gpg could not import the secret key ({result.summary()})")
    return fp


def _check_usable(
    signer: ArchiveSigner, fp: str, path: Path, fld: str, passphrase: _Passphrase
) -> None:
    [info] = signer._gpg.list_keys(keys=[fp]) or [{}]
    expires = info.get("expires") or ""
    if expires and int(expires) <= time.time():
        day = time.strftime("%Y-%m-%d", time.gmtime(int(expires)))
        raise InputError(path, fld, f"archive key {fp} expired on {day}; expected a valid key")
    try:
        signer._sign_with([fp], b"livegraft key check\n", clearsign=False, detach=True, binary=True)
    except WorkError as exc:
        # "Bad passphrase" when it is wrong, "we are in batchmode" when none was given.
        if not any(w in str(exc) for w in ("passphrase", "batchmode")):
            raise
        if passphrase.value is None:
            raise InputError(
                path,
                fld,
                f"archive key {fp} is protected: expected a passphrase in {ENV_PASSPHRASE},"
                f" {ENV_PASSPHRASE_FILE} or signing.archive_key_passphrase_file",
            ) from None
        raise InputError(
            passphrase.path, passphrase.where, f"does not unlock archive key {fp}"
        ) from None


def _example_key(work_dir: Path, name: str) -> Path:
    """The generated example key's file, made once (under a lock) and reused after."""
    keys = work_dir / KEYS_DIR
    keys.mkdir(parents=True, exist_ok=True)
    secret = keys / SECRET_FILE
    with (keys / ".archive.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not secret.is_file():
            scratch = Path(tempfile.mkdtemp(prefix="livegraft-keygen-"))
            try:
                slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "livegraft"
                fp = generate_key(
                    scratch, f"{name} archive signing key (example)", f"archive@{slug}.invalid"
                )
                export_secret_key(scratch, fp, secret)
                log.info("generated example archive key %s in %s", fp, secret)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
    return secret
