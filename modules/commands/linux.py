"""Security commands on Linux, with the system's own tools (argument vectors, no shell).

============  ==============================================================================
lock          ``loginctl lock-sessions``, after ``loginctl list-sessions`` and
              ``loginctl show-session`` found a graphical (x11/wayland/mir) user session;
              none found → failed, "no graphical session to lock"
restart       ``wall`` (message on stdin) to every terminal, ``notify-send`` in each
shutdown      graphical session (as its user, through ``runuser``), wait ``delay`` seconds,
              then ``systemctl reboot`` / ``systemctl poweroff``
erase         ``lsblk -J -o NAME,TYPE,FSTYPE,PATH``; every crypto_LUKS volume:
              ``cryptsetup erase --batch-mode DEV`` (all key slots destroyed); without LUKS,
              every disk: ``wipefs --all --force`` on its partitions and itself, then
              ``blkdiscard --force``; then ``systemctl poweroff``
run           the argv, or ``SHELL -c COMMAND``; another user through ``runuser -u USER --``
============  ==============================================================================

Every program is looked up on the managed system's PATH (``/usr/local/sbin`` first) and, with
a root prefix, run inside it (``chroot ROOT …``): tests put recording stand-ins there.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from jcstate.errors import HostError
from jcstate.host import Host, RunResult
from jcstate.modules.commands import Command
from jcstate.modules.commands.actions import Checkpoint, default_warning
from jcstate.modules.commands.backend import CommandsBackend
from jcstate.modules.commands.result import Outcome
from jcstate.modules.commands.runner import run_process

__all__ = ["BACKEND", "LinuxActions", "Session", "parse_lsblk", "parse_sessions", "run_argv"]

_GRAPHICAL = {"x11", "wayland", "mir"}
# Not disks a wipe should touch: memory-backed swap/RAM disks.
_NOT_DISKS = ("zram", "ram")


@dataclass(frozen=True)
class Session:
    """One logind session, from ``loginctl show-session``."""

    id: str
    user: str
    uid: int | None
    type: str
    cls: str

    @property
    def graphical(self) -> bool:
        return self.type in _GRAPHICAL and self.cls == "user"


def parse_sessions(text: str) -> list[Session]:
    """Parse ``loginctl show-session -p Id -p Name -p User -p Type -p Class ID…`` blocks."""
    sessions, block = [], {}
    for line in [*text.splitlines(), ""]:
        if not line.strip():
            if block.get("Id"):
                uid = block.get("User", "")
                sessions.append(
                    Session(
                        block["Id"],
                        block.get("Name", ""),
                        int(uid) if uid.isdigit() else None,
                        block.get("Type", ""),
                        block.get("Class", ""),
                    )
                )
            block = {}
            continue
        key, _, value = line.partition("=")
        block[key.strip()] = value.strip()
    return sessions


def parse_lsblk(text: str) -> list[dict[str, Any]]:
    """The ``blockdevices`` tree of ``lsblk -J``."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise HostError(f"lsblk printed something that is not JSON: {exc}") from exc
    devices = data.get("blockdevices") if isinstance(data, dict) else None
    if not isinstance(devices, list):
        raise HostError("lsblk -J printed no blockdevices list")
    return devices


