"""Package: each verified cell's module as an RPM and/or a DEB per kernel build, and the
client packages beside them.

- ``names``: package names, versions, file names and the rules they are checked against
- ``info``: the ``livepatch.json`` installed beside each module
- ``item``: one package's input (``PackageItem``), shared by both builders
- ``deb``, ``rpm``: the builders, each reading its package back before it counts
- ``client_files``, ``client_item``, ``client_rpm``, ``client_deb``: the client packages
  (``livegraft-client``, ``python3-dnf-plugin-livegraft``, ``apt-livegraft``) from the
  source tree, their revisions kept in a ledger
- ``stage``: every cell of a plan, then the client packages, all or nothing, idempotent
  (``Packager``)
- ``records``: what was produced, read back for ``livegraft index``
  (``load_records``, ``advisories``)
"""

from .records import Advisory, PackageRecord, advisories, load_records

__all__ = ["Advisory", "PackageRecord", "advisories", "load_records"]
