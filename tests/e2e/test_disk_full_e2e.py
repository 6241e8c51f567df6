"""The device under a full disk, in a real test host: the agent's state directory is a small
tmpfs (mounted inside the host's mount namespace) that the test fills to the last page.

The real agent runs inside the host against a live server, with its log file in the state
directory too. While the disk is full:

* a queued ``run`` command is not run (its marker file outside the state directory never
  appears) because its ``started`` record cannot be written to the journal; it is reported
  ``failed`` with that reason, and it does not run later when space returns;
* a policy adding a user is not applied (the user is not in ``/etc/passwd``) because its
  ownership-ledger claim cannot be written, and the round's failure reaches the server even
  though the outbox cannot be written either (the report is held in memory);
* the agent keeps running (the same process throughout) and keeps polling.

Once the filler is deleted, the next round (``--reconverge``) creates the user with its ledger
entry, the command's failed record is written to the journal, and the server sees the device
report success again.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import testhost as th
from test_agent_e2e import AgentInHost, passwd_users, policy, wait_for
from test_command_queue_e2e import cli

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))


from jcstate.server.api_client import AdminClient  # noqa: E402

STATE = "/var/lib/jcstate"  # the agent's state directory (and command journal) in the host
MARKER = "/tmp/disk-full-marker"  # outside the state directory: the command would make it


def mount_small_tmpfs(host: th.TestHost, inside: str, size: str = "1m") -> None:
    """A tmpfs of ``size`` at ``inside``, in the host's mount namespace only."""
    target = host.path(inside)
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["nsenter", "--target", str(host.pid), "--mount", "--"]
        + ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(target)],
        check=True,
        capture_output=True,
    )


def fill(host: th.TestHost) -> None:
    """Fill the state directory's tmpfs to its last page; prove a new file cannot be written.

    The agent's log file is filled to the end of its last page too (tmpfs hands out pages, so
    a file can grow into the rest of its last one): from now on every line it logs fails."""
    host.run(["dd", "if=/dev/zero", f"of={STATE}/filler", "bs=4096"], check=False)
    host.run(["sh", "-c", f"yes filler line | head -c 8192 >> {STATE}/agent.log"], check=False)
    tail = host.run(
        [
            "dd",
            "if=/dev/zero",
            f"of={STATE}/agent.log",
            "bs=1",
            "count=1",
            "oflag=append",
            "conv=notrunc",
        ],
        check=False,
    )
    assert tail.returncode != 0 and "No space left" in tail.stderr, tail.stderr
    probe = host.run(["dd", "if=/dev/zero", f"of={STATE}/probe", "bs=512", "count=1"], check=False)
    host.run(["rm", "-f", f"{STATE}/probe"])
    assert probe.returncode != 0 and "No space left" in probe.stderr, probe.stderr


def free(host: th.TestHost) -> None:
    host.run(["rm", f"{STATE}/filler"])


def read_inside(host: th.TestHost, path: str) -> str | None:
    """A file of the host as the agent sees it (the tmpfs is invisible from outside)."""
    out = host.run(["cat", path], check=False)
    return out.stdout if out.returncode == 0 else None


