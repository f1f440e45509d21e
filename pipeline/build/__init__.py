"""The build stage: one stripped, signed cumulative livepatch module per plan cell.

- ``generate``: the module's sources (main.c with the klp_patch, Kbuild, the fixes' objects)
- ``kbuild``: compile against the build's headers, strip, sign, check the modinfo
- ``kpatch``: the kpatch-build backend for fixes given as source diffs
- ``store``: the content-addressed artifact store
- ``runner``: every cell (or one shard), one compile per core

What later stages use: ``build_commands.open_store(config).for_cell(cell.id)`` gives the
cell's ``Artifact`` (``.module`` the .ko, ``.info`` its build.json, ``.log``), or None
when the cell has not been built.
"""
