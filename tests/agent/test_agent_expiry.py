"""Time-bound admin in the agent: its clock, its timer, offline expiry and elevations.

The clock tests give :class:`Clock` fake wall and boot clocks. The agent tests run the real
:class:`Agent` (its state directory, outbox and command handling) with the converge worker
replaced by a recorder, against a server that is not there (offline). The worker test runs
the real worker on a system image (tests/agent/recording_actions.py ``prepare_root``).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from recording_actions import prepare_root

from jcstate.agent import worker
from jcstate.agent.expiry import Clock, Expiries, instant, managed_user, text
from jcstate.agent.loop import Agent, AgentConfig
from jcstate.modules.commands import ElevateSpec

W = 1_800_000_000.0  # 2027-01-15T08:00:00Z


class FakeClocks:
    """A wall clock that a test steps, and a boot-time clock that only moves forward."""

    def __init__(self, wall: float = W, boot: float = 100.0, boot_id: str | None = "b1"):
        self.wall, self.boot, self.boot_id = wall, boot, boot_id

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.boot += seconds

    def clock(self, state: Path) -> Clock:
        return Clock(
            str(state),
            wall=lambda: self.wall,
            since_boot=lambda: self.boot,
            boot_id=lambda: self.boot_id,
        )


# -- the clock -------------------------------------------------------------------------------
def test_a_step_backwards_does_not_move_the_clock_back(tmp_path: Path) -> None:
    fake = FakeClocks()
    clock = fake.clock(tmp_path)
    assert clock.now() == W
    fake.advance(10)
    fake.wall -= 3600  # an admin (or an attacker) sets the clock back an hour
    assert clock.now() == W + 10
    fake.advance(5)
    assert clock.now() == W + 15  # and it keeps running
    fake.wall += 7200  # set forward: the clock follows (rights end early: the safe side)
    assert clock.now() == fake.wall


def test_the_floor_survives_an_agent_restart_and_a_reboot(tmp_path: Path) -> None:
    fake = FakeClocks()
    fake.clock(tmp_path).save()  # vouches for W at boot time 100
    fake.advance(20)
    fake.wall = W - 86400  # restarted agent, clock a day back, same boot
    assert fake.clock(tmp_path).now() == W + 20
    # a reboot (new boot id): at least the time since boot has passed since W
    rebooted = FakeClocks(wall=W - 86400, boot=30, boot_id="b2")
    assert rebooted.clock(tmp_path).now() == W + 30
    # no boot id (macOS, Windows): a boot clock that went back means a reboot
    no_id = FakeClocks(wall=W - 86400, boot=7, boot_id=None)
    assert no_id.clock(tmp_path).now() == W + 7
    # a wall clock ahead of the floor wins
    assert FakeClocks(wall=W + 999, boot=120).clock(tmp_path).now() == W + 999


# -- what ends when --------------------------------------------------------------------------
DOC = {
    "spec": {
        "users": [
            {"name": "alice", "admin": {"until": text(W + 60)}, "password": {"hash": "$6$x"}},
            {"name": "bob"},
            {"name": "carol", "admin": True},
            {"name": "mallory", "state": "absent"},
        ]
    }
}


def test_expiries_know_the_next_instant_what_is_due_and_merge_elevations(tmp_path: Path) -> None:
    ex = Expiries(str(tmp_path))
    ex.remember(DOC, "etag-1")
    assert "password" not in json.dumps(ex.document)  # never kept on disk
    assert ex.next(W) == W + 60 and ex.seconds_to_next(W) == 60
    ex.grant("bob", W + 30, "INC-1")
    assert ex.next(W) == W + 30 and ex.due(W + 45) == [W + 30]
    # due and not enforced yet (a converge that failed): the timer waits for the next instant,
    # never 0 s in a loop; the round retries what is due
    assert ex.seconds_to_next(W + 45) == 15
    merged = ex.merged(DOC, W)
    assert merged is not None
    by_name = {u["name"]: u for u in merged["spec"]["users"]}
    assert by_name["bob"]["admin"] == {"until": text(W + 30)}
    assert by_name["carol"]["admin"] is True  # a standing right is left as it is
    assert DOC["spec"]["users"][1] == {"name": "bob"}  # the agent's copy is untouched
    ex.grant("alice", W + 10, None)  # shorter than the policy's own: the policy's stays
    assert ex.merged(DOC, W)["spec"]["users"][0]["admin"] == {"until": text(W + 60)}
    ex.enforced_at(W + 45)
    assert set(ex.elevations) == set() and ex.due(W + 45) == []
    assert ex.due(W + 61) == [W + 60]
    again = Expiries(str(tmp_path))  # persisted
    assert again.enforced == W + 45 and again.etag == "etag-1" and again.document == ex.document
    assert managed_user(DOC, "bob") is not None
    assert managed_user(DOC, "mallory") is None and managed_user(DOC, "eve") is None


# -- the agent -------------------------------------------------------------------------------
class Recorder:
    """Stands in for the converge worker: keeps each request, answers ``ok``."""

    def __init__(self, status: str = "ok"):
        self.requests: list[dict[str, Any]] = []
        self.status = status

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(request)
        users = ((request.get("document") or {}).get("spec") or {}).get("users") or []
        results = [
            {"kind": "users", "name": u["name"], "status": self.status, "message": "refused: x"}
            for u in users
            if isinstance(u.get("admin"), dict)
        ]
        return {"ok": True, "changed": True, "report": {"results": results}, "facts": {}}


def _agent(tmp_path: Path, fake: FakeClocks) -> tuple[Agent, Recorder]:
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    config = AgentConfig(
        server="http://127.0.0.1:9",  # nothing listens: the agent is offline
        state_dir=str(state),
        log_file=None,
        install_dir=str(tmp_path / "opt"),
        root=prepare_root(str(tmp_path / "root")),
        max_backoff=300,
    )
    agent = Agent(config)
    agent.clock = fake.clock(state)
    recorder = Recorder()
    agent._work = recorder  # type: ignore[method-assign]
    return agent, recorder


def _users(request: dict[str, Any]) -> dict[str, Any]:
    return {u["name"]: u for u in request["document"]["spec"]["users"]}


def test_a_restart_while_offline_still_takes_an_ended_right_away(tmp_path: Path) -> None:
    fake = FakeClocks()
    first, _ = _agent(tmp_path, fake)
    first.expiries.remember(DOC, "etag-7")
    assert first.enforce_expiry() is False  # a round: nothing ended; the clock's floor saved
    first.close()
    fake.advance(61)  # the agent was down when the right ended (W + 60)
    fake.wall -= 3600  # and the clock was set back meanwhile
    agent, recorder = _agent(tmp_path, fake)
    assert agent._document is None  # no server: nothing in memory
    assert agent.enforce_expiry() is True
    (request,) = recorder.requests
    assert request["mode"] == "expire" and request["secrets"] == {}
    assert request["now"] >= W + 60
    assert _users(request)["alice"]["admin"] == {"until": text(W + 60)}
    (report,) = [json.loads(payload) for _, payload in agent.outbox.pending()]
    assert report["etag"] == "etag-7"  # reported when the server is back
    assert agent.enforce_expiry() is False and len(recorder.requests) == 1


def test_an_elevation_ends_on_the_device_and_a_step_back_does_not_extend_it(
    tmp_path: Path,
) -> None:
    fake = FakeClocks()
    agent, recorder = _agent(tmp_path, fake)
    agent._document = DOC
    # the server says two hours from its own clock; the device allows at most 20 s from now
    until = dt.datetime.fromtimestamp(W + 7200, dt.UTC)
    ok, message = agent._elevate(ElevateSpec("bob", until, 20, reason="INC-1"))
    assert ok, message
    assert message.startswith(f"bob is admin until {text(W + 20)}")
    assert _users(recorder.requests[-1])["bob"]["admin"] == {"until": text(W + 20)}
    assert agent.expiries.seconds_to_next(agent.clock.now()) == 20
    fake.advance(10)
    fake.wall -= 3600  # a step back: on the wall clock the grant now has an hour more
    assert agent.enforce_expiry() is False
    fake.advance(10)
    assert agent.enforce_expiry() is True  # 20 s after the grant, whatever the wall says
    request = recorder.requests[-1]
    assert request["mode"] == "converge" and request["now"] >= W + 20
    assert "admin" not in _users(request)["bob"]  # ended: as if never given
    assert agent.expiries.elevations == {}


def test_only_a_present_user_of_a_policy_can_be_elevated_and_revoke_ends_it(
    tmp_path: Path,
) -> None:
    fake = FakeClocks()
    agent, recorder = _agent(tmp_path, fake)
    until = dt.datetime.fromtimestamp(W + 3600, dt.UTC)
    ok, message = agent._elevate(ElevateSpec("bob", until, 3600))
    assert not ok and "no policy document" in message
    agent._document = DOC
    for name in ("eve", "mallory"):
        ok, message = agent._elevate(ElevateSpec(name, until, 3600))
        assert not ok and f"no policy on this device lists {name}" in message
    assert recorder.requests == [] and agent.expiries.elevations == {}
    assert agent._elevate(ElevateSpec("bob", until, 3600))[0]
    ok, message = agent._elevate(ElevateSpec("bob", revoke=True))
    assert ok and message.startswith("elevation of bob revoked")
    assert "admin" not in _users(recorder.requests[-1])["bob"]
    ok, message = agent._elevate(ElevateSpec("bob", revoke=True))
    assert ok and "nothing to revoke" in message


def test_a_refused_removal_fails_the_revoke_with_the_reason(tmp_path: Path) -> None:
    fake = FakeClocks()
    agent, recorder = _agent(tmp_path, fake)
    agent._document = DOC
    recorder.status = "refused"
    ok, message = agent._elevate(ElevateSpec("bob", dt.datetime.fromtimestamp(W + 60, dt.UTC), 60))
    assert not ok and "refused" in message


def test_neither_the_poll_nor_the_offline_sleep_lasts_past_the_next_instant(
    tmp_path: Path, monkeypatch: Any
) -> None:
    fake = FakeClocks()
    agent, _ = _agent(tmp_path, fake)
    agent.config.once = False
    agent.expiries.remember(DOC, "e")  # alice's right ends at W + 60
    waits: list[float] = []

    def work(etag: str, wait: float, commands: Any = None) -> dict[str, Any]:
        waits.append(wait)
        return {}

    agent.client.work = work  # type: ignore[method-assign]
    fake.advance(45)
    agent.step()
    assert waits == [15.0]  # not the configured 55 s
    slept: list[float] = []
    monkeypatch.setattr("jcstate.agent.loop.time.sleep", slept.append)
    agent._sleep(retry_after=100)  # offline, with a long back-off
    assert slept == [15.0]


# -- the worker --------------------------------------------------------------------------------
def _group(root: str, name: str) -> list[str]:
    for line in Path(root, "etc/group").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return [m for m in fields[3].split(",") if m]
    return []


def test_the_worker_grants_until_the_instant_and_expire_mode_only_takes_rights_away(
    tmp_path: Path,
) -> None:
    root = prepare_root(str(tmp_path / "root"))
    state = tmp_path / "state"
    state.mkdir()
    doc = {"spec": {"users": [{"name": "alice", "uid": 1501, "admin": {"until": text(W)}}]}}
    answer = worker.run(
        {"mode": "converge", "root": root, "document": doc, "stateDir": str(state), "now": W - 60}
    )
    assert answer["ok"] is True, answer
    (result,) = answer["report"]["results"]
    assert {"field": "admin", "before": False, "after": f"until {text(W)}"} in result["fields"]
    assert _group(root, "sudo") == ["alice"]
    # expire mode at the instant: alice's right goes; bob, new in the document, is not created
    doc["spec"]["users"].append({"name": "bob", "uid": 1502})
    answer = worker.run(
        {"mode": "expire", "root": root, "document": doc, "stateDir": str(state), "now": W}
    )
    assert answer["ok"] is True, answer
    (result,) = answer["report"]["results"]
    assert result["name"] == "alice" and result["summary"] == f"admin until {text(W)} ended"
    assert _group(root, "sudo") == []
    assert "bob:" not in Path(root, "etc/passwd").read_text()
    assert instant(text(W)) == W


def test_a_full_disk_keeps_the_expiries_in_memory_and_writes_them_later(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """The agent's state disk full (docs/agent.md, "Full disk"): remembering a document or
    granting an elevation raises nothing, and the state file is written once space returns."""
    import errno

    from jcstate.agent import expiry

    real = expiry._write

    def full(path: str, data: dict[str, Any]) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    expiries = Expiries(str(tmp_path))
    document = {"users": [{"name": "alice", "admin": {"until": "2027-01-31T18:00:00Z"}}]}
    monkeypatch.setattr(expiry, "_write", full)
    expiries.remember(document, "etag-1")
    expiries.grant("bob", instant("2027-01-01T00:00:00Z"), "INC-1")
    assert expiries.unsaved and expiries.etag == "etag-1" and "bob" in expiries.elevations
    assert not (tmp_path / expiry.STATE_FILE).exists()
    monkeypatch.setattr(expiry, "_write", real)
    expiries.remember(document, "etag-1")  # the same document: written because it was not
    saved = json.loads((tmp_path / expiry.STATE_FILE).read_text())
    assert saved["etag"] == "etag-1" and "bob" in saved["elevations"] and not expiries.unsaved
