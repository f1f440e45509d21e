"""Git commit ids as errata name them: full 40-hex SHAs or abbreviations of them.

Records abbreviate differently (the kernel CNA's 2024 records used 12 characters, later
ones 40), so commits are compared on their first 12 hex digits, the kernel's own
convention for ``Fixes:`` tags.
"""

from __future__ import annotations

import re

SHORT = 12
_HEX = re.compile(r"[0-9a-fA-F]{12,40}")


def normalise(text: object) -> str | None:
    """The 12-character lower-case form of a commit id, or None if ``text`` is not one."""
    if not isinstance(text, str):
        return None
    stripped = text.strip()
    if not _HEX.fullmatch(stripped):
        return None
    return stripped[:SHORT].lower()
