"""The same account scenario on Linux (simulator), macOS and Windows (models):
apply → re-apply (0 changes, no mutating command) → drift by hand → converge → remove."""

from __future__ import annotations

import copy
from types import SimpleNamespace
from typing import Any

import pytest

from jcstate import engine
from jcstate.report import render_json, render_text
from jcstate.secrets import MappingSecrets

from .scenario import DarwinDriver, LinuxDriver, WindowsDriver, apply, plan

ALICE_HASH = "$6$aliceSalt$aliceHashValue0123456789"
BOB_HASH = "$6$bobSalt$bobHashValue0123456789"
SECRETS = {"passwords": {"alice-pw": "correct horse battery", "bob-pw": "tr0ub4dor&3"}}

SPEC: dict[str, Any] = {
    "groups": [{"name": "developers", "gid": 2001, "members": ["alice", "bob"]}],
    "users": [
        {
            "name": "alice",
            "uid": 1501,
            "fullName": "Alice Example",
            "admin": True,
            "groups": ["developers"],
            "password": {"hash": ALICE_HASH, "secretRef": "alice-pw"},
        },
        {
            "name": "bob",
            "uid": 1502,
            "fullName": "Bob Builder",
            "password": {"hash": BOB_HASH, "secretRef": "bob-pw"},
        },
    ],
}
REMOVE: dict[str, Any] = {
    "groups": [{"name": "developers", "state": "absent"}],
    "users": [
        {"name": "alice", "state": "absent", "removeHome": True},
        {"name": "bob", "state": "absent"},
    ],
}
WANT = {
    "users": {
        "alice": {"fullName": "Alice Example", "admin": True, "locked": False},
        "bob": {"fullName": "Bob Builder", "admin": False, "locked": False},
    },
    "groups": {"developers": ["alice", "bob"]},
}
DRIVERS = {"linux": LinuxDriver, "darwin": DarwinDriver, "windows": WindowsDriver}


@pytest.mark.parametrize("os_name", sorted(DRIVERS))
def test_apply_reapply_drift_remove(os_name: str) -> None:
    driver = DRIVERS[os_name]()
    first = apply(driver, SPEC, SECRETS)
    assert first, "the first apply must change something"
    assert driver.observe() == WANT

    before = driver.mutations
    again, _ = plan(driver, SPEC, SECRETS)
    assert [c.to_dict() for c in again] == []
    assert driver.mutations == before  # planning ran no mutating command

    driver.drift()
    drifted, _ = plan(driver, SPEC, SECRETS)
    fields = sorted({f.field for c in drifted for f in c.fields})
    assert fields == ["admin", "fullName", "members"], fields
    apply(driver, SPEC, SECRETS)
    assert driver.observe() == WANT
    assert plan(driver, SPEC, SECRETS)[0] == []

    apply(driver, REMOVE, SECRETS)
    assert driver.observe() == {"users": {}, "groups": {}}
    assert plan(driver, REMOVE, SECRETS)[0] == []


@pytest.mark.parametrize("os_name", ["darwin", "windows"])
def test_passwords_reach_stdin_only(os_name: str) -> None:
    driver = DRIVERS[os_name]()
    apply(driver, SPEC, SECRETS)
    secrets = SECRETS["passwords"].values()
    for argv in driver.host.commands_run:
        assert not any(s in arg for s in secrets for arg in argv), argv
    # the test can fail: the passwords did arrive, on stdin
    assert any("correct horse battery" in data for data in driver.host.stdin_seen)
    host: Any = driver.host
    assert host.users["alice"].password == "correct horse battery"


@pytest.mark.parametrize("os_name", ["darwin", "windows"])
def test_last_admin_cannot_be_removed(os_name: str) -> None:
    driver = DRIVERS[os_name]()
    admin = "ladmin" if os_name == "darwin" else "it-admin"
    spec = {"users": [{"name": admin, "state": "absent"}]}
    (change,), _ = plan(driver, spec, SECRETS)
    assert change.error and "last one" in change.error and "allowLockout" in change.error
    allowed = copy.deepcopy(spec)
    allowed["users"][0]["allowLockout"] = True
    (change,), _ = plan(driver, allowed, SECRETS)
    assert change.error is None


@pytest.mark.parametrize("os_name", ["darwin", "windows"])
def test_emptying_the_admin_group_is_refused(os_name: str) -> None:
    driver = DRIVERS[os_name]()
    group = "admin" if os_name == "darwin" else "Administrators"
    changes, _ = plan(
        driver,
        {"groups": [{"name": group, "members": ["root"] if os_name == "darwin" else []}]},
        SECRETS,
    )
    assert [c for c in changes if c.error and "last admin" in c.error], changes


@pytest.mark.parametrize("os_name", ["darwin", "windows"])
def test_a_new_admin_makes_demoting_the_old_one_safe(os_name: str) -> None:
    driver = DRIVERS[os_name]()
    admin = "ladmin" if os_name == "darwin" else "it-admin"
    spec = {"users": [SPEC["users"][0] | {"groups": []}, {"name": admin, "admin": False}]}
    changes, _ = plan(driver, spec, SECRETS)
    assert not [c for c in changes if c.error], [c.error for c in changes]
    apply(driver, spec, SECRETS)
    assert plan(driver, spec, SECRETS)[0] == []


def test_windows_administrators_found_by_sid_on_a_german_windows() -> None:
    driver = WindowsDriver(admin_name="Administratoren")
    apply(driver, SPEC, SECRETS)
    assert driver.observe() == WANT
    assert plan(driver, SPEC, SECRETS)[0] == []


def test_windows_names_compare_case_insensitively() -> None:
    driver = WindowsDriver()
    apply(driver, SPEC, SECRETS)
    shouting = copy.deepcopy(SPEC)
    shouting["users"][0]["name"] = "ALICE"
    shouting["groups"][0]["members"] = ["Alice", "BOB"]
    assert plan(driver, shouting, SECRETS)[0] == []


def test_unsupported_fields_are_reported_not_dropped() -> None:
    driver = WindowsDriver()
    changes, warnings = plan(driver, SPEC, SECRETS)
    assert "users/alice: uid not supported on Windows (skipped)" in warnings
    assert "groups/developers: gid not supported on Windows (skipped)" in warnings
    alice = next(c for c in changes if c.name == "alice")
    assert alice.skipped_fields == ["uid"]


@pytest.mark.parametrize("os_name", ["darwin", "windows"])
def test_the_engine_itself_drives_the_models(os_name: str) -> None:
    """jcstate.engine.apply end to end: facts of every resource, plan, apply, re-read, report."""
    driver = DRIVERS[os_name]()
    document = SimpleNamespace(spec=copy.deepcopy(SPEC), sources={})
    report = engine.apply(document, driver.host, MappingSecrets(SECRETS))
    assert report.errors == [] and report.plan.errors == []
    assert {r.status for r in report.results} == {"ok"}, [r.message for r in report.results]
    assert driver.observe() == WANT
    text = render_text(report, show_steps=True) + render_json(report)
    assert "(secret)" in text and "correct horse battery" not in text
    again = engine.apply(document, driver.host, MappingSecrets(SECRETS))
    assert again.plan.changes == [] and again.results == []
