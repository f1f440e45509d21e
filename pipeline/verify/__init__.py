"""Verify: boot each build's real kernel in QEMU and prove its livepatch module works."""

from .engine import Step, VerifyResult, verify_cell

__all__ = ["Step", "VerifyResult", "verify_cell"]
