"""Planning ``commands``: a command is planned until its id is in the device's journal.

The same backend serves every OS; what differs (how to lock, restart, …) is the
:class:`~jcstate.modules.commands.actions.Actions` each OS file hands it. Planning only reads
the journal; the step it plans, :class:`RunCommand`, goes through
:class:`~jcstate.modules.commands.execution.CommandRunner`, which journals ``started`` before
anything runs and ``finished`` after.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jcstate.errors import CommandFailed, HostError
from jcstate.host import Host
from jcstate.modules.commands.boot import boot_time, rebooted_since
from jcstate.modules.commands.journal import DEFAULT_DIR, Entry, Journal
from jcstate.plan import Change, FieldChange

if TYPE_CHECKING:
    from jcstate.modules.commands import Command
    from jcstate.modules.commands.actions import Actions
    from jcstate.resource import PlanContext

__all__ = ["CommandsBackend", "JournalFacts", "PHASE", "RunCommand"]

PHASE = 90  # commands run last, after every account and configuration change


@dataclass(frozen=True)
class JournalFacts:
    """What the journal holds, read once per plan."""

    entries: dict[str, Entry] = field(default_factory=dict)
    boot_time: float | None = None

    def summary(self) -> dict[str, Any]:
        """For device facts: how many commands ran, which results await acknowledgement."""
        return {
            "journaled": len(self.entries),
            "unacknowledged": sorted(
                e.id for e in self.entries.values() if e.state == "finished" and not e.acknowledged
            ),
            "unfinished": sorted(e.id for e in self.entries.values() if e.state != "finished"),
        }


@dataclass(frozen=True)
class RunCommand:
    """Plan step: run one command at most once (journal → run → journal)."""

    command: Command
    programs: tuple[tuple[str, ...], ...] = ()
    journal_dir: str = DEFAULT_DIR

    def execute(self, host: Host) -> None:
        from jcstate.modules.commands.execution import CommandRunner

        result = CommandRunner(host, Journal(host, self.journal_dir)).run(self.command)
        if result.status in ("succeeded", "running"):
            return
        if result.exit_code not in (None, 0):
            raise CommandFailed(
                [f"command {self.command.id}"], result.exit_code, result.stderr or result.message
            )
        raise HostError(f"command {self.command.id} {result.status}: {result.message}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "command": self.command.id,
            "action": self.command.action,
            "journal": self.journal_dir,
            "programs": [list(p) for p in self.programs],
        }

    def __str__(self) -> str:
        programs = "; ".join(" ".join(p) for p in self.programs)
        return f"journal {self.command.id} started; {programs}; journal {self.command.id} finished"


class CommandsBackend:
    """gather: read the journal; plan: every command whose id it does not hold yet."""

    def __init__(self, actions: Actions, journal_dir: str = DEFAULT_DIR):
        self.actions = actions
        self.os = actions.os
        self.journal_dir = journal_dir
        self.supports = frozenset({"lock", "restart", "shutdown", "erase", "run"})

    def gather(self, host: Host) -> JournalFacts:
        journal = Journal(host, self.journal_dir)
        return JournalFacts({e.id: e for e in journal.entries()}, boot_time(host))

    def plan(self, desired: tuple[Command, ...], ctx: PlanContext) -> list[Change]:
        facts: JournalFacts = ctx.facts.get("commands") or JournalFacts()
        changes = []
        for command in desired:
            entry = facts.entries.get(command.id)
            if entry is not None:
                note = _journaled_note(entry, facts.boot_time)
                if note is None:  # a started erase: resume it
                    changes.append(self._change(command, ctx, resume=entry.attempts + 1))
                elif note:
                    _warn(ctx, f"command {command.id}: {note}")
                continue
            if command.expired():
                assert command.not_after is not None
                _warn(
                    ctx,
                    f"command {command.id}: skipped, notAfter "
                    f"{command.not_after.isoformat()} has passed",
                )
                continue
            changes.append(self._change(command, ctx))
        return changes

    def _change(self, command: Command, ctx: PlanContext, resume: int = 0) -> Change:
        fields = [FieldChange("action", None, command.action)]
        if command.run is not None:
            what = (
                command.run.command
                if command.run.command is not None
                else list(command.run.argv or ())
            )
            fields.append(FieldChange("run", None, what))
            if command.run.user:
                fields.append(FieldChange("user", None, command.run.user))
            fields.append(FieldChange("timeout", None, command.run.timeout))
        if command.action in ("restart", "shutdown"):
            fields.append(FieldChange("delay", None, command.delay))
        if resume:
            fields.append(FieldChange("resume", None, f"attempt {resume}: erase was interrupted"))
        change = Change(
            kind="commands",
            name=command.id,
            action="run",
            phase=PHASE,
            fields=fields,
            steps=[RunCommand(command, tuple(self.actions.describe(command)), self.journal_dir)],  # type: ignore[list-item]
            source=ctx.source("commands", command.id),
            summary=command.action,  # the report's head: "> command incident-42-lock (lock)"
        )
        reason = self.actions.unsupported(command)
        if reason:
            change.error = reason
        return change


def _journaled_note(entry: Entry, boot: float | None) -> str | None:
    """What to tell about a command the journal holds; None: resume it (a started erase)."""
    if entry.state == "started":
        if entry.action == "erase":
            return None
        return "interrupted earlier (started, never finished); it is not run again"
    if entry.state == "awaiting-reboot" and not rebooted_since(entry.boot_time, boot):
        return "waiting for the device to restart (boot time unchanged since it was sent)"
    return ""  # finished: nothing to say, the plan is simply empty


def _warn(ctx: PlanContext, text: str) -> None:
    warnings = getattr(ctx, "warnings", None)
    if warnings is not None:
        warnings.append(text)
