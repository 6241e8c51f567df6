"""The security-command queue on a live server, on SQLite and on PostgreSQL: order, delivery,
redelivery, cancel before and after delivery, no expiry, one result per (device, command id),
the long-poll wake, and what admins see (command show, device show, activity)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import live
import pytest

from jcstate.errors import ServerError
from jcstate.server.views import from_rfc3339

DAY = 86400.0


class Clock:
    """The queue's clock, moved by hand."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def server(database: str, tmp_path: Path, clock: Clock) -> Iterator[live.LiveServer]:
    with live.live_server(database, str(tmp_path), clock=clock) as srv:
        yield srv


def issue(admin: Any, device: str, action: str, **body: Any) -> dict[str, Any]:
    return admin.call("POST", f"/api/v1/devices/{device}/commands/{action}", body)


def result(command: dict[str, Any], status: str = "succeeded", **extra: Any) -> dict[str, Any]:
    return {"id": command["id"], "action": command["action"], "status": status, **extra}


def test_commands_are_delivered_in_order_and_again_until_a_result_comes(server):
    admin = server.admin("manager")
    client, device_id = server.device("laptop1")
    first = issue(admin, "laptop1", "lock")
    second = issue(admin, device_id, "run", run={"argv": ["id", "-u"]})
    third = issue(admin, device_id, "shutdown", delay=0)
    assert first["state"] == "queued" and first["device"] == device_id
    work = client.work("", 0, 0)
    got = work["commands"]
    assert [c["id"] for c in got] == [first["id"], second["id"], third["id"]]
    assert [c["seq"] for c in got] == sorted(c["seq"] for c in got)
    assert got[1]["run"] == {"argv": ["id", "-u"], "timeout": 300}
    assert got[2]["delay"] == 0
    shown = admin.call("GET", f"/api/v1/commands/{first['id']}")
    # sent, not delivered: the device has not acknowledged it yet
    assert (shown["state"], shown["deliveries"], shown["deliveredAt"]) == ("queued", 1, None)
    assert shown["sentAt"] >= shown["createdAt"]
    # past the cursor: nothing new, and the cursor acknowledges all three
    assert client.work(work["etag"], 0, got[-1]["seq"])["commands"] == []
    for cmd in (first, second, third):
        shown = admin.call("GET", f"/api/v1/commands/{cmd['id']}")
        assert shown["state"] == "delivered" and shown["deliveredAt"] >= shown["sentAt"]
    # an agent that restarted (cursor 0) gets every unfinished one again, in order
    again = client.work(work["etag"], 0, 0)["commands"]
    assert [c["id"] for c in again] == [c["id"] for c in got]
    # results: the first final result is kept, a resend changes nothing
    answer = client.command_results([result(got[0]), result(got[1], exitCode=0, stdout="0\n")])
    assert answer == {"acks": [first["id"], second["id"]], "duplicates": []}
    resend = client.command_results([result(got[1], "failed", exitCode=3, stdout="other")])
    assert resend == {"acks": [second["id"]], "duplicates": [second["id"]]}
    shown = admin.call("GET", f"/api/v1/commands/{second['id']}")
    assert (shown["state"], shown["exitCode"], shown["stdout"]) == ("succeeded", 0, "0\n")
    assert shown["finishedAt"] >= shown["deliveredAt"] >= shown["createdAt"]
    # only the unfinished one is still delivered to a restarted agent
    assert [c["id"] for c in client.work(work["etag"], 0, 0)["commands"]] == [third["id"]]
    # an agent that sends no cursor (older agents) is sent no commands
    assert client.work(work["etag"], 0)["commands"] == []


def test_running_then_final(server):
    admin = server.admin("manager")
    client, device_id = server.device("laptop2")
    cmd = issue(admin, device_id, "restart", delay=0)
    [got] = client.work("", 0, 0)["commands"]
    client.command_results([result(got, "running")])
    shown = admin.call("GET", f"/api/v1/devices/{device_id}")
    assert shown["activity"] == "restarting"
    assert shown["commands"][0]["state"] == "running" and shown["commands"][0]["runningAt"]
    client.command_results([result(got, "succeeded", message="the device restarted")])
    shown = admin.call("GET", f"/api/v1/devices/{device_id}")
    assert shown["commands"][0]["state"] == "succeeded" and shown["activity"] is None
    assert admin.call("GET", f"/api/v1/commands/{cmd['id']}")["message"] == ("the device restarted")


