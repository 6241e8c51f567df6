"""Linux users and groups backends against data fixtures: given facts and desired state, exactly
these changes with these argv lists, in this order (see account_cases.py for the format)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from account_cases import USERS, as_expected, case_files, context, load, plan

from jcstate.plan import Plan

CASES = [(kind, path) for kind in ("users", "groups") for path in case_files(kind)]


def _id(case: tuple[str, Path]) -> str:
    return f"{case[0]}/{case[1].name.removesuffix('.linux.json')}"


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_fixture(case: tuple[str, Path]) -> None:
    kind, path = case
    data = load(path)
    expected = data["expected"]["changes"]
    changes = plan(data, kind)
    got = [
        as_expected(c, expected[i] if i < len(expected) else None) for i, c in enumerate(changes)
    ]
    assert got == expected, data["description"]


def test_every_kind_has_no_change_and_root_cases() -> None:
    for kind in ("users", "groups"):
        names = {p.name.removesuffix(".linux.json") for p in case_files(kind)}
        assert {"no_change", "root_prefix", "invalid_name"} <= names, kind
        assert load(Path(case_files(kind)[0]).parent / "no_change.linux.json")["expected"] == {
            "changes": []
        }


def _secrets_of(data: dict) -> set[str]:
    found = {
        u["password"]["hash"]
        for u in data.get("desired", []) + (data.get("users") or [])
        if isinstance(u.get("password"), dict) and "hash" in u["password"]
    }
    found |= set((data.get("secrets") or {}).get("passwords", {}).values())
    for line in data["facts"].get("shadow", "").splitlines():
        field = line.split(":")[1]
        if field.lstrip("!").startswith("$"):
            found.add(field.lstrip("!"))
    return found


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_secrets_never_shown(case: tuple[str, Path]) -> None:
    kind, path = case
    data = load(path)
    secrets = _secrets_of(data)
    changes = plan(data, kind)
    shown = json.dumps(Plan(changes).to_dict()) + "".join(
        f"{c!r}{[str(s) for s in c.steps]}{[repr(s) for s in c.steps]}" for c in changes
    )
    for secret in secrets:
        assert secret not in shown
        for c in changes:
            for step in c.steps:
                assert not any(secret in arg for arg in getattr(step, "argv", ()))


def test_secret_case_really_carries_the_hash() -> None:
    """The redaction test above must be able to fail: the hash is inside, only hidden."""
    data = load(case_files("users")[0].parent / "password_change.linux.json")
    (change,) = plan(data, "users")
    (step,) = change.steps
    assert step.stdin.reveal() == "bob:" + data["desired"][0]["password"]["hash"] + "\n"
    assert "(secret)" in json.dumps(change.to_dict())


def test_locked_create_writes_the_hash_behind_its_lock_marker() -> None:
    """One chpasswd -e line '!HASH': no usermod -L that the batch would undo."""
    data = load(case_files("users")[0].parent / "create_locked.linux.json")
    (change,) = plan(data, "users")
    batch = [s for s in change.steps if getattr(s, "batch", False)]
    (step,) = batch
    assert step.stdin.reveal() == "carol:!" + data["desired"][0]["password"]["hash"] + "\n"
    assert not any("-L" in getattr(s, "argv", ()) for s in change.steps)


def test_home_that_exists_is_pointed_at_with_a_warning() -> None:
    data = load(case_files("users")[0].parent / "update_home_exists.linux.json")
    ctx = context(data, "users")
    USERS.plan(ctx.desired["users"], ctx)
    assert ctx.warnings == [
        "user bob: home /srv/bob exists already: the account points there, and the old home "
        "/home/bob stays where it is"
    ]


def test_locked_secret_ref_password_runs_in_step_order_before_the_lock() -> None:
    """chpasswd hashes a plaintext itself: not batched, so usermod -L really comes after it."""
    data = load(case_files("users")[0].parent / "password_secret_ref.linux.json")
    data["desired"] = [{**data["desired"][0], "state": "locked"}]
    data["desired"].append({"name": "carl", "state": "locked", "password": {"secretRef": "bob-pw"}})
    bob, carl = plan(data, "users")
    assert (bob.action, carl.action) == ("update", "create")
    for change in (bob, carl):
        argvs = [s.argv[0] for s in change.steps]
        assert argvs.index("chpasswd") < argvs.index("usermod"), argvs
        assert not any(getattr(s, "batch", False) for s in change.steps)
    assert any("-L" in s.argv for s in bob.steps if s.argv[0] == "usermod")
