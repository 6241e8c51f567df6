"""Two-person erase (``--erase-approvals 2``), on SQLite and PostgreSQL: an erase waits,
unsent, until a second *person* approves it; the same person with two tokens is one person;
reject, cancel and lapse after 24 h (the queue's clock is moved, nothing sleeps); the device's
work route carries nothing until the approval; every step is in the audit log.

docs/security.md, "Two-person erase", is the threat model these check.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import live
import pytest

from jcstate.errors import AuthError, ServerError
from jcstate.server.admins import AdminAccounts

DAY = 86400.0
PASSWORD = "correct horse battery"


class Clock:
    """The server's command clock, moved by hand."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def server(database: str, tmp_path: Path, clock: Clock) -> Iterator[live.LiveServer]:
    with live.live_server(database, str(tmp_path), clock=clock, erase_approvals=2) as srv:
        yield srv


def person(server: Any, name: str, role: str = "administrator") -> None:
    """A console account, as `jcstate admin add` makes it."""
    AdminAccounts(server.ctx.store).add(name, role, PASSWORD, "test")


def settle(server: Any, *names: str) -> None:
    """Make accounts two days old, as if added (and their password set) the day before
    yesterday: the database's times, not a sleep."""
    from jcstate.server.admins import admins

    with server.ctx.store.transaction() as conn:
        conn.execute(
            admins.update()
            .where(admins.c.name.in_(names))
            .values(
                created_at=admins.c.created_at - 2 * DAY,
                password_changed_at=admins.c.password_changed_at - 2 * DAY,
            )
        )


def token_of(server: Any, owner: str, role: str = "administrator") -> Any:
    """An admin client whose token belongs to ``owner`` (made with their password)."""
    from jcstate.server.api_client import AdminClient

    made = server.admin().call(
        "POST",
        "/api/v1/tokens",
        {"role": role, "name": f"{owner}'s", "owner": owner, "ownerPassword": PASSWORD},
    )
    assert made["owner"] == owner
    client = AdminClient(server.url, made["token"])
    server.opened.append(client)
    return client


def erase(admin: Any, device_id: str) -> dict[str, Any]:
    return admin.call("POST", f"/api/v1/devices/{device_id}/commands/erase", {"confirm": device_id})


def audit(server: Any, route_end: str) -> list[dict[str, Any]]:
    return [a for a in reversed(server.ctx.store.list_audit()) if a["action"].endswith(route_end)]


def test_a_second_person_approves_and_only_then_the_device_gets_the_erase(server):
    person(server, "alice")
    person(server, "bob")
    alice, alice_again, bob = (
        token_of(server, "alice"),
        token_of(server, "alice"),
        token_of(server, "bob"),
    )
    settle(server, "alice", "bob")  # a person is an account at least a day old
    client, device_id = server.device("stolen-laptop")
    manager = server.admin("manager")

    asked = erase(alice, device_id)
    assert asked["state"] == "awaiting approval"
    assert asked["approval"]["requestedBy"] == "alice" and "decision" not in asked["approval"]
    # a later command is delivered and acknowledged past the erase's place in the order
    lock = manager.call("POST", f"/api/v1/devices/{device_id}/commands/lock", {})
    work = client.work("", 0, 0)
    assert [c["id"] for c in work["commands"]] == [lock["id"]]  # not the erase
    assert client.work(work["etag"], 0, lock["seq"])["commands"] == []
    shown = alice.call("GET", f"/api/v1/commands/{asked['id']}")
    assert (shown["state"], shown["sentAt"], shown["deliveries"]) == ("awaiting approval", None, 0)

    # the one who asked cannot approve, with this token or another of theirs
    for same_person in (alice, alice_again):
        with pytest.raises(AuthError, match="alice asked for this erase"):
            same_person.call("POST", f"/api/v1/commands/{asked['id']}/approve")
    assert client.work(work["etag"], 0, lock["seq"])["commands"] == []

    approved = bob.call("POST", f"/api/v1/commands/{asked['id']}/approve")
    assert approved["state"] == "queued"
    assert approved["approval"]["decision"] == "approved"
    assert approved["approval"]["decidedBy"] == "bob"
    assert approved["seq"] > lock["seq"]  # last in the order: past the device's cursor
    [got] = client.work(work["etag"], 0, lock["seq"])["commands"]
    assert (got["id"], got["action"]) == (asked["id"], "erase")
    with pytest.raises(ServerError, match="409.*queued, not awaiting approval"):
        bob.call("POST", f"/api/v1/commands/{asked['id']}/approve")

    trail = [(a["outcome"], a["detail"].get("reason", "")) for a in audit(server, "/approve")]
    assert [t[0] for t in trail] == ["refused", "refused", "ok", "refused"]
    assert "alice asked" in trail[0][1] and "alice asked" in trail[1][1]
    ok = audit(server, "/approve")[2]
    assert ok["detail"]["requestedBy"] == "alice" and ok["detail"]["person"] == "bob"
    [issued] = audit(server, "/commands/erase")
    assert (issued["detail"]["state"], issued["detail"]["person"]) == ("awaiting approval", "alice")


