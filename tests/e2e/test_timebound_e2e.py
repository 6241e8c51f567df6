"""Time-bound admin end to end: a real agent in a test host takes the right away itself.

A policy gives alice ``admin: {until: now + 20 s}`` and ``jcstate elevate`` gives bob 30 s;
both land in the host's ``sudo`` group. Then the server is killed and the host's wall clock, as
the agent reads it, is stepped back an hour (``JCSTATE_TEST_CLOCK_FILE``: the machine's own
clock cannot be changed here, so the agent's wall clock is offset through that test hook; the
agent's floor comes from the real boot-time clock). Each right still leaves the ``sudo`` line
of the host's ``/etc/group`` at its instant, offline, and the removals reach the server in the
report the agent sends once the server is back. ``ops`` (an admin who can log in, by hand)
keeps the removals clear of lock-out safety and is never touched.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import testhost as th
from test_agent_e2e import AgentInHost, wait_for

from jcstate.agent.expiry import TEST_CLOCK_ENV
from jcstate.server.api_client import AdminClient

OFFSET = "/var/lib/jcstate-test/clock-offset"  # inside the host
POLICY = """\
apiVersion: jcstate/v1
kind: Policy
metadata: {{name: jit}}
spec:
  users:
    - {{name: alice, admin: {{until: "{until}"}}}}
    - {{name: bob}}
"""


def sudo_members(host: th.TestHost) -> set[str]:
    for line in host.path("/etc/group").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == "sudo":
            return {m for m in fields[3].split(",") if m}
    return set()


def _rfc3339(epoch: float) -> str:
    moment = dt.datetime.fromtimestamp(int(epoch), dt.UTC)
    return moment.isoformat().replace("+00:00", "Z")


def test_rights_end_on_the_device_at_their_instant_offline_and_after_a_step_back(
    testhost, server_proc, tmp_path
):
    for user in ("ops", "alice", "bob"):
        testhost.run(["useradd", "--create-home", "--shell", "/bin/sh", user])
        testhost.set_password(user, f"{user}-pw-41c7")
    testhost.run(["gpasswd", "-a", "ops", "sudo"])
    offset = testhost.path(OFFSET)
    offset.parent.mkdir(parents=True, exist_ok=True)
    offset.write_text("0\n")
    data = tmp_path / "data"
    admin = AdminClient(server_proc.url, (data / "admin-token").read_text().strip())
    agent = AgentInHost(  # offline, only the expiry timer wakes it at the instant
        testhost,
        server_proc.url,
        (data / "connect-key").read_text().strip(),
        extra=("--max-backoff", "30"),
        env={TEST_CLOCK_ENV: OFFSET},  # its wall clock offset by the seconds in OFFSET
    )
    try:
        alice_until = int(time.time()) + 20
        admin.call(
            "POST",
            "/api/v1/revisions",
            {"files": {"jit.yaml": POLICY.format(until=_rfc3339(alice_until))}},
        )
        agent.start()
        wait_for(lambda: "alice" in sudo_members(testhost), 30, step=0.1)
        device = admin.call("GET", "/api/v1/devices")[0]["id"]

        # just in time: bob for 30 s, through the queue, with a reason the audit keeps
        elevated = admin.call(
            "POST",
            f"/api/v1/devices/{device}/commands/elevate",
            {"user": "bob", "seconds": 30, "reason": "INC-4711 printer driver"},
        )
        bob_until = time.time() + 30
        wait_for(lambda: "bob" in sudo_members(testhost), 15, step=0.1)
        shown = wait_for_final(admin, elevated["id"])
        assert shown["state"] == "succeeded", shown
        assert shown["message"].startswith("bob is admin until ")
        audit = admin.call("GET", "/api/v1/audit", action="command.elevate")
        assert any(
            (e.get("detail") or {}).get("reason") == "INC-4711 printer driver" for e in audit
        ), audit
        # an account no policy manages is refused by the device, with the reason
        refused = admin.call(
            "POST",
            f"/api/v1/devices/{device}/commands/elevate",
            {"user": "ops", "seconds": 60, "reason": "test"},
        )
        shown = wait_for_final(admin, refused["id"])
        assert (
            shown["state"] == "failed"
            and "no policy on this device lists ops" in (shown["message"])
        )

        # offline, and the clock stepped back an hour
        server_proc.kill()
        offset.write_text("-3600\n")
        assert time.time() < alice_until - 2, "too slow to test before the instant; void"
        assert {"alice", "bob"} <= sudo_members(testhost)
        wait_for(lambda: "alice" not in sudo_members(testhost), 30, step=0.05)
        late = time.time() - alice_until
        assert -0.5 < late < 5, f"alice's right ended {late:+.1f} s from its instant"
        assert "bob" in sudo_members(testhost)  # his ends later
        wait_for(lambda: "bob" not in sudo_members(testhost), 40, step=0.05)
        late = time.time() - bob_until
        assert -1.5 < late < 5, f"bob's right ended {late:+.1f} s from its instant"
        assert "ops" in sudo_members(testhost)  # granted by hand: never touched

        # back online: the reports of the removals reach the server
        server_proc.start()
        outbox = testhost.path("/var/lib/jcstate/outbox")
        wait_for(lambda: not any(outbox.glob("*.json")), 60, step=0.2)
        reports = [
            admin.call("GET", f"/api/v1/devices/{device}")["lastReport"]["report"],
        ]
        removed = {
            r["name"]
            for report in reports
            for r in report.get("results", [])
            if r.get("kind") == "users"
            and r.get("status") == "ok"
            and any(f["field"] == "admin" and f["after"] is False for f in r.get("fields", []))
        }
        assert removed & {"alice", "bob"}, reports
    finally:
        agent.stop()
        admin.close()


def wait_for_final(admin: AdminClient, command_id: str) -> dict[str, Any]:
    final = ("succeeded", "failed", "interrupted", "cancelled")
    shown: dict[str, Any] = {}

    def done() -> bool:
        shown.update(admin.call("GET", f"/api/v1/commands/{command_id}"))
        return shown["state"] in final

    wait_for(done, 30, step=0.2)
    return shown
