"""``POST /api/v1/devices/{ref}/commands/elevate``: manager or above, reason required and
audited, the end computed by the server, a retry with the same id safe. What the device does
with it: tests/agent/test_agent_expiry.py and tests/e2e/test_timebound_e2e.py."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from jcstate.errors import AuthError, ServerError

ROUTE = "/api/v1/devices/{}/commands/elevate"


def _audit(server: Any) -> list[dict[str, Any]]:
    return [
        a
        for a in reversed(server.ctx.store.list_audit())
        if a["action"] == "POST /api/v1/devices/{ref}/commands/elevate"
    ]


def test_an_elevation_is_queued_with_its_end_and_audited_with_its_reason(sqlite_server):
    server = sqlite_server
    _, device_id = server.device("jit1")
    manager = server.admin("manager")
    with pytest.raises(AuthError):
        server.admin("read-only").call(
            "POST", ROUTE.format(device_id), {"user": "alice", "seconds": 60, "reason": "x"}
        )
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    made = manager.call(
        "POST",
        ROUTE.format(device_id),
        {"id": "jit-1", "user": "alice", "seconds": 7200, "reason": "INC-4711"},
    )
    grant = made["elevate"]
    until = dt.datetime.fromisoformat(grant["until"].replace("Z", "+00:00"))
    assert before + dt.timedelta(seconds=7200) <= until <= before + dt.timedelta(seconds=7202)
    assert (made["action"], grant["user"], grant["seconds"], grant["reason"]) == (
        "elevate",
        "alice",
        7200,
        "INC-4711",
    )
    trail = _audit(server)
    assert [(a["outcome"], a["role"]) for a in trail] == [
        ("denied", "read-only"),
        ("ok", "manager"),
    ]
    detail = trail[1]["detail"]
    assert (detail["user"], detail["reason"], detail["until"]) == (
        "alice",
        "INC-4711",
        grant["until"],
    )
    # a retry with the same id returns the same command, even a second later
    again = manager.call(
        "POST",
        ROUTE.format(device_id),
        {"id": "jit-1", "user": "alice", "seconds": 7200, "reason": "INC-4711"},
    )
    assert again["id"] == "jit-1" and again["created"] is False
    assert again["elevate"]["until"] == grant["until"]
    revoke = manager.call("POST", ROUTE.format(device_id), {"user": "alice", "revoke": True})
    assert revoke["elevate"] == {"user": "alice", "revoke": True}


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"user": "alice", "seconds": 60}, "needs a reason"),
        ({"user": "alice", "seconds": 60, "reason": "   "}, "needs a reason"),
        ({"user": "alice", "reason": "x"}, "needs seconds"),
        ({"user": "alice", "revoke": True, "seconds": 60}, "takes no seconds"),
        ({"user": "a/b", "seconds": 60, "reason": "x"}, "account name"),
        ({"user": "alice", "seconds": 31 * 86400, "reason": "x"}, ""),
    ],
)
def test_a_bad_elevation_is_refused(sqlite_server, body, words):
    _, device_id = sqlite_server.device("jit2")
    with pytest.raises(ServerError, match="422") as caught:
        sqlite_server.admin("manager").call("POST", ROUTE.format(device_id), body)
    assert words in str(caught.value)