def test_who_counts_as_a_person(server):
    person(server, "alice")
    person(server, "bob")
    person(server, "carol", role="manager")
    _, device_id = server.device("laptop")
    nobody = server.admin()  # a token of nobody: the first start's kind
    with pytest.raises(AuthError, match="belongs to no one"):
        erase(nobody, device_id)
    # an owned token needs the owner's password, and at most the owner's role
    with pytest.raises(AuthError, match="wrong password for bob"):
        nobody.call(
            "POST",
            "/api/v1/tokens",
            {"role": "administrator", "owner": "bob", "ownerPassword": "not bob's password"},
        )
    with pytest.raises(ServerError, match="422.*carol is a manager"):
        token_of(server, "carol")
    with pytest.raises(ServerError, match="422.*no console account named 'dave'"):
        token_of(server, "dave")
    alice, bob = token_of(server, "alice"), token_of(server, "bob")
    # an account a day old at most is not a person yet: a stolen token cannot make one up
    with pytest.raises(AuthError, match="less than 24 h ago"):
        erase(alice, device_id)
    settle(server, "alice", "bob")
    asked = erase(alice, device_id)
    with pytest.raises(AuthError, match="belongs to no one"):
        nobody.call("POST", f"/api/v1/commands/{asked['id']}/approve")
    AdminAccounts(server.ctx.store).set_password("bob", "a brand new password")
    with pytest.raises(AuthError, match="bob was added or had its password set"):
        bob.call("POST", f"/api/v1/commands/{asked['id']}/approve")
    AdminAccounts(server.ctx.store).remove("bob")
    with pytest.raises(AuthError, match="no longer exists"):
        bob.call("POST", f"/api/v1/commands/{asked['id']}/approve")
    erases = audit(server, "/commands/erase")
    trail = [(a["outcome"], a["detail"].get("reason", "")) for a in erases]
    assert [t[0] for t in trail] == ["refused", "refused", "ok"]
    assert "belongs to no one" in trail[0][1] and "less than 24 h" in trail[1][1]
    tokens = [(a["outcome"], a["detail"].get("owner")) for a in audit(server, "/api/v1/tokens")]
    assert tokens == [
        ("refused", "bob"),
        ("refused", "carol"),
        ("refused", "dave"),
        ("ok", "alice"),
        ("ok", "bob"),
    ]
    assert [a["outcome"] for a in audit(server, "/approve")] == ["refused"] * 3


