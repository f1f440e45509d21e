"""``livegraftctl status``: what runs, what is in effect, what is installed and why not loaded.

The JSON document (``status --json``), format 1; its keys are stable and only ever added to:

- ``running``: ``uname_r``, ``build_version`` (the distribution's version of the build,
  or null), ``livepatch`` (the kernel supports livepatching);
- ``patch``: ``state`` (``applied`` | ``nothing-to-apply`` | ``not-applied`` | ``failed``
  | ``disabled``), ``module``, ``level``, ``fixes``, ``cves``, ``transition`` (``done`` |
  ``in-progress`` | null), ``enabled`` (the module is an enabled livepatch);
- ``installed``: the running build's installed package (path, module, level, package,
  fixes, cves), or null; ``other_builds``: builds with a package installed, never loaded;
- ``effective_version``: the build plus the livepatch level in effect and its newest fix
  (``6.1.0-56-amd64 6.1.192-2+livegraft.2 (LGSA-2026-0002)``), as uptrack-uname reports;
- ``reasons``: why what is installed is not in effect (empty when it is);
- ``security``: ``secure_boot``, ``sig_enforce``, ``lockdown``;
- ``taint``: ``value`` and ``flags`` that concern livepatching;
- ``livepatches``: every entry of /sys/kernel/livepatch (``name``, ``enabled``, ``transition``);
- ``auto``, ``disabled`` (why loading is off, or null), ``guard`` (a load not yet settled,
  or null), ``last`` (the last recorded outcome), ``state_problem`` (an unreadable state file).

Exit status: 0 when the running kernel is covered or has nothing to apply, 1 when a patch
is installed but not in effect.
"""

from __future__ import annotations

from typing import Any

from . import state as st
from .apply import disabled_reason, settle
from .checks import refusals, trust_of
from .installed import InfoError, find_installed, other_builds
from .kernel import Kernel

STATUS_FORMAT = 1


def status(kernel: Kernel, settings: st.Settings) -> dict[str, Any]:
    roots = kernel.roots
    settle(kernel, settings)
    uname_r = kernel.uname_r()
    build_version = kernel.build_version()
    saved = st.load_state(roots)
    reasons: list[str] = []
    installed = None
    try:
        installed = find_installed(roots.root, uname_r)
    except InfoError as exc:
        reasons.append(str(exc))
    off = disabled_reason(kernel)
    guard = st.read_guard(roots)
    patches = kernel.patches()
    ours = next((p for p in patches if installed and p.name == installed.module), None)
    patch: dict[str, Any] = {
        "state": "nothing-to-apply",
        "module": installed.module if installed else None,
        "level": installed.level if installed else None,
        "fixes": [f.id for f in installed.fixes] if installed else [],
        "cves": list(installed.cves) if installed else [],
        "transition": None,
        "enabled": False,
    }
    if ours is not None:
        patch["transition"] = "in-progress" if ours.transition else "done"
        patch["enabled"] = ours.enabled
    if installed is not None:
        if ours is not None and ours.enabled and not ours.transition:
            patch["state"] = "applied"
        else:
            last = saved.last or {}
            failed = last.get("state") == "failed" and last.get("module") == installed.module
            patch["state"] = "failed" if failed else "not-applied"
            if off:
                patch["state"] = "disabled"
                reasons.append(f"loading is disabled: {off}")
            if guard is not None and guard.boot_id != kernel.boot_id():
                reasons.append(
                    f"crash-loop guard: {guard.describe()} and the machine went "
                    "down before it settled; run `livegraftctl apply` to load it"
                )
            if ours is not None and ours.transition:
                reasons.append(f"{installed.module} is still in transition")
            elif ours is not None:
                reasons.append(f"{installed.module} is loaded but disabled")
            if failed:
                reasons.append(f"the last load failed: {last.get('message')}")
            reasons += refusals(kernel, installed)
            if not reasons:
                reasons.append("installed, not loaded yet: run `livegraftctl apply`")
    elif reasons:
        patch["state"] = "not-applied"
    trust = trust_of(kernel)
    taint_value, taint_flags = kernel.tainted()
    effective = f"{uname_r} {build_version or '?'}"
    if patch["state"] == "applied" and installed is not None:
        newest = sorted(f.id for f in installed.fixes)[-1:] or ["no fixes"]
        effective += f"+livegraft.{installed.level} ({newest[0]})"
    return {
        "format": STATUS_FORMAT,
        "running": {
            "uname_r": uname_r,
            "build_version": build_version,
            "livepatch": kernel.livepatch_supported(),
        },
        "patch": patch,
        "installed": installed.to_json() if installed else None,
        "other_builds": other_builds(roots.root, uname_r),
        "effective_version": effective,
        "reasons": reasons,
        "security": {
            "secure_boot": trust.secure_boot,
            "sig_enforce": trust.sig_enforce,
            "lockdown": trust.lockdown,
        },
        "taint": {"value": taint_value, "flags": taint_flags},
        "livepatches": [
            {"name": p.name, "enabled": p.enabled, "transition": p.transition} for p in patches
        ],
        "auto": settings.auto,
        "disabled": off,
        "guard": None
        if guard is None
        else {
            "module": guard.module,
            "level": guard.level,
            "boot_id": guard.boot_id,
            "this_boot": guard.boot_id == kernel.boot_id(),
        },
        "last": saved.last,
        "state_problem": saved.problem,
    }


def exit_status(doc: dict[str, Any]) -> int:
    return 0 if doc["patch"]["state"] in ("applied", "nothing-to-apply") else 1


def render(doc: dict[str, Any]) -> str:
    run, patch, sec = doc["running"], doc["patch"], doc["security"]
    lines = [
        f"running:    {run['uname_r']} ({run['build_version'] or 'build version unknown'})"
        + ("" if run["livepatch"] else ", no livepatch support"),
        f"effective:  {doc['effective_version']}",
        f"livepatch:  {patch['state']}"
        + (f", {patch['module']} level {patch['level']}" if patch["module"] else "")
        + (f", transition {patch['transition']}" if patch["transition"] else ""),
    ]
    if patch["fixes"]:
        lines.append(f"fixes:      {', '.join(patch['fixes'])}")
    if patch["cves"]:
        lines.append(f"cves:       {', '.join(patch['cves'])}")
    for reason in doc["reasons"]:
        lines.append(f"why:        {reason}")
    if doc["other_builds"]:
        lines.append(f"ignored:    packages for other builds: {', '.join(doc['other_builds'])}")
    flags = ", ".join(doc["taint"]["flags"]) or "none that concern livepatching"
    lines += [
        f"security:   secure boot {_yn(sec['secure_boot'])}, sig_enforce "
        f"{_yn(sec['sig_enforce'])}, lockdown {sec['lockdown'] or 'unknown'}",
        f"taint:      {doc['taint']['value']} ({flags})",
        f"auto:       {'on' if doc['auto'] else 'off'}",
    ]
    if doc["state_problem"]:
        lines.append(f"state:      {doc['state_problem']}")
    return "\n".join(lines)


def _yn(value: bool | None) -> str:
    return "unknown" if value is None else ("on" if value else "off")
