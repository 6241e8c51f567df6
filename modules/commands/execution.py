"""Carry out a command at most once: the journal's gate around an OS action.

Both sources of commands use this one path: a policy's ``commands`` (the plan's
:class:`~jcstate.modules.commands.backend.RunCommand` step) and the server's queue (the agent
calls :meth:`CommandRunner.run` with the command as delivered)::

    runner = CommandRunner(host)                 # journal under /var/lib/jcstate/journal
    runner.recover()                             # at agent start: settle crashes, resume erases
    result = runner.run({"id": "c-17", "action": "lock"})
    for result in runner.journal.pending_results():
        send(result.to_dict()); runner.journal.acknowledge(result.id)   # once the server has it

A second ``run`` with a known id never runs anything: it returns the journaled result.

Action ``update`` is the exception that proves the rule: its record stays ``started`` while
the agent's :class:`~jcstate.modules.commands.actions.SelfUpdate` retries it with back-off
(``running`` until then), and it ends ``succeeded`` or ``failed`` like any other; a new
update command supersedes one still waiting for its next attempt.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from jcstate.errors import HostError, JcstateError
from jcstate.host import Host
from jcstate.modules.commands import Command, parse_command
from jcstate.modules.commands.actions import Actions, SelfUpdate
from jcstate.modules.commands.boot import boot_time
from jcstate.modules.commands.journal import Entry, Journal, now_text
from jcstate.modules.commands.result import CommandResult, Outcome

__all__ = ["CommandRunner", "actions_for"]

log = logging.getLogger(__name__)


def actions_for(os_name: str) -> Actions:
    """The security commands of ``os_name`` (raises JcstateError when there are none)."""
    from jcstate.errors import PlanError
    from jcstate.modules.commands import RESOURCE

    backend = RESOURCE.backend(os_name)
    if backend is None:
        raise PlanError(f"commands: not supported on {os_name}")
    return backend.actions  # type: ignore[attr-defined,no-any-return]


class CommandRunner:
    """Runs commands on ``host``, each id at most once, recorded in ``journal``."""

    def __init__(
        self,
        host: Host,
        journal: Journal | None = None,
        *,
        actions: Actions | None = None,
        updater: SelfUpdate | None = None,
        converger: Callable[[], tuple[bool, str]] | None = None,
        elevator: Callable[[Any], tuple[bool, str]] | None = None,
    ):
        """``updater``: the agent's self-update; without it ``update`` commands fail.
        ``converger``: the agent's "converge now" (ok, message); without it ``converge``
        commands fail. ``elevator``: the agent's elevations (an ElevateSpec → ok, message);
        without it ``elevate`` commands fail."""
        self.host = host
        self.journal = journal or Journal(host)
        self.actions = actions or actions_for(host.os)
        self.updater = updater
        self.converger = converger
        self.elevator = elevator
        self._settled = False

    def _settle(self) -> list[Entry]:
        """Mark what an earlier process left half-done (once per runner); erases to resume."""
        resume = self.journal.recover(boot_time(self.host))
        self._settled = True
        return resume

    def recover(self) -> list[CommandResult]:
        """At start-up: settle interrupted commands and finished restarts, resume erases and
        updates (an update whose back-off has not passed stays ``running``)."""
        if self.updater is not None:
            self.updater.recover()
        results = []
        for entry in self._settle():
            if entry.command is None:
                continue  # a record from before commands were kept: cannot resume
            results.append(self.run(entry.command))
        return results

    def run(self, command: Command | dict[str, Any]) -> CommandResult:
        """Run ``command`` unless its id is journaled; return its (possibly earlier) result."""
        cmd = command if isinstance(command, Command) else parse_command(command)
        if not self._settled:
            self._settle()
        entry = self.journal.get(cmd.id)
        if entry is None:
            return self._first_run(cmd)
        if entry.state == "finished" and entry.result is not None:
            return entry.result  # a duplicate delivery: nothing runs
        if entry.state == "awaiting-reboot":
            return self._result(entry, "running", "waiting for the device to restart")
        if entry.action == "update":
            return self._update(cmd, entry)  # its next attempt, when the back-off has passed
        # Settled already, so a started record here is an erase: it resumes until done.
        log.warning("command %s: resuming %s (attempt %d)", cmd.id, cmd.action, entry.attempts + 1)
        return self._perform(cmd, self.journal.resume(entry))

    def _first_run(self, cmd: Command) -> CommandResult:
        refusal = None
        if cmd.expired():
            refusal = "not run: its notAfter time has passed"
        elif cmd.action == "erase" and not cmd.confirm:
            refusal = "not run: erase needs a confirmation"
        elif cmd.action == "update":
            if self.updater is None:
                refusal = "not run: this agent cannot update itself (no release download)"
        elif cmd.action == "converge":
            if self.converger is None:
                refusal = "not run: only the agent converges on request"
        elif cmd.action == "elevate":
            if self.elevator is None:
                refusal = "not run: only the agent elevates (jcstate elevate)"
        else:
            refusal = self.actions.unsupported(cmd)
        booted = boot_time(self.host)
        try:
            entry = self.journal.start(cmd.id, cmd.action, boot_time=booted, command=cmd.to_dict())
        except (HostError, OSError) as exc:
            # at most once means nothing runs unless its start is on disk (a full disk)
            return self._not_started(cmd, exc, booted)
        if refusal:
            return self._finish(entry, Outcome(False, refusal))
        return self._perform(cmd, entry)

    def _not_started(self, cmd: Command, exc: Exception, booted: float | None) -> CommandResult:
        """``cmd`` is not run: its ``started`` record could not be written. Reported failed,
        and journaled as such (held in memory until the disk takes it), so it never runs."""
        now = now_text()
        result = CommandResult(
            cmd.id,
            cmd.action,
            "failed",
            f"not run: the journal could not record its start ({exc}); a command runs only "
            "once its start is on disk, and this one will not run later",
            started_at=now,
            finished_at=now,
        )
        log.error("command %s %s: %s", cmd.id, result.status, result.message)
        self.journal.refuse(result, booted)
        return result

    def retry_due(self) -> list[CommandResult]:
        """Run the update waiting for a retry, if its back-off has passed (each poll)."""
        command = self.updater.due() if self.updater is not None else None
        if command is None:
            return []
        assert self.updater is not None
        entry = self.journal.get(str(command.get("id")))
        if entry is not None and entry.state == "finished" and entry.result is not None:
            self.updater.finished(entry.result)  # settled meanwhile (superseded): forget it
            return []
        return [self.run(command)]

    def _update(self, cmd: Command, entry: Entry) -> CommandResult:
        if self.updater is None:  # `jcstate apply` settling a journal the agent shares
            return self._finish(entry, Outcome(False, "not run: no agent to update"))
        older = self.updater.pending()
        if older is not None and older != cmd.id:
            waiting = self.journal.get(older)
            if waiting is not None and waiting.state == "started":
                self._finish(waiting, Outcome(False, f"superseded by update command {cmd.id}"))
        try:
            outcome = self.updater.perform(cmd)
        except (JcstateError, OSError) as exc:
            outcome = Outcome(False, f"update failed: {exc}")
        if outcome.pending:
            log.info("command %s: %s", cmd.id, outcome.message)
            return self._result(entry, "running", outcome.message)
        result = self._finish(entry, outcome)
        self.updater.finished(result)  # journaled first: a restart into the release may follow
        return result

    def _perform(self, cmd: Command, entry: Entry) -> CommandResult:
        log.info("command %s: %s", cmd.id, cmd.action)
        if cmd.action == "update":
            return self._update(cmd, entry)
        if cmd.action == "converge" and self.converger is not None:
            try:
                ok, message = self.converger()
            except (JcstateError, OSError) as exc:
                ok, message = False, f"converge failed: {exc}"
            return self._finish(entry, Outcome(ok, message))
        if cmd.action == "elevate" and self.elevator is not None:
            try:
                ok, message = self.elevator(cmd.elevate)
            except (JcstateError, OSError) as exc:
                ok, message = False, f"elevate failed: {exc}"
            return self._finish(entry, Outcome(ok, message))

        def checkpoint(note: str) -> None:
            self.journal.await_reboot(cmd.id, note)

        try:
            outcome = self.actions.perform(self.host, cmd, checkpoint)
        except (JcstateError, OSError) as exc:
            outcome = Outcome(False, str(exc), stderr=getattr(exc, "stderr", "") or "")
        if outcome.ok and outcome.awaiting_reboot:
            self.journal.await_reboot(cmd.id, outcome.message)  # kept for the final report
            log.info("command %s: %s", cmd.id, outcome.message)
            return self._result(entry, "running", outcome.message)
        return self._finish(entry, outcome)

    def _finish(self, entry: Entry, outcome: Outcome) -> CommandResult:
        result = CommandResult(
            id=entry.id,
            action=entry.action,
            status="succeeded" if outcome.ok else "failed",
            message=outcome.message,
            exit_code=outcome.exit_code,
            stdout=outcome.stdout,
            stderr=outcome.stderr,
            truncated=outcome.truncated,
            timed_out=outcome.timed_out,
            duration=outcome.duration,
            started_at=entry.started_at,
            finished_at=now_text(),
        )
        self.journal.finish(entry.id, result)
        log.info("command %s %s: %s", entry.id, result.status, result.message)
        return result

    @staticmethod
    def _result(entry: Entry, status: Any, message: str) -> CommandResult:
        return CommandResult(entry.id, entry.action, status, message, started_at=entry.started_at)
