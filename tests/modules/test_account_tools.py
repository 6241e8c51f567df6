"""The planned argv against the real shadow-utils, on a copy of a Debian image (``--root``).

This proves the root-prefix flags, ``--`` placement, ``chpasswd -e`` on stdin and the lock and
expiry semantics the planner and shadow_sim assume. Needs root (the tools chroot) and the
test-host image; the copy is an overlayfs mount over the read-only image, removed afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jcstate import engine
from jcstate.host import Host
from jcstate.modules.groups import parse as parse_groups
from jcstate.modules.groups.linux import BACKEND as GROUPS
from jcstate.modules.users import parse as parse_users
from jcstate.modules.users.linux import BACKEND as USERS
from jcstate.plan import Change, Plan
from jcstate.resource import PlanContext

pytestmark = pytest.mark.testhost

HASH = "$6$jcstateSalt$Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJcstateTestKey alice@laptop"


@pytest.fixture
def image_root(testhost_image: Path) -> Iterator[str]:
    """A writable copy of the test-host image (tests/conftest.py builds or finds it; it skips
    with the reason where test hosts cannot run): overlayfs over it, removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root: shadow-utils --root chroots into the image")
    image = testhost_image
    scratch = Path(tempfile.mkdtemp(prefix="jcstate-users-"))
    upper, work, merged = scratch / "upper", scratch / "work", scratch / "root"
    for d in (upper, work, merged):
        d.mkdir()
    mount = subprocess.run(
        [
            "mount",
            "-t",
            "overlay",
            "overlay",
            "-o",
            f"lowerdir={image},upperdir={upper},workdir={work}",
            str(merged),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if mount.returncode != 0:
        shutil.rmtree(scratch)
        pytest.skip(f"overlayfs not available: {mount.stderr.strip()}")
    try:
        yield str(merged)
    finally:
        subprocess.run(["umount", str(merged)], check=True)
        shutil.rmtree(scratch)


def _plan(host: Host, users: list[dict[str, Any]], groups: list[dict[str, Any]]) -> list[Change]:
    ctx = PlanContext(host=host)
    ctx.desired = {"users": parse_users(users), "groups": parse_groups(groups)}
    ctx.facts = {"groups": GROUPS.gather(host), "users": USERS.gather(host)}
    return GROUPS.plan(ctx.desired["groups"], ctx) + USERS.plan(ctx.desired["users"], ctx)


def _apply(host: Host, users: list[dict[str, Any]], groups: list[dict[str, Any]]) -> None:
    changes = _plan(host, users, groups)
    assert changes, "the case must change something"
    assert [c.error for c in changes if c.error] == []
    # through the engine, so batch steps (chpasswd) run where they run on a machine: at the end
    # of their phase, after the changes' other steps
    results = engine.execute(Plan(changes), host)
    assert [(r.change.name, r.message) for r in results if r.status != "ok"] == []
    assert [c.to_dict() for c in _plan(host, users, groups)] == []


def _line(root: str, file: str, name: str) -> list[str]:
    for line in Path(root, "etc", file).read_text().splitlines():
        if line.split(":")[0] == name:
            return line.split(":")
    raise AssertionError(f"{name} not in /etc/{file}")


def test_real_tools_converge_under_root_prefix(image_root: str) -> None:
    host = Host(root=image_root)
    groups = [{"name": "developers", "gid": 2001, "members": ["alice", "bob"]}]
    users = [
        {
            "name": "alice",
            "uid": 1501,
            "fullName": "Alice Example",
            "shell": "/bin/bash",
            "groups": ["developers"],
            "admin": True,
            "password": {"hash": HASH},
            "sshAuthorizedKeys": [KEY],
            "expires": "2027-06-30",
        },
        {"name": "bob", "state": "locked", "password": {"hash": HASH}},
        {"name": "carol", "primaryGroup": "developers", "sshAuthorizedKeys": []},
    ]
    _apply(host, users, groups)
    assert _line(image_root, "passwd", "alice")[2:] == [
        "1501",
        "1501",
        "Alice Example",
        "/home/alice",
        "/bin/bash",
    ]
    alice = _line(image_root, "shadow", "alice")
    assert alice[1] == HASH and alice[7] == "20999"
    bob = _line(image_root, "shadow", "bob")
    assert bob[1] == "!" + HASH and bob[7] == "1"
    assert _line(image_root, "group", "developers")[2:] == ["2001", "alice,bob"]
    assert "alice" in _line(image_root, "group", "sudo")[3].split(",")
    keys = Path(image_root, "home/alice/.ssh/authorized_keys")
    assert keys.read_text() == KEY + "\n"
    assert (keys.stat().st_mode & 0o777, keys.stat().st_uid) == (0o600, 1501)
    assert Path(image_root, "home/carol/.ssh/authorized_keys").stat().st_gid == 2001
    assert all(argv[1:3] == ("--root", image_root) for argv in host.commands_run)

    # second document: change, unlock, demote, empty members, remove with home
    groups = [
        {"name": "developers", "gid": 2002, "members": []},
        {"name": "ops", "members": ["alice"]},
    ]
    users = [
        {
            "name": "alice",
            "uid": 1601,
            "shell": "/bin/sh",
            "admin": False,
            "groups": ["ops"],
            "allowLockout": True,
        },
        {"name": "bob", "state": "present"},
        {"name": "carol", "state": "absent", "removeHome": True},
    ]
    _apply(host, users, groups)
    assert _line(image_root, "passwd", "alice")[2:4] == ["1601", "1501"]
    assert _line(image_root, "shadow", "bob")[1] == HASH
    assert _line(image_root, "shadow", "bob")[7] == ""
    assert _line(image_root, "group", "developers")[2:] == ["2002", ""]
    assert "alice" not in _line(image_root, "group", "sudo")[3].split(",")
    assert not Path(image_root, "home/carol").exists()


def test_real_userdel_takes_the_namesake_group(image_root: str) -> None:
    """The groups planner relies on this: userdel removes the user's own group first."""
    host = Host(root=image_root)
    _apply(host, [{"name": "dave"}], [])
    _apply(host, [{"name": "dave", "state": "absent"}], [{"name": "dave", "state": "absent"}])
    assert "dave:" not in Path(image_root, "etc/group").read_text()


def test_real_usermod_moves_a_home_and_reowns_it(image_root: str) -> None:
    """What shadow_sim models for usermod -d -m: a rename, re-owned with a changed uid."""
    host = Host(root=image_root)
    _apply(host, [{"name": "erin", "uid": 1510}], [])
    Path(image_root, "home/erin/notes").write_text("x")
    os.chown(Path(image_root, "home/erin/notes"), 1510, 1510)
    _apply(host, [{"name": "erin", "uid": 1610, "home": "/srv/erin"}], [])
    assert _line(image_root, "passwd", "erin")[2:6] == ["1610", "1510", "", "/srv/erin"]
    assert not Path(image_root, "home/erin").exists()
    assert Path(image_root, "srv/erin/notes").stat().st_uid == 1610
    assert Path(image_root, "srv/erin").stat().st_uid == 1610
