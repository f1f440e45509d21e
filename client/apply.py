"""Loading the installed livepatch into the running kernel, and taking it out again.

One client at a time (``state.locked``). A load is: the checks (``checks.refusals``); no
older level than the one enabled (unless allowed); the crash-loop guard written; insmod,
retried while another transition holds the kernel busy (EBUSY); then a wait for the
patch's transition to finish. A transition that does not finish in time names the tasks
still unpatched and, by policy (``on_stall``), is reversed (``enabled`` ← 0) and the module
unloaded, or left to finish. ``force`` is written only when the caller asks: it completes a
transition but forbids ever unloading the module.

Every outcome is recorded in the state file and returned; nothing here raises for a
failure of the work, so a package-manager hook can print the outcome and carry on.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from . import state as st
from .checks import refusals
from .installed import InfoError, Installed, find_installed
from .kernel import Kernel, LoadError, Roots, Task

LEVEL_SUFFIX = re.compile(r"_l([0-9]+)$")
OURS = "livegraft_"


@dataclass(frozen=True)
class Outcome:
    # applied | nothing-to-apply | not-applied | failed | disabled | reverted
    state: str
    message: str
    module: str | None = None
    level: int | None = None
    tasks: tuple[Task, ...] = field(default=())
    # InfoError and bad settings: the input was wrong, not the work.
    bad_input: bool = False

    @property
    def exit_status(self) -> int:
        if self.bad_input:
            return 2
        return 0 if self.state in ("applied", "nothing-to-apply", "reverted") else 1

    def line(self) -> str:
        return f"livegraft: {self.state}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "message": self.message,
            "module": self.module,
            "level": self.level,
            "blocking_tasks": [
                {"pid": t.pid, "comm": t.comm, "stack": t.stack} for t in self.tasks
            ],
        }


def level_of(module: str) -> int | None:
    found = LEVEL_SUFFIX.search(module)
    return int(found.group(1)) if found else None


def disabled_reason(kernel: Kernel) -> str | None:
    if "livegraft.enable=0" in kernel.cmdline():
        return "livegraft.enable=0 is on the kernel command line"
    flag = kernel.roots.path(st.DISABLE)
    if flag.exists():
        return f"{flag} exists"
    return None


def settle(kernel: Kernel, settings: st.Settings, *, shutdown: bool = False) -> None:
    """Clear the crash-loop guard of this boot once its patch has run for the grace time,
    or at a clean ``shutdown`` (the machine going down in order was not crashed by it)."""
    guard = st.read_guard(kernel.roots)
    if guard is None or guard.boot_id != kernel.boot_id():
        return
    patch = kernel.patch(guard.module)
    if patch is None or not patch.enabled:
        st.clear_guard(kernel.roots)  # its load did not stay: nothing left to guard
    elif shutdown or (time.time() - guard.started >= settings.grace and not patch.transition):
        st.clear_guard(kernel.roots)


class Client:
    def __init__(self, roots: Roots, settings: st.Settings | None = None) -> None:
        self.roots = roots
        self.kernel = Kernel(roots)
        self.settings = settings if settings is not None else st.read_settings(roots)

    # -- apply ---------------------------------------------------------------------------

    def apply(self, *, trigger: str, allow_downgrade: bool = False, force: bool = False) -> Outcome:
        """Load the running build's installed livepatch. ``trigger`` is ``manual`` (a
        person: clears the crash-loop guard), ``boot``, ``dnf``, ``apt`` or ``dpkg``."""
        with st.locked(self.roots):
            state = st.load_state(self.roots, move_aside=True)
            outcome = self._apply(trigger, allow_downgrade, force)
            if outcome.state != "nothing-to-apply" or state.last is not None:
                state.record({"action": "apply", "trigger": trigger, **outcome.to_json()})
                try:
                    state.save()
                except OSError as exc:
                    return Outcome(
                        outcome.state,
                        f"{outcome.message} (state not saved: {exc.strerror})",
                        outcome.module,
                        outcome.level,
                        outcome.tasks,
                    )
            return outcome

    def _apply(self, trigger: str, allow_downgrade: bool, force: bool) -> Outcome:
        kernel = self.kernel
        uname_r = kernel.uname_r()
        try:
            installed = find_installed(self.roots.root, uname_r)
        except InfoError as exc:
            return Outcome("not-applied", str(exc), bad_input=True)
        if installed is None:
            return Outcome("nothing-to-apply", f"no livepatch is installed for {uname_r}")
        who = (installed.module, installed.level)
        off = disabled_reason(kernel)
        if off:
            return Outcome("disabled", f"not loading {installed.module}: {off}", *who)
        settle(kernel, self.settings)
        guard = st.read_guard(self.roots)
        if guard is not None and guard.boot_id != kernel.boot_id():
            if trigger != "manual":
                return Outcome(
                    "not-applied",
                    f"{guard.describe()} and the machine went down before it settled; not "
                    "loading again until `livegraftctl apply` is run by hand",
                    *who,
                )
            st.clear_guard(self.roots)
        current = kernel.patch(installed.module)
        if current is not None and current.enabled and not current.transition:
            self._unload_replaced(installed.module)
            return Outcome(
                "applied",
                f"{installed.module} (level {installed.level}) is already in effect",
                *who,
            )
        newer = [
            p
            for p in kernel.patches()
            if p.enabled
            and p.name.startswith(OURS)
            and p.name != installed.module
            and (level_of(p.name) or 0) > installed.level
            and LEVEL_SUFFIX.sub("", p.name) == LEVEL_SUFFIX.sub("", installed.module)
        ]
        if newer and not allow_downgrade:
            return Outcome(
                "not-applied",
                f"{newer[0].name} (level {level_of(newer[0].name)}) is in effect; not going "
                f"back to level {installed.level} without --allow-downgrade",
                *who,
            )
        reasons = refusals(kernel, installed)
        if reasons:
            return Outcome("not-applied", "; ".join(reasons), *who)
        return self._load(installed, force)

    def _load(self, installed: Installed, force: bool) -> Outcome:
        kernel, name, who = self.kernel, installed.module, (installed.module, installed.level)
        if kernel.module_loaded(name):
            # Loaded but not an enabled patch (disabled by hand, or a reverted load):
            # it must go before it can be loaded again.
            problem = kernel.rmmod(name)
            if problem:
                return Outcome(
                    "failed",
                    f"{name} is loaded but not in effect and cannot be "
                    f"unloaded to load it again: {problem}",
                    *who,
                )
        st.set_guard(self.roots, name, installed.level, kernel.boot_id())
        tries = max(1, self.settings.busy_retries)
        for attempt in range(1, tries + 1):
            try:
                kernel.insmod(installed.module_path)
                break
            except LoadError as exc:
                if exc.code == errno.EBUSY and attempt < tries:
                    time.sleep(self.settings.busy_delay)
                    continue
                st.clear_guard(self.roots)
                why = exc.message
                if exc.code == errno.EBUSY:
                    why += f" (another transition was in progress; tried {tries} times)"
                elif exc.code == errno.EKEYREJECTED:
                    why += " (the kernel does not trust the module's signing key)"
                return Outcome("failed", f"loading {name}: {why}", *who)
            except (OSError, subprocess.SubprocessError) as exc:
                st.clear_guard(self.roots)
                return Outcome("failed", f"loading {name}: {exc}", *who)
        return self._wait(installed, force)

    def _wait(self, installed: Installed, force: bool) -> Outcome:
        kernel, name, who = self.kernel, installed.module, (installed.module, installed.level)
        deadline = time.monotonic() + self.settings.transition_timeout
        while True:
            patch = kernel.patch(name)
            if patch is None:
                st.clear_guard(self.roots)
                return Outcome(
                    "failed", f"{name} loaded but /sys/kernel/livepatch/{name} did not appear", *who
                )
            if not patch.transition:
                break
            if time.monotonic() >= deadline:
                return self._stalled(installed, force)
            time.sleep(0.1)
        if not patch.enabled:
            st.clear_guard(self.roots)
            return Outcome("failed", f"{name} finished its transition disabled", *who)
        replaced = self._unload_replaced(name)
        self._start_settle()
        extra = f"; replaced {', '.join(replaced)}" if replaced else ""
        fixes = ", ".join(f.id for f in installed.fixes) or "no fixes"
        return Outcome("applied", f"{name} (level {installed.level}: {fixes}){extra}", *who)

    def _stalled(self, installed: Installed, force: bool) -> Outcome:
        kernel, name, who = self.kernel, installed.module, (installed.module, installed.level)
        tasks = tuple(kernel.unpatched_tasks())
        blocking = ", ".join(f"{t.comm}[{t.pid}]" for t in tasks) or "tasks not readable"
        waited = f"transition of {name} not done after {self.settings.transition_timeout:g} s"
        if force:
            (self.roots.sysfs / "kernel/livepatch" / name / "force").write_text("1\n")
            return Outcome(
                "applied",
                f"{waited}; forced as asked (blocking: {blocking}); "
                "this module can never be unloaded",
                *who,
                tasks,
            )
        if self.settings.on_stall == "keep":
            return Outcome(
                "not-applied",
                f"{waited}, left to finish (on_stall = keep); blocking: {blocking}",
                *who,
                tasks,
            )
        kernel.disable(name)
        gone = self._wait_gone(name)
        problem = kernel.rmmod(name) if gone else "the reverse transition did not finish"
        st.clear_guard(self.roots)
        after = "reverted and unloaded" if not problem else f"reverted ({problem})"
        return Outcome("failed", f"{waited}; blocking: {blocking}; {after}", *who, tasks)

    def _wait_gone(self, name: str) -> bool:
        deadline = time.monotonic() + self.settings.transition_timeout
        while self.kernel.patch(name) is not None:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)
        return True

    def _unload_replaced(self, keep: str) -> list[str]:
        """Unload livegraft modules an atomic replace left loaded but no longer patching."""
        active = {p.name for p in self.kernel.patches()}
        done = []
        for module in self._our_modules():
            if module != keep and module not in active and self.kernel.rmmod(module) is None:
                done.append(module)
        return done

    def _our_modules(self) -> list[str]:
        try:
            return sorted(
                p.name for p in (self.roots.sysfs / "module").iterdir() if p.name.startswith(OURS)
            )
        except OSError:
            return []

    def _start_settle(self) -> None:
        """Clear the guard once the grace time has passed, in this boot, without us."""
        if self.settings.grace <= 0:
            st.clear_guard(self.roots)
            return
        argv = [sys.executable, "-m", "livegraft.client.cli", "settle"]
        if (
            self.roots.is_host
            and os.path.isdir("/run/systemd/system")
            and shutil.which("systemd-run")
        ):
            stamp = int(time.time())
            for extra in (
                # The grace timer (its own name per load: a later load gets a later timer).
                [f"--on-active={int(self.settings.grace) + 1}",
                 f"--unit=livegraft-settle-{stamp}", "livegraftctl", "settle"],
                # And a clean shutdown before then clears it too: a transient unit whose
                # ExecStop runs as the machine goes down in order (a crash runs nothing).
                # Needed since livegraft.service is only active from the next boot on
                # when the client was installed in this one.
                [f"--unit=livegraft-guard-{stamp}", "--property=RemainAfterExit=yes",
                 "--property=ExecStop=/usr/bin/livegraftctl settle --shutdown", "/bin/true"],
            ):  # fmt: skip
                subprocess.run(
                    ["systemd-run", "--quiet", "--collect", *extra],
                    check=False, capture_output=True, timeout=30,
                )  # fmt: skip
            return
        # No systemd: a detached child of our own, whose import path is ours.
        env = dict(os.environ)
        here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = here + os.pathsep + env.get("PYTHONPATH", "")
        subprocess.Popen(
            [*argv, "--wait"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )

    # -- revert --------------------------------------------------------------------------

    def revert(self) -> Outcome:
        """Disable every livegraft patch and unload its module."""
        with st.locked(self.roots):
            state = st.load_state(self.roots, move_aside=True)
            ours = [p.name for p in self.kernel.patches() if p.name.startswith(OURS)]
            problems = []
            for name in ours:
                self.kernel.disable(name)
            for name in ours:
                if not self._wait_gone(name):
                    problems.append(
                        f"{name}: reverse transition not done after "
                        f"{self.settings.transition_timeout:g} s"
                    )
            for module in self._our_modules():
                if self.kernel.patch(module) is None:
                    problem = self.kernel.rmmod(module)
                    if problem:
                        problems.append(f"{module}: {problem}")
            st.clear_guard(self.roots)
            if problems:
                outcome = Outcome("failed", "; ".join(problems))
            elif ours:
                outcome = Outcome("reverted", f"disabled and unloaded {', '.join(ours)}")
            else:
                outcome = Outcome("reverted", "no livegraft patch was in effect")
            state.record({"action": "revert", "trigger": "manual", **outcome.to_json()})
            state.save()
            return outcome
