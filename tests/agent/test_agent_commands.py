"""The agent runs queued commands in order, at most once, and reports them until acknowledged.

The real :class:`~jcstate.agent.loop.Agent` against a live server, with the OS's actions
replaced by a recorder (recording_actions.py): nothing is locked, restarted or wiped here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from recording_actions import RecordingActions, boot_time_of, executions, prepare_root

from jcstate.agent.client import Unreachable
from jcstate.agent.loop import Agent, AgentConfig


def make_agent(server: Any, tmp_path: Path, **kw: Any) -> Agent:
    root = prepare_root(str(tmp_path / "root"))
    config = AgentConfig(
        server=server.url,
        connect_key=server.connect_key,
        state_dir=str(tmp_path / "state"),
        log_file=None,
        install_dir=str(tmp_path / "opt"),
        root=root,
        once=True,
    )
    agent = Agent(config, actions=RecordingActions(**kw))
    server.opened.append(agent.client)
    return agent


def journal(tmp_path: Path, command_id: str) -> dict[str, Any]:
    path = tmp_path / "root" / "var/lib/jcstate/journal" / f"{command_id}.json"
    return json.loads(path.read_text())


def issue(server: Any, device_id: str, action: str, **body: Any) -> dict[str, Any]:
    admin = server.admin("administrator")
    return admin.call("POST", f"/api/v1/devices/{device_id}/commands/{action}", body)


def shown(server: Any, command_id: str) -> dict[str, Any]:
    return server.admin("read-only").call("GET", f"/api/v1/commands/{command_id}")


def test_queued_commands_run_in_order_once_and_results_are_acknowledged(sqlite_server, tmp_path):
    server = sqlite_server
    agent = make_agent(server, tmp_path)
    device_id = agent.enroll()
    cmds = [
        issue(server, device_id, "lock"),
        issue(server, device_id, "run", run={"argv": ["id", "-u"]}),
        issue(server, device_id, "shutdown", delay=0),
    ]
    assert agent.run() == 0
    root = str(tmp_path / "root")
    assert executions(root) == [c["id"] for c in cmds]
    for c in cmds:
        assert shown(server, c["id"])["state"] == "succeeded"
        record = journal(tmp_path, c["id"])
        assert record["acknowledged"] is True and record["result"]["stdout"] == ""
    assert shown(server, cmds[1]["id"])["stdout"] == f"ran {cmds[1]['id']}\n"
    # a second agent process on the same device: delivered nothing, ran nothing
    again = make_agent(server, tmp_path)
    assert again.run() == 0
    assert executions(root) == [c["id"] for c in cmds]


def test_a_redelivered_command_is_not_run_again(sqlite_server, tmp_path):
    server = sqlite_server
    agent = make_agent(server, tmp_path)
    device_id = agent.enroll()
    cmd = issue(server, device_id, "lock")
    real = agent.client.command_results
    agent.client.command_results = lambda *a, **k: (_ for _ in ()).throw(  # type: ignore
        Unreachable("the server went away")
    )
    assert agent.run() == 1  # ran, but could not report
    assert executions(str(tmp_path / "root")) == [cmd["id"]]
    # nothing from the device acknowledged it (its notes and results were lost): still queued,
    # sent once; the server shows only what the device said
    view = shown(server, cmd["id"])
    assert (view["state"], view["deliveredAt"], view["deliveries"]) == ("queued", None, 1)
    assert journal(tmp_path, cmd["id"])["acknowledged"] is False
    agent.client.command_results = real  # type: ignore[method-assign]
    agent.close()
    # A restarted agent (cursor 0) is sent the unfinished command again; the journal answers.
    restarted = make_agent(server, tmp_path)
    restarted.enroll()
    restarted.commands.recover()
    redelivered = server.ctx.queue.deliver(device_id, 0)
    assert [c["id"] for c in redelivered] == [cmd["id"]]
    restarted.run_commands(redelivered)
    assert executions(str(tmp_path / "root")) == [cmd["id"]]
    view = shown(server, cmd["id"])
    assert view["state"] == "succeeded" and view["deliveries"] == 2
    assert journal(tmp_path, cmd["id"])["acknowledged"] is True


def test_restart_is_done_only_after_the_boot_time_changed(sqlite_server, tmp_path):
    server = sqlite_server
    agent = make_agent(server, tmp_path, reboot_moves_boot_time=False)
    device_id = agent.enroll()
    cmd = issue(server, device_id, "restart", delay=0)
    assert agent.run() == 0
    view = shown(server, cmd["id"])
    assert view["state"] == "running"
    devices = server.admin("read-only").call("GET", "/api/v1/devices")
    assert devices[0]["activity"] == "restarting"
    # the agent restarts without a reboot: still running, not run again
    assert make_agent(server, tmp_path, reboot_moves_boot_time=False).run() == 0
    assert shown(server, cmd["id"])["state"] == "running"
    # the device really restarted: new boot time, the agent comes back
    root = str(tmp_path / "root")
    from recording_actions import set_boot_time

    set_boot_time(root, boot_time_of(root) + 120)
    assert make_agent(server, tmp_path).run() == 0
    view = shown(server, cmd["id"])
    assert view["state"] == "succeeded" and "boot time changed" in view["message"]
    assert executions(root) == [cmd["id"]]
    device = server.admin("read-only").call("GET", f"/api/v1/devices/{device_id}")
    assert device["activity"] is None


def test_started_but_unfinished_is_reported_interrupted_never_run(sqlite_server, tmp_path):
    server = sqlite_server
    agent = make_agent(server, tmp_path)
    device_id = agent.enroll()
    cmd = issue(server, device_id, "run", run={"argv": ["reboot-the-world"]})
    # As after a SIGKILL between the journal's "started" and the action: the record exists.
    from jcstate.host import Host
    from jcstate.modules.commands.journal import Journal

    Journal(Host(str(tmp_path / "root"))).start(cmd["id"], "run", boot_time=1.0)
    server.ctx.queue.deliver(device_id, 0)
    assert make_agent(server, tmp_path).run() == 0
    view = shown(server, cmd["id"])
    assert view["state"] == "interrupted"
    assert executions(str(tmp_path / "root")) == []


def test_policy_command_results_reach_the_server(sqlite_server, tmp_path):
    server = sqlite_server
    policy = (
        "apiVersion: jcstate/v1\nkind: Policy\nmetadata: {name: base}\nspec:\n"
        "  commands:\n    - {id: rotate-logs-1, action: run, run: {argv: [logrotate]}}\n"
    )
    server.admin("manager").call("POST", "/api/v1/revisions", {"files": {"base.yaml": policy}})
    agent = make_agent(server, tmp_path)
    agent.config.once = True
    # the policy's command runs through the engine and the registered Linux actions; give
    # the agent a root whose journal it can write and let run fail (no such program there)
    assert agent.run() == 0
    rows = server.admin("read-only").call("GET", "/api/v1/commands")
    assert [(r["id"], r["source"]) for r in rows] == [("rotate-logs-1", "policy")]
    assert rows[0]["state"] in ("succeeded", "failed")
    assert journal(tmp_path, "rotate-logs-1")["acknowledged"] is True
    assert not os.path.exists(tmp_path / "root" / "var/log/executions")
