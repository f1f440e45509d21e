"""Strict reading of parsed JSON: every wrong field becomes one InputError naming its path.

A :class:`Field` is a value together with where it sits in its file
(``containers.cna.affected[1].versions[3].versionType``), so a parser reads a record
the way the schema describes it and a bad record is reported precisely.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError


@dataclass(frozen=True)
class Field:
    value: Any
    path: str
    file: str

    def error(self, expected: str) -> InputError:
        return InputError(self.file, self.path or None, expected)

    def _child_path(self, key: str | int) -> str:
        if isinstance(key, int):
            return f"{self.path}[{key}]"
        return f"{self.path}.{key}" if self.path else key

    # Objects.

    def is_object(self) -> bool:
        return isinstance(self.value, dict)

    def object(self) -> Field:
        if not isinstance(self.value, dict):
            raise self.error(f"expected an object, got {_kind(self.value)}")
        return self

    def get(self, key: str) -> Field | None:
        """The member ``key`` of this object, or None when absent."""
        mapping = self.object().value
        if key not in mapping:
            return None
        return Field(mapping[key], self._child_path(key), self.file)

    def require(self, key: str) -> Field:
        """The member ``key`` of this object; its absence is an InputError."""
        member = self.get(key)
        if member is None:
            raise InputError(self.file, self._child_path(key), "required field is missing")
        return member

    # Arrays.

    def items(self) -> list[Field]:
        if not isinstance(self.value, list):
            raise self.error(f"expected an array, got {_kind(self.value)}")
        return [Field(v, self._child_path(i), self.file) for i, v in enumerate(self.value)]

    # Scalars.

    def string(self) -> str:
        if not isinstance(self.value, str):
            raise self.error(f"expected a string, got {_kind(self.value)}")
        return self.value

    def nonempty_string(self) -> str:
        text = self.string()
        if not text.strip():
            raise self.error("expected a non-empty string")
        return text

    def number(self) -> float:
        # bool is an int in Python, not a number in JSON.
        if isinstance(self.value, bool) or not isinstance(self.value, int | float):
            raise self.error(f"expected a number, got {_kind(self.value)}")
        return float(self.value)

    def choice(self, allowed: tuple[str, ...]) -> str:
        text = self.string()
        if text not in allowed:
            raise self.error(f"expected one of {', '.join(allowed)}, got {text!r}")
        return text


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def load_json(path: str | os.PathLike[str], data: bytes | None = None) -> Field:
    """Parse a JSON file (or its already-read bytes) into a root :class:`Field`."""
    file = os.fspath(path)
    try:
        raw = Path(file).read_bytes() if data is None else data
    except OSError as exc:
        raise InputError(file, None, f"cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(file, None, f"expected UTF-8 JSON: {exc.reason}") from None
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise InputError(
            file, f"line {exc.lineno} column {exc.colno}", f"expected valid JSON: {exc.msg}"
        ) from None
    except ValueError as exc:
        # Python refuses integers of more than 4300 digits, valid JSON though they are.
        raise InputError(file, None, f"expected JSON we can read: {exc}") from None
    except RecursionError:
        raise InputError(file, None, "expected JSON nested less deeply") from None
    return Field(value, "", file)


def _refuse_constant(name: str) -> Any:
    # NaN and Infinity are Python extensions, not JSON.
    raise json.JSONDecodeError(f"{name} is not valid JSON", name, 0)
