"""Device states an admin can believe (docs/state-model.md), on a live server, SQLite and
PostgreSQL: online within twice the poll hold, drift and failures from the device's reports
(converge and plan-only), the converge command, warnings of certain refusals before a push,
and a server stopped with SIGTERM that drains its held polls."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from typing import Any

import live
import pytest

from jcstate.agent.client import Client, Unreachable
from jcstate.agent.identity import Identity
from jcstate.cli import main
from jcstate.server.views import from_rfc3339

MFA_POLICY = """\
apiVersion: jcstate/v1
kind: Policy
metadata: {name: mfa}
spec:
  users:
    - {name: dave, state: present}
  sshMfa:
    enabled: true
    users: [dave]
"""


def jcstate(capsys: Any, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_online_is_twice_the_poll_hold_after_a_kill(database, tmp_path):
    """A device polling (held 1 s each time) stays online; once it stops (killed), it is
    offline after 2 × the hold, not after a fixed 90 s. lastSeen is its last request."""
    with live.live_server(database, str(tmp_path), max_wait=1.0) as server:
        admin = server.admin("read-only")
        client, device_id = server.device("poller")
        etag = client.work("", 0, 0)["etag"]
        stop = threading.Event()

        def agent() -> None:
            while not stop.is_set():
                client.work(etag, 30, 0)  # held at most max_wait = 1 s

        thread = threading.Thread(target=agent)
        thread.start()
        try:
            for _ in range(6):  # 3 s: longer than 2 × the hold, always online
                shown = admin.call("GET", f"/api/v1/devices/{device_id}")
                assert shown["online"] is True, shown
                time.sleep(0.5)
        finally:
            stop.set()
            thread.join()
        killed = time.time()
        last = from_rfc3339(admin.call("GET", f"/api/v1/devices/{device_id}")["lastSeen"])
        assert killed - 1.5 < last <= killed
        while admin.call("GET", f"/api/v1/devices/{device_id}")["online"]:
            assert time.time() - killed < 3.0, "still online after 2 × the hold"
            time.sleep(0.1)
        assert time.time() - last >= 2.0  # not before 2 × the hold either


def _converge(ok: bool, results: list[dict[str, Any]], errors: list[str] | None = None):
    return {
        "reportId": "r-" + str(time.monotonic_ns()),
        "ok": ok,
        "changed": any(r["status"] == "ok" for r in results),
        "report": {"applied": True, "ok": ok, "results": results, "errors": errors or []},
    }


def _plan(changes: list[dict[str, Any]]):
    return {
        "reportId": "p-" + str(time.monotonic_ns()),
        "kind": "plan",
        "ok": not any(c.get("error") for c in changes),
        "report": {"applied": False, "changes": changes, "errors": []},
    }


def test_drift_and_failures_follow_the_devices_last_plan(server, capsys, monkeypatch):
    monkeypatch.setenv("JCSTATE_SERVER", server.url)
    monkeypatch.setenv("JCSTATE_TOKEN", server.token("read-only"))
    admin = server.admin("read-only")
    client, device_id = server.device("laptop")
    assert admin.call("GET", f"/api/v1/devices/{device_id}")["drift"] is None  # no plan yet
    refused = {
        "kind": "sshMfa",
        "name": "dave",
        "action": "create",
        "status": "refused",
        "message": "no TOTP secret for dave: create one with `jcstate totp new dave`",
    }
    applied = {"kind": "users", "name": "dave", "action": "create", "status": "ok"}
    client.report(_converge(False, [applied, refused]))
    shown = admin.call("GET", f"/api/v1/devices/{device_id}")
    assert shown["drift"] is True and shown["lastReportOk"] is False
    assert shown["failures"] == [
        {"change": "+ sshMfa dave", "status": "refused", "message": refused["message"]}
    ]
    code, out, _ = jcstate(capsys, "devices")
    assert code == 0 and "+ sshMfa dave: no TOTP secret for dave" in out
    code, out, _ = jcstate(capsys, "device", "show", "laptop")
    assert "refused  + sshMfa dave: no TOTP secret for dave" in out, out

    # a converge in which every change applied: no drift, no failure
    client.report(_converge(True, [dict(refused, status="ok")]))
    shown = admin.call("GET", f"/api/v1/devices/{device_id}")
    assert (shown["drift"], shown["failures"]) == (False, [])

    # between converges, a plan finds a change made by hand: drift, pending, named
    client.report(_plan([{"kind": "users", "name": "dave", "action": "create"}]))
    shown = admin.call("GET", f"/api/v1/devices/{device_id}")
    assert shown["drift"] is True and shown["failures"] == []
    assert [c["change"] for c in shown["lastPlan"]["changes"]] == ["+ users dave"]
    assert shown["lastReportOk"] is True  # the plan is not a converge
    code, out, _ = jcstate(capsys, "device", "show", device_id)
    assert "drift (found by a plan between converges" in out and "+ users dave" in out
    client.report(_plan([]))  # clean again
    assert admin.call("GET", f"/api/v1/devices/{device_id}")["drift"] is False

    # a converge that failed before planning: drift unknown, the reason shown
    client.report({"reportId": "x" * 16, "ok": False, "error": "the converge worker crashed"})
    shown = admin.call("GET", f"/api/v1/devices/{device_id}")
    assert shown["drift"] is None
    assert shown["failures"][-1]["message"] == "the converge worker crashed"


def test_converge_is_a_command_for_managers(server):
    manager, reader = server.admin("manager"), server.admin("read-only")
    client, device_id = server.device("converges")
    made = manager.call("POST", f"/api/v1/devices/{device_id}/commands/converge", {})
    assert (made["action"], made["state"]) == ("converge", "queued")
    [got] = client.work("", 0, 0)["commands"]
    assert got == {"seq": made["seq"], "id": made["id"], "action": "converge"}
    with pytest.raises(Exception, match="needs the manager role"):
        reader.call("POST", f"/api/v1/devices/{device_id}/commands/converge", {})
    audit = server.ctx.store.list_audit(limit=20)
    assert any(a["action"].endswith("/commands/converge") and a["outcome"] == "ok" for a in audit)
    assert any(a["outcome"] == "denied" for a in audit)


def test_dry_run_and_validate_server_warn_of_certain_refusals(
    sqlite_server, tmp_path, capsys, monkeypatch
):
    server = sqlite_server
    monkeypatch.setenv("JCSTATE_SERVER", server.url)
    monkeypatch.setenv("JCSTATE_TOKEN", server.token("manager"))
    server.device("eng1")
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "mfa.yaml").write_text(MFA_POLICY)

    code, out, err = jcstate(capsys, "validate", str(repo), "--server")
    assert code == 1, err
    assert "! will be refused: + ssh-mfa dave: no TOTP secret for dave" in out
    code, out, _ = jcstate(capsys, "push", "--dry-run", str(repo))
    assert code == 2 and "will be refused: + ssh-mfa dave" in out  # 2: devices would change
    assert server.ctx.store.latest_revision_id() is None  # nothing stored by either

    # no stored revision lists dave yet (only dry runs): enrolling him needs --force
    code, out, err = jcstate(capsys, "totp", "enroll", "dave", "--force")
    assert code == 0, err
    code, out, err = jcstate(capsys, "validate", str(repo), "--server")
    assert code == 0 and "the server expects no refusal on 1 device(s)" in out, out + err
    code, out, _ = jcstate(capsys, "validate", str(repo))  # without --server: local only
    assert code == 0 and out.strip() == "1 policies in 1 files: ok"


def _stderr_lines(proc: subprocess.Popen[bytes]) -> list[str]:
    lines: list[str] = []

    def read() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            lines.append(raw.decode(errors="replace"))

    threading.Thread(target=read, daemon=True).start()
    return lines


def test_sigterm_drains_held_polls_and_agents_come_back_within_a_second(tmp_path):
    """A real `jcstate server` process with agents' clients in held long polls: SIGTERM
    answers every one at once with `draining` (no error, no 500, no traceback); a new server on
    the same port is reached by a real agent loop within a second of it listening."""
    from jcstate.agent.loop import Agent, AgentConfig

    port = live.free_port()
    data = tmp_path / "data"
    args = ["--data", str(data), "--max-wait", "30", "--log-level", "info"]
    srv = live.ServerProcess(args, port).start()
    log = _stderr_lines(srv.proc)
    key = (data / "connect-key").read_text().strip()
    clients = []
    for n in range(5):
        client = Client(srv.url, Identity(str(tmp_path / f"dev{n}")))
        info = {"hostname": f"h{n}", "os": "linux", "osVersion": "12", "arch": "x86_64"}
        client.identity.save_device(client.enroll(key, info)["id"], srv.url)
        clients.append(client)
    etags = [c.work("", 0, 0)["etag"] for c in clients]
    answers: list[Any] = [None] * len(clients)

    def hold(i: int) -> None:
        try:
            answers[i] = clients[i].work(etags[i], 30, 0)
        except Exception as exc:  # the test fails below with it
            answers[i] = exc

    threads = [threading.Thread(target=hold, args=(i,)) for i in range(len(clients))]
    for t in threads:
        t.start()
    time.sleep(1.0)  # every poll is held
    stopped = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(10)
    time.sleep(0.5)  # the log's last lines
    for c in clients:
        c.close()
    assert all(isinstance(a, dict) and a.get("draining") is True for a in answers), answers
    # uvicorn ends by re-raising the signal it stopped for: the exit systemd expects
    assert srv.proc.wait(10) in (0, -signal.SIGTERM)
    assert time.monotonic() - stopped < 5.0  # not the 30 s hold, not the 5 s cut-off
    text = "".join(log)
    assert "Traceback" not in text and '" 500' not in text and "ERROR" not in text, text
    assert "Shutting down" in text and "Application shutdown complete" in text, text  # logs on
    srv.kill()  # (exited already: closes its pipe)

    # a real agent loop that saw `draining` comes back within a second of the new server
    agent = Agent(
        AgentConfig(
            srv.url,
            state_dir=str(tmp_path / "dev0"),
            log_file=None,
            root=str(tmp_path / "root"),
            wait=30,
        )
    )
    agent._draining_until = time.monotonic() + 60  # as after the answer above
    seen: list[float] = []
    real_step = agent.step

    def step() -> None:
        real_step()
        seen.append(time.monotonic())
        raise SystemExit  # one successful poll is enough

    agent.step = step  # type: ignore[method-assign]
    runner = threading.Thread(target=lambda: _run_quietly(agent), daemon=True)
    runner.start()
    time.sleep(2.0)  # the agent retries against a closed port meanwhile
    assert not seen
    srv2 = live.ServerProcess(args, port)
    srv2.start()
    listening = time.monotonic()
    try:
        runner.join(10)
        assert seen, "the agent did not come back"
        assert seen[0] - listening < 1.0, f"back after {seen[0] - listening:.2f} s"
    finally:
        srv2.kill()


def _run_quietly(agent: Any) -> None:
    try:
        agent._loop()
    except (SystemExit, Unreachable):
        pass
    finally:
        agent.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
