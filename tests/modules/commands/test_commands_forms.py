"""Per-OS command forms: given a command and the system's answers, exactly these argv lists.

One JSON file per case in ``forms/`` (``<case>.<os>.json``): the command, the canned answers
of the programs it calls, and the expected status, message and argv, in order. Every case
runs through the real runner and journal (under a temporary root), so a second run of the
same id must run nothing.

Placeholders in an expected argv: ``{ERASE_SCRIPT}`` is the module's constant (checked on its
own in test_commands_model.py); ``{ENCODED:NAME}`` is ``-EncodedCommand``'s form (base64 of
UTF-16LE) of the file ``forms/NAME``, the exact script recorded as a file of its own.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from recording_host import RecordingHost

from jcstate.modules.commands.execution import CommandRunner
from jcstate.modules.commands.journal import Journal
from jcstate.modules.commands.linux import LinuxActions
from jcstate.modules.commands.windows import ERASE_SCRIPT

FORMS = Path(__file__).parent / "forms"
CASES = sorted(FORMS.glob("*.json"))


def _expected_arg(arg: str) -> str:
    if arg == "{ERASE_SCRIPT}":
        return ERASE_SCRIPT
    if arg.startswith("{ENCODED:") and arg.endswith("}"):
        script = (FORMS / arg[len("{ENCODED:") : -1]).read_text()
        return base64.b64encode(script.encode("utf-16-le")).decode("ascii")
    return arg


def _actions(os_name: str, sleeps: list[float]) -> Any:
    if os_name == "linux":
        return LinuxActions(sleep=sleeps.append)
    from jcstate.modules.commands.execution import actions_for

    return actions_for(os_name)


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_command_form(path: Path, tmp_path: Path) -> None:
    case = json.loads(path.read_text())
    os_name = path.stem.rsplit(".", 1)[1]
    host = RecordingHost(str(tmp_path), os_name, case.get("responses", []))
    sleeps: list[float] = []
    runner = CommandRunner(host, Journal(host), actions=_actions(os_name, sleeps))
    result = runner.run(case["command"])
    expect = case["expect"]
    want_argv = [[_expected_arg(a) for a in argv] for argv in expect["argv"]]
    assert [list(a) for a in host.commands_run] == want_argv
    assert result.status == expect["status"], result.message
    if "message" in expect:
        assert result.message == expect["message"]
    if "sleeps" in expect:
        assert sleeps == expect["sleeps"]
    if "stdin" in expect:
        assert host.stdin_seen == expect["stdin"]
    if "stdin_of_wall" in expect:
        assert host.stdin_seen[0] == expect["stdin_of_wall"]
    entry = Journal(host).get(case["command"]["id"])
    assert entry is not None
    assert entry.state == expect.get("journal_state", "finished")
    # At most once: the same id again runs nothing and answers the journaled result.
    host.commands_run.clear()
    again = CommandRunner(host, Journal(host), actions=_actions(os_name, sleeps)).run(
        case["command"]
    )
    assert host.commands_run == []
    assert again.status == result.status


def test_windows_lock_script_runs_lockworkstation_in_the_console_session() -> None:
    """The recorded script has the documented forms, and no command data inside it."""
    script = (FORMS / "lock.windows.ps1").read_text()
    lines = [line.strip() for line in script.splitlines()]
    assert "$d = [Console]::In.ReadLine() | ConvertFrom-Json" in lines
    assert "$user = (Get-CimInstance -ClassName Win32_ComputerSystem).UserName" in lines
    assert "if (-not $user) { exit 3 }" in lines
    assert (
        "$action = New-ScheduledTaskAction -Execute 'rundll32.exe' "
        "-Argument 'user32.dll,LockWorkStation'"
    ) in lines
    assert (
        "$principal = New-ScheduledTaskPrincipal -UserId $user -LogonType Interactive "
        "-RunLevel Limited"
    ) in lines
    assert "Start-ScheduledTask -TaskName $d.taskName" in lines
    assert "$info = Get-ScheduledTaskInfo -TaskName $d.taskName" in lines
    # The task is removed whatever happens once it exists.
    register = next(i for i, line in enumerate(lines) if line.startswith("Register-"))
    assert lines[register + 2] == "try {"
    finally_at = lines.index("} finally {")
    assert lines[finally_at + 1] == "Unregister-ScheduledTask -TaskName $d.taskName -Confirm:$false"
    assert "jcstate-lock" not in script  # the name is data on stdin


def test_every_os_has_cases() -> None:
    oses = {p.stem.rsplit(".", 1)[1] for p in CASES}
    assert oses == {"linux", "windows", "darwin"}


def test_notify_send_gets_the_session_bus_of_its_user(tmp_path: Path) -> None:
    case = json.loads((FORMS / "restart.linux.json").read_text())
    host = RecordingHost(str(tmp_path), "linux", case["responses"])
    CommandRunner(host, Journal(host), actions=LinuxActions(sleep=lambda s: None)).run(
        case["command"]
    )
    index = next(i for i, a in enumerate(host.commands_run) if "notify-send" in a)
    assert host.env_seen[index] == {"DBUS_SESSION_BUS_ADDRESS": "unix:path=/run/user/1000/bus"}
