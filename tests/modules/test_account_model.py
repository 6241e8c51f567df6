"""parse() of spec.users and spec.groups: None is "not managed", [] is "manage to empty"."""

from __future__ import annotations

import datetime

from jcstate.modules.groups import RESOURCE as GROUPS_RESOURCE
from jcstate.modules.groups import GroupSpec
from jcstate.modules.groups import parse as parse_groups
from jcstate.modules.users import RESOURCE as USERS_RESOURCE
from jcstate.modules.users import UserSpec
from jcstate.modules.users import parse as parse_users
from jcstate.modules.users.model import state_change
from jcstate.plan import FieldChange
from jcstate.secret import Secret


def test_user_defaults_leave_everything_unmanaged() -> None:
    (user,) = parse_users([{"name": "alice"}])
    assert user == UserSpec(name="alice")
    assert user.groups is None and user.ssh_authorized_keys is None and user.admin is None


def test_user_fields() -> None:
    (user,) = parse_users(
        [
            {
                "name": "alice",
                "uid": 1501,
                "fullName": "Alice",
                "shell": "/bin/bash",
                "home": "/home/alice",
                "primaryGroup": "alice",
                "groups": ["dev"],
                "admin": True,
                "password": {"hash": "$6$s$h"},
                "sshAuthorizedKeys": [],
                "expires": "2027-06-30",
                "state": "locked",
                "removeHome": True,
                "allowLockout": True,
            }
        ]
    )
    assert user.password_hash == Secret("$6$s$h") and "$6$" not in repr(user)
    assert user.ssh_authorized_keys == () and user.groups == ("dev",)
    assert user.expires == datetime.date(2027, 6, 30)
    assert (user.state, user.remove_home, user.allow_lockout) == ("locked", True, True)


def test_user_date_object_and_secret_ref() -> None:
    (user,) = parse_users(
        [{"name": "b", "expires": datetime.date(2030, 1, 2), "password": {"secretRef": "b-pw"}}]
    )
    assert user.expires == datetime.date(2030, 1, 2)
    assert (user.password_hash, user.password_ref) == (None, "b-pw")


def test_groups() -> None:
    a, b = parse_groups(
        [{"name": "dev", "gid": 2001, "members": []}, {"name": "old", "state": "absent"}]
    )
    assert a == GroupSpec("dev", 2001, (), "present")
    assert b.members is None and b.state == "absent"


def test_resources_point_at_their_backends() -> None:
    assert USERS_RESOURCE.key == "users" and GROUPS_RESOURCE.key == "groups"
    assert USERS_RESOURCE.backend("linux").os == "linux"
    assert GROUPS_RESOURCE.backend("linux").supports >= {"gid", "members"}
    assert USERS_RESOURCE.backend("darwin").os == "darwin"
    assert GROUPS_RESOURCE.backend("windows").os == "windows"
    assert USERS_RESOURCE.backend("plan9") is None


def test_state_is_read_from_each_lock_fact_on_its_own() -> None:
    linux = {"password locked": True, "expired by the lock": True}
    assert state_change("locked", linux) is None
    assert state_change("present", {"password locked": False, "expired by the lock": False}) is None
    # the lock's expiry alone is not "locked", and neither is the "!" alone
    half = state_change("locked", {"password locked": False, "expired by the lock": True})
    assert half == FieldChange("state", "partly locked (expired by the lock)", "locked")
    other = state_change("present", {"password locked": True, "expired by the lock": False})
    assert other == FieldChange("state", "partly locked (password locked)", "present")
    assert state_change("present", linux) == FieldChange("state", "locked", "present")
    assert state_change("locked", {"disabled": False}) == FieldChange("state", "present", "locked")
