"""End to end: an admin's queued commands reach the real agent inside a test host.

A server process on 127.0.0.1, the project's agent running inside a test host (as on a device),
the admin's own ``jcstate command`` CLI. ``run -- id -u`` comes back with stdout ``0``; a
``restart`` warns, calls ``systemctl reboot`` — a recording stand-in inside the host, nothing
restarts — shows the device as restarting, and is reported done only once the agent is back
with a new boot time. The host's ``/proc/stat`` is a file bind-mounted over the real one inside
the host's mount namespace, so the test can "reboot" it by moving ``btime`` on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import testhost as th
from harness import jcstate_argv
from test_agent_e2e import AgentInHost, wait_for
from test_commands import install_standins, recorded

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))


def fake_boot_time(host: th.TestHost, btime: int) -> None:
    """Inside the host, /proc/stat says the machine booted at ``btime``."""
    fake = host.path("/run/fake-proc-stat")
    first = not fake.exists()
    with open(fake, "w") as f:  # in place: the bind mount holds this inode
        f.write(f"cpu  1 2 3 4\nbtime {btime}\n")
    if first:
        subprocess.run(
            [
                "nsenter",
                "--target",
                str(host.pid),
                "--mount",
                "--",
                "mount",
                "--bind",
                str(fake),
                str(host.path("/proc/stat")),
            ],
            check=True,
            capture_output=True,
        )


def cli(url: str, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("JCSTATE_")},
        "JCSTATE_SERVER": url,
        "JCSTATE_TOKEN": token,
    }
    return subprocess.run(
        [*jcstate_argv(), *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def show(url: str, token: str, command_id: str) -> dict[str, Any]:
    out = cli(url, token, "command", "show", command_id, "--output", "json")
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


def test_queued_run_and_restart_reach_the_agent_in_a_test_host(testhost, server_proc, tmp_path):
    data = tmp_path / "data"
    token = (data / "admin-token").read_text().strip()
    key = (data / "connect-key").read_text().strip()
    url = server_proc.url
    install_standins(testhost)
    fake_boot_time(testhost, 1_700_000_000)
    agent = AgentInHost(testhost, url, key)
    try:
        agent.start()

        def enrolled() -> bool:
            out = cli(url, token, "devices", "--output", "json")
            return out.returncode == 0 and len(json.loads(out.stdout)) == 1

        wait_for(enrolled, 30, step=0.2)
        device = testhost.hostname

        made = cli(url, token, "command", "run", device, "--", "id", "-u")
        assert made.returncode == 0, made.stderr
        run_id = made.stdout.strip()
        wait_for(lambda: show(url, token, run_id)["state"] == "succeeded", 15, step=0.2)
        result = show(url, token, run_id)
        assert (result["stdout"], result["exitCode"]) == ("0\n", 0)
        text = cli(url, token, "command", "show", run_id).stdout
        assert "state:     succeeded" in text and "stdout (last 1 lines):\n  0" in text

        made = cli(
            url, token, "command", "restart", "--delay", "0", "--message", "Patch day", device
        )
        assert made.returncode == 0, made.stderr
        restart_id = made.stdout.strip()
        wait_for(lambda: show(url, token, restart_id)["state"] == "running", 15, step=0.2)
        assert recorded(testhost).count("systemctl [reboot]") == 1
        assert "Patch day" in testhost.path("/var/log/wall.stdin").read_text()
        shown = cli(url, token, "device", "show", device)
        assert "activity:     restarting" in shown.stdout, shown.stdout

        # The agent restarting without a reboot does not settle it, nor run it again.
        agent.stop()
        agent.start()
        probe = cli(url, token, "command", "run", device, "--", "true").stdout.strip()
        wait_for(lambda: show(url, token, probe)["state"] == "succeeded", 15, step=0.2)
        assert show(url, token, restart_id)["state"] == "running"  # the agent is back: still
        assert recorded(testhost).count("systemctl [reboot]") == 1

        # The device "reboots": a new boot time, the agent comes back.
        agent.stop()
        fake_boot_time(testhost, 1_700_000_600)
        agent.start()
        wait_for(lambda: show(url, token, restart_id)["state"] == "succeeded", 30, step=0.2)
        assert "boot time changed" in show(url, token, restart_id)["message"]
        assert recorded(testhost).count("systemctl [reboot]") == 1
        wait_for(
            lambda: "activity:     None" in cli(url, token, "device", "show", device).stdout,
            30,
            step=0.3,
        )
        journal = testhost.path(f"/var/lib/jcstate/journal/{restart_id}.json")
        assert json.loads(journal.read_text())["acknowledged"] is True
    finally:
        agent.stop()
