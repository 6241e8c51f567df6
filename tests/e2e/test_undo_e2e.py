"""What leaves a policy leaves the machine: undo end to end, on real tools in test hosts.

* A real agent in a test host, relabelled out of and back into a policy with ``sshMfa``: real
  SSH logins need the code while it applies and the password alone once it does not, and a
  user the policy created is locked; a ``push --dry-run`` then shows the undo lines for a
  policy deleted from the repo, and pushing it undoes them.
* Standalone ``jcstate apply --root``: a user moved from one policy to another is not churned;
  a run killed (SIGKILL) between an undo and its ledger write is finished by the next round.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pyotp
import testhost as th
from harness import jcstate_argv
from test_agent_e2e import AgentInHost, wait_for
from test_ssh_mfa import DROPIN, PAM_SSHD, login_interactive, login_password

from jcstate.server.api_client import AdminClient
from jcstate.undo import FAULT_ENV

PASSWORD = "alice-pw-5e1b"
LEDGER = "/var/lib/jcstate/ledger.json"

ENG = """\
apiVersion: jcstate/v1
kind: Policy
metadata: {name: eng}
selector: {labels: {team: eng}}
onRemoval: lock
spec:
  groups:
    - {name: developers, gid: 2001}
  users:
    - name: alice
    - {name: erin, uid: 1601, groups: [developers]}
  sshMfa: {enabled: true, users: [alice]}
"""
BASE = """\
apiVersion: jcstate/v1
kind: Policy
metadata: {name: base}
spec:
  groups:
    - {name: developers, gid: 2001}
