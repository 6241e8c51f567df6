"""The agent loop against a live server: enroll once, converge, report; outages; one instance."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys

import pytest

from jcstate.agent.client import Unreachable
from jcstate.agent.loop import Agent, AgentConfig, AlreadyRunning, backoff_delay, setup_logging

EMPTY = "apiVersion: jcstate/v1\nkind: Policy\nmetadata: {name: base}\nspec: {}\n"


def _root(tmp_path):
    """A minimal system image: the engine reads accounts from here, never from this machine."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True, exist_ok=True)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "etc" / "group").write_text("root:x:0:\nsudo:x:27:\n")
    (root / "etc" / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    (root / "etc" / "gshadow").write_text("root:*::\nsudo:*::\n")
    (root / "etc" / "hostname").write_text("agent-test\n")
    return str(root)


def _agent(server, tmp_path, **kw):
    config = AgentConfig(
        server=server.url,
        connect_key=server.connect_key,
        state_dir=str(tmp_path / "state"),
        log_file=None,
        install_dir=str(tmp_path / "opt"),
        root=_root(tmp_path),
        once=True,
        **kw,
    )
    agent = Agent(config)
    server.opened.append(agent.client)
    return agent


def test_backoff_is_full_jitter_capped_and_honours_retry_after():
    delays = [backoff_delay(10, 1.0, 30.0) for _ in range(200)]
    assert all(0 <= d <= 30 for d in delays) and max(delays) > 15 and min(delays) < 15
    assert all(backoff_delay(0, 1.0, 30.0, retry_after=7) >= 7 for _ in range(50))


def test_enrolls_once_keeps_a_private_key_and_reports(sqlite_server, tmp_path):
    server = sqlite_server
    server.admin("manager").call("POST", "/api/v1/revisions", {"files": {"base.yaml": EMPTY}})
    agent = _agent(server, tmp_path)
    assert agent.run() == 0
    device_id = agent.identity.device()["id"]
    key = tmp_path / "state" / "key.pem"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "state").st_mode) == 0o700
    agent.client.close()
    second = _agent(server, tmp_path)  # a restart: same identity, no new enrollment
    assert second.run() == 0
    assert [d["id"] for d in server.ctx.store.list_devices()] == [device_id]
    assert server.ctx.store.count_reports(device_id) == 2
    shown = server.admin("read-only").call("GET", f"/api/v1/devices/{device_id}")
    assert shown["hostname"] == "agent-test" and shown["lastReportOk"] is True
    assert shown["facts"]["hostname"] == "agent-test" and len(agent.outbox) == 0


def test_reports_wait_in_the_outbox_through_an_outage(sqlite_server, tmp_path):
    server = sqlite_server
    server.admin("manager").call("POST", "/api/v1/revisions", {"files": {"base.yaml": EMPTY}})
    agent = _agent(server, tmp_path)
    agent.enroll()
    agent._document, agent._etag = {"apiVersion": "jcstate/v1", "spec": {}}, "e1"
    real = agent.client.report

    def down(payload):
        raise Unreachable("connection refused")

    agent.client.report = down  # the server goes away while the report is sent
    with pytest.raises(Unreachable):
        agent.converge()
    assert len(agent.outbox) == 1
    agent.client.report = real
    restarted = _agent(server, tmp_path)  # as after kill -9: the report is on disk
    assert restarted.flush() == 1
    device_id = agent.identity.device()["id"]
    assert server.ctx.store.count_reports(device_id) == 1
    # a lost acknowledgement means a resend: stored once
    payload = server.ctx.store.last_report(device_id)["body"]
    restarted.outbox.put(payload)
    restarted.flush()
    assert server.ctx.store.count_reports(device_id) == 1


def test_a_second_instance_is_refused(sqlite_server, tmp_path):
    first = _agent(sqlite_server, tmp_path)
    first.lock()
    with pytest.raises(AlreadyRunning, match=str(os.getpid())):
        _agent(sqlite_server, tmp_path).lock()


def test_log_file_is_reopened_after_logrotate_moves_it(tmp_path):
    log_file = tmp_path / "jcstate.log"
    setup_logging(str(log_file))
    log = logging.getLogger("jcstate.agent.test")
    try:
        log.info("before rotation")
        os.rename(log_file, tmp_path / "jcstate.log.1")
        log.info("after rotation")
        assert "after rotation" in log_file.read_text()
        assert "before rotation" in (tmp_path / "jcstate.log.1").read_text()
    finally:
        root = logging.getLogger("jcstate")
        for handler in list(root.handlers):
            root.removeHandler(handler)
            handler.close()


def test_cli_agent_once_uses_version_txt_and_logs(sqlite_server, tmp_path):
    server = sqlite_server
    server.admin("manager").call("POST", "/api/v1/revisions", {"files": {"base.yaml": EMPTY}})
    (tmp_path / "opt").mkdir()
    (tmp_path / "opt" / "version.txt").write_text("9.9.9\n")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "jcstate",
            "agent",
            "--server",
            server.url,
            "--connect-key",
            server.connect_key,
            "--state-dir",
            str(tmp_path / "state"),
            "--log-file",
            str(tmp_path / "agent.log"),
            "--install-dir",
            str(tmp_path / "opt"),
            "--root",
            _root(tmp_path),
            "--once",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    logged = (tmp_path / "agent.log").read_text()
    assert "enrolled as device" in logged
    assert "jcstate.agent: converged " in logged  # the worker logs to the agent's file
    assert server.ctx.store.list_devices()[0]["agent_version"] == "9.9.9"
    # `jcstate agent` also shows its log on stderr (the jcstate command's logging.basicConfig)
    assert "INFO jcstate.agent: enrolled as device " in out.stderr


def test_enrolling_against_an_unreachable_server_reads_facts_once(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = AgentConfig(
        server=f"http://127.0.0.1:{port}",
        connect_key="jck_x",
        state_dir=str(tmp_path / "state"),
        log_file=None,
        install_dir=str(tmp_path / "opt"),
        root=_root(tmp_path),
    )
    agent = Agent(config)
    workers = []
    real = agent._work

    def counting(request):
        workers.append(request["mode"])
        return real(request)

    agent._work = counting
    try:
        for _ in range(3):
            with pytest.raises(Unreachable):
                agent.enroll()
    finally:
        agent.close()
    assert workers == ["facts"]  # one worker, not one per retry
