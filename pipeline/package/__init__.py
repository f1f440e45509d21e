"""Package: each verified cell's module as an RPM and/or a DEB per kernel build.

- ``names``: package names, versions, file names and the rules they are checked against
- ``info``: the ``livepatch.json`` installed beside each module
- ``item``: one package's input (``PackageItem``), shared by both builders
- ``deb``, ``rpm``: the builders, each reading its package back before it counts
- ``stage``: every cell of a plan, all or nothing, idempotent (``Packager``)
- ``records``: what was produced, read back for ``livegraft index``
  (``load_records``, ``advisories``)
"""

from .records import Advisory, PackageRecord, advisories, load_records

__all__ = ["Advisory", "PackageRecord", "advisories", "load_records"]
