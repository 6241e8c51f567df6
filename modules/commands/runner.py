"""Run one process for action ``run``: its own process group, a timeout, capped output.

The process starts in a session of its own (:meth:`Host.spawn`), so everything it starts
shares its process group. On timeout the whole group gets SIGTERM, then SIGKILL after a short
grace, and the exit code is 124 (as coreutils ``timeout``). When the main process exits,
whatever it left running in its group is killed too: a command's children never outlive
its result. A process that moves itself to a new session (``setsid``, a daemon) escapes the
group; that is the one way out, and it is documented in docs/commands.md.

Output is read as it comes and only the last ``cap`` bytes of each stream are kept; when
more was produced, ``truncated`` is set. A command that prints gigabytes costs no memory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from typing import IO

from jcstate.errors import CommandFailed
from jcstate.host import Host
from jcstate.modules.commands.result import Outcome

__all__ = ["DEFAULT_CAP", "TIMEOUT_EXIT", "run_process"]

DEFAULT_CAP = 64 * 1024  # bytes kept of each stream (the tail)
TIMEOUT_EXIT = 124
_CHUNK = 65536
_DRAIN_SECONDS = 2.0  # how long to wait for pipes to close once the group is gone


class _Tail:
    """The last ``cap`` bytes of a stream, and whether anything before them was dropped."""

    def __init__(self, cap: int):
        self.cap = cap
        self.data = bytearray()
        self.dropped = False

    def feed(self, chunk: bytes) -> None:
        self.data += chunk
        if len(self.data) > self.cap:
            del self.data[: len(self.data) - self.cap]
            self.dropped = True

    def text(self) -> str:
        # A cut may fall inside a multi-byte character: replace it rather than fail.
        return self.data.decode("utf-8", errors="replace")


def _pump(stream: IO[bytes], tail: _Tail) -> None:
    with stream:
        # read1: return what is there now instead of waiting for a full chunk
        while chunk := stream.read1(_CHUNK):  # type: ignore[attr-defined]
            tail.feed(chunk)


def _signal_group(proc: subprocess.Popen[bytes], host: Host, sig: int) -> None:
    """Send ``sig`` to the process's whole group (its session, started by Host.spawn)."""
    if os.name == "nt":
        # No process groups to signal on Windows: end the tree with the OS's own tool.
        host.run(["taskkill", "/F", "/T", "/PID", str(proc.pid)], check=False, timeout=30)
        return
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # the group is already gone


def run_process(
    host: Host,
    argv: Sequence[str],
    *,
    timeout: float,
    cap: int = DEFAULT_CAP,
    kill_grace: float = 5.0,
    env: Mapping[str, str] | None = None,
    chroot: bool = False,
) -> Outcome:
    """Run ``argv`` to completion or timeout; exit code 124 when the timeout struck."""
    start = time.monotonic()
    try:
        proc = host.spawn(argv, env=env, chroot=chroot)
    except CommandFailed as exc:  # the program does not exist
        return Outcome(
            False,
            str(exc),
            exit_code=exc.returncode,
            stderr=exc.stderr,
            duration=time.monotonic() - start,
        )
    tails = (_Tail(cap), _Tail(cap))
    assert proc.stdout is not None and proc.stderr is not None
    readers = [
        threading.Thread(target=_pump, args=(stream, tail), daemon=True)
        for stream, tail in zip((proc.stdout, proc.stderr), tails, strict=True)
    ]
    for reader in readers:
        reader.start()
    timed_out = False
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _signal_group(proc, host, signal.SIGTERM)
        try:
            proc.wait(timeout=kill_grace)
        except subprocess.TimeoutExpired:
            pass
    # Leftovers in the group (background children, or a main process that ignored SIGTERM).
    if os.name != "nt":
        _signal_group(proc, host, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + _DRAIN_SECONDS
    for reader in readers:
        reader.join(timeout=max(0.0, deadline - time.monotonic()))
    duration = time.monotonic() - start
    code = proc.returncode
    if timed_out:
        code = TIMEOUT_EXIT
    elif code < 0:
        code = 128 - code  # killed by a signal: the shell's convention
    truncated = tails[0].dropped or tails[1].dropped
    if timed_out:
        message = f"timed out after {timeout:g} s; process group killed"
    else:
        message = f"exited {code}"
    if any(reader.is_alive() for reader in readers):
        message += "; output still held open by a process outside the group (not waited for)"
    return Outcome(
        ok=code == 0,
        message=message,
        exit_code=code,
        stdout=tails[0].text(),
        stderr=tails[1].text(),
        truncated=truncated,
        timed_out=timed_out,
        duration=duration,
    )
