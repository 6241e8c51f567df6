"""`jcstate verify` without root or test hosts: the local machine (read-only) and fake hosts.

These run everywhere; the same checks against real test hosts are in test_verify.py.
"""

from __future__ import annotations

import datetime
import json
import subprocess
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from harness import jcstate_argv

from jcstate.document import Document
from jcstate.errors import HostError
from jcstate.modules.groups.verify import checks as group_checks
from jcstate.modules.users.verify import checks as user_checks
from jcstate.verify import build_checks, connect, render_text, run_checks

HASH = "$6$salt$verysecrethashvalue"


def _verify(tmp_path: Path, policy: str, url: str = "local://") -> subprocess.CompletedProcess:
    path = tmp_path / "policy.yaml"
    path.write_text(textwrap.dedent(policy))
    return subprocess.run(
        [*jcstate_argv(), "verify", str(path), "--hosts", url, "--output", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )


LOCAL = """\
    apiVersion: jcstate/v1
    kind: Policy
    metadata: {name: local-read-only}
    selector: {os: [linux]}
    spec:
      groups:
        - {name: root, gid: 0}
        - {name: jcstate-no-such-group, state: absent}
      users:
        - {name: root, uid: UID, home: /root}
        - {name: jcstate-no-such-user, state: absent}
    """


def test_local_machine_passes_and_fails_truthfully(tmp_path: Path) -> None:
    ok = _verify(tmp_path, LOCAL.replace("UID", "0"))
    assert ok.returncode == 0, ok.stderr
    report = json.loads(ok.stdout)
    assert report["ok"] and report["passed"] == 7 and report["failed"] == 0

    bad = _verify(tmp_path, LOCAL.replace("UID", "4242"))
    assert bad.returncode == 1
    failed = [c for c in json.loads(bad.stdout)["checks"] if c["status"] != "pass"]
    assert failed == [
        {
            "resource": "user",
            "name": "root",
            "check": "uid is 4242",
            "status": "fail",
            "message": "uid: expected 4242, got 0",
        }
    ]


@pytest.mark.parametrize("url", ["chroot://relative/path", "somehost", "chroot://"])
def test_bad_target_urls_are_refused(url: str) -> None:
    with pytest.raises(HostError):
        connect(url)


def test_chroot_url_keeps_its_path() -> None:
    assert connect("chroot:///srv/image").backend.name == "/srv/image"


# -- fake hosts: the checks' logic without a system --------------------------------------------
@dataclass
class FakeUser:
    exists: bool = True
    uid: int = 1501
    home: str = "/home/alice"
    shell: str = "/bin/bash"
    gecos: str = "Alice Example,,,"
    group: str = "alice"
    groups: list[str] = field(default_factory=lambda: ["alice", "developers", "sudo"])
    password: str = HASH
    expiration_date: datetime.datetime | None = datetime.datetime(2027, 6, 30)


@dataclass
class FakeGroup:
    exists: bool = True
    gid: int = 2001
    members: list[str] = field(default_factory=lambda: ["alice"])


@dataclass
class FakeFile:
    path: str
    exists: bool = True
    user: str = "alice"
    mode: int = 0o600
    content_string: str = ""


class FakeHost:
    """Just enough of testinfra's host for the users and groups checks."""

    def __init__(
        self,
        users: dict[str, FakeUser],
        groups: dict[str, FakeGroup],
        files: dict[str, FakeFile] | None = None,
    ):
        self.users, self.groups, self.files = users, groups, files or {}

    def user(self, name: str) -> Any:
        return self.users.get(name, FakeUser(exists=False))

    def group(self, name: str) -> Any:
        return self.groups.get(name, FakeGroup(exists=False))

    def file(self, path: str) -> Any:
        return self.files.get(path, FakeFile(path, exists=False))


ALICE = {
    "name": "alice",
    "uid": 1501,
    "fullName": "Alice Example",
    "shell": "/bin/bash",
    "home": "/home/alice",
    "primaryGroup": "alice",
    "groups": ["developers"],
    "admin": True,
    "password": {"hash": HASH},
    "expires": datetime.date(2027, 6, 30),
    "sshAuthorizedKeys": ["ssh-ed25519 AAAA alice@laptop"],
}


def _alice_host(**changes: Any) -> FakeHost:
    home = changes.get("home", "/home/alice")
    files = {
        f"{home}/.ssh": FakeFile(f"{home}/.ssh", mode=0o700),
        f"{home}/.ssh/authorized_keys": FakeFile(
            f"{home}/.ssh/authorized_keys",
            content_string="# managed by jcstate\nssh-ed25519 AAAA alice@laptop\n",
        ),
    }
    return FakeHost({"alice": FakeUser(**changes)}, {"sudo": FakeGroup(gid=27)}, files)


def _results(checks: list, host: FakeHost) -> dict[str, str]:
    return {o.check.description: o.message or "pass" for o in run_checks(checks, host)}


def test_every_field_of_a_user_passes_when_it_matches() -> None:
    results = _results(user_checks([ALICE], "linux"), _alice_host())
    assert set(results.values()) == {"pass"}
    assert len(results) == 12


@pytest.mark.parametrize(
    ("changes", "description", "message"),
    [
        ({"uid": 7}, "uid is 1501", "uid: expected 1501, got 7"),
        ({"home": "/srv/a"}, "home is /home/alice", "home: expected '/home/alice', got '/srv/a'"),
        (
            {"gecos": "Bob,,,"},
            "full name is 'Alice Example'",
            "full name: expected 'Alice Example', got 'Bob'",
        ),
        (
            {"group": "users"},
            "primary group is alice",
            "primary group: expected 'alice', got 'users'",
        ),
        (
            {"groups": ["alice", "sudo"]},
            "is in groups developers",
            "groups: expected to include developers, missing developers (has alice, sudo)",
        ),
        (
            {"groups": ["alice", "developers"]},
            "is an administrator",
            "admin: expected in group sudo, but is not in it",
        ),
        (
            {"expiration_date": None},
            "account expires on 2027-06-30",
            "expires: expected '2027-06-30', got None",
        ),
    ],
)
def test_each_drift_is_reported_with_expected_and_actual(changes, description, message) -> None:
    results = _results(user_checks([ALICE], "linux"), _alice_host(**changes))
    assert results[description] == message
    assert [d for d, m in results.items() if m != "pass"] == [description]


def test_password_hash_is_compared_but_never_shown() -> None:
    checks = user_checks([ALICE], "linux")
    outcomes = run_checks(checks, _alice_host(password="$6$other$hash"))
    failed = [o for o in outcomes if o.status != "pass"]
    assert [o.check.description for o in failed] == ["password hash is the policy's (secret)"]
    shown = render_text_of(outcomes) + repr(checks)
    assert HASH not in shown and "$6$other$hash" not in shown


def test_locked_user_keeps_its_hash_behind_a_bang() -> None:
    locked = dict(ALICE, state="locked")
    lock_day = datetime.datetime(1970, 1, 2)
    both = _alice_host(password="!" + HASH, expiration_date=lock_day)
    assert set(_results(user_checks([locked], "linux"), both).values()) == {"pass"}
    # each fact of the lock is checked on its own: neither stands in for the other
    results = _results(user_checks([locked], "linux"), _alice_host(expiration_date=lock_day))
    assert results["password is locked"].startswith("password is not locked")
    assert results["account is expired by the lock (1970-01-02)"] == "pass"
    results = _results(user_checks([locked], "linux"), _alice_host(password="!" + HASH))
    assert results["password is locked"] == "pass"
    assert results["account is expired by the lock (1970-01-02)"] == (
        "expires: expected '1970-01-02', got '2027-06-30'"
    )


def test_authorized_keys_exact_content_owner_and_mode() -> None:
    host = _alice_host()
    host.files["/home/alice/.ssh/authorized_keys"].content_string += "ssh-rsa BBBB eve@evil\n"
    host.files["/home/alice/.ssh"].mode = 0o755
    results = _results(user_checks([ALICE], "linux"), host)
    assert (
        results["~/.ssh is mode 0700, owned by the user"]
        == "~/.ssh mode: expected '0700', got '0755'"
    )
    assert results[
        "authorized_keys holds exactly the 1 given key(s), mode 0600, owned by the user"
    ] == ("authorized_keys: expected exactly 1 key(s), got 2; unexpected ssh-rsa … eve@evil")


def test_missing_user_fails_every_check_clearly() -> None:
    outcomes = run_checks(user_checks([ALICE], "linux"), FakeHost({}, {}))
    assert {o.message for o in outcomes} == {"user alice does not exist"}


def test_groups_exact_members() -> None:
    section = [
        {"name": "developers", "gid": 2001, "members": ["alice", "bob"]},
        {"name": "old", "state": "absent"},
    ]
    host = FakeHost(
        {}, {"developers": FakeGroup(members=["alice", "carol"]), "old": FakeGroup(gid=3000)}
    )
    assert _results(group_checks(section, "linux"), host) == {
        "exists": "pass",
        "gid is 2001": "pass",
        "members are exactly alice, bob": (
            "members: expected ['alice', 'bob'], got ['alice', 'carol'] "
            "(missing bob; unexpected carol)"
        ),
        "does not exist": "group old exists",
    }


def test_sections_without_checks_are_reported_unchecked() -> None:
    document = Document(spec={"users": [ALICE], "fileVault": {"enabled": True}})
    checks, unchecked = build_checks(document, "linux")
    assert {c.resource for c in checks} == {"user"}
    assert "fileVault" in unchecked and "users" not in unchecked


def render_text_of(outcomes: list) -> str:
    from jcstate.verify import VerifyReport

    return render_text(VerifyReport(target="fake://", outcomes=outcomes))
