"""The plan: for every kernel build, which fixes go into its cumulative module, at which level.

A fix applies to a build when its constraints admit the build and at least one of its
vulnerabilities affects that build (errata, with distro backport data winning over
upstream ranges). One cell per livepatch package: when the matrix holds two builds of
the same ``uname -r`` (a distro rebuild), the newest one is planned and the other is
reported as superseded, since one package name can carry only one module.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cmp_to_key
from typing import Any

from .canonical import content_id
from .errata.load import ErrataSet
from .fixes import Fix, combine
from .kernels.model import KernelBuild
from .levels import Ledger
from .versions import debian, rpm

PLAN_FORMAT = 1
# What a level's package holds beyond its module (tags, livepatch.json's format). Part of
# every level's content: when the packages change shape, every package gets a new level,
# since a published level's package may never change under clients. The package stage
# uses it as its packager version.
PACKAGE_FORMAT = 2
# The kernel's MODULE_NAME_LEN is 64 including a terminating NUL and a pointer's worth
# of struct padding; 55 characters is what every architecture accepts.
MODULE_NAME_MAX = 55


@dataclass(frozen=True)
class Decision:
    """Why one fix does or does not apply to one build."""

    fix: str
    applies: bool
    reason: str


@dataclass(frozen=True)
class Cell:
    id: str
    build: KernelBuild
    level: int
    fixes: tuple[Fix, ...]
    decisions: tuple[Decision, ...]

    @property
    def package_key(self) -> str:
        return package_key(self.build)

    @property
    def module_name(self) -> str:
        return module_name(self.build, self.level)

    @property
    def cves(self) -> tuple[str, ...]:
        return tuple(sorted({c for f in self.fixes for c in f.cves}))

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "uname_r": self.build.uname_r,
            "package_version": self.build.package_version,
            "family": self.build.family,
            "level": self.level,
            "module": self.module_name,
            "fixes": [f.id for f in self.fixes],
            "cves": list(self.cves),
            "decisions": [
                {"fix": d.fix, "applies": d.applies, "reason": d.reason} for d in self.decisions
            ],
        }


@dataclass(frozen=True)
class Plan:
    cells: tuple[Cell, ...]
    # Builds no fix applies to, with each fix's reason.
    idle: tuple[tuple[KernelBuild, tuple[Decision, ...]], ...]
    superseded: tuple[tuple[KernelBuild, KernelBuild], ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": PLAN_FORMAT,
            "cells": [c.to_json() for c in self.cells],
            "idle": [
                {
                    "uname_r": b.uname_r,
                    "package_version": b.package_version,
                    "decisions": [{"fix": d.fix, "reason": d.reason} for d in ds],
                }
                for b, ds in self.idle
            ],
            "superseded": [
                {
                    "uname_r": old.uname_r,
                    "package_version": old.package_version,
                    "by": new.package_version,
                }
                for old, new in self.superseded
            ],
        }


def package_key(build: KernelBuild) -> str:
    return f"{build.family}:{build.uname_r}"


def module_name(build: KernelBuild, level: int) -> str:
    """livegraft_<uname -r with every other character as _>_l<level>, within MODULE_NAME_LEN."""
    suffix = f"_l{level}"
    stem = "livegraft_" + re.sub(r"[^A-Za-z0-9]", "_", build.uname_r)
    if len(stem) + len(suffix) > MODULE_NAME_MAX:
        # Keep it unique when it has to be shortened: the tail is a hash of uname -r.
        tag = content_id([build.uname_r])[:8]
        stem = stem[: MODULE_NAME_MAX - len(suffix) - 9] + "_" + tag
    return stem + suffix


def _compare_builds(a: KernelBuild, b: KernelBuild) -> int:
    compare = debian.compare if a.family == "deb" else rpm.compare
    return compare(a.package_version, b.package_version)


def decide(fix: Fix, build: KernelBuild, errata: ErrataSet) -> Decision:
    refused = fix.applies.admits(build)
    if refused:
        return Decision(fix.id, False, f"constraints: {refused}")
    statuses = {cve: errata.status_for_build(cve, build) for cve in fix.cves}
    affected = sorted(c for c, s in statuses.items() if s == "affected")
    if affected:
        return Decision(fix.id, True, "affected: " + ", ".join(affected))
    return Decision(fix.id, False, "; ".join(f"{c}: {s}" for c, s in sorted(statuses.items())))


def make_plan(
    builds: Sequence[KernelBuild], fixes: Sequence[Fix], errata: ErrataSet, ledger: Ledger
) -> Plan:
    """Decide every (build, fix) pair and assign levels in ``ledger`` (not saved here)."""
    groups: dict[str, list[KernelBuild]] = {}
    for build in builds:
        groups.setdefault(package_key(build), []).append(build)
    newest: dict[str, KernelBuild] = {}
    superseded: list[tuple[KernelBuild, KernelBuild]] = []
    for key, group in groups.items():
        group.sort(key=cmp_to_key(_compare_builds))
        newest[key] = group[-1]
        superseded.extend((old, group[-1]) for old in group[:-1])

    cells: list[Cell] = []
    idle: list[tuple[KernelBuild, tuple[Decision, ...]]] = []
    for build in builds:
        if newest[package_key(build)] is not build:
            continue
        decisions = tuple(decide(fix, build, errata) for fix in fixes)
        chosen = combine(f for f, d in zip(fixes, decisions, strict=True) if d.applies)
        if not chosen:
            idle.append((build, decisions))
            continue
        inputs = {
            "build": build.identity(),
            "fixes": [{"id": f.id, "digest": f.digest} for f in chosen],
            "package_format": PACKAGE_FORMAT,
        }
        entry = ledger.assign(
            package_key(build),
            content_id(inputs),
            build.package_version,
            tuple(f.id for f in chosen),
        )
        cell_id = content_id(
            {"stage": "plan", "format": PLAN_FORMAT, "level": entry.level, **inputs}
        )
        cells.append(Cell(cell_id, build, entry.level, chosen, decisions))
    return Plan(tuple(cells), tuple(idle), tuple(superseded))
