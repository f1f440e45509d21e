"""Verify: boot each build's real kernel in QEMU and prove its livepatch module works.

- ``engine``: one cell's boot (``verify_cell``) and its judgement from the serial console
- ``guest``, ``initramfs``, ``qemu``: the /init script, the initramfs, the QEMU run
- ``runner``: every cell of a plan (or a shard): artifact, kernel image, level N+1 probe
- ``records``: the per-artifact results; ``verified(work_dir, artifact_id)`` is what the
  package stage asks before packaging
"""

from .engine import Step, VerifyResult, verify_cell
from .records import verified

__all__ = ["Step", "VerifyResult", "verified", "verify_cell"]
