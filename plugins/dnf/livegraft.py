"""livegraft's dnf plugin: ``dnf upgrade`` livepatches the running kernel.

A thin layer over the client core (``livegraft.client``, from the livegraft-client
package), for dnf 4:

- ``resolved`` (auto mode): for the running kernel, every installed kernel and every
  kernel the transaction installs, the repository's livepatch package for that build
  (``Provides: kpatch-patch = <uname -r>``) joins the transaction as an optional install
  when it is not installed, and dnf resolves again. So a kernel installed before its
  first patch existed gets it at the next ``dnf upgrade``. A livepatch package the user
  removed with dnf is remembered (the client's state file, ``declined``) and never
  pulled back; installing it by name again takes it off that list.
- ``transaction``: after a transaction that installed or upgraded the running build's
  livepatch package, the client loads it and one line of outcome is printed. A failure is
  reported, recorded and never fails the transaction.
- ``dnf livegraft status|apply|auto on|off``.

It acts only when dnf works on the running system (installroot ``/``), or on the root
``LIVEGRAFT_ROOT`` names (a test setting). ``auto = false`` in ``[main]`` of
``livegraft.conf`` turns auto mode off for dnf; ``livegraftctl auto off`` for every client.
"""

from __future__ import annotations

import logging
import os
import sys

import dnf
import dnf.cli
import dnf.exceptions
import dnf.selector
import libdnf.transaction

# dnf itself never imports typing: the annotations alone should not make every dnf
# command pay for it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

logger = logging.getLogger("dnf.plugin")

PATCH_PROVIDE = "kpatch-patch"
KERNEL_PROVIDE = "kernel-uname-r"


def _client() -> Any:
    """The client core, imported only when needed (dnf starts for every command)."""
    path = os.environ.get("LIVEGRAFT_CLIENT_PATH") or "/usr/share/livegraft/python"
    if path not in sys.path:
        sys.path.insert(0, path)
    import livegraft.client.apply as apply

    return apply


def _provided(pkg: Any, name: str) -> list[str]:
    """Versions of ``name`` that ``pkg`` provides (``kernel-uname-r = X`` gives X)."""
    prefix = name + " = "
    return [str(r)[len(prefix) :] for r in pkg.provides if str(r).startswith(prefix)]


