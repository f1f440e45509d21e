"""The pipeline's config file (TOML), validated strictly: an unknown key is an error.

Paths in the file are relative to the file's own folder, so a config means the same
thing whatever directory livegraft is started from.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InputError

# Debian's dnf pluginpath; Fedora and RHEL use their python3_sitelib's dnf-plugins
# (/usr/lib/python3.9/site-packages/dnf-plugins on EL9), which the config then names.
DEFAULT_DNF_PLUGIN_DIR = "/usr/lib/python3/dist-packages/dnf-plugins"
TOP_LEVEL_KEYS = {
    "name": "a short name for this pipeline (string)",
    "work_dir": "where state, plans and reports go (path)",
    "errata": "errata files or folders (list of paths)",
    "fixes": "the livepatch sources folder (path)",
    "kernels": "declared kernel builds ([[kernels]] tables)",
    "discover": "kernel discovery sources ([[discover]] tables)",
    "build": "[build]: how modules are built (see BUILD_KEYS)",
    "signing": "[signing]: the module-signing key (see SIGNING_KEYS)",
    "packages": "[packages]: which package formats and their fields (see PACKAGES_KEYS)",
    "publish": "[publish]: where the published tree is served (see PUBLISH_KEYS)",
}
BUILD_KEYS = {
    "cache": "where kernel packages and unpacked header trees are kept (path; <work_dir>/cache)",
    "jobs": "compiles at a time (integer >= 1; one per core when absent)",
}
SIGNING_KEYS = {
    "module_key": "the module-signing private key, PEM (path; generated when absent)",
    "module_cert": "its X.509 certificate, PEM or DER (path)",
    "module_key_passphrase_file": "a file holding the key's passphrase (path)",
    "archive_keys": (
        "OpenPGP secret keys signing packages and repository metadata, armored"
        " (list of paths; two during a rotation; generated when absent)"
    ),
    "archive_key_passphrase_file": "a file holding the archive keys' passphrase (path)",
}
PACKAGES_KEYS = {
    "formats": (
        'package formats built for every kernel build (list of "deb", "rpm"; default: '
        "the build's own family)"
    ),
    "maintainer": 'Maintainer (DEB) and Packager (RPM): "Name <email>" (string)',
    "vendor": "the RPM Vendor (string; the pipeline's name when absent)",
    "source_date_epoch": (
        "the time every package carries, in seconds since 1970 (integer; fixed, so that "
        "two builds of the same input are identical)"
    ),
    "dnf_plugin_dir": (
        "where python3-dnf-plugin-livegraft installs the dnf plugin: the hosts' dnf "
        f"pluginpath (absolute path; default {DEFAULT_DNF_PLUGIN_DIR})"
    ),
    "client_source": (
        "the livegraft source tree the client packages are built from, holding client/ "
        "and plugins/ (path; default: the tree this livegraft runs from)"
    ),
}
PUBLISH_KEYS = {
    "to": (
        "where livegraft run and publish put the tree: a folder (path) or "
        "s3://bucket/prefix (default <work_dir>/public)"
    ),
    "base_url": (
        "the URL the published tree is served at, written into clients/ and the metalinks "
        "(http://, https:// or file:///; default: the file:// URL of the folder in `to`; "
        "required when `to` names a bucket)"
    ),
    "endpoint": "an S3-compatible endpoint URL (string; AWS itself when absent)",
    "region": "the S3 region (string)",
    "addressing": 'S3 bucket addressing: "auto", "path" or "virtual" (default "auto")',
    "retention_hours": (
        "how long objects only older generations name are kept, for clients and caches "
        "still holding old metadata (number >= 0; default 48)"
    ),
}
ADDRESSING = ("auto", "path", "virtual")
DEFAULT_RETENTION_HOURS = 48.0
PACKAGE_FORMATS = ("deb", "rpm")
DEFAULT_MAINTAINER = "livegraft <livegraft@localhost.invalid>"
# 2024-01-01T00:00:00Z. Not the time of the run, nor the environment's SOURCE_DATE_EPOCH
# (a CI job sets that per commit): the same level must come out byte for byte the same.
DEFAULT_SOURCE_DATE_EPOCH = 1704067200
_MAINTAINER = re.compile(r"[^<>\n]*[^<>\s] <[^<>@\s]+@[^<>@\s]+>")
# An absolute path a package may install to and a spec file may name as it is.
_INSTALL_PATH = re.compile(r"(/[A-Za-z0-9._+-]+)+")
# The [signing] keys that hold one path each.
_SIGNING_PATH_KEYS = (
    "module_key",
    "module_cert",
    "module_key_passphrase_file",
    "archive_key_passphrase_file",
)


@dataclass(frozen=True)
class BuildSettings:
    cache: Path | None = None
    jobs: int | None = None


@dataclass(frozen=True)
class SigningSettings:
    """Paths as the config gives them; whether they exist is checked where they are used."""

    module_key: Path | None = None
    module_cert: Path | None = None
    module_key_passphrase_file: Path | None = None
    # The first key signs packages; every key signs repository metadata.
    archive_keys: tuple[Path, ...] = ()
    archive_key_passphrase_file: Path | None = None


@dataclass(frozen=True)
class PackageSettings:
    # Empty: each kernel build gets its own family's format.
    formats: tuple[str, ...] = ()
    maintainer: str = DEFAULT_MAINTAINER
    vendor: str | None = None
    source_date_epoch: int = DEFAULT_SOURCE_DATE_EPOCH
    dnf_plugin_dir: str = DEFAULT_DNF_PLUGIN_DIR
    # None: the source tree this livegraft runs from (package.client_files).
    client_source: Path | None = None


@dataclass(frozen=True)
class PublishSettings:
    # None: the file:// URL of the destination folder (Config.publish_url).
    base_url: str | None = None
    # A folder (absolute) or s3://bucket/prefix; None: <work_dir>/public.
    to: str | None = None
    endpoint: str | None = None
    region: str | None = None
    addressing: str = "auto"
    retention_hours: float = DEFAULT_RETENTION_HOURS


@dataclass(frozen=True)
class Config:
    path: Path
    name: str
    work_dir: Path
    errata: tuple[Path, ...]
    fixes_dir: Path
    # Kept raw: the kernel matrix validates these itself, with this file's name in errors.
    kernels: tuple[Mapping[str, Any], ...]
    discover: tuple[Mapping[str, Any], ...]
    build: BuildSettings = field(default_factory=BuildSettings)
    signing: SigningSettings = field(default_factory=SigningSettings)
    packages: PackageSettings = field(default_factory=PackageSettings)
    publish: PublishSettings = field(default_factory=PublishSettings)

    @property
    def publish_to(self) -> str:
        """Where the tree is published: [publish] to, else <work_dir>/public."""
        return self.publish.to or str(self.work_dir / "public")

    def publish_url(self, to: str | None = None) -> str:
        """The URL clients read the tree at, published to ``to`` (default: publish_to).

        The config's base_url when set; else the destination folder's own file:// URL, so
        the embedded default needs no server. A bucket has no URL we could guess (CDN,
        website endpoint, path or virtual addressing): its base_url must be given.
        """
        if self.publish.base_url:
            return self.publish.base_url
        dest = to or self.publish_to
        if dest.startswith("s3://"):
            raise InputError(
                self.path, "publish.base_url",
                f"the URL clients read {dest} at (required when publishing to a bucket)",
            )  # fmt: skip
        return Path(dest).resolve().as_uri()

    @property
    def levels_file(self) -> Path:
        return self.work_dir / "levels.json"

    @property
    def cache_dir(self) -> Path:
        return self.build.cache or self.work_dir / "cache"


def check_keys(path: Path, where: str, table: Mapping[str, Any], known: Mapping[str, str]) -> None:
    """Refuse keys we do not know: a typo must not silently change what gets built."""
    for key in table:
        if key not in known:
            field = f"{where}.{key}" if where else key
            raise InputError(path, field, f"unknown key (expected one of: {', '.join(known)})")


def _str(path: Path, table: Mapping[str, Any], key: str, default: str) -> str:
    value = table.get(key, default)
    if not isinstance(value, str) or not value:
        raise InputError(path, key, "expected a non-empty string")
    return value


def _tables(path: Path, table: Mapping[str, Any], key: str) -> tuple[Mapping[str, Any], ...]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise InputError(path, key, f"expected an array of tables ([[{key}]])")
    return tuple(value)


def _table(
    path: Path, raw: Mapping[str, Any], key: str, known: Mapping[str, str]
) -> Mapping[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise InputError(path, key, f"expected a table ([{key}])")
    check_keys(path, key, value, known)
    return value


def _path(path: Path, base: Path, table: Mapping[str, Any], where: str, key: str) -> Path | None:
    if key not in table:
        return None
    value = table[key]
    if not isinstance(value, str) or not value:
        raise InputError(path, f"{where}.{key}", "expected a path (non-empty string)")
    return (base / value).resolve()


def _build_settings(path: Path, base: Path, raw: Mapping[str, Any]) -> BuildSettings:
    table = _table(path, raw, "build", BUILD_KEYS)
    jobs = table.get("jobs")
    if jobs is not None and (not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1):
        raise InputError(path, "build.jobs", "expected an integer >= 1")
    return BuildSettings(cache=_path(path, base, table, "build", "cache"), jobs=jobs)


def _signing_settings(path: Path, base: Path, raw: Mapping[str, Any]) -> SigningSettings:
    table = _table(path, raw, "signing", SIGNING_KEYS)
    archive_keys = table.get("archive_keys", [])
    if (
        not isinstance(archive_keys, list)
        or not all(isinstance(p, str) and p for p in archive_keys)
        or len(set(archive_keys)) != len(archive_keys)
    ):
        raise InputError(path, "signing.archive_keys", "expected a list of distinct paths")
    paths = {key: _path(path, base, table, "signing", key) for key in _SIGNING_PATH_KEYS}
    settings = SigningSettings(
        module_key=paths["module_key"],
        module_cert=paths["module_cert"],
        module_key_passphrase_file=paths["module_key_passphrase_file"],
        archive_keys=tuple((base / p).resolve() for p in archive_keys),
        archive_key_passphrase_file=paths["archive_key_passphrase_file"],
    )
    if (settings.module_key is None) != (settings.module_cert is None):
        raise InputError(path, "signing", "expected module_key and module_cert together")
    return settings


def _package_settings(path: Path, base: Path, raw: Mapping[str, Any]) -> PackageSettings:
    table = _table(path, raw, "packages", PACKAGES_KEYS)
    formats = table.get("formats", [])
    if (
        not isinstance(formats, list)
        or not all(f in PACKAGE_FORMATS for f in formats)
        or len(set(formats)) != len(formats)
    ):
        raise InputError(
            path, "packages.formats", f"expected a list of distinct formats from {PACKAGE_FORMATS}"
        )
    maintainer = table.get("maintainer", DEFAULT_MAINTAINER)
    if not isinstance(maintainer, str) or not _MAINTAINER.fullmatch(maintainer):
        raise InputError(path, "packages.maintainer", 'expected "Name <user@host>" on one line')
    vendor = table.get("vendor")
    if vendor is not None and (
        not isinstance(vendor, str) or not vendor.strip() or not vendor.isprintable()
    ):
        raise InputError(path, "packages.vendor", "expected a non-empty string on one line")
    epoch = table.get("source_date_epoch", DEFAULT_SOURCE_DATE_EPOCH)
    # From 1980: a zip-era floor that every archive format (ar, cpio, tar) can hold.
    if not isinstance(epoch, int) or isinstance(epoch, bool) or not 315532800 <= epoch < 2**32:
        raise InputError(
            path, "packages.source_date_epoch", "expected seconds since 1970, from 1980 to 2106"
        )
    plugin_dir = table.get("dnf_plugin_dir", DEFAULT_DNF_PLUGIN_DIR)
    if (
        not isinstance(plugin_dir, str)
        or not _INSTALL_PATH.fullmatch(plugin_dir)
        or any(part in (".", "..") for part in plugin_dir.split("/"))
    ):
        raise InputError(
            path,
            "packages.dnf_plugin_dir",
            "an absolute folder path of letters, digits and ._+- (such as "
            f"{DEFAULT_DNF_PLUGIN_DIR})",
        )
    return PackageSettings(
        tuple(formats),
        maintainer,
        vendor,
        epoch,
        dnf_plugin_dir=plugin_dir,
        client_source=_path(path, base, table, "packages", "client_source"),
    )


def _publish_settings(path: Path, base: Path, raw: Mapping[str, Any]) -> PublishSettings:
    table = _table(path, raw, "publish", PUBLISH_KEYS)
    # Imported here: the repo package imports this module.
    from .repo.tree import check_base_url

    def text(key: str) -> str | None:
        value = table.get(key)
        if value is not None and (not isinstance(value, str) or not value):
            raise InputError(path, f"publish.{key}", "expected a non-empty string")
        return value

    base_url = text("base_url")
    if base_url is not None:
        try:
            base_url = check_base_url(base_url)
        except InputError as exc:
            raise InputError(path, "publish.base_url", exc.expected) from None
    to = text("to")
    if to is not None and not to.startswith("s3://"):
        if "://" in to:
            raise InputError(path, "publish.to", f"a folder or s3://bucket/prefix, not {to!r}")
        to = str((base / to).resolve())
    addressing = text("addressing") or "auto"
    if addressing not in ADDRESSING:
        raise InputError(path, "publish.addressing", f"one of {', '.join(ADDRESSING)}")
    retention = table.get("retention_hours", DEFAULT_RETENTION_HOURS)
    if isinstance(retention, bool) or not isinstance(retention, int | float) or retention < 0:
        raise InputError(path, "publish.retention_hours", "a number of hours >= 0")
    return PublishSettings(
        base_url=base_url,
        to=to,
        endpoint=text("endpoint"),
        region=text("region"),
        addressing=addressing,
        retention_hours=float(retention),
    )


def load_config(path: Path) -> Config:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, None, "config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, None, f"cannot read config ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(path, None, f"not valid TOML ({exc})") from None
    check_keys(path, "", raw, TOP_LEVEL_KEYS)
    base = path.resolve().parent

    errata = raw.get("errata", [])
    if not isinstance(errata, list) or not all(isinstance(p, str) and p for p in errata):
        raise InputError(path, "errata", "expected a list of paths")
    errata_paths = tuple(base / p for p in errata)
    for rel, full in zip(errata, errata_paths, strict=True):
        if not full.exists():
            raise InputError(path, "errata", f"{rel!r} does not exist")

    fixes_dir = base / _str(path, raw, "fixes", "fixes")
    kernels = _tables(path, raw, "kernels")
    discover = _tables(path, raw, "discover")
    if not kernels and not discover:
        raise InputError(path, "kernels", "expected [[kernels]] or [[discover]] entries")
    return Config(
        path=path,
        name=_str(path, raw, "name", base.name),
        work_dir=(base / _str(path, raw, "work_dir", ".livegraft")).resolve(),
        errata=errata_paths,
        fixes_dir=fixes_dir,
        kernels=kernels,
        discover=discover,
        build=_build_settings(path, base, raw),
        signing=_signing_settings(path, base, raw),
        packages=_package_settings(path, base, raw),
        publish=_publish_settings(path, base, raw),
    )