def test_shutdown_shows_until_the_device_reports_again(server):
    admin = server.admin("manager")
    client, device_id = server.device("laptop3")
    issue(admin, device_id, "shutdown", delay=0)
    [got] = client.work("", 0, 0)["commands"]
    assert admin.call("GET", "/api/v1/devices")[0]["activity"] is None  # sent, not acknowledged
    client.work("", 0, got["seq"])  # the device's next request acknowledges it
    assert admin.call("GET", "/api/v1/devices")[0]["activity"] == "shutting down"
    client.command_results([result(got)])
    assert admin.call("GET", f"/api/v1/devices/{device_id}")["activity"] == "shutting down"
    time.sleep(0.05)
    client.report({"reportId": "r" * 16, "ok": True})  # the device is back and converged
    assert admin.call("GET", f"/api/v1/devices/{device_id}")["activity"] is None


def test_cancel_before_delivery_means_never_delivered(server):
    admin = server.admin("manager")
    client, device_id = server.device("laptop4")
    cmd = issue(admin, device_id, "lock")
    keep = issue(admin, device_id, "lock")
    answer = admin.call("POST", f"/api/v1/commands/{cmd['id']}/cancel")
    assert (answer["cancel"], answer["state"]) == ("cancelled", "cancelled")
    assert [c["id"] for c in client.work("", 0, 0)["commands"]] == [keep["id"]]
    assert admin.call("GET", f"/api/v1/commands/{cmd['id']}")["deliveredAt"] is None


def test_cancel_after_delivery_is_requested_and_a_late_result_is_stored(server):
    admin = server.admin("manager")
    client, device_id = server.device("laptop5")
    cmd = issue(admin, device_id, "run", run={"command": "sleep 5"})
    [got] = client.work("", 0, 0)["commands"]
    client.work("", 0, got["seq"])  # acknowledged: the device has it
    answer = admin.call("POST", f"/api/v1/commands/{cmd['id']}/cancel")
    assert (answer["cancel"], answer["state"], answer["cancelRequested"]) == (
        "cancel-requested",
        "delivered",
        True,
    )
    client.command_results([result(got, exitCode=0)])  # it had run: its result still counts
    assert client.work("", 0, 0)["commands"] == []  # not delivered again
    shown = admin.call("GET", f"/api/v1/commands/{cmd['id']}")
    assert (shown["state"], shown["cancelRequested"], shown["exitCode"]) == (
        "succeeded",
        True,
        0,
    )
    again = admin.call("POST", f"/api/v1/commands/{cmd['id']}/cancel")
    assert again["cancel"] == "already succeeded"


def test_a_vanished_agent_never_makes_a_command_look_delivered(server):
    """The answer carrying the commands leaves, the agent dies before reading it: the commands
    stay queued (sent, awaiting device), a restart shows no activity; the agent's next request
    acknowledges them, or its "running" note does."""
    admin = server.admin("manager")
    client, device_id = server.device("vanishes")
    restart = issue(admin, device_id, "restart", delay=0)
    lock = issue(admin, device_id, "lock")
    sent = client.work("", 0, 0)["commands"]
    assert [c["id"] for c in sent] == [restart["id"], lock["id"]]
    for _ in range(2):  # answered again to an agent that restarted: still not acknowledged
        assert len(client.work("", 0, 0)["commands"]) == 2
    shown = admin.call("GET", f"/api/v1/devices/{device_id}")
    assert shown["activity"] is None
    assert [(c["state"], c["deliveredAt"], c["deliveries"]) for c in shown["commands"]] == [
        ("queued", None, 3),
        ("queued", None, 3),
    ]
    assert all(c["sentAt"] for c in shown["commands"])
    # the agent handled the restart (cursor at it): delivered; the lock is not acknowledged
    client.work("", 0, sent[0]["seq"])
    states = {c["id"]: c["state"] for c in admin.call("GET", "/api/v1/commands")}
    assert (states[restart["id"]], states[lock["id"]]) == ("delivered", "queued")
    assert admin.call("GET", f"/api/v1/devices/{device_id}")["activity"] == "restarting"
    # a "running" note acknowledges too
    client.command_results([result(sent[1], "running")])
    shown = admin.call("GET", f"/api/v1/commands/{lock['id']}")
    assert shown["state"] == "running" and shown["deliveredAt"] is not None


