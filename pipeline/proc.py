"""The one wrapper through which livegraft runs other programs."""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import WorkError

log = logging.getLogger("livegraft.proc")


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class CommandError(WorkError):
    def __init__(self, result: Completed) -> None:
        self.result = result
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or [""]
        super().__init__(
            f"{shlex.join(result.argv[:3])}{' …' if len(result.argv) > 3 else ''} "
            f"exited {result.returncode}: {tail[0]}"
        )


class CommandTimeout(WorkError):
    """The command ran past its time limit and was killed."""


def _exec(
    args: tuple[str, ...],
    *,
    cwd: Path | None,
    env: Mapping[str, str] | None,
    input: str | bytes | None,
    timeout: float | None,
    text: bool,
) -> subprocess.CompletedProcess[Any]:
    log.debug("run: %s", shlex.join(args))
    full_env = None
    if env is not None:
        full_env = dict(os.environ)
        full_env.update(env)
    try:
        return subprocess.run(
            args,
            cwd=cwd,
            env=full_env,
            input=input,
            capture_output=True,
            text=text,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise WorkError(f"{args[0]}: not installed ({exc.strerror})") from None
    except subprocess.TimeoutExpired:
        raise CommandTimeout(f"{shlex.join(args[:3])}: timed out after {timeout} s") from None


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    input: str | None = None,
    timeout: float | None = None,
) -> Completed:
    """Run argv (never through a shell), capture its output, raise CommandError on failure.

    ``env`` is added to the current environment rather than replacing it, because the
    tools we call need PATH and locale; values are never logged, only the command.
    """
    args = tuple(os.fspath(a) for a in argv)
    cp = _exec(args, cwd=cwd, env=env, input=input, timeout=timeout, text=True)
    result = Completed(args, cp.returncode, cp.stdout, cp.stderr)
    if check and cp.returncode != 0:
        raise CommandError(result)
    return result


def run_bytes(
    argv: Sequence[str | os.PathLike[str]], *, input: bytes, timeout: float | None = None
) -> bytes:
    """Like run(), for filters whose input and output are binary (compressors)."""
    args = tuple(os.fspath(a) for a in argv)
    cp = _exec(args, cwd=None, env=None, input=input, timeout=timeout, text=False)
    if cp.returncode != 0:
        stderr = cp.stderr.decode("utf-8", "replace")
        raise CommandError(Completed(args, cp.returncode, "", stderr))
    out: bytes = cp.stdout
    return out
