"""A staged rollout with the project's real agents (issue 15): each agent enrolls with its own
key, polls, converges in its worker process on its own system image and reports, exactly as
on a device. A revision whose document cannot be rendered for the canary halts the rollout;
the other agents never receive it; an abort brings the canary back; a good revision reaches
everyone after its canary converged and the wait passed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import live
import pytest

from jcstate.agent.loop import Agent, AgentConfig

GOOD = "apiVersion: jcstate/v1\nkind: Policy\nmetadata: {name: base}\nspec: {}\n"
# valid in the repo, but no device reports the fact: rendering fails on the device's server side
BAD = """\
apiVersion: jcstate/v1
kind: Policy
metadata: {name: base}
spec:
  groups:
    - name: "{{ facts.site_group }}"
"""


def _agent(server: Any, base: Path, name: str) -> Agent:
    root = base / name / "root"
    (root / "etc").mkdir(parents=True)
    files = {
        "passwd": "root:x:0:0:root:/root:/bin/bash\n",
        "group": "root:x:0:\nsudo:x:27:\n",
        "shadow": "root:*:19000:0:99999:7:::\n",
        "gshadow": "root:*::\nsudo:*::\n",
        "hostname": f"{name}\n",
    }
    for file, text in files.items():
        (root / "etc" / file).write_text(text)
    config = AgentConfig(
        server=server.url,
        connect_key=server.connect_key,
        state_dir=str(base / name / "state"),
        log_file=None,
        install_dir=str(base / name / "opt"),
        root=str(root),
        once=True,
    )
    agent = Agent(config)
    server.opened.append(agent.client)
    return agent


def _run_all(agents: dict[str, Agent]) -> None:
    for agent in agents.values():
        assert agent.run() == 0


def _until(what: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := what()):
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)
    return value


@pytest.fixture
def server(tmp_path: Path) -> Any:
    with live.live_server(f"sqlite:///{tmp_path}/j.db", str(tmp_path), rollout_check=0.2) as srv:
        yield srv


def test_real_agents_halt_abort_and_promote(server, tmp_path):
    manager = server.admin("manager")
    manager.call("POST", "/api/v1/revisions", {"files": {"base.yaml": GOOD}})
    agents = {name: _agent(server, tmp_path, name) for name in ("dev0", "dev1", "dev2", "dev3")}
    _run_all(agents)
    ids = {name: a.identity.device()["id"] for name, a in agents.items()}
    manager.call("PUT", f"/api/v1/devices/{ids['dev0']}/labels", {"labels": {"ring": "0"}})
    _run_all(agents)  # the label changes dev0's etag: it converges again, still on revision 1

    def device(name: str) -> dict[str, Any]:
        return manager.call("GET", f"/api/v1/devices/{ids[name]}")

    assert all(device(n)["lastReportOk"] and device(n)["documentCurrent"] for n in agents)
    reports = {n: server.ctx.store.count_reports(ids[n]) for n in agents}

    pushed = manager.call(
        "POST",
        "/api/v1/revisions",
        {"files": {"base.yaml": BAD}, "canary": "label:ring=0", "waitSeconds": 0},
    )
    assert pushed["rollout"]["canaryDevices"] == 1
    _run_all(agents)
    _until(lambda: manager.call("GET", "/api/v1/rollout")["state"] == "halted")
    status = manager.call("GET", "/api/v1/rollout")
    assert "site_group" in status["reason"] and status["waves"][0]["failed"] == 1
    assert status["waves"][1] == {
        "name": "rest", "revision": 1, "devices": 3,
        "pending": 0, "converged": 3, "failed": 0, "offline": 0,
    }  # fmt: skip
    # the rest never saw revision 2: no new converge, still current on revision 1
    _run_all(agents)
    for name in ("dev1", "dev2", "dev3"):
        assert server.ctx.store.count_reports(ids[name]) == reports[name]
        assert device(name)["documentCurrent"] and device(name)["lastReportOk"]
        doc = manager.call("GET", f"/api/v1/devices/{ids[name]}/document")
        assert doc["revision"] == 1 and doc["etag"] == agents[name]._etag
    assert device("dev0")["lastReportOk"] is False

    manager.call("POST", "/api/v1/rollout/abort", {})
    _run_all(agents)
    assert device("dev0")["lastReportOk"] and device("dev0")["documentCurrent"]
    assert manager.call("GET", f"/api/v1/devices/{ids['dev0']}/document")["revision"] == 1

    good = GOOD.replace("spec: {}", "vars: {release: two}\nspec: {}")
    manager.call(
        "POST",
        "/api/v1/revisions",
        {"files": {"base.yaml": good}, "canary": "25%", "waitSeconds": 1},
    )
    _run_all(agents)  # the one canary converges on revision 3; the rest has nothing new
    _until(lambda: manager.call("GET", "/api/v1/rollout")["state"] == "promoted")
    _run_all(agents)
    for name in agents:
        assert manager.call("GET", f"/api/v1/devices/{ids[name]}/document")["revision"] == 3
        assert device(name)["documentCurrent"] and device(name)["lastReportOk"]
