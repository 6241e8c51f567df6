"""The ``commands`` model: what a policy may say, and what it may not."""

from __future__ import annotations

import datetime as dt

import pytest

from jcstate.errors import PlanError
from jcstate.modules.commands import DEFAULT_DELAY, darwin, linux, parse, parse_command, windows


def test_spec_example_parses() -> None:
    cmds = parse(
        [
            {"id": "incident-42-lock", "action": "lock"},
            {
                "id": "rotate-logs-2026-11",
                "action": "run",
                "run": {
                    "command": "logrotate -f /etc/logrotate.conf",
                    "shell": "/bin/sh",
                    "user": "root",
                    "timeout": 300,
                },
            },
        ]
    )
    assert [c.id for c in cmds] == ["incident-42-lock", "rotate-logs-2026-11"]
    assert cmds[0].delay == DEFAULT_DELAY
    assert cmds[1].run is not None and cmds[1].run.timeout == 300


@pytest.mark.parametrize(
    "section, message",
    [
        ([{"id": "a", "action": "lock"}, {"id": "a", "action": "restart"}], "used twice"),
        ([{"id": "e", "action": "erase"}], "confirm: erase"),
        ([{"id": "e", "action": "erase", "confirm": "yes"}], "confirm: erase"),
        ([{"id": "../x", "action": "lock"}], "id must be"),
        ([{"id": "r", "action": "run"}], "needs a 'run' mapping"),
        ([{"id": "r", "action": "lock", "run": {"argv": ["true"]}}], "only for action run"),
        ([{"id": "r", "action": "run", "run": {"argv": ["a"], "command": "b"}}], "exactly one"),
        ([{"id": "r", "action": "run", "run": {"argv": ["a"], "shell": "/bin/sh"}}], "shell goes"),
        ([{"id": "r", "action": "run", "run": {"argv": ["a"], "timeout": 0}}], "timeout"),
        ([{"id": "r", "action": "restart", "delay": -1}], "delay"),
        ([{"id": "r", "action": "reboot"}], "action must be"),
        ([{"id": "r", "action": "lock", "notAfter": "2026-01-01T00:00:00"}], "time zone"),
        ([{"id": "r", "action": "lock", "colour": "red"}], "unknown field"),
    ],
)
def test_invalid_commands_are_refused(section: list[object], message: str) -> None:
    with pytest.raises(PlanError, match=message):
        parse(section)


def test_not_after() -> None:
    cmd = parse_command({"id": "x", "action": "lock", "notAfter": "2026-12-01T00:00:00Z"})
    assert not cmd.expired(dt.datetime(2026, 11, 30, tzinfo=dt.UTC))
    assert cmd.expired(dt.datetime(2026, 12, 2, tzinfo=dt.UTC))
    assert parse_command(cmd.to_dict()) == cmd  # the plain form round-trips (journal, server)


def test_run_forms_per_os() -> None:
    shell = parse_command({"id": "r", "action": "run", "run": {"command": "echo hi"}})
    as_user = parse_command(
        {"id": "r", "action": "run", "run": {"argv": ["id", "-u"], "user": "alice"}}
    )
    assert linux.run_argv(shell) == ["/bin/sh", "-c", "echo hi"]
    assert linux.run_argv(as_user) == ["runuser", "-u", "alice", "--", "id", "-u"]
    assert darwin.run_argv(as_user) == ["sudo", "-n", "-H", "-u", "alice", "--", "id", "-u"]
    assert windows.run_argv(shell) == [
        "powershell.exe",
        "-NoProfile",
        "-NonInteractive",
        "-ExecutionPolicy",
        "Bypass",
        "-Command",
        "echo hi",
    ]
    cmd = parse_command(
        {"id": "r", "action": "run", "run": {"command": "dir C:\\", "shell": "cmd.exe"}}
    )
    assert windows.run_argv(cmd) == ["cmd.exe", "/d", "/s", "/c", "dir C:\\"]
    bash = parse_command(
        {"id": "r", "action": "run", "run": {"command": "ls", "shell": "/bin/bash"}}
    )
    assert "shell /bin/bash is not supported on Windows" in (
        windows.WindowsActions().unsupported(bash) or ""
    )


def test_windows_erase_script_is_microsofts_documented_form() -> None:
    script = windows.ERASE_SCRIPT
    assert '$namespaceName = "root\\cimv2\\mdm\\dmmap"' in script
    assert '$className = "MDM_RemoteWipe"' in script
    assert '$methodName = "doWipeProtectedMethod"' in script
    assert "ParentID='./Vendor/MSFT' and InstanceID='RemoteWipe'" in script
    assert "$session.InvokeMethod($namespaceName, $instance, $methodName, $params)" in script
