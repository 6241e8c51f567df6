"""The converge worker hands the engine an escrow callable that posts the recovery key, signed.

The engine and FileVault side (the step fails and is retried when the callable raises) is in
tests/osmodels/test_filevault_escrow.py; this checks the worker's wiring against a live server:
the worker builds its signed client from the agent's state directory, as the same user.
"""

from __future__ import annotations

from typing import Any

import live
import pytest

from jcstate import engine
from jcstate.agent import worker
from jcstate.agent.client import Unreachable
from jcstate.agent.loop import Agent, AgentConfig
from jcstate.errors import JcstateError
from jcstate.secret import Secret

KEY = "AB12-CD34-EF56-GH78-IJ90-KL12"
VOLUME = "5A7B0000-1111-2222-3333-444455556666"


def _agent(server_url: str, connect_key: str, tmp_path: Any) -> Agent:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True, exist_ok=True)
    (root / "etc" / "hostname").write_text("mac-escrow\n")
    config = AgentConfig(
        server=server_url,
        connect_key=connect_key,
        state_dir=str(tmp_path / "state"),
        log_file=None,
        install_dir=str(tmp_path / "opt"),
        root=str(root),
        once=True,
    )
    return Agent(config)


def test_the_worker_gives_apply_an_escrow_that_posts_the_key(sqlite_server, tmp_path, monkeypatch):
    server = sqlite_server
    agent = _agent(server.url, server.connect_key, tmp_path)
    server.opened.append(agent.client)
    device_id = agent.enroll()
    passed: dict[str, Any] = {}
    real_apply = engine.apply

    def spy(*args: Any, **kwargs: Any) -> Any:
        passed.update(kwargs)
        return real_apply(*args, **kwargs)

    monkeypatch.setattr(engine, "apply", spy)
    # the request the agent sends its worker (see Agent._work), answered in this process
    answer = worker.run(
        {
            "mode": "converge",
            "root": agent.config.root,
            "document": {"apiVersion": "jcstate/v1", "spec": {}},
            "deviceId": device_id,
            "server": server.url,
            "stateDir": agent.config.state_dir,
        }
    )
    assert answer["ok"] is True and answer["facts"]["hostname"] == "mac-escrow"
    assert passed["device"] == {"id": device_id}
    escrow = passed["escrow"]
    assert callable(escrow)

    escrow(Secret(KEY), VOLUME)
    server.opened.append(escrow)
    got = server.admin().call("GET", f"/api/v1/devices/{device_id}/recovery-key")
    assert (got["volume"], got["key"]) == (VOLUME, KEY)
    [entry] = [a for a in server.ctx.store.list_audit() if a["action"].endswith("/escrow")]
    assert entry["actor"] == f"device:{device_id}" and KEY not in str(entry)


def test_escrow_raises_when_the_server_is_unreachable(sqlite_server, tmp_path):
    server = sqlite_server
    enrolled = _agent(server.url, server.connect_key, tmp_path)
    enrolled.enroll()
    enrolled.close()
    # the same identity, now pointed at a port nobody listens on
    escrow = worker.Escrow(f"http://127.0.0.1:{live.free_port()}", str(tmp_path / "state"))
    with pytest.raises(Unreachable) as caught:
        escrow(Secret(KEY), VOLUME)
    assert isinstance(caught.value, JcstateError)  # the engine turns it into a failed step
    assert KEY not in str(caught.value)
    escrow.close()
