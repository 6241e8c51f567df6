"""A stand-in for an OS's security commands that records each execution instead of acting.

Each ``perform`` appends ``<command id> <action>`` to ``/var/log/executions`` under the host's
root and fsyncs it before returning, so a count of lines per id is the number of times the
command was really carried out, even across SIGKILLs. A restart is handed "to the OS" like the
Linux one (checkpoint, then awaiting reboot); the boot time the next start reads is moved on at
once (``/proc/stat`` under the root), as a real reboot would.
"""

from __future__ import annotations

import os
from typing import Any

from jcstate.modules.commands.result import Outcome

EXECUTIONS = "/var/log/executions"


def prepare_root(root: str, boot_time: int = 1_700_000_000) -> str:
    """A minimal system image for an agent: accounts, hostname, a boot time."""
    for sub in ("etc", "proc", "var/log"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    files = {
        "etc/passwd": "root:x:0:0:root:/root:/bin/bash\n",
        "etc/group": "root:x:0:\nsudo:x:27:\n",
        "etc/shadow": "root:*:19000:0:99999:7:::\n",
        "etc/gshadow": "root:*::\nsudo:*::\n",
        "etc/hostname": os.path.basename(root.rstrip("/")) + "\n",
    }
    for name, text in files.items():
        path = os.path.join(root, name)
        if not os.path.exists(path):
            with open(path, "w") as f:
                f.write(text)
    if not os.path.exists(os.path.join(root, "proc/stat")):
        set_boot_time(root, boot_time)
    return root


def set_boot_time(root: str, btime: int) -> None:
    """Replace the file whole: a SIGKILL mid-write must not leave a machine without a boot
    time (a truncated ``/proc/stat`` is not something a real reboot can produce)."""
    path = os.path.join(root, "proc/stat")
    with open(path + ".new", "w") as f:
        f.write(f"cpu  1 2 3 4\nbtime {btime}\n")
    os.replace(path + ".new", path)


def boot_time_of(root: str) -> int:
    with open(os.path.join(root, "proc/stat")) as f:
        for line in f:
            if line.startswith("btime "):
                return int(line.split()[1])
    raise ValueError("no btime")


def executions(root: str) -> list[str]:
    """Command ids in the order they were carried out."""
    try:
        with open(os.path.join(root, EXECUTIONS.lstrip("/"))) as f:
            return [line.split()[0] for line in f if line.strip()]
    except FileNotFoundError:
        return []


class RecordingActions:
    """The Actions protocol of modules/commands/actions.py, recording instead of acting."""

    os = "linux"

    def __init__(self, reboot_moves_boot_time: bool = True):
        self.reboot_moves_boot_time = reboot_moves_boot_time

    def unsupported(self, command: Any) -> str | None:
        return None

    def describe(self, command: Any) -> list[tuple[str, ...]]:
        return [("record", command.action)]

    def perform(self, host: Any, command: Any, checkpoint: Any) -> Outcome:
        if command.action == "restart":
            checkpoint("systemctl reboot (recorded)")
        path = host.real_path(EXECUTIONS)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{command.id} {command.action}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        if command.action == "restart":
            if self.reboot_moves_boot_time:
                set_boot_time(host.root, boot_time_of(host.root) + 60)
            return Outcome(True, "reboot requested (recorded)", exit_code=0, awaiting_reboot=True)
        if command.action == "run":
            return Outcome(True, "ran (recorded)", exit_code=0, stdout=f"ran {command.id}\n")
        return Outcome(True, f"{command.action} (recorded)", exit_code=0)
