"""The converge worker's process, started and talked to without ``subprocess``.

``subprocess`` (with ``threading``, ``locale`` and ``contextlib``) costs the resident agent
about 0.6 MB, and the agent starts one kind of process itself: the worker, with a request on
its stdin and the answer on its stdout. :class:`Child` does what ``Popen(argv, stdin=PIPE,
stdout=PIPE, pass_fds=(fd,), process_group=0)`` and ``communicate(data, timeout)`` do for it:
``os.posix_spawn`` into a process group of its own, SIGPIPE and SIGXFSZ back to their
defaults (as ``restore_signals``), no descriptor inherited but 0, 1, 2 and the one passed (as
``close_fds``); the request written while the answer is read, so either may be larger than a
pipe holds; one deadline for both and for the exit. Commands and updates, which run other
tools, still use ``subprocess`` (through the host), loaded when they run.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import time

__all__ = ["Child"]

READ_SIZE = 32768
# what subprocess's restore_signals sets back to SIG_DFL (Python itself ignores SIGPIPE)
DEFAULT_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGPIPE", "SIGXFZ", "SIGXFSZ") if hasattr(signal, name)
)


class Child:
    """One started process: its stdin and stdout pipes, its pid, its exit status."""

    def __init__(self, argv: list[str], *, pass_fd: int):
        """Start ``argv`` (``argv[0]`` a path) with pipes on 0 and 1 and ``pass_fd`` kept open.

        Raises OSError when it cannot be started.
        """
        stdin_read, stdin_write = os.pipe()
        stdout_read, stdout_write = os.pipe()
        # a pipe on 0, 1 or 2 (this process started without them) would be replaced by dup2
        stdin_read, stdin_write, stdout_read, stdout_write = (
            _above_stdio(fd) for fd in (stdin_read, stdin_write, stdout_read, stdout_write)
        )
        self.stdin: int | None = stdin_write
        self.stdout: int | None = stdout_read
        self.returncode: int | None = None
        self._data: bytes | None = None  # what goes to stdin, once communicate is called
        self._written = 0
        self._chunks: list[bytes] = []
        actions: list[tuple[int, ...]] = [
            (os.POSIX_SPAWN_DUP2, stdin_read, 0),
            (os.POSIX_SPAWN_DUP2, stdout_write, 1),
        ]
        actions += [(os.POSIX_SPAWN_CLOSE, fd) for fd in _inheritable(keep={0, 1, 2, pass_fd})]
        os.set_inheritable(pass_fd, True)
        try:
            self.pid = os.posix_spawn(
                argv[0],
                argv,
                os.environ,
                file_actions=actions,
                setpgroup=0,
                setsigdef=DEFAULT_SIGNALS,
            )
        except BaseException:
            self.close()
            raise
        finally:
            os.set_inheritable(pass_fd, False)
            os.close(stdin_read)
            os.close(stdout_write)

    def communicate(self, data: bytes, timeout: float) -> bytes:
        """Write ``data`` to stdin and close it, read stdout to its end, wait for the exit.

        Raises TimeoutError when that takes longer than ``timeout`` seconds; calling again
        (after killing the child, say) goes on where it stopped.
        """
        deadline = time.monotonic() + timeout
        if self._data is None:
            self._data = data
            if not data and self.stdin is not None:
                os.close(self.stdin)
                self.stdin = None
        while self.stdin is not None or self.stdout is not None:
            poller = select.poll()
            if self.stdin is not None:
                poller.register(self.stdin, select.POLLOUT)
            if self.stdout is not None:
                poller.register(self.stdout, select.POLLIN)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            for fd, _ in poller.poll(remaining * 1000):
                if fd == self.stdin:
                    self._write()
                elif fd == self.stdout:
                    chunk = os.read(fd, READ_SIZE)
                    if chunk:
                        self._chunks.append(chunk)
                    else:
                        os.close(fd)
                        self.stdout = None
        self.wait(max(0.0, deadline - time.monotonic()))
        return b"".join(self._chunks)

    def _write(self) -> None:
        assert self.stdin is not None and self._data is not None
        try:
            # at most PIPE_BUF bytes: a pipe that polls writable takes that many without blocking
            self._written += os.write(
                self.stdin, self._data[self._written : self._written + select.PIPE_BUF]
            )
        except BrokenPipeError:  # the child stopped reading: what it answers tells why
            self._written = len(self._data)
        if self._written >= len(self._data):
            os.close(self.stdin)
            self.stdin = None

    def wait(self, timeout: float | None = None) -> int:
        """The exit status (negative: killed by that signal); TimeoutError after ``timeout``."""
        if self.returncode is not None:
            return self.returncode
        if timeout is None:
            _, status = os.waitpid(self.pid, 0)
        else:
            deadline = time.monotonic() + timeout
            delay = 0.0005
            while True:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                delay = min(delay * 2, remaining, 0.05)
                time.sleep(delay)
        self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def kill_group(self) -> None:
        """SIGKILL the child and whatever it started (its own process group)."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def close(self) -> None:
        """Close the pipes that are still open."""
        for fd in (self.stdin, self.stdout):
            if fd is not None:
                os.close(fd)
        self.stdin = self.stdout = None


def _above_stdio(fd: int) -> int:
    if fd > 2:
        return fd
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    os.close(fd)
    return moved


def _inheritable(keep: set[int]) -> list[int]:
    """This process's inheritable descriptors outside ``keep`` (the child closes them)."""
    try:
        names = os.listdir("/proc/self/fd")
    except FileNotFoundError:
        names = os.listdir("/dev/fd")  # macOS
    found = []
    for name in names:
        fd = int(name)
        if fd in keep:
            continue
        try:
            if os.get_inheritable(fd):
                found.append(fd)
        except OSError:  # the listing's own descriptor, closed by now
            pass
    return found
