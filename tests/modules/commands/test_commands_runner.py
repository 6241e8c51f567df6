"""Action ``run``: process group, timeout → whole group killed (124), capped output.

These start real, harmless processes (sh, sleep) on the machine running the tests through
:meth:`Host.spawn`; nothing is written outside pytest's temporary directory.
"""

from __future__ import annotations

import time
from pathlib import Path

from jcstate.host import Host
from jcstate.modules.commands.runner import TIMEOUT_EXIT, run_process


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_output_exit_code_and_duration() -> None:
    out = run_process(Host(), ["sh", "-c", "echo out; echo err >&2; exit 3"], timeout=10)
    assert (out.exit_code, out.stdout, out.stderr) == (3, "out\n", "err\n")
    assert not out.ok and not out.truncated and not out.timed_out
    assert 0 < out.duration < 5


def test_timeout_kills_the_whole_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    # The shell starts a child that sleeps, records both pids, then waits forever.
    script = f"sleep 300 & echo $$ $! > {pids}; wait"
    started = time.monotonic()
    out = run_process(Host(), ["sh", "-c", script], timeout=1, kill_grace=1)
    assert out.timed_out and out.exit_code == TIMEOUT_EXIT
    assert time.monotonic() - started < 10
    shell_pid, child_pid = (int(p) for p in pids.read_text().split())
    deadline = time.monotonic() + 5
    while (_alive(shell_pid) or _alive(child_pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(shell_pid) and not _alive(child_pid)


def test_group_ignoring_sigterm_is_killed() -> None:
    out = run_process(Host(), ["sh", "-c", "trap '' TERM; sleep 300"], timeout=0.5, kill_grace=0.5)
    assert out.timed_out and out.exit_code == TIMEOUT_EXIT
    assert out.duration < 10


def test_leftover_children_do_not_outlive_the_command(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    out = run_process(
        Host(), ["sh", "-c", f"sleep 300 >/dev/null 2>&1 & echo $! > {pid_file}"], timeout=10
    )
    assert out.exit_code == 0
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)


def test_output_is_tail_capped() -> None:
    # 300,000 numbered lines, far more than the cap: the last ones are kept.
    out = run_process(Host(), ["seq", "1", "300000"], timeout=30, cap=4096)
    assert out.truncated
    assert len(out.stdout.encode()) == 4096
    assert out.stdout.endswith("299999\n300000\n")
    small = run_process(Host(), ["seq", "1", "3"], timeout=30, cap=4096)
    assert not small.truncated and small.stdout == "1\n2\n3\n"


def test_signal_death_is_reported_like_a_shell() -> None:
    out = run_process(Host(), ["sh", "-c", "kill -9 $$"], timeout=10)
    assert out.exit_code == 128 + 9


def test_missing_program_is_exit_127() -> None:
    out = run_process(Host(), ["/nonexistent/jcstate-no-such-program"], timeout=5)
    assert out.exit_code == 127 and not out.ok
    assert "command not found" in out.stderr
