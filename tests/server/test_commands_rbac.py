"""Who may issue which security command, and that every attempt lands in the audit log.

read-only: nothing; manager: lock, restart, shutdown, run, cancel; administrator: also erase,
for one device per request, with ``confirm`` equal to the device id. The full route × caller
table is authz_matrix.yaml; this checks the audit trail and the erase confirmation.
"""

from __future__ import annotations

from typing import Any

import pytest

from jcstate.errors import AuthError, ServerError


def _audit(server: Any, action: str) -> list[dict[str, Any]]:
    return [
        a
        for a in reversed(server.ctx.store.list_audit())
        if a["action"] == f"POST /api/v1/devices/{{ref}}/commands/{action}"
    ]


def test_every_command_attempt_is_audited_denied_ones_included(sqlite_server):
    server = sqlite_server
    _, device_id = server.device("rbac1")
    reader, manager, administrator = (
        server.admin("read-only"),
        server.admin("manager"),
        server.admin("administrator"),
    )
    for action in ("lock", "restart", "shutdown", "run"):
        body = {"run": {"argv": ["true"]}} if action == "run" else {}
        with pytest.raises(AuthError):
            reader.call("POST", f"/api/v1/devices/{device_id}/commands/{action}", body)
        made = manager.call("POST", f"/api/v1/devices/{device_id}/commands/{action}", body)
        trail = _audit(server, action)
        assert [(a["outcome"], a["role"], a["target"]) for a in trail] == [
            ("denied", "read-only", device_id),
            ("ok", "manager", device_id),
        ]
        assert trail[1]["detail"]["command"] == made["id"]
    assert _audit(server, "run")[1]["detail"]["program"] == "true"
    with pytest.raises(AuthError):
        _stranger(server).call("POST", f"/api/v1/devices/{device_id}/commands/lock", {})
    assert _audit(server, "lock")[-1]["outcome"] == "denied"
    assert _audit(server, "lock")[-1]["actor"] == "anonymous"
    # manager can cancel; read-only cannot (and that is audited too)
    cmd = manager.call("POST", f"/api/v1/devices/{device_id}/commands/lock", {})
    with pytest.raises(AuthError):
        reader.call("POST", f"/api/v1/commands/{cmd['id']}/cancel")
    assert administrator.call("POST", f"/api/v1/commands/{cmd['id']}/cancel")["cancel"] == (
        "cancelled"
    )
    cancels = [
        a["outcome"]
        for a in reversed(server.ctx.store.list_audit())
        if a["action"] == "POST /api/v1/commands/{command_id}/cancel"
    ]
    assert cancels == ["denied", "ok"]


def _stranger(server: Any) -> Any:
    """An admin client with a token the server never issued."""
    from jcstate.server.api_client import AdminClient

    client = AdminClient(server.url, "jcs_nope_nope")
    server.opened.append(client)
    return client


def test_erase_needs_administrator_and_the_device_id_typed_back(sqlite_server):
    server = sqlite_server
    _, device_id = server.device("stolen-laptop")
    manager, administrator = server.admin("manager"), server.admin("administrator")
    route = f"/api/v1/devices/{device_id}/commands/erase"
    with pytest.raises(AuthError, match="administrator"):
        manager.call("POST", route, {"confirm": device_id})
    with pytest.raises(ServerError, match="422.*confirm"):
        administrator.call("POST", route, {})
    with pytest.raises(ServerError, match="422"):
        administrator.call("POST", route, {"confirm": "stolen-laptop"})  # hostname is not enough
    # named by hostname, confirmed by id: accepted
    made = administrator.call(
        "POST", "/api/v1/devices/stolen-laptop/commands/erase", {"confirm": device_id}
    )
    assert made["action"] == "erase" and made["device"] == device_id
    delivered = server.ctx.queue.deliver(device_id, 0)
    assert delivered[0]["confirm"] == device_id  # the agent refuses an erase without one
    trail = _audit(server, "erase")
    assert [(a["outcome"], a["role"], a["target"]) for a in trail] == [
        ("denied", "manager", device_id),
        ("refused", "administrator", device_id),
        ("refused", "administrator", device_id),
        ("ok", "administrator", device_id),
    ]
    assert "confirm" in trail[1]["detail"]["reason"]


def test_a_revoked_device_gets_no_commands(sqlite_server):
    server = sqlite_server
    _, device_id = server.device("gone")
    administrator = server.admin("administrator")
    administrator.call("POST", f"/api/v1/devices/{device_id}/revoke")
    with pytest.raises(ServerError, match="409"):
        administrator.call("POST", f"/api/v1/devices/{device_id}/commands/lock", {})
    assert _audit(server, "lock")[-1]["outcome"] == "refused"
