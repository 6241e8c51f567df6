"""Security commands on Windows, with the OS's own programs (argument vectors, no cmd.exe).

============  ==============================================================================
lock          ``rundll32.exe user32.dll,LockWorkStation``. It locks the session it runs in:
              the agent must run it in the interactive user's session (a service in session
              0 locks nothing) — see docs/commands.md
restart       ``shutdown.exe /r /t SECONDS /c MESSAGE``: Windows shows the message and a
shutdown      countdown to the signed-in users; ``/s`` for shutdown
erase         RemoteWipe CSP ``doWipeProtected`` through the MDM WMI bridge
              (``MDM_RemoteWipe.doWipeProtectedMethod`` in ``root\\cimv2\\mdm\\dmmap``), with
              Microsoft's documented PowerShell form; needs Windows RE and Local System
run           ``powershell.exe -NoProfile -NonInteractive -ExecutionPolicy Bypass -Command``
              (default), ``pwsh``, or ``cmd.exe /d /s /c``; or the argv as given. Only as the
              agent's own account (SYSTEM): running as another user is refused.
============  ==============================================================================
"""

from __future__ import annotations

import ntpath

from jcstate.host import Host
from jcstate.modules.commands import Command
from jcstate.modules.commands.actions import Checkpoint, default_warning
from jcstate.modules.commands.backend import CommandsBackend
from jcstate.modules.commands.result import Outcome
from jcstate.modules.commands.runner import run_process

__all__ = ["BACKEND", "ERASE_SCRIPT", "WindowsActions", "erase_argv", "power_argv", "run_argv"]

LOCK_ARGV = ["rundll32.exe", "user32.dll,LockWorkStation"]
_POWERSHELL = ["powershell.exe", "-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass",
               "-Command"]
_PWSH = ["pwsh.exe", "-NoProfile", "-NonInteractive", "-Command"]
_CMD = ["cmd.exe", "/d", "/s", "/c"]
_SHELLS = {"powershell": _POWERSHELL, "pwsh": _PWSH, "cmd": _CMD}
_MAX_MESSAGE = 512  # shutdown.exe /c takes at most 512 characters
_MAX_WAIT = 315360000  # shutdown.exe /t: ten years, in seconds

# Microsoft's documented form (MDM_RemoteWipe class, "Using PowerShell scripting with the WMI
# Bridge Provider"), with doWipeProtectedMethod: the wipe survives a power cut and also cleans
# the drive. A constant: nothing from the command is interpolated into it.
ERASE_SCRIPT = "\n".join([
    "$ErrorActionPreference = 'Stop'",
    '$namespaceName = "root\\cimv2\\mdm\\dmmap"',
    '$className = "MDM_RemoteWipe"',
    '$methodName = "doWipeProtectedMethod"',
    "$session = New-CimSession",
    "$params = New-Object Microsoft.Management.Infrastructure.CimMethodParametersCollection",
    '$param = [Microsoft.Management.Infrastructure.CimMethodParameter]::Create('
    '"param", "", "String", "In")',
    "$params.Add($param)",
    "$instance = Get-CimInstance -Namespace $namespaceName -ClassName $className "
    "-Filter \"ParentID='./Vendor/MSFT' and InstanceID='RemoteWipe'\"",
    "$session.InvokeMethod($namespaceName, $instance, $methodName, $params)",
])


def power_argv(command: Command) -> list[str]:
    """``shutdown.exe /r|/s /t SECONDS /c MESSAGE``."""
    flag = "/r" if command.action == "restart" else "/s"
    message = default_warning(command.action, command.delay, command.message)
    return ["shutdown.exe", flag, "/t", str(min(command.delay, _MAX_WAIT)), "/c",
            message[:_MAX_MESSAGE]]


def erase_argv() -> list[str]:
    return [*_POWERSHELL, ERASE_SCRIPT]


def _shell_prefix(shell: str | None) -> list[str] | None:
    name = ntpath.basename(shell or "powershell").lower()
    name = name[:-4] if name.endswith(".exe") else name
    return _SHELLS.get(name)


def run_argv(command: Command) -> list[str]:
    """What action ``run`` executes on Windows."""
    assert command.run is not None
    spec = command.run
    if spec.argv is not None:
        return list(spec.argv)
    prefix = _shell_prefix(spec.shell)
    assert prefix is not None, "checked by unsupported()"
    return [*prefix, spec.command or ""]


class WindowsActions:
    """lock, restart, shutdown, erase and run on Windows 10/11."""

    os = "windows"

    def unsupported(self, command: Command) -> str | None:
        spec = command.run
        if spec is None:
            return None
        if spec.user and spec.user.upper() not in ("SYSTEM", "NT AUTHORITY\\SYSTEM"):
            return (f"run as {spec.user} is not supported on Windows: the agent runs commands "
                    "as SYSTEM only")
        if spec.command is not None and _shell_prefix(spec.shell) is None:
            return (f"shell {spec.shell} is not supported on Windows: use powershell, pwsh or "
                    "cmd, or give argv")
        return None

    def describe(self, command: Command) -> list[tuple[str, ...]]:
        if command.action == "lock":
            return [tuple(LOCK_ARGV)]
        if command.action in ("restart", "shutdown"):
            return [tuple(power_argv(command))]
        if command.action == "erase":
            return [(*_POWERSHELL, "(MDM_RemoteWipe.doWipeProtectedMethod)")]
        if self.unsupported(command):
            return []
        return [tuple(run_argv(command))]

    def perform(self, host: Host, command: Command, checkpoint: Checkpoint) -> Outcome:
        reason = self.unsupported(command)
        if reason:
            return Outcome(False, reason)
        if command.action == "run":
            assert command.run is not None
            return run_process(host, run_argv(command), timeout=command.run.timeout)
        if command.action == "lock":
            argv = LOCK_ARGV
        elif command.action == "erase":
            argv = erase_argv()
            checkpoint("RemoteWipe doWipeProtected requested")
        else:
            argv = power_argv(command)
            checkpoint(" ".join(argv[:4]))
        done = host.run(argv, check=False, timeout=300)
        if done.returncode != 0:
            text = (done.stderr.strip() or done.stdout.strip())[-4096:]
            return Outcome(False, f"{argv[0]} exited {done.returncode}: {text}",
                           exit_code=done.returncode, stderr=done.stderr[-4096:])
        if command.action == "restart":
            return Outcome(True, f"restart in {command.delay} s announced; done once the "
                                 "boot time changes", exit_code=0, awaiting_reboot=True)
        messages = {
            "lock": "LockWorkStation called",
            "shutdown": f"shutdown in {command.delay} s announced",
            "erase": "RemoteWipe doWipeProtected accepted; Windows resets itself",
        }
        return Outcome(True, messages[command.action], exit_code=0)


BACKEND = CommandsBackend(WindowsActions())