def test_a_full_state_disk_runs_nothing_unrecorded_and_the_agent_keeps_going(
    testhost: th.TestHost, server_proc: Any, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    token = (data / "admin-token").read_text().strip()
    key = (data / "connect-key").read_text().strip()
    url = server_proc.url
    admin = AdminClient(url, token)
    mount_small_tmpfs(testhost, STATE)
    agent = AgentInHost(
        testhost,
        url,
        key,
        extra=("--wait", "2", "--reconverge", "3", "--log-file", f"{STATE}/agent.log"),
    )
    try:
        admin.call("POST", "/api/v1/revisions", {"files": policy(["alice"])})
        agent.start()
        wait_for(lambda: "alice" in passwd_users(testhost), 30, step=0.2)
        device_id = admin.call("GET", "/api/v1/devices")[0]["id"]
        wait_for(lambda: admin.call("GET", f"/api/v1/devices/{device_id}")["lastReportOk"], 15)
        assert proc_alive(agent)
        agent_pid = th._only_child(agent.proc.pid)  # nsenter's child is the agent

        fill(testhost)

        # (1) a policy change whose ledger claim cannot be written is not applied; the round's
        # failure reaches the server although the outbox cannot be written either
        before = admin.call("GET", f"/api/v1/devices/{device_id}")["lastReportAt"]
        admin.call("POST", "/api/v1/revisions", {"files": policy(["alice", "dave"])})

        def failed_round() -> dict[str, Any] | None:
            assert proc_alive(agent), "the agent died"
            device = admin.call("GET", f"/api/v1/devices/{device_id}")
            if device["lastReportAt"] == before or device["lastReportOk"]:
                return None
            return device

        wait_for(failed_round, 30, step=0.3)
        report = admin.call("GET", f"/api/v1/devices/{device_id}")["lastReport"]["report"]
        dave = [r for r in report.get("results", []) if r.get("name") == "dave"]
        assert dave and dave[0]["status"] == "failed", report
        assert "ownership ledger" in dave[0]["message"], dave
        assert "No space left on device" in dave[0]["message"], dave
        assert "dave" not in passwd_users(testhost)
        ledger = json.loads(read_inside(testhost, f"{STATE}/ledger.json") or "{}")
        assert "dave" not in ledger.get("users", {})

        # (2) a queued command whose started record cannot be written is not run (and the agent's
        # log, which has failed lines buffered by now, is handed over to logging without a crash)
        made = cli(url, token, "command", "run", testhost.hostname, "--", "touch", MARKER)
        assert made.returncode == 0, made.stderr
        run_id = made.stdout.strip()
        wait_for(lambda: settled(agent, url, token, run_id), 30, step=0.3)
        shown = show(url, token, run_id)
        assert shown["state"] == "failed", shown
        assert "not run" in shown["message"] and "journal" in shown["message"], shown
        assert "No space left on device" in shown["message"], shown
        assert not testhost.path(MARKER).exists()

        # (3) the same agent process is still there, and still polling
        seen = admin.call("GET", f"/api/v1/devices/{device_id}")["lastSeen"]
        wait_for(lambda: admin.call("GET", f"/api/v1/devices/{device_id}")["lastSeen"] != seen, 15)
        assert proc_alive(agent) and th._only_child(agent.proc.pid) == agent_pid

        # space returns: the next round applies the change with its ledger entry
        free(testhost)
        wait_for(lambda: "dave" in passwd_users(testhost), 30, step=0.2)
        ledger = json.loads(read_inside(testhost, f"{STATE}/ledger.json") or "{}")
        assert ledger["users"]["dave"]["created"] is True
        wait_for(lambda: admin.call("GET", f"/api/v1/devices/{device_id}")["lastReportOk"], 15)
        # the command stays failed, never ran, and its record is on disk now
        record = wait_for_text(testhost, f"{STATE}/journal/{run_id}.json")
        entry = json.loads(record)
        assert entry["state"] == "finished" and entry["result"]["status"] == "failed", entry
        assert show(url, token, run_id)["state"] == "failed"
        assert not testhost.path(MARKER).exists()
        assert proc_alive(agent) and th._only_child(agent.proc.pid) == agent_pid
    finally:
        agent.stop()
        admin.close()


def show(url: str, token: str, command_id: str) -> dict[str, Any]:
    """``jcstate command show --output json`` (it exits 1 for a failed command)."""
    out = cli(url, token, "command", "show", command_id, "--output", "json")
    assert out.stdout, out.stderr
    return dict(json.loads(out.stdout))


def proc_alive(agent: AgentInHost) -> bool:
    return agent.proc is not None and agent.proc.poll() is None


def settled(agent: AgentInHost, url: str, token: str, command_id: str) -> bool:
    assert proc_alive(agent), "the agent died"
    return show(url, token, command_id)["state"] in ("succeeded", "failed")


def wait_for_text(host: th.TestHost, path: str, timeout: float = 15) -> str:
    found: list[str] = []

    def there() -> bool:
        text = read_inside(host, path)
        if text:
            found.append(text)
        return bool(text)

    wait_for(there, timeout, step=0.3)
    return found[-1]
