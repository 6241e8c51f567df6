"""The device side of the server's command queue: run what is delivered, at most once, in order.

The server sends every unfinished command after the agent's *cursor* (the highest ``seq`` this
process has handled) in each ``work`` answer. The next work request carries the cursor: that
is the device's acknowledgement, and only then does the server show a command ``delivered``.
Each goes through :class:`~jcstate.modules.commands.execution.CommandRunner`, which journals
``started`` durably before anything runs, so a command delivered twice (a lost answer, an
agent restart) runs once. The cursor lives in memory only: after a restart everything
unfinished is delivered again and the journal answers for what already ran.

Results go out from the journal itself, which keeps each final result until the server
acknowledges it (the same journal the policy ``commands`` write to, so their results reach the
server too). A restart is still ``running`` until the agent comes back with a new boot time;
:meth:`QueuedCommands.recover` settles it at start-up.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from jcstate.agent import logs
from jcstate.errors import JcstateError, PlanError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (about 0.4 MB)
if TYPE_CHECKING:
    from typing import Any

    from jcstate.host import Host
    from jcstate.modules.commands.actions import Actions, SelfUpdate
    from jcstate.modules.commands.execution import CommandRunner
    from jcstate.modules.commands.result import CommandResult

__all__ = ["JOURNAL_DIR", "QueuedCommands"]

log = logs.getLogger("jcstate.agent")

# = jcstate.modules.commands.journal.DEFAULT_DIR (a test keeps them equal), named here so that
# looking for records does not import the journal
JOURNAL_DIR = "/var/lib/jcstate/journal"


class QueuedCommands:
    """Delivered commands → journal → results until acknowledged."""

    def __init__(
        self,
        host: Host | str,
        *,
        actions: Actions | None = None,
        journal_dir: str | None = None,
        updater: SelfUpdate | None = None,
        converger: Callable[[], tuple[bool, str]] | None = None,
        elevator: Callable[[Any], tuple[bool, str]] | None = None,
    ):
        """``host``: the managed system, or its root path (the Host is then made on first use).
        ``updater``: the agent's self-update, which carries out ``update`` commands.
        ``converger``: the agent's converge, which carries out ``converge`` commands.
        ``elevator``: the agent's elevations, which carry out ``elevate`` commands."""
        self._host = host
        self._actions = actions
        self._updater = updater
        self._converger = converger
        self._elevator = elevator
        self._journal_dir = journal_dir
        self._runner: CommandRunner | None = None
        self.cursor = 0  # highest seq handled by this process
        self._unsent: list[dict[str, Any]] = []  # results that could not be journaled
        self._dirty = True  # the journal may hold unsent results (always true at start)

    @property
    def host(self) -> Host:
        if isinstance(self._host, str):
            logs.use_logging()  # jcstate.host logs with logging
            from jcstate.host import Host

            self._host = Host(root=self._host)
        return self._host

    @property
    def runner(self) -> CommandRunner:
        """Built on first use: the OS's actions are imported only when commands come."""
        if self._runner is None:
            logs.use_logging()  # the command machinery logs with logging
            from jcstate.modules.commands.execution import CommandRunner
            from jcstate.modules.commands.journal import DEFAULT_DIR, Journal

            journal = Journal(self.host, self._journal_dir or DEFAULT_DIR)
            self._runner = CommandRunner(
                self.host,
                journal,
                actions=self._actions,
                updater=self._updater,
                converger=self._converger,
                elevator=self._elevator,
            )
        return self._runner

    def _journal_is_empty(self) -> bool:
        """No command was ever journaled here (checked without loading the machinery)."""
        if self._runner is not None:
            return False
        root = self._host if isinstance(self._host, str) else self._host.root
        path = os.path.join(root, (self._journal_dir or JOURNAL_DIR).lstrip("/"))
        try:
            names = os.listdir(path)
        except FileNotFoundError:
            return True
        except OSError:
            return False  # the journal will say what is wrong
        return not any(n.endswith(".json") and not n.startswith(".") for n in names)

    def recover(self) -> list[CommandResult]:
        """At start-up: interrupted commands, finished restarts, erases resumed to the end."""
        self._dirty = True
        if self._journal_is_empty():
            if self._updater is not None:
                self._updater.recover()  # what the runner's recover would do first
            return []
        return self.runner.recover()

    def run(
        self,
        delivered: list[dict[str, Any]],
        starting: Callable[[dict[str, Any]], None] | None = None,
    ) -> list[CommandResult]:
        """Run each delivered command in ``seq`` order; a journaled id only returns its result.

        ``starting(command)`` is called before a command this device has never started (the
        server shows it ``running``); it must not raise. The cursor moves past a command only
        once the runner has returned, so a failure before the journal leaves it to come again.
        """
        from jcstate.modules.commands.result import CommandResult

        results = []
        for item in sorted(delivered, key=lambda c: int(c.get("seq", 0))):
            seq = int(item.get("seq", 0))
            if seq and seq <= self.cursor:
                continue  # already handled by this process
            command = {k: v for k, v in item.items() if k != "seq"}
            self._dirty = True
            try:
                if starting is not None and self.runner.journal.get(command["id"]) is None:
                    starting(command)
                result = self.runner.run(command)
                self._dirty = True  # (a converge command's own flush may have looked before)
            except OSError as exc:
                # a record the disk refused around a resumed erase or an awaited restart: the
                # command stays where the journal has it and comes again at the next poll
                log.error("command %s: the journal could not be written: %s", command["id"], exc)
                break
            except PlanError as exc:
                # the server validates with the same code, so only a newer server's command
                # gets here; it cannot be journaled by id if the id itself is unreadable
                log.error("command %s refused: %s", command.get("id"), exc)
                result = CommandResult(
                    str(command.get("id")), str(command.get("action")), "failed", str(exc)
                )
                self._unsent.append(result.to_dict())
            self.cursor = max(self.cursor, seq)
            results.append(result)
        return results

    def retry_due(self) -> list[CommandResult]:
        """Run an update that waited out its back-off (:mod:`jcstate.agent.update`), if due."""
        if self._updater is None or self._updater.due() is None:
            return []
        self._dirty = True
        return self.runner.retry_due()

    def journal_changed(self) -> None:
        """A converge ran (a policy's commands write to the same journal): look again."""
        self._dirty = True

    def unsent(self) -> list[dict[str, Any]]:
        """Final results the server has not acknowledged, oldest first (records the journal
        holds in memory because the disk refused them are written now, when it can)."""
        if self._runner is not None and self._runner.journal.held():
            self._runner.journal.write_held()
            self._dirty = True  # what is still held is pending
        if not self._dirty and not self._unsent:
            return []
        if self._journal_is_empty():
            self._dirty = False
            return list(self._unsent)
        pending = [r.to_dict() for r in self.runner.journal.pending_results()]
        if not pending:
            self._dirty = False
        return [*self._unsent, *pending]

    def acknowledge(self, ids: list[str]) -> None:
        """The server stored these: drop their output from the journal, keep the ids forever."""
        done = set(ids)
        self._unsent = [r for r in self._unsent if r.get("id") not in done]
        for command_id in ids:
            try:
                self.runner.journal.acknowledge(command_id)
            except JcstateError as exc:  # an id the journal cannot hold (see run)
                log.debug("acknowledge %s: %s", command_id, exc)
