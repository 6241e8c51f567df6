"""The journal and the runner's at-most-once gate, including real SIGKILLs mid-command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jcstate.host import Host
from jcstate.modules.commands import Command
from jcstate.modules.commands.actions import Checkpoint
from jcstate.modules.commands.execution import CommandRunner
from jcstate.modules.commands.journal import DEFAULT_DIR, Journal
from jcstate.modules.commands.result import Outcome


class CountingActions:
    """Actions that only count calls; restart waits for a reboot like the real ones."""

    os = "linux"

    def __init__(self) -> None:
        self.calls: list[str] = []

    def unsupported(self, command: Command) -> str | None:
        return None

    def describe(self, command: Command) -> list[tuple[str, ...]]:
        return []

    def perform(self, host: Host, command: Command, checkpoint: Checkpoint) -> Outcome:
        self.calls.append(command.id)
        if command.action == "restart":
            checkpoint("reboot handed over")
            return Outcome(True, "reboot requested", exit_code=0, awaiting_reboot=True)
        return Outcome(True, "done", exit_code=0, stdout="output\n")


def _host(tmp_path: Path, btime: int | None = 1000) -> Host:
    if btime is not None:
        (tmp_path / "proc").mkdir(exist_ok=True)
        (tmp_path / "proc" / "stat").write_text(f"cpu 1 2 3\nbtime {btime}\n")
    return Host(str(tmp_path), os_name="linux")


def test_records_are_durable_files_readable_only_by_root(tmp_path: Path) -> None:
    host = _host(tmp_path)
    actions = CountingActions()
    result = CommandRunner(host, actions=actions).run({"id": "c1", "action": "lock"})
    assert result.status == "succeeded" and actions.calls == ["c1"]
    path = tmp_path / DEFAULT_DIR.lstrip("/") / "c1.json"
    record = json.loads(path.read_text())
    assert record["state"] == "finished" and record["result"]["stdout"] == "output\n"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"


def test_a_known_id_never_runs_again(tmp_path: Path) -> None:
    host = _host(tmp_path)
    actions = CountingActions()
    first = CommandRunner(host, actions=actions).run({"id": "c1", "action": "lock"})
    second = CommandRunner(host, actions=actions).run({"id": "c1", "action": "lock"})
    assert actions.calls == ["c1"]
    assert second == first


def test_results_wait_for_acknowledgement(tmp_path: Path) -> None:
    host = _host(tmp_path)
    runner = CommandRunner(host, actions=CountingActions())
    runner.run({"id": "a", "action": "lock"})
    runner.run({"id": "b", "action": "lock"})
    assert [r.id for r in runner.journal.pending_results()] == ["a", "b"]
    assert runner.journal.acknowledge("a")
    assert not runner.journal.acknowledge("a")  # a duplicate ack changes nothing
    assert [r.id for r in runner.journal.pending_results()] == ["b"]
    entry = runner.journal.get("a")
    assert entry is not None and entry.acknowledged and entry.result is not None
    assert entry.result.stdout == ""  # output dropped, id and status kept
    assert entry.result.status == "succeeded"
    # An acknowledged id still never runs again.
    actions = CountingActions()
    CommandRunner(host, actions=actions).run({"id": "a", "action": "lock"})
    assert actions.calls == []


def test_restart_is_done_only_when_the_boot_time_changes(tmp_path: Path) -> None:
    host = _host(tmp_path, btime=1000)
    actions = CountingActions()
    result = CommandRunner(host, actions=actions).run({"id": "r", "action": "restart"})
    assert result.status == "running"
    # Same boot: still waiting, not re-run, not reported.
    again = CommandRunner(host, actions=actions).run({"id": "r", "action": "restart"})
    assert again.status == "running" and actions.calls == ["r"]
    assert Journal(host).pending_results() == []
    # The device came back with a new boot time.
    _host(tmp_path, btime=5000)
    CommandRunner(host, actions=actions).recover()
    [done] = Journal(host).pending_results()
    assert (done.id, done.status) == ("r", "succeeded")
    assert "boot time changed" in done.message
    assert actions.calls == ["r"]


def test_expired_and_unconfirmed_commands_are_journaled_not_run(tmp_path: Path) -> None:
    host = _host(tmp_path)
    actions = CountingActions()
    runner = CommandRunner(host, actions=actions)
    old = runner.run({"id": "o", "action": "lock", "notAfter": "2000-01-01T00:00:00Z"})
    erase = runner.run({"id": "e", "action": "erase"})
    assert (old.status, erase.status) == ("failed", "failed")
    assert "notAfter" in old.message and "confirmation" in erase.message
    assert actions.calls == []


def test_bad_ids_never_reach_the_file_system(tmp_path: Path) -> None:
    from jcstate.errors import HostError

    with pytest.raises(HostError):
        Journal(_host(tmp_path)).get("../../etc/passwd")


# -- crashes: a real process killed with SIGKILL between started and finished ----------------
_CHILD = """
import sys, time
from jcstate.host import Host
from jcstate.modules.commands.execution import CommandRunner
from jcstate.modules.commands.result import Outcome