def test_reject_cancel_and_lapse_never_reach_the_device(server, clock):
    person(server, "alice")
    person(server, "bob")
    alice, bob = token_of(server, "alice"), token_of(server, "bob")
    settle(server, "alice", "bob")
    client, device_id = server.device("laptop")

    rejected = erase(alice, device_id)
    done = bob.call("POST", f"/api/v1/commands/{rejected['id']}/reject", {"reason": "wrong laptop"})
    assert done["state"] == "rejected"
    assert done["approval"]["decidedBy"] == "bob" and done["approval"]["reason"] == "wrong laptop"
    assert done["message"] == "rejected by bob: wrong laptop; never sent"
    with pytest.raises(ServerError, match="409.*rejected, not awaiting approval"):
        alice.call("POST", f"/api/v1/commands/{rejected['id']}/approve")

    withdrawn = erase(alice, device_id)
    cancel = alice.call("POST", f"/api/v1/commands/{withdrawn['id']}/cancel")
    assert (cancel["state"], cancel["message"]) == ("cancelled", "cancelled before it was approved")

    lapsing = erase(alice, device_id)
    clock.offset += DAY - 60
    shown = bob.call("GET", f"/api/v1/commands/{lapsing['id']}")
    assert shown["state"] == "awaiting approval"
    clock.offset += 120  # past 24 h: the window is over, whoever asks
    with pytest.raises(ServerError, match="409.*lapsed.*nobody approved it within 24 h"):
        bob.call("POST", f"/api/v1/commands/{lapsing['id']}/approve")
    shown = alice.call("GET", f"/api/v1/commands/{lapsing['id']}")
    assert shown["state"] == "lapsed" and shown["approval"]["decision"] == "lapsed"
    assert shown["finishedAt"] == shown["approval"]["deadline"]
    listed = {c["id"]: c["state"] for c in bob.call("GET", "/api/v1/commands")}
    assert listed == {
        rejected["id"]: "rejected",
        withdrawn["id"]: "cancelled",
        lapsing["id"]: "lapsed",
    }
    assert client.work("", 0, 0)["commands"] == []  # nothing was ever sent
    [lapse] = audit(server, "lapse")
    assert (lapse["actor"], lapse["outcome"], lapse["detail"]["command"]) == (
        "server",
        "ok",
        lapsing["id"],
    )
    rejects = audit(server, "/reject")
    assert [(a["outcome"], a["detail"].get("reason")) for a in rejects] == [("ok", "wrong laptop")]


def test_one_approval_is_the_default(tmp_path):
    with live.live_server(f"sqlite:///{tmp_path}/jcstate.db", str(tmp_path)) as server:
        client, device_id = server.device("laptop")
        made = erase(server.admin(), device_id)  # a token of nobody, as before
        assert made["state"] == "queued" and "approval" not in made
        assert [c["id"] for c in client.work("", 0, 0)["commands"]] == [made["id"]]
        with pytest.raises(ServerError, match="409.*queued, not awaiting approval"):
            server.admin().call("POST", f"/api/v1/commands/{made['id']}/approve")


def test_the_cli_asks_approves_rejects(tmp_path, capsys, monkeypatch):
    """``token create --owner`` (password on stdin), ``command erase``, ``command approve``,
    ``command reject``, ``command show`` and ``command list`` as administrators type them."""
    import io

    from jcstate.cli import main

    def jcstate(*argv: str, token: str, stdin: str = "") -> tuple[int, str, str]:
        monkeypatch.setenv("JCSTATE_TOKEN", token)
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        code = main(list(argv))
        out = capsys.readouterr()
        return code, out.out, out.err

    database = f"sqlite:///{tmp_path}/jcstate.db"
    with live.live_server(database, str(tmp_path), erase_approvals=2) as server:
        monkeypatch.setenv("JCSTATE_SERVER", server.url)
        person(server, "alice")
        person(server, "bob")
        settle(server, "alice", "bob")
        first = server.token("administrator")
        tokens = {}
        for name in ("alice", "bob"):
            code, out, err = jcstate(
                "token", "create", "--role", "administrator", "--owner", name,
                "--password-stdin", token=first, stdin=PASSWORD + "\n",
            )  # fmt: skip
            assert code == 0, err
            assert f"belongs to {name}" in out
            tokens[name] = out.strip().splitlines()[-1]
        _, device_id = server.device("mac1")
        code, out, err = jcstate(
            "command", "erase", device_id, "--confirm", device_id, token=tokens["alice"]
        )
        assert code == 0, err
        asked = out.strip()
        assert f"awaits approval: another administrator runs `jcstate command approve {asked}`" in (
            err
        )
        code, out, _ = jcstate("command", "show", asked, token=tokens["bob"])
        assert (
            code == 0
            and "state:     awaiting approval" in out
            and "asked by:  alice" in out
            and "deadline:  " in out
        )
        code, _, err = jcstate("command", "approve", asked, token=tokens["alice"])
        assert code != 0 and "alice asked for this erase" in err
        code, out, err = jcstate("command", "approve", asked, token=tokens["bob"])
        assert code == 0, err
        assert out.strip() == f"{asked}: approved; erase queued for mac1"
        code, out, _ = jcstate("command", "show", asked, token=tokens["alice"])
        assert "state:     queued" in out and "decision:  approved by bob" in out

        code, out, _ = jcstate(
            "command", "erase", device_id, "--confirm", device_id, token=tokens["bob"]
        )
        second = out.strip()
        code, out, err = jcstate(
            "command", "reject", second, "--reason", "wrong laptop", token=tokens["alice"]
        )
        assert code == 0, err
        code, out, _ = jcstate("command", "show", second, token=tokens["alice"])
        assert code == 1  # rejected: not a success
        assert "decision:  rejected by alice" in out and "wrong laptop" in out
        code, out, _ = jcstate(
            "command", "list", "--state", "rejected", "--output", "json", token=first
        )
        assert [c["id"] for c in json.loads(out)] == [second]


