"""``expires: never`` clears an expiry on Linux and Windows, and is a skipped field on macOS.

Each run sets a date, then ``never``, then plans again: the expiry is read back from the
simulated system itself (shadow field, LocalUser.AccountExpires), and the second plan is empty.
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from .scenario import DarwinDriver, LinuxDriver, WindowsDriver, apply, plan

SECRETS = {"passwords": {"frank-pw": "correct horse battery"}}
DATE = datetime.date(2027, 6, 30)


def _spec(expires: str, state: str = "present") -> dict[str, Any]:
    user = {
        "name": "frank",
        "expires": expires,
        "state": state,
        "password": {"hash": "$6$frankSalt$frankHash", "secretRef": "frank-pw"},
    }
    return {"users": [user]}


def _linux_expiry(driver: LinuxDriver) -> datetime.date | None:
    days = driver.sim.users["frank"].expire
    return None if days is None else datetime.date(1970, 1, 1) + datetime.timedelta(days=days)


def _windows_expiry(driver: WindowsDriver) -> datetime.date | None:
    return driver.host.users["frank"].expires


@pytest.mark.parametrize(
    ("driver_class", "expiry"),
    [(LinuxDriver, _linux_expiry), (WindowsDriver, _windows_expiry)],
    ids=["linux", "windows"],
)
def test_never_clears_a_set_expiry_and_converges(driver_class: Any, expiry: Any) -> None:
    driver = driver_class()
    apply(driver, _spec(DATE.isoformat()), SECRETS)
    assert expiry(driver) == DATE

    cleared = apply(driver, _spec("never"), SECRETS)
    fields = [(f.field, f.before, f.after) for c in cleared for f in c.fields]
    assert fields == [("expires", DATE.isoformat(), "never")]
    assert expiry(driver) is None
    assert plan(driver, _spec("never"), SECRETS)[0] == []


@pytest.mark.parametrize(
    ("driver_class", "expiry"),
    [(LinuxDriver, _linux_expiry), (WindowsDriver, _windows_expiry)],
    ids=["linux", "windows"],
)
def test_locked_then_present_with_never(driver_class: Any, expiry: Any) -> None:
    """Locking (Linux: an expiry of 1970-01-02) and unlocking with never leaves no expiry."""
    driver = driver_class()
    apply(driver, _spec(DATE.isoformat(), state="locked"), SECRETS)
    apply(driver, _spec("never"), SECRETS)
    assert expiry(driver) is None
    assert driver.observe()["users"]["frank"]["locked"] is False
    assert plan(driver, _spec("never"), SECRETS)[0] == []


def test_new_user_with_never_has_no_expiry_on_windows() -> None:
    driver = WindowsDriver()
    created = apply(driver, _spec("never"), SECRETS)
    assert ("expires", None, "never") in [(f.field, f.before, f.after) for f in created[0].fields]
    assert _windows_expiry(driver) is None
    assert plan(driver, _spec("never"), SECRETS)[0] == []


def test_macos_reports_expires_as_skipped() -> None:
    driver = DarwinDriver()
    changes, warnings = plan(driver, _spec("never"), SECRETS)
    assert changes and all("expires" in c.skipped_fields for c in changes)
    assert any("expires" in w and "skipped" in w for w in warnings), warnings
