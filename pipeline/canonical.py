"""Canonical JSON and the content ids built from it.

Every artifact's id is a sha256 over the canonical JSON of what made it, so the same
inputs give the same id on any machine and in any order of dict insertion.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

Json = Any


def canonical_json(value: Json) -> bytes:
    """UTF-8 JSON with sorted keys and no insignificant white space."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def content_id(value: Mapping[str, Json] | Sequence[Json]) -> str:
    return hashlib.sha256(canonical_json(value)).hexdigest()