def test_a_command_acknowledged_only_by_a_cursor_after_it_was_sent(server):
    """A cursor past a command the device was never sent (a commit that came late) does not
    acknowledge it: it is sent next, and stays queued until acknowledged."""
    admin = server.admin("manager")
    client, device_id = server.device("cursor")
    cmd = issue(admin, device_id, "lock")
    assert client.work("", 0, cmd["seq"] + 5)["commands"] == []
    assert admin.call("GET", f"/api/v1/commands/{cmd['id']}")["state"] == "queued"


def test_cancel_of_a_command_the_device_never_acknowledged_is_outright(server):
    admin = server.admin("manager")
    client, device_id = server.device("outright")
    cmd = issue(admin, device_id, "run", run={"argv": ["true"]})
    [got] = client.work("", 0, 0)["commands"]  # sent; the device never says it has it
    answer = admin.call("POST", f"/api/v1/commands/{cmd['id']}/cancel")
    assert (answer["cancel"], answer["state"], answer["cancelRequested"]) == (
        "cancelled",
        "cancelled",
        False,
    )
    assert client.work("", 0, 0)["commands"] == []
    # it had read the answer after all and ran it: the truth replaces the cancel
    client.command_results([result(got, exitCode=0, stdout="ran\n")])
    shown = admin.call("GET", f"/api/v1/commands/{cmd['id']}")
    assert (shown["state"], shown["cancelRequested"], shown["stdout"]) == (
        "succeeded",
        True,
        "ran\n",
    )
    # a command never sent that is cancelled takes no late result
    never = issue(admin, device_id, "lock")
    admin.call("POST", f"/api/v1/commands/{never['id']}/cancel")
    client.command_results([result(never)])
    assert admin.call("GET", f"/api/v1/commands/{never['id']}")["state"] == "cancelled"


def test_cancel_requested_settles_when_the_device_asks_again_without_a_result(server):
    """No state pending for ever: the device has the command, the cancel is requested; a poll
    held from before the cancel settles nothing, the device's next request without a result
    settles it cancelled. A restart under way waits for its result instead."""
    admin = server.admin("manager")
    client, device_id = server.device("settles")
    run = issue(admin, device_id, "run", run={"command": "sleep 600"})
    restart = issue(admin, device_id, "restart", delay=0)
    sent = client.work("", 0, 0)["commands"]
    etag = client.work("", 0, sent[-1]["seq"])["etag"]  # acknowledged both
    client.command_results([result(sent[1], "running")])
    held: dict[str, Any] = {}
    poll = threading.Thread(target=lambda: held.update(client.work(etag, 2, sent[-1]["seq"])))
    poll.start()
    time.sleep(0.5)
    for cmd in (run, restart):
        answer = admin.call("POST", f"/api/v1/commands/{cmd['id']}/cancel")
        assert answer["cancel"] == "cancel-requested"
    poll.join()
    assert held["commands"] == []
    shown = admin.call("GET", f"/api/v1/commands/{run['id']}")
    assert shown["state"] == "delivered" and shown["cancelRequestedAt"]  # that poll began before
    client.work(etag, 0, sent[-1]["seq"])  # a request begun after the cancel, no result
    shown = admin.call("GET", f"/api/v1/commands/{run['id']}")
    assert shown["state"] == "cancelled" and "without a result" in shown["message"]
    assert admin.call("GET", f"/api/v1/commands/{restart['id']}")["state"] == "running"
    assert admin.call("GET", f"/api/v1/devices/{device_id}")["activity"] == "restarting"
    client.command_results([result(sent[1], message="the device restarted")])
    assert admin.call("GET", f"/api/v1/commands/{restart['id']}")["state"] == "succeeded"


