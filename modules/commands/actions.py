"""What each OS backend of ``commands`` provides: how to carry out an action on that OS.

``linux.py``, ``darwin.py`` and ``windows.py`` each define an :class:`Actions` and a
``BACKEND`` built from it. The plan shows :meth:`Actions.describe`; the runner calls
:meth:`Actions.perform` once the journal has recorded the start.

Action ``update`` is the agent's own business, not the OS's: the agent gives the runner a
:class:`SelfUpdate` (``jcstate.agent.update.Updater``), which downloads and installs releases.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from jcstate.host import Host
    from jcstate.modules.commands import Command
    from jcstate.modules.commands.result import CommandResult, Outcome

__all__ = ["Actions", "Checkpoint", "SelfUpdate", "default_warning"]

# Called by an action right before it hands the machine to the OS (reboot, power-off, wipe):
# from then on the journal waits for a new boot time instead of calling a crash "interrupted".
Checkpoint = Callable[[str], None]


class Actions(Protocol):
    """The security commands of one OS."""

    os: str

    def unsupported(self, command: Command) -> str | None:
        """Why this OS's agent cannot carry out ``command`` (a plan error), or None."""
        ...

    def describe(self, command: Command) -> list[tuple[str, ...]]:
        """The programs ``command`` will run, for plans (some arguments are found at run)."""
        ...

    def perform(self, host: Host, command: Command, checkpoint: Checkpoint) -> Outcome:
        """Carry out ``command`` now. Raises HostError only for what the Outcome cannot say."""
        ...


class SelfUpdate(Protocol):
    """The agent updating itself (action ``update``); see ``jcstate.agent.update``."""

    def perform(self, command: Command) -> Outcome:
        """One attempt, or a wait: ``Outcome.pending`` while another attempt is to come."""
        ...

    def pending(self) -> str | None:
        """The id of the update command waiting for its next attempt, if any."""
        ...

    def due(self) -> dict[str, Any] | None:
        """That command (plain form) once its next attempt may start, else None."""
        ...

    def finished(self, result: CommandResult) -> None:
        """The update's final result is journaled: restart into the new release if switched."""
        ...

    def recover(self) -> None:
        """At agent start: check that a release switched to before a restart is what runs."""
        ...


def default_warning(action: str, delay: int, message: str | None) -> str:
    """The text logged-in users see before a restart or shutdown."""
    what = "restart" if action == "restart" else "shut down"
    when = "now" if delay == 0 else f"in {delay} seconds"
    text = f"This computer will {what} {when} at your administrator's request. Save your work."
    return f"{text}\n{message}" if message else text
