"""End to end: a server on 127.0.0.1, the real agent inside a test host.

Push a policy → the users appear (testinfra); change it → the agent converges in under 2 s;
kill -9 the agent mid-apply and the server mid-report → after restarts nothing is lost and
nothing is applied twice.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import testhost as th

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))


from jcstate.server.api_client import AdminClient  # noqa: E402

USERS = """\
apiVersion: jcstate/v1
kind: Policy
metadata: {name: team}
spec:
  groups:
    - {name: developers, gid: 2001}
  users:
"""


def policy(users: list[str], shell: str = "/bin/bash") -> dict[str, str]:
    lines = [
        f"    - {{name: {u}, uid: {1500 + i}, shell: {shell}, groups: [developers]}}"
        for i, u in enumerate(users)
    ]
    return {"team.yaml": USERS + "\n".join(lines) + "\n"}


def passwd_users(host: th.TestHost) -> set[str]:
    return {line.split(":")[0] for line in host.path("/etc/passwd").read_text().splitlines()}


def wait_for(predicate: Any, timeout: float, step: float = 0.02) -> float:
    """Seconds until ``predicate()`` held; fails after ``timeout``."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(step)
    return time.monotonic() - start


class AgentInHost:
    """The project's agent running inside the test host, as on a device."""

    def __init__(
        self,
        host: th.TestHost,
        url: str,
        key: str,
        extra: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ):
        """``extra``: more ``jcstate agent`` flags (later ones win over the defaults here);
        ``env``: variables set for the agent (test hooks)."""
        self.host, self.url, self.key, self.extra, self.env = host, url, key, extra, env or {}
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.host.install_jcstate()
        argv = [
            *(["env", *(f"{k}={v}" for k, v in self.env.items())] if self.env else []),
            str(Path(sys.prefix, "bin", "jcstate")),
            "agent",
            "--server",
            self.url,
            "--connect-key",
            self.key,
            "--wait",
            "30",
            "--max-backoff",
            "1",
            *self.extra,
        ]
        self.proc = subprocess.Popen(
            self.host.command(argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True
        )

    def kill9(self) -> None:
        assert self.proc is not None
        th._only_child(self.proc.pid)  # nsenter's child is the agent
        import os

        os.kill(th._only_child(self.proc.pid), signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            import os

            try:
                os.kill(th._only_child(self.proc.pid), signal.SIGTERM)
            except Exception:
                self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def test_agent_in_a_test_host_converges_and_survives_kills(
    testhost, testinfra_host, server_proc, tmp_path
):
    data = tmp_path / "data"
    token = (data / "admin-token").read_text().strip()
    key = (data / "connect-key").read_text().strip()
    admin = AdminClient(server_proc.url, token)
    agent = AgentInHost(testhost, server_proc.url, key)
    try:
        admin.call("POST", "/api/v1/revisions", {"files": policy(["alice", "bob"])})
        agent.start()
        wait_for(lambda: {"alice", "bob"} <= passwd_users(testhost), 30)
        assert testinfra_host.user("alice").exists
        assert testinfra_host.user("alice").shell == "/bin/bash"
        assert "developers" in testinfra_host.user("bob").groups
        assert testhost.path("/var/log/jcstate.log").exists()
        assert testhost.path("/var/lib/jcstate/key.pem").stat().st_mode & 0o077 == 0
        device_id = admin.call("GET", "/api/v1/devices")[0]["id"]
        wait_for(lambda: admin.call("GET", f"/api/v1/devices/{device_id}")["lastReportOk"], 10)

        # a change converges in under 2 s
        time.sleep(0.5)  # the agent is back in its long poll
        pushed = time.monotonic()
        admin.call("POST", "/api/v1/revisions", {"files": policy(["alice", "bob", "carol"])})
        wait_for(lambda: "carol" in passwd_users(testhost), 5, step=0.01)
        took = time.monotonic() - pushed
        assert took < 2.0, f"converged in {took:.2f} s"

        # kill -9 the agent mid-apply (many users: the apply takes a while)
        many = [f"u{i:02d}" for i in range(60)]
        time.sleep(0.5)
        admin.call("POST", "/api/v1/revisions", {"files": policy(["alice", "bob", "carol", *many])})
        wait_for(lambda: "u00" in passwd_users(testhost), 10, step=0.005)
        agent.kill9()
        # The converge worker stops when it sees its agent gone, but a `useradd` it already
        # started still finishes: read the host once nothing of the old agent runs there.
        wait_for(lambda: not testhost.processes(), 10)
        before = passwd_users(testhost)
        assert not set(many) <= before, "the apply finished before the kill; test is void"

        # restart the agent; kill -9 the server while it applies, before it can report
        agent.start()
        wait_for(lambda: len(passwd_users(testhost) - before) > 0, 30, step=0.002)
        server_proc.kill()
        wait_for(lambda: set(many) <= passwd_users(testhost), 30)
        outbox = testhost.path("/var/lib/jcstate/outbox")
        wait_for(lambda: any(outbox.glob("*.json")), 10)
        server_proc.start()
        wait_for(lambda: not any(outbox.glob("*.json")), 15)

        shown = admin.call("GET", f"/api/v1/devices/{device_id}")
        report = shown["lastReport"]["report"]
        created = [
            r
            for r in report.get("results", [])
            if r.get("kind") in ("user", "users")
            and r.get("action") == "create"
            and r.get("status") == "ok"
        ]
        created_names = {r.get("name") for r in created}
        # after the restart only what was missing was created: nothing applied twice
        assert created_names and not (created_names & before)
        assert set(many) - before <= created_names
        assert shown["lastReportOk"] is True
        # and the system converged: one more look finds nothing to do
        assert sum(1 for u in passwd_users(testhost) if u in set(many)) == len(many)
    finally:
        agent.stop()
        admin.close()
