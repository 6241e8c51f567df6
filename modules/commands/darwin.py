"""Security commands on macOS: restart, shutdown and run. Lock and erase are MDM commands.

============  ==============================================================================
restart       ``shutdown -r +MINUTES MESSAGE`` (``now`` for delay 0); shutdown(8) warns the
shutdown      logged-in users itself and blocks new logins; ``-h`` for shutdown. macOS counts
              the delay in whole minutes, so the delay is rounded up to the next minute.
run           the argv, or ``SHELL -c COMMAND``; another user through
              ``sudo -n -H -u USER --``
lock, erase   refused at plan time: on macOS these are MDM commands (``DeviceLock``,
              ``EraseDevice``) that only an MDM server can send; the agent cannot run them.
============  ==============================================================================
"""

from __future__ import annotations

from jcstate.host import Host
from jcstate.modules.commands import Command
from jcstate.modules.commands.actions import Checkpoint, default_warning
from jcstate.modules.commands.backend import CommandsBackend
from jcstate.modules.commands.result import Outcome
from jcstate.modules.commands.runner import run_process

__all__ = ["BACKEND", "DarwinActions", "power_argv", "run_argv"]

_MDM_ONLY = {
    "lock": "lock is an MDM command on macOS (DeviceLock): send it through your MDM server; "
    "the jcstate agent cannot lock a Mac",
    "erase": "erase is an MDM command on macOS (EraseDevice): send it through your MDM "
    "server; the jcstate agent cannot erase a Mac",
}


def power_argv(command: Command) -> list[str]:
    """``shutdown -r|-h +MINUTES MESSAGE`` (or ``now``)."""
    flag = "-r" if command.action == "restart" else "-h"
    minutes = -(-command.delay // 60)  # ceil: never less warning than asked for
    when = "now" if minutes == 0 else f"+{minutes}"
    return ["shutdown", flag, when, default_warning(command.action, minutes * 60, command.message)]


def run_argv(command: Command) -> list[str]:
    """What action ``run`` executes on macOS."""
    assert command.run is not None
    spec = command.run
    argv = (
        list(spec.argv)
        if spec.argv is not None
        else [spec.shell or "/bin/sh", "-c", spec.command or ""]
    )
    if spec.user and spec.user != "root":
        argv = ["sudo", "-n", "-H", "-u", spec.user, "--", *argv]
    return argv


class DarwinActions:
    """restart, shutdown and run on macOS; lock and erase are refused with the reason."""

    os = "darwin"

    def unsupported(self, command: Command) -> str | None:
        return _MDM_ONLY.get(command.action)

    def describe(self, command: Command) -> list[tuple[str, ...]]:
        if command.action in ("restart", "shutdown"):
            return [tuple(power_argv(command))]
        if command.action == "run":
            return [tuple(run_argv(command))]
        return []

    def perform(self, host: Host, command: Command, checkpoint: Checkpoint) -> Outcome:
        reason = self.unsupported(command)
        if reason:
            return Outcome(False, reason)
        if command.action == "run":
            assert command.run is not None
            return run_process(host, run_argv(command), timeout=command.run.timeout)
        argv = power_argv(command)
        checkpoint(" ".join(argv[:3]))
        done = host.run(argv, check=False)
        if done.returncode != 0:
            return Outcome(
                False,
                f"shutdown exited {done.returncode}: {done.stderr.strip()}",
                exit_code=done.returncode,
                stderr=done.stderr[-4096:],
            )
        if command.action == "restart":
            return Outcome(
                True,
                f"restart scheduled ({argv[2]}); done once the boot time changes",
                exit_code=0,
                awaiting_reboot=True,
            )
        return Outcome(True, f"shutdown scheduled ({argv[2]})", exit_code=0)


BACKEND = CommandsBackend(DarwinActions())