def _walk(devices: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for dev in devices:
        yield dev
        yield from _walk(dev.get("children") or [])


def luks_volumes(devices: list[dict[str, Any]]) -> list[str]:
    """Paths of every LUKS container, in lsblk's order, each once."""
    seen: list[str] = []
    for dev in _walk(devices):
        path = dev.get("path")
        if dev.get("fstype") == "crypto_LUKS" and path and path not in seen:
            seen.append(path)
    return seen


def wipe_targets(devices: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """(disk, its partitions deepest first) for every real disk."""
    out = []
    for dev in devices:
        name = str(dev.get("name", ""))
        if dev.get("type") != "disk" or name.startswith(_NOT_DISKS) or not dev.get("path"):
            continue
        parts = [
            d["path"]
            for d in _walk(dev.get("children") or [])
            if d.get("type") == "part" and d.get("path")
        ]
        out.append((dev["path"], list(reversed(parts))))
    return out


def run_argv(command: Command) -> list[str]:
    """What action ``run`` executes on Linux (and macOS but for the user switch)."""
    assert command.run is not None
    spec = command.run
    argv = (
        list(spec.argv)
        if spec.argv is not None
        else [spec.shell or "/bin/sh", "-c", spec.command or ""]
    )
    if spec.user and spec.user != "root":
        # runuser (util-linux, in every Debian): no password, no tty needed; sets HOME, USER,
        # LOGNAME and SHELL for the target and opens a PAM session like su.
        argv = ["runuser", "-u", spec.user, "--", *argv]
    return argv


class LinuxActions:
    """lock, restart, shutdown, erase and run on Linux (systemd, util-linux, cryptsetup)."""

    os = "linux"

    def __init__(self, sleep: Callable[[float], None] = time.sleep):
        self.sleep = sleep

    def unsupported(self, command: Command) -> str | None:
        return None

    def describe(self, command: Command) -> list[tuple[str, ...]]:
        if command.action == "lock":
            return [("loginctl", "list-sessions"), ("loginctl", "lock-sessions")]
        if command.action in ("restart", "shutdown"):
            verb = "reboot" if command.action == "restart" else "poweroff"
            return [
                ("wall",),
                ("notify-send", "(each graphical session)"),
                ("sleep", str(command.delay)),
                ("systemctl", verb),
            ]
        if command.action == "erase":
            return [
                ("lsblk", "-J", "-o", "NAME,TYPE,FSTYPE,PATH"),
                ("cryptsetup", "erase", "--batch-mode", "(each LUKS volume)"),
                ("systemctl", "poweroff"),
            ]
        return [tuple(run_argv(command))]

    def perform(self, host: Host, command: Command, checkpoint: Checkpoint) -> Outcome:
        if command.action == "lock":
            return self.lock(host)
        if command.action in ("restart", "shutdown"):
            return self.power(host, command, checkpoint)
        if command.action == "erase":
            return self.erase(host, checkpoint)
        assert command.run is not None
        env = None if command.run.user and command.run.user != "root" else {"HOME": "/root"}
        return run_process(
            host, run_argv(command), timeout=command.run.timeout, env=env, chroot=True
        )

    # -- lock ----------------------------------------------------------------------------
    def sessions(self, host: Host) -> list[Session]:
        """Every logind session (raises HostError when logind cannot be asked)."""
        listed = _run(host, ["loginctl", "list-sessions", "--no-legend"])
        if listed.returncode != 0:
            raise HostError(f"loginctl list-sessions failed: {_why(listed)}")
        ids = [line.split()[0] for line in listed.stdout.splitlines() if line.strip()]
        if not ids:
            return []
        shown = _run(
            host,
            [
                "loginctl",
                "show-session",
                "-p",
                "Id",
                "-p",
                "Name",
                "-p",
                "User",
                "-p",
                "Type",
                "-p",
                "Class",
                *ids,
            ],
        )
        if shown.returncode != 0:
            raise HostError(f"loginctl show-session failed: {_why(shown)}")
        return parse_sessions(shown.stdout)

    def lock(self, host: Host) -> Outcome:
        try:
            sessions = self.sessions(host)
        except HostError as exc:
            return Outcome(False, f"cannot list sessions, nothing locked: {exc}")
        graphical = [s for s in sessions if s.graphical]
        if not graphical:
            return Outcome(
                False,
                f"no graphical session to lock ({len(sessions)} session(s), "
                "none graphical); the lock command needs a desktop session",
            )
        done = _run(host, ["loginctl", "lock-sessions"])
        if done.returncode != 0:
            return Outcome(
                False,
                f"loginctl lock-sessions failed: {_why(done)}",
                exit_code=done.returncode,
                stderr=done.stderr[-4096:],
            )
        names = ", ".join(f"{s.id} ({s.user}, {s.type})" for s in graphical)
        return Outcome(True, f"locked {len(graphical)} graphical session(s): {names}", exit_code=0)

    # -- restart / shutdown --------------------------------------------------------------
    def warn(self, host: Host, command: Command) -> list[str]:
        """Tell logged-in users what is coming; returns notes for the result."""
        text = default_warning(command.action, command.delay, command.message)
        notes = []
        wall = _run(host, ["wall"], stdin=text)  # stdin: wall would read a file argument
        notes.append("wall: sent" if wall.returncode == 0 else f"wall: failed ({_why(wall)})")
        try:
            graphical = [s for s in self.sessions(host) if s.graphical]
        except HostError as exc:
            return [*notes, f"desktop notification skipped: {exc}"]
        title = "Restart" if command.action == "restart" else "Shutdown"
        for s in graphical:
            env = {"DBUS_SESSION_BUS_ADDRESS": f"unix:path=/run/user/{s.uid}/bus"}
            sent = _run(
                host,
                [
                    "runuser",
                    "-u",
                    s.user,
                    "--",
                    "notify-send",
                    "--urgency=critical",
                    "--app-name=jcstate",
                    f"{title} in {command.delay} s",
                    text,
                ],
                env=env,
            )
            if sent.returncode == 0:
                notes.append(f"notified {s.user} (session {s.id})")
            elif sent.returncode == 127:
                notes.append("notify-send not installed: no desktop notification")
                break
            else:
                notes.append(f"notify-send for {s.user} failed ({_why(sent)})")
        return notes

    def power(self, host: Host, command: Command, checkpoint: Checkpoint) -> Outcome:
        notes = self.warn(host, command)
        if command.delay:
            self.sleep(command.delay)
        verb = "reboot" if command.action == "restart" else "poweroff"
        checkpoint(f"systemctl {verb} after {command.delay} s warning")
        done = _run(host, ["systemctl", verb])
        summary = "; ".join(notes)
        if done.returncode != 0:
            return Outcome(
                False,
                f"systemctl {verb} failed: {_why(done)} ({summary})",
                exit_code=done.returncode,
                stderr=done.stderr[-4096:],
            )
        if command.action == "restart":
            return Outcome(
                True,
                f"reboot requested ({summary}); done once the boot time changes",
                exit_code=0,
                awaiting_reboot=True,
            )
        return Outcome(True, f"power-off requested ({summary})", exit_code=0)

    # -- erase ---------------------------------------------------------------------------
    def erase(self, host: Host, checkpoint: Checkpoint) -> Outcome:
        listed = _run(host, ["lsblk", "-J", "-o", "NAME,TYPE,FSTYPE,PATH"])
        if listed.returncode != 0:
            return Outcome(
                False, f"lsblk failed, nothing erased: {_why(listed)}", exit_code=listed.returncode
            )
        devices = parse_lsblk(listed.stdout)
        luks = luks_volumes(devices)
        failures: list[str] = []
        if luks:
            for dev in luks:
                done = _run(host, ["cryptsetup", "erase", "--batch-mode", dev])
                if done.returncode != 0:
                    failures.append(f"cryptsetup erase {dev}: {_why(done)}")
            what = "LUKS key slots destroyed on " + ", ".join(luks)
        else:
            targets = wipe_targets(devices)
            if not targets:
                return Outcome(False, "no LUKS volume and no disk found: nothing erased")
            for disk, parts in targets:
                for dev in [*parts, disk]:
                    done = _run(host, ["wipefs", "--all", "--force", dev])
                    if done.returncode != 0:
                        failures.append(f"wipefs {dev}: {_why(done)}")
                # Discard is best effort: many disks (and all HDDs) do not support it.
                _run(host, ["blkdiscard", "--force", disk])
            what = "signatures wiped and blocks discarded on " + ", ".join(t[0] for t in targets)
        if failures:
            return Outcome(False, "erase incomplete, not powering off: " + "; ".join(failures))
        checkpoint(what + "; powering off")
        off = _run(host, ["systemctl", "poweroff"])
        if off.returncode != 0:
            return Outcome(True, f"{what}; power-off failed: {_why(off)}", exit_code=0)
        return Outcome(True, f"{what}; power-off requested", exit_code=0)


def _run(
    host: Host, argv: list[str], *, stdin: str | None = None, env: dict[str, str] | None = None
) -> RunResult:
    """Run inside the managed system, never raising on a non-zero exit (127: not found)."""
    try:
        return host.run(argv, stdin=stdin, env=env, check=False, chroot=True, timeout=120)
    except HostError as exc:  # not found or timed out
        code = getattr(exc, "returncode", 1)
        return RunResult(tuple(argv), code, "", str(exc), 0.0)


def _why(result: RunResult) -> str:
    text = (result.stderr.strip() or result.stdout.strip()).splitlines()
    return f"exit {result.returncode}: {text[-1] if text else 'no output'}"


BACKEND = CommandsBackend(LinuxActions())
