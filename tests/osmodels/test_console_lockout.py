"""Lock-out safety for the console user on the macOS and Windows models: the facts come from the
model (``stat -f %Su /dev/console``; the facts script's Console object), then the users backend
plans. Fixture tests of the same rules: tests/modules/{darwin,windows}/test_*_console.py."""

from __future__ import annotations

from typing import Any

import pytest

from .scenario import DarwinDriver, WindowsDriver, apply, plan

SECRETS = {"passwords": {"alice-pw": "correct horse battery"}}
ALICE = {"users": [{"name": "alice", "password": {"secretRef": "alice-pw"}}]}
DRIVERS = {"darwin": DarwinDriver, "windows": WindowsDriver}
HINT = "set allowLockout: true on this user to allow it"
WHERE = {"darwin": "/dev/console", "windows": "Win32_ComputerSystem.UserName"}


def _with_alice(os_name: str) -> Any:
    driver = DRIVERS[os_name]()
    apply(driver, ALICE, SECRETS)
    return driver


def _unreadable(driver: Any) -> None:
    if driver.os == "darwin":
        driver.host.console_unreadable = True
    else:
        driver.host.console_error = "The RPC server is unavailable."


@pytest.mark.parametrize("os_name", sorted(DRIVERS))
@pytest.mark.parametrize("state", ["absent", "locked"])
def test_the_console_user_is_not_removed_or_locked(os_name: str, state: str) -> None:
    driver = _with_alice(os_name)
    driver.host.login("alice")
    (change,), warnings = plan(driver, {"users": [{"name": "alice", "state": state}]}, SECRETS)
    verb = "remove" if state == "absent" else "lock"
    assert change.error == (
        f"this would {verb} alice, who is logged in on the console ({WHERE[os_name]}); {HINT}"
    )
    assert warnings == []


@pytest.mark.parametrize("os_name", sorted(DRIVERS))
def test_allow_lockout_lets_it_through_and_applies(os_name: str) -> None:
    driver = _with_alice(os_name)
    driver.host.login("alice")
    spec = {"users": [{"name": "alice", "state": "absent", "allowLockout": True}]}
    apply(driver, spec, SECRETS)  # apply asserts that no change carries an error
    assert "alice" not in driver.observe()["users"]
    # she is gone, so nobody owns the console any more: nothing is refused or planned
    assert plan(driver, spec, SECRETS) == ([], [])


@pytest.mark.parametrize("os_name", sorted(DRIVERS))
def test_nobody_or_someone_else_on_the_console(os_name: str) -> None:
    driver = _with_alice(os_name)
    spec = {"users": [{"name": "alice", "state": "locked"}]}
    (change,), _ = plan(driver, spec, SECRETS)
    assert change.error is None  # nobody logged in
    driver.host.login("ladmin" if os_name == "darwin" else "it-admin")
    (change,), _ = plan(driver, spec, SECRETS)
    assert change.error is None


@pytest.mark.parametrize("os_name", sorted(DRIVERS))
def test_unknown_console_user_only_warns(os_name: str) -> None:
    driver = _with_alice(os_name)
    driver.host.login("alice")
    _unreadable(driver)
    (change,), warnings = plan(driver, {"users": [{"name": "alice", "state": "absent"}]}, SECRETS)
    assert change.error is None
    (warning,) = warnings
    assert warning.startswith("users/alice: not checked whether alice is logged in on the console")


def test_mac_model_answers_only_the_console_stat() -> None:
    from . import ModelError

    mac = DarwinDriver().host
    assert mac.run(("stat", "-f", "%Su", "/dev/console")).stdout == "root\n"
    mac.login("ladmin")
    assert mac.run(("stat", "-f", "%Su", "/dev/console")).stdout == "ladmin\n"
    with pytest.raises(ModelError):
        mac.run(("stat", "-f", "%Su", "/etc/passwd"))
    with pytest.raises(ModelError):
        mac.login("nobody-here")