def test_the_console_asks_and_another_account_approves_or_rejects(tmp_path):
    """A console session acts as its account: ada asks, ada cannot approve (no button, and a
    posted form is refused), bea approves; a second erase bea rejects with a reason."""
    from console_session import csrf_of, signed_in

    database = f"sqlite:///{tmp_path}/jcstate.db"
    with live.live_server(database, str(tmp_path), erase_approvals=2) as server:
        ada = signed_in(server, "ada", "administrator")
        bea = signed_in(server, "bea", "administrator")
        settle(server, "ada", "bea")
        client, device_id = server.device("web1")

        asked = ada.post(
            f"/devices/{device_id}/actions/erase",
            data={"csrf": csrf_of(ada), "hostname": "web1"},
        )
        assert asked.status_code == 200 and "awaits approval" in asked.text
        [row] = server.ctx.queue.list(device_id)
        assert (row["state"], row["created_by"]) == ("awaiting approval", "admin:ada")
        seq = row["seq"]
        assert f'action="/commands/{seq}/approve"' not in ada.get("/commands").text
        assert f'action="/commands/{seq}/approve"' in bea.get("/commands").text
        refused = ada.post(f"/commands/{seq}/approve", data={"csrf": csrf_of(ada)})
        assert refused.status_code == 403 and "ada asked for this erase" in refused.text
        assert client.work("", 0, 0)["commands"] == []

        approved = bea.post(f"/commands/{seq}/approve", data={"csrf": csrf_of(bea)})
        assert approved.status_code == 200
        [row] = server.ctx.queue.list(device_id)
        assert row["state"] == "queued" and row["approval"]["decidedBy"] == "bea"
        assert row["approval"]["decidedByActor"] == "admin:bea"
        assert [c["id"] for c in client.work("", 0, 0)["commands"]] == [row["id"]]

        ada.post(
            f"/devices/{device_id}/actions/erase",
            data={"csrf": csrf_of(ada), "hostname": "web1"},
        )
        second = server.ctx.queue.list(device_id, state="awaiting approval")[0]
        rejected = bea.post(
            f"/commands/{second['seq']}/reject",
            data={"csrf": csrf_of(bea), "reason": "not this one"},
        )
        assert rejected.status_code == 200
        assert "asked by ada, rejected by bea: not this one" in rejected.text
        assert server.ctx.queue.one(second["id"], device_id)["state"] == "rejected"
        actors = [(a["actor"], a["outcome"]) for a in audit(server, "/approve")]
        assert actors == [("admin:ada", "refused"), ("admin:bea", "ok")]


ERASING_POLICY = """apiVersion: jcstate/v1
kind: Policy
metadata: {name: wipe}
selector: {devices: [laptop]}
spec:
  commands:
    - {id: wipe-1, action: erase, confirm: erase}
"""
LOCKING_POLICY = ERASING_POLICY.replace("erase, confirm: erase", "lock")


def test_a_policy_cannot_erase_around_the_approval(server):
    """A policy's commands run on the device and never wait in the queue: with two-person
    erase a push (or dry run) holding an erase is refused, and audited."""
    manager = server.admin("manager")
    for dry in (True, False):
        with pytest.raises(
            ServerError,
            match="refused the policies:\np.yaml: policy wipe: command wipe-1 erases.*approvals 2",
        ):
            manager.call(
                "POST", "/api/v1/revisions", {"files": {"p.yaml": ERASING_POLICY}, "dryRun": dry}
            )
    assert server.ctx.store.latest_revision_id() is None
    made = manager.call("POST", "/api/v1/revisions", {"files": {"p.yaml": LOCKING_POLICY}})
    assert made["revision"] == 1
    refused = [a for a in audit(server, "/api/v1/revisions") if a["outcome"] == "refused"]
    assert len(refused) == 2 and "p.yaml: policy wipe" in refused[0]["detail"]["where"][0]
