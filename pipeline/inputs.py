"""Everything one config points at, loaded and validated before any stage runs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .config import Config, load_config
from .errata.load import ErrataSet, load_errata
from .fixes import Fix, load_fixes
from .kernels.matrix import load_matrix
from .kernels.model import KernelBuild


@dataclass(frozen=True)
class Inputs:
    config: Config
    builds: tuple[KernelBuild, ...]
    fixes: tuple[Fix, ...]
    errata: ErrataSet


def load_inputs(config_path: Path, extra_errata: Sequence[Path] = ()) -> Inputs:
    config = load_config(config_path)
    fixes = load_fixes(config.fixes_dir)
    errata = load_errata([*config.errata, *extra_errata])
    builds = load_matrix(config)
    return Inputs(config, builds, fixes, errata)