class Slow:
    os = "linux"
    def unsupported(self, c): return None
    def describe(self, c): return []
    def perform(self, host, c, checkpoint):
        open(sys.argv[2], "w").close()   # tell the test we are inside the action
        time.sleep(60)
        return Outcome(True, "finished in the child")

CommandRunner(Host(sys.argv[1], os_name="linux"), actions=Slow()).run(
    {"id": sys.argv[3], "action": sys.argv[4], "confirm": "erase"})
"""


def _kill_mid_command(tmp_path: Path, command_id: str, action: str) -> None:
    marker = tmp_path / f"inside-{command_id}"
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(tmp_path), str(marker), command_id, action]
    )
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert proc.poll() is None, "the child died before reaching the action"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def test_sigkill_mid_command_is_interrupted_and_never_rerun(tmp_path: Path) -> None:
    host = _host(tmp_path)
    _kill_mid_command(tmp_path, "k1", "lock")
    entry = Journal(host).get("k1")
    assert entry is not None and entry.state == "started"
    actions = CountingActions()
    runner = CommandRunner(host, actions=actions)
    assert runner.recover() == []
    result = runner.run({"id": "k1", "action": "lock"})
    assert result.status == "interrupted"
    assert actions.calls == []
    assert [r.id for r in runner.journal.pending_results()] == ["k1"]


def test_sigkill_mid_erase_resumes_until_done(tmp_path: Path) -> None:
    host = _host(tmp_path)
    _kill_mid_command(tmp_path, "wipe", "erase")
    actions = CountingActions()
    [resumed] = CommandRunner(host, actions=actions).recover()
    assert actions.calls == ["wipe"]
    assert resumed.status == "succeeded"
    entry = Journal(host).get("wipe")
    assert entry is not None and entry.state == "finished" and entry.attempts == 2
    # Done now: another start-up resumes nothing.
    assert CommandRunner(host, actions=actions).recover() == []
    assert actions.calls == ["wipe"]


def test_a_start_the_disk_refuses_is_not_run_and_fails_until_written(tmp_path, monkeypatch):
    """A full disk: no started record, so nothing runs; the result is failed with the reason,
    held in memory (pending, the id known), and written once the disk takes it."""
    import errno

    host = _host(tmp_path)
    actions = CountingActions()
    runner = CommandRunner(host, actions=actions)
    real = host.write_file

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(host, "write_file", full)
    result = runner.run({"id": "c1", "action": "lock"})
    assert actions.calls == []
    assert result.status == "failed" and "not run" in result.message
    assert "No space left on device" in result.message
    assert [r.id for r in runner.journal.pending_results()] == ["c1"]
    assert runner.run({"id": "c1", "action": "lock"}) == result and actions.calls == []
    assert runner.journal.write_held() == ["c1"]  # still full
    monkeypatch.setattr(host, "write_file", real)
    assert runner.journal.write_held() == []
    record = json.loads((tmp_path / DEFAULT_DIR.lstrip("/") / "c1.json").read_text())
    assert record["state"] == "finished" and record["result"]["status"] == "failed"
    CommandRunner(host, actions=actions).run({"id": "c1", "action": "lock"})
    assert actions.calls == []  # a new process never runs it either