def test_no_expiry_a_month_offline_unless_not_after(server, clock):
    admin = server.admin("manager")
    client, device_id = server.device("traveller")
    soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + DAY))
    waits = issue(admin, device_id, "lock")
    lapses = issue(admin, device_id, "run", run={"argv": ["true"]}, notAfter=soon)
    later = issue(admin, device_id, "restart")
    clock.offset = 30 * DAY  # the device comes back a month later
    got = client.work("", 0, 0)["commands"]
    assert [c["id"] for c in got] == [waits["id"], later["id"]]
    shown = admin.call("GET", f"/api/v1/commands/{lapses['id']}")
    assert shown["state"] == "failed" and "notAfter" in shown["message"]
    assert shown["deliveredAt"] is None and shown["sentAt"] is None
    sent = admin.call("GET", f"/api/v1/commands/{waits['id']}")["sentAt"]
    assert from_rfc3339(sent) >= time.time() + 29 * DAY


def test_a_held_poll_gets_a_new_command_within_a_second(server):
    admin = server.admin("manager")
    client, device_id = server.device("online")
    etag = client.work("", 0, 0)["etag"]
    got: dict[str, Any] = {}

    def poll() -> None:
        got["work"] = client.work(etag, 20, 0)
        got["at"] = time.monotonic()

    waiter = threading.Thread(target=poll)
    waiter.start()
    time.sleep(0.5)  # the poll is held
    sent = time.monotonic()
    cmd = issue(admin, device_id, "lock")
    waiter.join(10)
    assert [c["id"] for c in got["work"]["commands"]] == [cmd["id"]]
    assert got["at"] - sent < 1.0, f"delivered after {got['at'] - sent:.2f} s"


def test_results_of_policy_commands_are_kept_once(server):
    admin = server.admin("read-only")
    client, device_id = server.device("pol")
    sent = {
        "id": "rotate-logs-2026-11",
        "action": "run",
        "status": "failed",
        "exitCode": 2,
        "stderr": "x" * 100_000,
    }
    assert client.command_results([sent])["duplicates"] == []
    assert client.command_results([sent])["duplicates"] == ["rotate-logs-2026-11"]
    [row] = admin.call("GET", "/api/v1/commands", device=device_id)
    assert (row["source"], row["state"], row["exitCode"]) == ("policy", "failed", 2)
    assert len(row["stderr"]) == 64 * 1024 and row["truncated"] is True
    # another device with the same policy: its own row; show then needs the device
    other, other_id = server.device("pol2")
    other.command_results([sent])
    with pytest.raises(ServerError, match="409"):
        admin.call("GET", "/api/v1/commands/rotate-logs-2026-11")
    shown = admin.call("GET", "/api/v1/commands/rotate-logs-2026-11", device="pol2")
    assert shown["device"] == other_id


def test_a_device_cannot_settle_another_devices_command(server):
    admin = server.admin("manager")
    victim, victim_id = server.device("victim")
    attacker, _ = server.device("attacker")
    cmd = issue(admin, victim_id, "lock")
    attacker.command_results([result(cmd)])
    assert admin.call("GET", f"/api/v1/commands/{cmd['id']}", device=victim_id)["state"] == (
        "queued"
    )
    assert attacker.work("", 0, 0)["commands"] == []


def test_a_retry_with_the_same_id_is_the_same_command(server):
    admin = server.admin("manager")
    _, device_id = server.device("retry")
    first = issue(admin, device_id, "lock", id="incident-7-lock")
    again = issue(admin, device_id, "lock", id="incident-7-lock")
    assert (first["created"], again["created"]) == (True, False)
    assert first["seq"] == again["seq"]
    with pytest.raises(ServerError, match="409"):
        issue(admin, device_id, "restart", id="incident-7-lock")
    assert len(admin.call("GET", "/api/v1/commands", device=device_id)) == 1


def test_invalid_commands_are_refused_and_audited(server):
    admin = server.admin("administrator")
    _, device_id = server.device("bad")
    with pytest.raises(ServerError, match="422"):
        issue(admin, device_id, "run", run={"argv": []})
    with pytest.raises(ServerError, match="422"):
        issue(admin, device_id, "run")  # no program
    with pytest.raises(ServerError, match="422"):
        issue(admin, device_id, "lock", run={"argv": ["true"]})
    with pytest.raises(ServerError, match="404"):
        issue(admin, "no-such-host", "lock")
    refused = [a for a in server.ctx.store.list_audit() if a["outcome"] == "refused"]
    assert len(refused) == 4
    assert all(a["action"].startswith("POST /api/v1/devices/{ref}/commands/") for a in refused)