class Livegraft(dnf.Plugin):  # type: ignore[misc]  # dnf ships no type information
    name = "livegraft"

    def __init__(self, base: Any, cli: Any) -> None:
        super().__init__(base, cli)
        self.base = base
        self.cli = cli
        self._auto = True
        self._resolving = False
        if cli is not None:
            cli.register_command(LivegraftCommand)

    def config(self) -> None:
        conf = self.read_config(self.base.conf)
        if conf.has_section("main") and conf.has_option("main", "auto"):
            self._auto = conf.getboolean("main", "auto")

    def _on_target(self) -> bool:
        wanted = os.environ.get("LIVEGRAFT_ROOT") or "/"
        return os.path.realpath(str(self.base.conf.installroot)) == os.path.realpath(wanted)

    # -- auto mode ------------------------------------------------------------------------

    def resolved(self) -> None:
        if self._resolving or not self._auto or not self._on_target():
            return
        try:
            self._add_patches()
        except Exception as exc:  # never break the user's transaction over a livepatch
            logger.warning("livegraft: auto mode skipped: %s", exc)

    def _add_patches(self) -> None:
        apply = _client()
        from livegraft.client.names import rpm_dependency_version
        from livegraft.client.state import load_state

        client = apply.Client(apply.Roots.from_environ())
        if not client.settings.auto:
            return
        declined = set(load_state(client.roots).declined)
        query = self.base.sack.query()
        installed = query.installed()
        transaction = self.base.transaction
        installing = list(transaction.install_set) if transaction else []
        removing = {p.name for p in transaction.remove_set} if transaction else set()
        removing -= {p.name for p in installing}
        builds = {rpm_dependency_version(client.kernel.uname_r())}
        for pkg in [*installed.filter(provides=KERNEL_PROVIDE), *installing]:
            builds.update(_provided(pkg, KERNEL_PROVIDE))
        present = {v for p in [*installed, *installing] for v in _provided(p, PATCH_PROVIDE)}
        added = []
        for build in sorted(builds - present):
            offered = query.available().filter(provides=f"{PATCH_PROVIDE} = {build}").latest()
            names = {p.name for p in offered}
            if not offered or names & (declined | removing):
                continue
            selector = dnf.selector.Selector(self.base.sack)
            selector.set(pkg=offered)
            self.base._goal.install(select=selector, optional=not self.base.conf.strict)
            added += sorted(names)
        if added:
            logger.info("livegraft: adding %s for installed kernels", ", ".join(added))
            self._resolving = True
            try:
                allow_erasing = bool(self.cli and self.cli.demands.allow_erasing)
                self.base.resolve(allow_erasing)
            finally:
                self._resolving = False

    # -- after the transaction ------------------------------------------------------------

    def transaction(self) -> None:
        if not self._on_target():
            return
        try:
            self._after_transaction()
        except Exception as exc:  # reported, never fatal: the packages are installed
            logger.warning("livegraft: failed: %s", exc)

    def _after_transaction(self) -> None:
        transaction = self.base.transaction
        if not transaction:
            return
        patches_in = [p for p in transaction.install_set if _provided(p, PATCH_PROVIDE)]
        removed = [
            tsi.pkg.name
            for tsi in transaction
            if tsi.action == libdnf.transaction.TransactionItemAction_REMOVE
            and _provided(tsi.pkg, PATCH_PROVIDE)
        ]
        if not patches_in and not removed:
            return
        apply = _client()
        from livegraft.client.names import rpm_dependency_version
        from livegraft.client.state import load_state, locked

        client = apply.Client(apply.Roots.from_environ())
        by_user = {
            tsi.pkg.name
            for tsi in transaction
            if tsi.reason == libdnf.transaction.TransactionItemReason_USER
        }
        with locked(client.roots):
            state = load_state(client.roots, move_aside=True)
            for name in removed:
                state.decline(name)
            for pkg in patches_in:
                if pkg.name in by_user:
                    state.accept(pkg.name)
            state.save()
        running = rpm_dependency_version(client.kernel.uname_r())
        if any(running in _provided(p, PATCH_PROVIDE) for p in patches_in):
            outcome = client.apply(trigger="dnf")
            if outcome.exit_status == 0:
                logger.info(outcome.line())
            else:
                logger.warning(outcome.line())


class LivegraftCommand(dnf.cli.Command):  # type: ignore[misc]
    aliases = ("livegraft",)
    summary = "livegraft kernel livepatches: status, apply, auto on|off"

    @staticmethod
    def set_argparser(parser: Any) -> None:
        parser.add_argument("action", choices=["status", "apply", "auto"])
        parser.add_argument("mode", nargs="?", choices=["on", "off"])

    def configure(self) -> None:
        self.cli.demands.sack_activation = False
        self.cli.demands.available_repos = False

    def run(self) -> None:
        try:
            apply = _client()
        except ImportError as exc:
            raise dnf.exceptions.Error(
                f"livegraft: the client core cannot be loaded ({exc}): reinstall livegraft-client"
            ) from None
        from livegraft.client.state import set_auto
        from livegraft.client.status import exit_status, render, status

        client = apply.Client(apply.Roots.from_environ())
        action = self.opts.action
        if action == "auto":
            if self.opts.mode is None:
                raise dnf.exceptions.Error("livegraft auto: say on or off")
            path = set_auto(client.roots, self.opts.mode == "on")
            print(f"livegraft: auto mode {self.opts.mode} ({path})")
        elif action == "apply":
            outcome = client.apply(trigger="manual")
            print(outcome.line())
            if outcome.exit_status:
                raise dnf.exceptions.Error("livegraft: the livepatch is not in effect")
        else:
            doc = status(client.kernel, client.settings)
            print(render(doc))
            if exit_status(doc):
                raise dnf.exceptions.Error("livegraft: a livepatch is installed but not in effect")