"""


def _shadow(host: th.TestHost, user: str) -> list[str]:
    for line in host.path("/etc/shadow").read_text().splitlines():
        if line.startswith(user + ":"):
            return line.split(":")
    raise AssertionError(f"{user} not in /etc/shadow")


def _members(host: th.TestHost, group: str) -> list[str]:
    for line in host.path("/etc/group").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == group:
            return [m for m in fields[3].split(",") if m]
    return []


def _ledger(host: th.TestHost) -> dict[str, Any]:
    path = host.path(LEDGER)
    return json.loads(path.read_text()) if path.exists() else {}


def test_agent_relabelled_out_of_an_mfa_policy_undoes_it(testhost, server_proc, tmp_path):
    testhost.run(["useradd", "--create-home", "--shell", "/bin/sh", "alice"])
    testhost.set_password("alice", PASSWORD)
    port = testhost.start_sshd()
    data = tmp_path / "data"
    token = (data / "admin-token").read_text().strip()
    key = (data / "connect-key").read_text().strip()
    admin = AdminClient(server_proc.url, token)
    agent = AgentInHost(testhost, server_proc.url, key)
    try:
        admin.call("POST", "/api/v1/revisions", {"files": {"eng.yaml": ENG, "base.yaml": BASE}})
        secret = admin.call("POST", "/api/v1/totp/alice")["secret"]
        assert login_password(port, "alice", PASSWORD)  # before: the password alone
        agent.start()
        wait_for(lambda: admin.call("GET", "/api/v1/devices"), 30)
        device = admin.call("GET", "/api/v1/devices")[0]["id"]
        admin.call("PUT", f"/api/v1/devices/{device}/labels", {"labels": {"team": "eng"}})
        wait_for(lambda: _ledger(testhost).get("sshMfa", {}).get("config") is True, 30)
        totp = pyotp.TOTP(secret)
        wait_for(lambda: _logs_in(login_interactive, port, totp.now()), 10, step=0.2)
        assert not login_password(port, "alice", PASSWORD)
        owned = _ledger(testhost)
        assert owned["sshMfa"] == {"config": True, "totpFiles": ["alice"]}
        assert owned["users"]["erin"] == {
            "created": True,
            "onRemoval": "lock",
            "groups": ["developers"],
        }
        assert "alice" not in owned["users"]  # taken over, and nothing of it changed

        # (a) relabelled out: MFA off, erin locked (home kept), alice logs in with the password
        admin.call("PUT", f"/api/v1/devices/{device}/labels", {"labels": {"team": "sales"}})
        wait_for(lambda: not testhost.path(DROPIN).exists(), 30)
        wait_for(lambda: _ledger(testhost)["users"]["erin"].get("retired"), 30)
        assert "pam_google_authenticator" not in testhost.path(PAM_SSHD).read_text()
        wait_for(lambda: _logs_in(login_password, port), 10, step=0.2)
        assert not testhost.path("/home/alice/.google_authenticator").exists()
        erin = _shadow(testhost, "erin")
        assert erin[1].startswith("!") and erin[7] == "1"  # locked and expired
        assert testhost.path("/home/erin").is_dir()
        assert _members(testhost, "developers") == []
        assert "alice" in testhost.path("/etc/passwd").read_text()  # never deleted
        assert _ledger(testhost)["sshMfa"] == {"config": False, "totpFiles": []}
        wait_for(lambda: _reported_undo(admin, device), 15)
        testhost.run(["/usr/sbin/sshd", "-t"])  # sshd's configuration is valid

        # back in: MFA again (erin is unlocked by the policy, as any drift would be)
        admin.call("PUT", f"/api/v1/devices/{device}/labels", {"labels": {"team": "eng"}})
        wait_for(lambda: testhost.path(DROPIN).exists(), 30)
        wait_for(lambda: _ledger(testhost).get("sshMfa", {}).get("config") is True, 30)
        wait_for(lambda: not _ledger(testhost)["users"]["erin"].get("retired"), 10)
        assert _shadow(testhost, "erin")[7] == ""  # the policy unlocked it
        wait_for(lambda: _logs_in(login_password, port) is False, 10, step=0.2)
        wait_for(lambda: _logs_in(login_interactive, port, totp.now()), 10, step=0.2)

        # (b) the policy deleted from the repo: the dry run shows the undo, the push does it
        wait_for(lambda: "sshMfa" in _facts_ledger(admin, device), 30)
        only_base = {"files": {"base.yaml": BASE}}
        dry = admin.call("POST", "/api/v1/revisions", only_base | {"dryRun": True})
        (entry,) = dry["devices"]
        assert "- sshMfa sshd+pam (no longer in any policy)" in entry["changes"], entry
        assert "~ user erin (no longer in any policy): locked" in entry["changes"], entry
        assert testhost.path(DROPIN).exists()  # a dry run changes nothing
        admin.call("POST", "/api/v1/revisions", only_base)
        wait_for(lambda: not testhost.path(DROPIN).exists(), 30)
        wait_for(lambda: _ledger(testhost)["users"]["erin"].get("retired"), 30)
        wait_for(lambda: _logs_in(login_password, port), 10, step=0.2)
        assert _shadow(testhost, "erin")[7] == "1"  # locked again: still jcstate's creation
    finally:
        agent.stop()
        admin.close()


def _logs_in(login: Any, port: int, *code: str) -> bool | None:
    """Whether alice logs in; None while sshd restarts after a reload (connection refused)."""
    try:
        return bool(login(port, "alice", PASSWORD, *code))
    except OSError:
        return None


def _reported_undo(admin: AdminClient, device: str) -> bool:
    shown = admin.call("GET", f"/api/v1/devices/{device}")
    report = (shown.get("lastReport") or {}).get("report") or {}
    undone = [r for r in report.get("results", []) if r.get("summary") == "no longer in any policy"]
    return bool(undone) and all(r["status"] == "ok" for r in undone)


def _facts_ledger(admin: AdminClient, device: str) -> dict[str, Any]:
    shown = admin.call("GET", f"/api/v1/devices/{device}")
    found = (shown.get("facts") or {}).get("ledger") or {}
    return {k: v for k, v in found.items() if v}


# -- standalone apply --------------------------------------------------------------------------
TEAM = """\
apiVersion: jcstate/v1
kind: Policy
metadata: {{name: {name}}}
spec:
  groups:
    - {{name: developers, gid: 2001}}
  users:
{users}
"""
DANA = "    - {name: dana, uid: 1701, shell: /bin/bash, groups: [developers]}"
FRED = "    - {name: fred, uid: 1702}"


def _apply(host: th.TestHost, files: dict[str, str], env: dict[str, str] | None = None) -> Any:
    with tempfile.TemporaryDirectory(prefix="jcstate-undo-") as tmp:
        for name, text in files.items():
            Path(tmp, name).write_text(text)
        argv = [*jcstate_argv(), "apply", tmp, "--root", str(host.root), "--output", "json"]
        clean = {k: v for k, v in os.environ.items() if not k.startswith("JCSTATE_")}
        return subprocess.run(
            argv, capture_output=True, text=True, env=clean | (env or {}), timeout=120, check=False
        )


def _results(proc: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results: list[dict[str, Any]] = json.loads(proc.stdout)["results"]
    return results


def test_standalone_move_is_not_churned_and_a_kill_before_the_ledger_write_is_finished(testhost):
    eng = TEAM.format(name="eng", users=DANA + "\n" + FRED)
    sales = TEAM.format(name="sales", users="    - {name: fred, uid: 1702}")
    assert {r["name"] for r in _results(_apply(testhost, {"eng.yaml": eng, "s.yaml": sales}))} >= {
        "dana",
        "fred",
    }
    assert set(_ledger(testhost)["users"]) == {"dana", "fred"}

    # (c) dana moves from policy eng to policy sales: no change, no command, ledger untouched
    ledger_before = testhost.path(LEDGER).read_bytes()
    shadow_before = testhost.path("/etc/shadow").stat().st_mtime_ns
    eng2 = TEAM.format(name="eng", users=FRED)
    sales2 = TEAM.format(name="sales", users=DANA + "\n" + FRED)
    moved = _apply(testhost, {"eng.yaml": eng2, "s.yaml": sales2})
    assert _results(moved) == []
    assert testhost.path("/etc/shadow").stat().st_mtime_ns == shadow_before
    assert testhost.path(LEDGER).read_bytes() == ledger_before

    # (d) dana leaves every policy; the run is killed right after the first undo change
    flag = testhost.path("/tmp/kill-before-ledger")
    flag.write_text("once")
    gone = {"eng.yaml": eng2, "s.yaml": TEAM.format(name="sales", users=FRED)}
    killed = _apply(testhost, gone, env={FAULT_ENV: str(flag)})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not flag.exists()
    dana = _shadow(testhost, "dana")
    assert dana[7] == "1"  # the lock (first undo change) happened …
    assert "dana" in _ledger(testhost)["users"]  # … and the ledger was not written
    assert _members(testhost, "developers") == ["dana"]  # the membership undo had not run

    # the next round finishes it: the lock is not redone, the membership goes, the entry too
    finish = _results(_apply(testhost, gone))
    assert [(r["name"], [f["field"] for f in r["fields"]]) for r in finish] == [
        ("dana", ["groups"])
    ]
    assert all(r["summary"] == "no longer in any policy" and r["status"] == "ok" for r in finish)
    assert _members(testhost, "developers") == []
    assert _ledger(testhost)["users"]["dana"] == {
        "created": True,
        "onRemoval": "lock",
        "retired": True,
    }
    assert _results(_apply(testhost, gone)) == []
