"""The worker's process without ``subprocess``: what ``Popen(..., process_group=0,
pass_fds=(fd,)).communicate(data, timeout)`` gave the agent, checked on real processes."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator

import pytest

from jcstate.agent.spawn import Child

ECHO_REVERSED = "import sys; d = sys.stdin.buffer.read(); sys.stdout.buffer.write(d[::-1])"


@pytest.fixture
def lifeline() -> Iterator[tuple[int, int]]:
    read, write = os.pipe()
    yield read, write
    for fd in (read, write):
        try:
            os.close(fd)
        except OSError:
            pass


def test_more_than_a_pipe_holds_each_way(lifeline):
    data = os.urandom(3 * 1024 * 1024)
    child = Child([sys.executable, "-c", ECHO_REVERSED], pass_fd=lifeline[0])
    assert child.communicate(data, timeout=60) == data[::-1]
    assert child.returncode == 0 and child.stdin is None and child.stdout is None


def test_the_child_has_its_own_group_the_passed_fd_and_nothing_else(lifeline, tmp_path):
    stray = os.open(os.devnull, os.O_RDONLY)
    os.set_inheritable(stray, True)  # as a descriptor this process inherited would be
    try:
        program = (
            "import os, sys\n"
            f"def is_open(fd):\n"
            "    try:\n        os.fstat(fd)\n        return True\n"
            "    except OSError:\n        return False\n"
            f"print(os.getpgid(0) == os.getpid(), is_open({lifeline[0]}), is_open({stray}),"
            f" os.read({lifeline[0]}, 5))\n"
        )
        os.write(lifeline[1], b"alive")
        child = Child([sys.executable, "-c", program], pass_fd=lifeline[0])
        out = child.communicate(b"", timeout=30)
    finally:
        os.close(stray)
    assert out.decode().split() == ["True", "True", "False", "b'alive'"]
    assert not os.get_inheritable(lifeline[0])  # inherited by the child only


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc")
def test_sigpipe_is_back_to_its_default_in_the_child(lifeline):
    # Python ignores SIGPIPE; subprocess's restore_signals gives children the default back
    assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN
    child = Child(["/bin/cat", "/proc/self/status"], pass_fd=lifeline[0])
    status = child.communicate(b"", timeout=30).decode()
    ignored = int(
        next(line for line in status.splitlines() if line.startswith("SigIgn:")).split()[1], 16
    )
    assert not ignored & (1 << (signal.SIGPIPE - 1))


def test_a_child_that_does_not_read_its_input(lifeline):
    child = Child([sys.executable, "-c", "print('no thanks')"], pass_fd=lifeline[0])
    assert child.communicate(os.urandom(1024 * 1024), timeout=30) == b"no thanks\n"
    assert child.returncode == 0


def test_a_timeout_then_the_group_is_killed(lifeline):
    program = "import subprocess, time; subprocess.Popen(['sleep', '300']); time.sleep(300)"
    child = Child([sys.executable, "-c", program], pass_fd=lifeline[0])
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        child.communicate(b"request", timeout=1.0)
    assert 0.9 < time.monotonic() - started < 10
    child.kill_group()
    assert child.communicate(b"", timeout=30) == b""  # the sleep in its group died too
    assert child.returncode == -signal.SIGKILL
    child.close()


def test_what_cannot_start_is_an_oserror_and_leaks_nothing(lifeline):
    before = sorted(os.listdir("/proc/self/fd") if os.path.isdir("/proc/self/fd") else [])
    with pytest.raises(OSError):
        Child(["/nonexistent/python", "-m", "x"], pass_fd=lifeline[0])
    after = sorted(os.listdir("/proc/self/fd") if os.path.isdir("/proc/self/fd") else [])
    assert after == before
