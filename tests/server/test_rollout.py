"""Staged rollout (issue 15) through the API, on SQLite and PostgreSQL, with simulated devices:
each signs its own requests with its own key, polls ``/device/work`` and reports a converge
on the etag it was sent, as the agent does. What each device is served is read from its own
work answer, never from the server's internals."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import live
import pytest

from jcstate.errors import AuthError, ServerError
from jcstate.server import rollout

V1 = """\
apiVersion: jcstate/v1
kind: Policy
metadata: {name: base}
spec:
  users:
    - {name: alice, uid: 1501, shell: /bin/bash}
"""
V2 = V1.replace("/bin/bash", "/bin/zsh")
V3 = V1.replace("/bin/bash", "/bin/sh")


class Device:
    """A simulated agent: its own key, the etag it holds, converge reports on that etag."""

    def __init__(self, server: Any, name: str):
        self.client, self.id = server.device(name)
        self.name = name
        self.etag = ""

    def poll(self) -> int | None:
        """The revision this device is served now (its own work answer)."""
        work = self.client.work("", 0)
        self.etag = work["etag"]
        return work["revision"]

    def converge(self, ok: bool = True) -> None:
        self.poll()
        results = (
            []
            if ok
            else [
                {
                    "kind": "user",
                    "name": "alice",
                    "action": "update",
                    "status": "failed",
                    "message": "usermod: shell /bin/zsh does not exist",
                }
            ]
        )
        self.client.report(
            {
                "reportId": os.urandom(8).hex(),
                "etag": self.etag,
                "ok": ok,
                "changed": ok,
                "report": {"results": results, "counts": {"failed": len(results)}},
            }
        )


@pytest.fixture
def fleet_server(database: str, tmp_path: Path) -> Iterator[live.LiveServer]:
    # the canary check runs every 0.2 s here (1 s by default)
    with live.live_server(database, str(tmp_path), rollout_check=0.2) as srv:
        yield srv


def _fleet(server: Any, n: int, ring0: tuple[str, ...] = ()) -> dict[str, Device]:
    """n devices host0…, converged on revision 1; those named in ``ring0`` get ring=0."""
    manager = server.admin("manager")
    devices = {f"host{i}": Device(server, f"host{i}") for i in range(n)}
    for name in ring0:
        manager.call("PUT", f"/api/v1/devices/{devices[name].id}/labels", {"labels": {"ring": "0"}})
    assert manager.call("POST", "/api/v1/revisions", {"files": {"base.yaml": V1}})["revision"] == 1
    for device in devices.values():
        device.converge()
    return devices


def _served(devices: dict[str, Device]) -> dict[str, int | None]:
    return {name: d.poll() for name, d in devices.items()}


def _until(what: Any, timeout: float = 15.0) -> Any:
    """Poll ``what()`` until truthy (the server's check runs on its own clock)."""
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def _state(admin: Any) -> str:
    return admin.call("GET", "/api/v1/rollout")["state"]


def test_a_failing_canary_halts_and_the_rest_stays_on_the_previous_revision(fleet_server):
    server = fleet_server
    devices = _fleet(server, 6, ring0=("host1", "host4"))
    manager = server.admin("manager")
    pushed = manager.call(
        "POST",
        "/api/v1/revisions",
        {"files": {"base.yaml": V2}, "canary": "label:ring=0", "waitSeconds": 0},
    )
    assert pushed["revision"] == 2
    assert pushed["rollout"]["canaryDevices"] == 2 and pushed["rollout"]["previous"] == 1
    served = _served(devices)
    assert served == {"host0": 1, "host1": 2, "host2": 1, "host3": 1, "host4": 2, "host5": 1}
    # what an admin sees a device is sent agrees with what the device gets
    doc = manager.call("GET", f"/api/v1/devices/{devices['host0'].id}/document")
    assert doc["revision"] == 1 and doc["etag"] == devices["host0"].etag
    assert manager.call("GET", f"/api/v1/devices/{devices['host1'].id}/document")["revision"] == 2

    devices["host1"].converge(ok=True)
    devices["host4"].converge(ok=False)  # the report itself triggers the check
    assert _until(lambda: _state(manager) == "halted")
    status = manager.call("GET", "/api/v1/rollout")
    canary, rest = status["waves"]
    assert canary == {
        "name": "canary",
        "revision": 2,
        "devices": 2,
        "pending": 0,
        "converged": 1,
        "failed": 1,
        "offline": 0,
    }
    assert rest["revision"] == 1 and rest["devices"] == 4 and rest["converged"] == 4
    assert "usermod: shell /bin/zsh does not exist" in status["reason"]
    assert "rollout abort" in status["waitingFor"]
    # halted means halted: the rest is still on revision 1 after several checks
    time.sleep(0.6)
    assert _served(devices) == served
    audit = server.admin().call("GET", "/api/v1/audit", action="rollout")
    assert [(a["action"], a["actor"]) for a in audit] == [("rollout.halt", "server")]

    # one rollout at a time: a push, a staged push and a rollback are refused while it is open
    for path, body in (
        ("/api/v1/revisions", {"files": {"base.yaml": V3}}),
        ("/api/v1/revisions", {"files": {"base.yaml": V3}, "canary": "50%"}),
        ("/api/v1/revisions/1/rollback", {}),
    ):
        with pytest.raises(ServerError, match="409.*rollout 1 of revision 2 is in progress"):
            manager.call("POST", path, body)
    with pytest.raises(ServerError, match="409.*halted"):
        manager.call("POST", "/api/v1/rollout/promote", {})

    aborted = manager.call("POST", "/api/v1/rollout/abort", {"message": "zsh is missing"})
    assert aborted["state"] == "aborted" and aborted["reason"] == "zsh is missing"
    assert set(_served(devices).values()) == {1}  # canaries included
    assert manager.call("GET", "/api/v1/revisions")[0]["id"] == 2  # history keeps it
    with pytest.raises(ServerError, match="409.*no rollout is in progress"):
        manager.call("POST", "/api/v1/rollout/abort", {})
    # the next rollout stages against revision 1, not the aborted 2
    again = manager.call(
        "POST", "/api/v1/revisions", {"files": {"base.yaml": V3}, "canary": "label:ring=0"}
    )
    assert again["revision"] == 3 and again["rollout"]["previous"] == 1


def test_good_canaries_promote_after_the_wait(fleet_server):
    server = fleet_server
    devices = _fleet(server, 5)
    manager = server.admin("manager")
    pushed = manager.call(
        "POST",
        "/api/v1/revisions",
        {"files": {"base.yaml": V2}, "canary": "40%", "waitSeconds": 2},
    )
    served = _served(devices)
    canaries = sorted(n for n, r in served.items() if r == 2)
    assert len(canaries) == 2 == pushed["rollout"]["canaryDevices"]  # ceil(40% of 5)
    assert sorted(n for n, r in served.items() if r == 1) == sorted(set(devices) - set(canaries))
    status = manager.call("GET", "/api/v1/rollout")
    assert status["waves"][0]["pending"] == 2 and "2 canaries to converge" in status["waitingFor"]

    devices[canaries[0]].converge()
    time.sleep(0.6)  # one canary is not enough
    assert _state(manager) == "canary" and _served(devices) == served
    devices[canaries[1]].converge()
    converged_at = time.time()
    status = _until(lambda: (s := manager.call("GET", "/api/v1/rollout"))["promotesAt"] and s)
    assert "the wait" in status["waitingFor"]
    assert _served(devices) == served  # during the wait, the rest has not moved
    assert _until(lambda: _state(manager) == "promoted")
    assert time.time() - converged_at >= 2.0
    assert set(_served(devices).values()) == {2}
    status = manager.call("GET", "/api/v1/rollout")
    assert status["endedBy"] == "server" and status["waitingFor"] is None
    assert status["waves"][1]["revision"] == 2 and status["waves"][1]["pending"] == 3
    audit = server.admin().call("GET", "/api/v1/audit", action="rollout.promote")
    assert [a["actor"] for a in audit] == ["server"]
    # finished: pushes are accepted again
    assert manager.call("POST", "/api/v1/revisions", {"files": {"base.yaml": V3}})["revision"] == 3


def test_halt_on_counts_failed_canaries(fleet_server):
    server = fleet_server
    devices = _fleet(server, 4, ring0=("host0", "host1", "host2"))
    manager = server.admin("manager")
    manager.call(
        "POST",
        "/api/v1/revisions",
        {"files": {"base.yaml": V2}, "canary": "label:ring=0", "waitSeconds": 60, "haltOn": 2},
    )
    devices["host0"].converge(ok=False)
    time.sleep(0.6)
    assert _state(manager) == "canary"  # one failure of the two it takes
    devices["host1"].converge(ok=False)
    assert _until(lambda: _state(manager) == "halted")
    assert _served(devices)["host3"] == 1


def test_promote_now_and_promote_a_halted_rollout_only_with_force(fleet_server):
    server = fleet_server
    devices = _fleet(server, 3, ring0=("host0",))
    manager = server.admin("manager")
    manager.call(
        "POST",
        "/api/v1/revisions",
        {"files": {"base.yaml": V2}, "canary": "label:ring=0", "waitSeconds": 3600},
    )
    with pytest.raises(AuthError, match="needs the manager role"):
        server.admin("read-only").call("POST", "/api/v1/rollout/promote", {})
    promoted = manager.call("POST", "/api/v1/rollout/promote", {"message": "change window"})
    assert promoted["state"] == "promoted" and promoted["reason"] == "change window"
    assert set(_served(devices).values()) == {2}  # no canary had even converged

    manager.call(
        "POST",
        "/api/v1/revisions",
        {"files": {"base.yaml": V3}, "canary": "label:ring=0", "waitSeconds": 3600},
    )
    devices["host0"].converge(ok=False)
    _until(lambda: _state(manager) == "halted")
    forced = manager.call("POST", "/api/v1/rollout/promote", {"force": True})
    assert forced["state"] == "promoted" and set(_served(devices).values()) == {3}
    rows = server.admin().call("GET", "/api/v1/audit", action="rollout.promote")
    assert [r["detail"].get("forced") for r in rows] == [True, False, None]
    assert [r["outcome"] for r in rows] == ["ok", "ok", "denied"]  # the read-only token's try


def test_offline_canaries_block_and_new_devices_join_the_rest(fleet_server):
    server = fleet_server
    devices = _fleet(server, 3, ring0=("host0",))
    manager = server.admin("manager")
    manager.call(
        "POST",
        "/api/v1/revisions",
        {"files": {"base.yaml": V2}, "canary": "label:ring=0", "waitSeconds": 0},
    )
    late = Device(server, "late")  # enrolled during the rollout: the rest wave
    manager.call("PUT", f"/api/v1/devices/{late.id}/labels", {"labels": {"ring": "0"}})
    assert late.poll() == 1
    status = manager.call("GET", "/api/v1/rollout")
    assert status["waves"][0]["devices"] == 1 and status["waves"][1]["devices"] == 3
    # a canary that stops polling is offline, and the rollout waits for it
    store = server.ctx.store
    store.flush_seen()
    store._seen.pop(devices["host0"].id, None)
    store.set_device(devices["host0"].id, last_seen=time.time() - 3600)
    status = manager.call("GET", "/api/v1/rollout")
    assert status["waves"][0]["offline"] == 1 and "offline: host0" in status["waitingFor"]
    time.sleep(0.6)
    assert _state(manager) == "canary"
    devices["host0"].converge()  # back, and it gets the canary revision
    assert _until(lambda: _state(manager) == "promoted")
    assert late.poll() == 2


def test_refusals_say_what_to_do(fleet_server):
    server = fleet_server
    manager = server.admin("manager")
    with pytest.raises(ServerError, match="404.*no staged rollout yet"):
        manager.call("GET", "/api/v1/rollout")
    Device(server, "web1").poll()
    with pytest.raises(ServerError, match="422.*push once without --canary"):
        manager.call("POST", "/api/v1/revisions", {"files": {"base.yaml": V1}, "canary": "5%"})
    assert manager.call("GET", "/api/v1/revisions") == []  # nothing stored
    manager.call("POST", "/api/v1/revisions", {"files": {"base.yaml": V1}})
    with pytest.raises(ServerError, match="422.*label:ring=9 has no active device"):
        manager.call(
            "POST", "/api/v1/revisions", {"files": {"base.yaml": V2}, "canary": "label:ring=9"}
        )
    for bad in ("0%", "101%", "label:ring"):
        with pytest.raises(ServerError, match="422"):
            manager.call("POST", "/api/v1/revisions", {"files": {"base.yaml": V2}, "canary": bad})
    assert [r["id"] for r in manager.call("GET", "/api/v1/revisions")] == [1]


def test_dry_run_shows_the_waves_the_push_then_uses(fleet_server):
    server = fleet_server
    devices = _fleet(server, 10)
    manager = server.admin("manager")
    body = {"files": {"base.yaml": V2}, "canary": "20%", "waitSeconds": 600}
    dry = manager.call("POST", "/api/v1/revisions", {**body, "dryRun": True})
    assert dry["revision"] is None and dry["rollout"]["refused"] is None
    assert dry["rollout"]["waves"] == [
        {"name": "canary", "devices": 2},
        {"name": "rest", "devices": 8},
    ]
    waves = [d["wave"] for d in dry["devices"]]
    assert waves == ["canary"] * 2 + ["rest"] * 8  # canaries listed first
    planned = {d["hostname"] for d in dry["devices"] if d["wave"] == "canary"}
    assert manager.call("POST", "/api/v1/revisions", {**body, "dryRun": True}) == dry
    manager.call("POST", "/api/v1/revisions", body)
    assert {n for n, r in _served(devices).items() if r == 2} == planned
    # while it runs, a dry run says the push would be refused
    again = manager.call("POST", "/api/v1/revisions", {**body, "dryRun": True})
    assert "in progress" in again["rollout"]["refused"]


def test_percentage_choice_is_deterministic_and_spread():
    fleet = [{"id": f"{i:016x}", "labels": {}} for i in range(200)]
    seed = rollout.seed_of({"base.yaml": V2})
    first = rollout.choose_canaries("5%", fleet, seed)
    assert len(first) == 10
    assert rollout.choose_canaries("5%", list(reversed(fleet)), seed) == first  # order-free
    assert rollout.choose_canaries("5%", fleet, rollout.seed_of({"base.yaml": V2})) == first
    other = rollout.choose_canaries("5%", fleet, rollout.seed_of({"base.yaml": V3}))
    assert other != first  # another content, another sample
    assert len(rollout.choose_canaries("0.1%", fleet, seed)) == 1  # at least one device
    assert len(rollout.choose_canaries("100%", fleet, seed)) == 200
    assert rollout.choose_canaries("12.5%", fleet[:8], seed)[0] in {d["id"] for d in fleet}
    labelled = [{"id": "a", "labels": {"ring": "0"}}, {"id": "b", "labels": {"ring": "1"}}]
    assert rollout.choose_canaries("label:ring=0", labelled, seed) == ["a"]
    with pytest.raises(rollout.RolloutError, match="label:KEY=VALUE"):
        rollout.parse_canary("label:=x")


def test_several_servers_promote_once(fleet_server):
    """Server processes sharing one database all run the check: one promotion, one audit."""
    server = fleet_server
    devices = _fleet(server, 2, ring0=("host0",))
    manager = server.admin("manager")
    # a long wait so the server's own loop does not promote before the racing checks
    manager.call(
        "POST",
        "/api/v1/revisions",
        {"files": {"base.yaml": V2}, "canary": "label:ring=0", "waitSeconds": 3600},
    )
    devices["host0"].converge()
    ctx = server.ctx
    _until(lambda: manager.call("GET", "/api/v1/rollout")["canariesOkAt"])
    later = time.time() + 7200
    outcomes: list[str | None] = []
    barrier = threading.Barrier(6)

    def race() -> None:
        barrier.wait()
        outcomes.append(rollout.check(ctx, now=later))

    threads = [threading.Thread(target=race) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("promoted") == 1 and outcomes.count(None) == 5
    rows = server.admin().call("GET", "/api/v1/audit", action="rollout.promote")
    assert len(rows) == 1


def test_totp_enrollment_follows_the_revisions_devices_are_sent(fleet_server):
    """A secret for a user only a rollout's revision lists in sshMfa: enrolled while its
    canaries are sent it; refused (409, no device would get it) once the rollout is aborted,
    though the aborted revision is still the newest."""
    server = fleet_server
    _fleet(server, 2, ring0=("host1",))
    manager = server.admin("manager")
    mfa = V1 + "  sshMfa: {users: [alice]}\n"
    manager.call(
        "POST", "/api/v1/revisions", {"files": {"base.yaml": mfa}, "canary": "label:ring=0"}
    )
    assert manager.call("POST", "/api/v1/totp/alice")["secret"]
    manager.call("DELETE", "/api/v1/totp/alice")
    manager.call("POST", "/api/v1/rollout/abort", {})
    assert manager.call("GET", "/api/v1/revisions")[0]["id"] == 2  # the newest, aborted
    with pytest.raises(ServerError, match="409.*no policy lists alice"):
        manager.call("POST", "/api/v1/totp/alice")
