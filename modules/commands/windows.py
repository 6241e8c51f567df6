"""Security commands on Windows, with the OS's own programs (argument vectors, no cmd.exe).

============  ==============================================================================
lock          ``rundll32.exe user32.dll,LockWorkStation`` in the interactive user's session,
              through a one-shot scheduled task (:data:`LOCK_SCRIPT`): LockWorkStation only
              works on the interactive desktop, and the agent, a service in session 0, would
              lock nothing and still exit 0. Nobody signed in at the console: failed, "no
              interactive session to lock"
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

import base64
import json
import ntpath

from jcstate.host import Host
from jcstate.modules.commands import Command
from jcstate.modules.commands.actions import Checkpoint, default_warning
from jcstate.modules.commands.backend import CommandsBackend
from jcstate.modules.commands.result import Outcome
from jcstate.modules.commands.runner import run_process

__all__ = [
    "BACKEND",
    "ERASE_SCRIPT",
    "LOCK_SCRIPT",
    "WindowsActions",
    "erase_argv",
    "lock_argv",
    "lock_stdin",
    "power_argv",
    "run_argv",
]

_POWERSHELL = [
    "powershell.exe",
    "-NoProfile",
    "-NonInteractive",
    "-ExecutionPolicy",
    "Bypass",
    "-Command",
]
_PWSH = ["pwsh.exe", "-NoProfile", "-NonInteractive", "-Command"]
_CMD = ["cmd.exe", "/d", "/s", "/c"]
_SHELLS = {"powershell": _POWERSHELL, "pwsh": _PWSH, "cmd": _CMD}
_MAX_MESSAGE = 512  # shutdown.exe /c takes at most 512 characters
_MAX_WAIT = 315360000  # shutdown.exe /t: ten years, in seconds

# Microsoft's documented form (MDM_RemoteWipe class, "Using PowerShell scripting with the WMI
# Bridge Provider"), with doWipeProtectedMethod: the wipe survives a power cut and also cleans
# the drive. A constant: nothing from the command is interpolated into it.
ERASE_SCRIPT = "\n".join(
    [
        "$ErrorActionPreference = 'Stop'",
        '$namespaceName = "root\\cimv2\\mdm\\dmmap"',
        '$className = "MDM_RemoteWipe"',
        '$methodName = "doWipeProtectedMethod"',
        "$session = New-CimSession",
        "$params = New-Object Microsoft.Management.Infrastructure.CimMethodParametersCollection",
        "$param = [Microsoft.Management.Infrastructure.CimMethodParameter]::Create("
        '"param", "", "String", "In")',
        "$params.Add($param)",
        "$instance = Get-CimInstance -Namespace $namespaceName -ClassName $className "
        "-Filter \"ParentID='./Vendor/MSFT' and InstanceID='RemoteWipe'\"",
        "$session.InvokeMethod($namespaceName, $instance, $methodName, $params)",
    ]
)


# LockWorkStation "is callable only by processes running on the interactive desktop"; the
# agent is a service in session 0. So the script registers a one-shot task that runs rundll32
# as the console user with LogonType Interactive ("the task will be run only in an existing
# interactive session"), starts it, waits for it to have run, and always removes it. The task
# name arrives as JSON on stdin: nothing from the command is pasted into the script. The
# battery settings are explicit because a laptop to be locked is often on battery, and the
# Task Scheduler's defaults there (DisallowStartIfOnBatteries) would keep the task from starting.
# LastRunTime is compared with a start two seconds early: the scheduler keeps whole seconds.
# Exit codes: 0 ran, 3 nobody at the console, 4 did not run within 10 s, 5 ran and failed
# (LastTaskResult on stdout). 267009 = 0x41301 SCHED_S_TASK_RUNNING.
LOCK_SCRIPT = """$ErrorActionPreference = 'Stop'
$d = [Console]::In.ReadLine() | ConvertFrom-Json
$user = (Get-CimInstance -ClassName Win32_ComputerSystem).UserName
if (-not $user) { exit 3 }
$action = New-ScheduledTaskAction -Execute 'rundll32.exe' -Argument 'user32.dll,LockWorkStation'
$principal = New-ScheduledTaskPrincipal -UserId $user -LogonType Interactive -RunLevel Limited
$settings = New-ScheduledTaskSettingsSet -AllowStartIfOnBatteries -DontStopIfGoingOnBatteries
$since = (Get-Date).AddSeconds(-2)
Register-ScheduledTask -TaskName $d.taskName -Action $action -Principal $principal `
  -Settings $settings -Force | Out-Null
try {
  Start-ScheduledTask -TaskName $d.taskName
  $deadline = (Get-Date).AddSeconds(10)
  do {
    Start-Sleep -Milliseconds 250
    $info = Get-ScheduledTaskInfo -TaskName $d.taskName
    $done = ($info.LastRunTime -ge $since) -and ($info.LastTaskResult -ne 267009)
  } until ($done -or (Get-Date) -gt $deadline)
} finally {
  Unregister-ScheduledTask -TaskName $d.taskName -Confirm:$false
}
if (-not $done) { exit 4 }
if ($info.LastTaskResult -ne 0) { Write-Output $info.LastTaskResult; exit 5 }
exit 0
"""
_LOCK_FAILURES = {
    3: "no interactive session to lock (nobody is signed in at the console); the lock command "
    "needs a signed-in user",
    4: "the lock task did not run within 10 s in the console user's session",
}


def lock_argv() -> list[str]:
    """``powershell.exe … -EncodedCommand`` with :data:`LOCK_SCRIPT`.

    -EncodedCommand (base64 of UTF-16LE) rather than -Command, so that stdin stays free for
    the data, as in modules/users/powershell.py.
    """
    encoded = base64.b64encode(LOCK_SCRIPT.encode("utf-16-le")).decode("ascii")
    return [*_POWERSHELL[:-1], "-EncodedCommand", encoded]


def lock_stdin(command: Command) -> str:
    """The one JSON line :data:`LOCK_SCRIPT` reads: the task's name, made from the command id."""
    return json.dumps({"taskName": f"jcstate-lock-{command.id}"}, sort_keys=True) + "\n"


def _lock(host: Host, command: Command) -> Outcome:
    done = host.run(lock_argv(), stdin=lock_stdin(command), check=False, timeout=60)
    if done.returncode == 0:
        return Outcome(True, "LockWorkStation ran in the console user's session", exit_code=0)
    if done.returncode in _LOCK_FAILURES:
        return Outcome(False, _LOCK_FAILURES[done.returncode], exit_code=done.returncode)
    if done.returncode == 5:
        return Outcome(
            False,
            f"the lock task ran but failed: LastTaskResult {done.stdout.strip()[-64:]}",
            exit_code=5,
        )
    text = (done.stderr.strip() or done.stdout.strip())[-4096:]
    return Outcome(
        False,
        f"powershell.exe exited {done.returncode}: {text}",
        exit_code=done.returncode,
        stderr=done.stderr[-4096:],
    )


def power_argv(command: Command) -> list[str]:
    """``shutdown.exe /r|/s /t SECONDS /c MESSAGE``."""
    flag = "/r" if command.action == "restart" else "/s"
    message = default_warning(command.action, command.delay, command.message)
    return [
        "shutdown.exe",
        flag,
        "/t",
        str(min(command.delay, _MAX_WAIT)),
        "/c",
        message[:_MAX_MESSAGE],
    ]


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
            return (
                f"run as {spec.user} is not supported on Windows: the agent runs commands "
                "as SYSTEM only"
            )
        if spec.command is not None and _shell_prefix(spec.shell) is None:
            return (
                f"shell {spec.shell} is not supported on Windows: use powershell, pwsh or "
                "cmd, or give argv"
            )
        return None

    def describe(self, command: Command) -> list[tuple[str, ...]]:
        if command.action == "lock":
            return [
                (
                    *_POWERSHELL[:-1],
                    "-EncodedCommand",
                    "(LockWorkStation through a one-shot scheduled task in the console user's "
                    "session)",
                )
            ]
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
            return _lock(host, command)
        if command.action == "erase":
            argv = erase_argv()
            checkpoint("RemoteWipe doWipeProtected requested")
        else:
            argv = power_argv(command)
            checkpoint(" ".join(argv[:4]))
        done = host.run(argv, check=False, timeout=300)
        if done.returncode != 0:
            text = (done.stderr.strip() or done.stdout.strip())[-4096:]
            return Outcome(
                False,
                f"{argv[0]} exited {done.returncode}: {text}",
                exit_code=done.returncode,
                stderr=done.stderr[-4096:],
            )
        if command.action == "restart":
            return Outcome(
                True,
                f"restart in {command.delay} s announced; done once the boot time changes",
                exit_code=0,
                awaiting_reboot=True,
            )
        messages = {
            "shutdown": f"shutdown in {command.delay} s announced",
            "erase": "RemoteWipe doWipeProtected accepted; Windows resets itself",
        }
        return Outcome(True, messages[command.action], exit_code=0)


BACKEND = CommandsBackend(WindowsActions())
