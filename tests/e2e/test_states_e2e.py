"""End to end: the states an admin sees (docs/state-model.md) with the real agent inside a test
host, a real `jcstate server` process (SQLite and PostgreSQL) and the admin's own CLI.

- a command issued while the agent is dead stays ``queued`` ("sent, awaiting device") even
  when the server wrote it to the dead agent's held poll; the device turns offline within
  2 × the poll hold of its last request; the restarted agent runs the command once and it is
  ``delivered`` then ``succeeded``;
- an MFA user with no enrolled TOTP secret: `devices` / `device show` say why the device failed
  ("no TOTP secret for dave"); enrolling the secret converges the device and drift is false;
- a user deleted by hand is found by the agent's plan between converges (drift, pending), and
  `jcstate device converge` puts it back at once.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import testhost as th
from test_agent_e2e import AgentInHost, passwd_users, wait_for
from test_command_queue_e2e import cli

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))

import live  # noqa: E402

from jcstate.server.api_client import AdminClient  # noqa: E402

FINAL = ("succeeded", "failed", "interrupted", "cancelled")
HOLD = 2.0  # the server's --max-wait: devices are offline 2 × HOLD after their last request

POLICY = """\
apiVersion: jcstate/v1
kind: Policy
metadata: {name: mfa}
spec:
  users:
    - {name: dave, state: present}
    - {name: carol, uid: 1601, shell: /bin/bash}
  sshMfa:
    enabled: true
    users: [dave]
"""


class Agent(AgentInHost):
    """The agent with a short plan interval (seconds, as tests do; default 300)."""

    def start(self) -> None:
        self.host.install_jcstate()
        argv = [
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
            "--replan",
            "1",
        ]
        import subprocess

        self.proc = subprocess.Popen(
            self.host.command(argv),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
        )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def server_proc(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """`jcstate server` on SQLite (in its data directory) or on a fresh PostgreSQL database."""
    args = ["--data", str(tmp_path / "data"), "--max-wait", str(HOLD)]
    with contextlib.ExitStack() as stack:
        if request.param == "postgres":
            reason = live.postgres_available()
            if reason:
                pytest.skip(reason)
            args += ["--database", stack.enter_context(live.postgres_database())]
        srv = live.ServerProcess(args, live.free_port()).start()
        stack.callback(srv.kill)
        yield srv


def _json(url: str, token: str, *args: str) -> Any:
    out = cli(url, token, *args, "--output", "json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_states_with_a_real_agent(testhost: th.TestHost, server_proc, tmp_path):
    data = tmp_path / "data"
    token = (data / "admin-token").read_text().strip()
    key = (data / "connect-key").read_text().strip()
    url = server_proc.url
    testhost.run(["useradd", "--create-home", "--shell", "/bin/sh", "dave"])
    testhost.set_password("dave", "dave-Pa55word")
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "mfa.yaml").write_text(POLICY)
    agent = Agent(testhost, url, key)
    device = testhost.hostname

    def shown() -> dict[str, Any]:
        return dict(_json(url, token, "device", "show", device))

    try:
        agent.start()
        wait_for(lambda: len(_json(url, token, "devices")) == 1, 30, step=0.2)

        # -- why a device failed, known before the push and shown after it ------------------
        check = cli(url, token, "validate", str(repo), "--server")
        assert check.returncode == 1 and "no TOTP secret for dave" in check.stdout, check
        assert cli(url, token, "push", str(repo)).returncode == 0
        wait_for(lambda: shown()["lastReportAt"] is not None, 60, step=0.3)
        view = shown()
        assert view["drift"] is True and view["lastReportOk"] is False
        assert any(
            f["status"] == "refused" and f["message"].startswith("no TOTP secret for dave")
            for f in view["failures"]
        ), view["failures"]
        listing = cli(url, token, "devices").stdout
        assert "no TOTP secret for dave" in listing, listing
        assert "carol" in passwd_users(testhost)  # the rest applied

        enrolled = cli(url, token, "totp", "enroll", "dave")
        assert enrolled.returncode == 0, enrolled.stderr
        wait_for(lambda: shown()["drift"] is False, 60, step=0.3)
        view = shown()
        assert view["failures"] == [] and view["lastReportOk"] is True
        assert testhost.path("/etc/ssh/sshd_config.d").exists()

        # -- drift between converges, and "converge now" ---------------------------------
        testhost.run(["userdel", "carol"])
        wait_for(lambda: shown()["drift"] is True, 30, step=0.3)
        pending = [c["change"] for c in shown()["lastPlan"]["changes"]]
        assert pending == ["+ users carol"], pending
        assert "carol" not in passwd_users(testhost)  # reported, not applied
        made = cli(url, token, "device", "converge", device)
        assert made.returncode == 0, made.stderr
        converge_id = made.stdout.strip()
        wait_for(
            lambda: _json(url, token, "command", "show", converge_id)["state"] in FINAL,
            60,
            step=0.3,
        )
        command = _json(url, token, "command", "show", converge_id)
        assert command["state"] == "succeeded", command
        assert "converged" in _json(url, token, "command", "show", converge_id)["message"]
        assert "carol" in passwd_users(testhost)
        wait_for(lambda: shown()["drift"] is False, 10, step=0.3)

        # -- a vanished agent: the command stays queued, the device goes offline --------------
        # kill -9 the agent just after it began a long poll (its last-seen time moved), then
        # issue a command at once: the server answers the dead agent's held poll with it
        admin = AdminClient(url, token)
        before = admin.call("GET", f"/api/v1/devices/{device}")["lastSeen"]
        wait_for(lambda: admin.call("GET", f"/api/v1/devices/{device}")["lastSeen"] != before, 10)
        agent.kill9()
        killed = time.monotonic()
        made = admin.call(
            "POST",
            f"/api/v1/devices/{device}/commands/run",
            {"run": {"argv": ["touch", "/root/ran"]}},
        )
        run_id = made["id"]
        time.sleep(1.0)
        command = _json(url, token, "command", "show", run_id)
        # the server answered the dead agent's held poll with it (sent), and nothing more
        assert (command["state"], command["deliveredAt"]) == ("queued", None), command
        assert command["sentAt"] is not None, command
        text = cli(url, token, "command", "show", run_id).stdout
        assert "queued (sent, awaiting device)" in text, text
        wait_for(lambda: shown()["online"] is False, 2 * HOLD + 3, step=0.2)
        assert time.monotonic() - killed <= 2 * HOLD + 3
        assert "LAST SEEN" in cli(url, token, "devices").stdout
        assert not testhost.path("/root/ran").exists()
        assert _json(url, token, "command", "show", run_id)["state"] == "queued"

        agent.start()
        wait_for(
            lambda: _json(url, token, "command", "show", run_id)["state"] == "succeeded",
            30,
            step=0.2,
        )
        command = _json(url, token, "command", "show", run_id)
        assert command["deliveredAt"] is not None and command["sentAt"] is not None
        assert testhost.path("/root/ran").exists()
        wait_for(lambda: shown()["online"] is True, 10, step=0.2)
    except BaseException:
        log = testhost.path("/var/log/jcstate.log")
        print(log.read_text()[-6000:] if log.exists() else "(no agent log)")
        raise
    finally:
        agent.stop()
