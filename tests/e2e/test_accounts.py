"""Users and groups end to end: policies applied to fresh Debian test hosts, checked with testinfra.

Every scenario runs the real ``jcstate`` command against a throw-away host (``--root ROOT``,
or inside the host for the last one), looks at the result through testinfra's chroot backend
— not through jcstate's own facts — and ends with a second plan that must be empty (exit 0).
Process start-up is most of the cost, so each scenario batches its checks per apply.

What the backend's argv is, case by case, is pinned by the fixture tests in tests/modules; these
scenarios prove that the argv, run by the real shadow-utils, gives the system the policy asks for.
"""

from __future__ import annotations

import datetime
import re
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import testhost as th
import yaml
from harness import CliResult, apply_policy, jcstate_argv, plan_policy, verify_policy

# sha512crypt-shaped hashes that no login needs: compared as strings, never to be printed.
HASH1 = "$6$e2eSaltOne$" + "A1b2C3d4E5f6" * 7 + "Gh"
HASH2 = "$6$e2eSaltTwo$" + "Z9y8X7w6V5u4" * 7 + "Ts"
KEY1 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE2eTestKeyNumberOne00000000000000000000 one@laptop"
KEY2 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE2eTestKeyNumberTwo00000000000000000000 two@laptop"
KEY3 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE2eTestKeyNumberThree000000000000000000 three@desk"
ACCOUNT_FILES = ("/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow")


# -- building documents and running jcstate --------------------------------------------------
def document(
    users: Iterable[dict[str, Any]] = (),
    groups: Iterable[dict[str, Any]] = (),
) -> str:
    """A Linux policy with these users and groups, as the YAML an admin would commit."""
    spec: dict[str, Any] = {}
    if groups:
        spec["groups"] = list(groups)
    if users:
        spec["users"] = list(users)
    doc = {
        "apiVersion": "jcstate/v1",
        "kind": "Policy",
        "metadata": {"name": "accounts-e2e"},
        # password.hash is Linux-only, so the selector must say so (a semantic rule).
        "selector": {"os": ["linux"]},
        "spec": spec,
    }
    return yaml.safe_dump(doc, sort_keys=False)


def _explain(result: CliResult) -> str:
    return f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"


def applied(host: th.TestHost, policy: str) -> dict[str, Any]:
    """Apply and insist that every change went through; the JSON report."""
    result = apply_policy(host, policy)
    assert result.returncode == 0, _explain(result)
    report = result.report
    assert report["ok"] and report["applied"], _explain(result)
    assert {r["status"] for r in report["results"]} <= {"ok"}, _explain(result)
    return report


def assert_converged(host: th.TestHost, policy: str) -> None:
    """The second plan: nothing to do, exit 0."""
    result = plan_policy(host, policy)
    assert result.returncode == 0, _explain(result)
    report = result.report
    assert report["changes"] == [], _explain(result)
    assert report["errors"] == []
    assert sum(report["counts"].values()) == 0, report["counts"]


def by_key(entries: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Report entries (changes or results) grouped by (kind, name): a user may have two."""
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for entry in entries:
        out.setdefault((entry["kind"], entry["name"]), []).append(entry)
    return out


def changed_fields(entries: list[dict[str, Any]]) -> dict[str, tuple[Any, Any]]:
    """field → (before, after) over all of one resource's changes."""
    return {f["field"]: (f["before"], f["after"]) for e in entries for f in e["fields"]}


def account_bytes(host: th.TestHost) -> dict[str, bytes]:
    """The host's account files, byte for byte."""
    return {name: host.path(name).read_bytes() for name in ACCOUNT_FILES}


def day(text: str) -> datetime.datetime:
    """An expiry as testinfra returns it (midnight UTC of that day, naive)."""
    return datetime.datetime.fromisoformat(text)


def members(infra: Any, group: str) -> set[str]:
    """A group's supplementary members as /etc/group lists them (through getent)."""
    return set(infra.group(group).members)


# -- 1. create -------------------------------------------------------------------------------
ALICE_FULL = {
    "name": "alice",
    "uid": 1501,
    "fullName": "Alice Example",
    "shell": "/bin/bash",
    "home": "/home/alice-home",
    "primaryGroup": "developers",
    "groups": ["ops"],
    "admin": True,
    "password": {"hash": HASH1},
    "sshAuthorizedKeys": [KEY1, KEY2],
    "expires": "2027-06-30",
}


def test_create_groups_and_users_with_every_field(testhost: th.TestHost, testinfra_host) -> None:
    policy = document(
        groups=[{"name": "developers", "gid": 2001}, {"name": "ops"}],
        users=[ALICE_FULL, {"name": "bob"}],
    )
    result = apply_policy(testhost, policy)
    assert result.returncode == 0, _explain(result)
    assert HASH1 not in result.stdout + result.stderr
    created = by_key(result.report["results"])
    assert set(created) == {
        ("groups", "developers"),
        ("groups", "ops"),
        ("users", "alice"),
        ("users", "bob"),
    }
    assert {e["action"] for es in created.values() for e in es} == {"create"}

    infra = testinfra_host
    assert infra.group("developers").gid == 2001
    assert infra.group("ops").exists and infra.group("ops").gid >= 1000  # allocated, not system
    alice = infra.user("alice")
    assert (alice.uid, alice.gid, alice.group) == (1501, 2001, "developers")
    assert set(alice.groups) == {"developers", "ops", "sudo"}
    assert (alice.home, alice.shell, alice.gecos) == (
        "/home/alice-home",
        "/bin/bash",
        "Alice Example",
    )
    assert alice.expiration_date == day("2027-06-30")
    assert alice.password == HASH1
    assert "alice" in members(infra, "sudo")

    home = infra.file("/home/alice-home")
    assert home.is_directory and home.user == "alice"
    ssh_dir = infra.file("/home/alice-home/.ssh")
    assert ssh_dir.is_directory and not ssh_dir.is_symlink
    assert (ssh_dir.mode, ssh_dir.user, ssh_dir.group) == (0o700, "alice", "developers")
    keys = infra.file("/home/alice-home/.ssh/authorized_keys")
    assert (keys.mode, keys.user, keys.group) == (0o600, "alice", "developers")
    assert keys.content_string == f"{KEY1}\n{KEY2}\n"

    # A user with nothing but a name gets Debian's defaults: own group, /home/bob, no admin.
    bob = infra.user("bob")
    assert bob.exists and bob.group == "bob" and bob.home == "/home/bob"
    assert infra.file("/home/bob").is_directory
    assert "bob" not in members(infra, "sudo")
    assert not infra.file("/home/bob/.ssh").exists  # keys not managed: nothing written

    assert_converged(testhost, policy)


# -- 2. modify -------------------------------------------------------------------------------
def test_modify_changes_every_field(testhost: th.TestHost, testinfra_host) -> None:
    groups = [{"name": "developers", "gid": 2001}, {"name": "ops"}, {"name": "qa", "gid": 2003}]
    bob = {"name": "bob", "uid": 1502, "password": {"hash": HASH1}}
    applied(testhost, document(groups=groups, users=[ALICE_FULL, bob]))

    alice_v2 = {
        "name": "alice",
        "uid": 1601,
        "fullName": "Alice Renamed",
        "shell": "/bin/sh",
        "home": "/home/alice2",
        "primaryGroup": "qa",
        "groups": ["developers"],
        "admin": False,  # allowed: bob becomes an admin who can log in, in the same run
        "password": {"hash": HASH2},
        "sshAuthorizedKeys": [KEY3],
        "expires": "2028-02-29",
    }
    bob_v2 = {**bob, "admin": True}
    policy = document(groups=groups, users=[alice_v2, bob_v2])

    planned = plan_policy(testhost, policy)
    assert planned.returncode == 2, _explain(planned)
    changes = by_key(planned.report["changes"])
    assert {e["action"] for e in changes[("users", "alice")]} == {"update"}
    fields = changed_fields(changes[("users", "alice")])
    assert {
        "uid",
        "fullName",
        "shell",
        "home",
        "primaryGroup",
        "groups",
        "admin",
        "password",
        "sshAuthorizedKeys",
        "expires",
    } <= set(fields), fields
    assert fields["uid"] == (1501, 1601) and fields["shell"] == ("/bin/bash", "/bin/sh")
    assert fields["password"] == ("(secret)", "(secret)")
    assert changed_fields(changes[("users", "bob")])["admin"] == (False, True)
    assert HASH1 not in planned.stdout and HASH2 not in planned.stdout

    applied(testhost, policy)
    infra = testinfra_host
    alice = infra.user("alice")
    assert (alice.uid, alice.group, alice.gecos) == (1601, "qa", "Alice Renamed")
    assert (alice.home, alice.shell) == ("/home/alice2", "/bin/sh")
    # groups are additive, but ops was added by jcstate and no policy lists it any more: it
    # goes (the ownership ledger, docs/ownership.md); a membership from before jcstate would stay
    assert set(alice.groups) == {"qa", "developers"}
    assert alice.password == HASH2
    assert alice.expiration_date == day("2028-02-29")
    assert "alice" not in members(infra, "sudo") and "bob" in members(infra, "sudo")
    keys = infra.file("/home/alice2/.ssh/authorized_keys")
    assert keys.content_string == KEY3 + "\n"
    assert (keys.mode, keys.user, keys.group) == (0o600, "alice", "qa")
    assert infra.file("/home/alice2/.ssh").mode == 0o700
    # /home/alice2 was free: usermod -d -m moved the home there (documented in users.md)
    assert not infra.file("/home/alice-home").exists
    assert infra.file("/home/alice2").user == "alice" and infra.file("/home/alice2").mode == 0o755

    assert_converged(testhost, policy)


# -- 3. remove -------------------------------------------------------------------------------
def test_remove_users_with_and_without_home_and_a_group(
    testhost: th.TestHost, testinfra_host
) -> None:
    before = document(
        groups=[{"name": "tmpgrp", "gid": 2100}],
        users=[{"name": "carol", "groups": ["tmpgrp"]}, {"name": "dave"}, {"name": "erin"}],
    )
    applied(testhost, before)
    infra = testinfra_host
    assert infra.file("/home/carol").is_directory and infra.file("/home/dave").is_directory
    testhost.run(["touch", "/home/dave/notes.txt"])

    after = document(
        groups=[{"name": "tmpgrp", "state": "absent"}],
        users=[
            {"name": "carol", "state": "absent"},
            {"name": "dave", "state": "absent", "removeHome": True},
            {"name": "erin"},
        ],
    )
    report = applied(testhost, after)
    results = by_key(report["results"])
    assert [e["action"] for e in results[("users", "carol")]] == ["remove"]
    assert [e["action"] for e in results[("users", "dave")]] == ["remove"]
    assert [e["action"] for e in results[("groups", "tmpgrp")]] == ["remove"]
    assert ("users", "erin") not in results

    assert not infra.user("carol").exists and not infra.user("dave").exists
    assert infra.file("/home/carol").is_directory  # removeHome defaults to false
    assert not infra.file("/home/dave").exists
    assert not infra.group("tmpgrp").exists
    # USERGROUPS: userdel takes the users' own groups with them
    assert not infra.group("carol").exists and not infra.group("dave").exists
    assert infra.user("erin").exists

    assert_converged(testhost, after)


# -- 4. groups and membership -----------------------------------------------------------------
def test_groups_and_authoritative_members_leave_the_rest_alone(
    testhost: th.TestHost, testinfra_host
) -> None:
    users = [{"name": "alice"}, {"name": "bob"}, {"name": "carol", "groups": ["extra"]}]
    v1 = document(
        groups=[
            {"name": "team", "members": ["alice", "bob"]},
            {"name": "extra"},
            {"name": "gone", "gid": 2300},
        ],
        users=users,
    )
    applied(testhost, v1)
    infra = testinfra_host
    assert members(infra, "team") == {"alice", "bob"}
    assert members(infra, "extra") == {"carol"}
    assert infra.group("gone").gid == 2300
    assert_converged(testhost, v1)

    # Behind jcstate's back: a group the policy never names, and a membership added by hand.
    root = str(testhost.root)
    subprocess.run(["groupadd", "--root", root, "legacy"], check=True)
    subprocess.run(["gpasswd", "--root", root, "-M", "alice,bob", "legacy"], check=True)
    testhost.run(["usermod", "-a", "-G", "gone,team", "carol"])  # by hand, inside the host

    v2 = document(
        groups=[
            {"name": "team", "members": ["alice", "carol"]},  # bob out; carol stays (by hand)
            {"name": "extra"},
            {"name": "gone", "state": "absent"},
            # below gone's gid: groupadd allocates above the highest gid in use
            {"name": "fresh", "gid": 2250, "members": ["bob"]},
        ],
        users=users,
    )
    planned = plan_policy(testhost, v2)
    assert planned.returncode == 2, _explain(planned)
    changes = by_key(planned.report["changes"])
    assert changed_fields(changes[("groups", "team")])["members"] == (
        ["alice", "bob", "carol"],
        ["alice", "carol"],
    )
    assert ("groups", "legacy") not in changes and ("groups", "extra") not in changes

    applied(testhost, v2)
    assert members(infra, "team") == {"alice", "carol"}
    assert members(infra, "fresh") == {"bob"} and infra.group("fresh").gid == 2250
    assert not infra.group("gone").exists
    assert members(infra, "legacy") == {"alice", "bob"}  # not managed: untouched
    assert members(infra, "extra") == {"carol"}
    assert set(infra.user("carol").groups) == {"carol", "extra", "team"}
    assert_converged(testhost, v2)

    v3 = document(groups=[{"name": "team", "members": []}, {"name": "fresh"}], users=users)
    applied(testhost, v3)
    assert members(infra, "team") == set()
    assert members(infra, "fresh") == {"bob"}  # members omitted: not managed any more
    gshadow = testhost.path("/etc/gshadow").read_text()
    assert re.search(r"^team:[^:]*:[^:]*:$", gshadow, re.M), "gshadow must agree: no members"
    assert_converged(testhost, v3)


# -- 5. lock and unlock ----------------------------------------------------------------------
def _ssh_login(port: int, user: str, key_file: Path) -> bool:
    """Whether ``user`` can log in with this key and run a command."""
    import paramiko

    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    try:
        client.connect(
            "127.0.0.1",
            port=port,
            username=user,
            key_filename=str(key_file),
            look_for_keys=False,
            allow_agent=False,
            timeout=10,
            banner_timeout=10,
            auth_timeout=10,
        )
        _, out, _ = client.exec_command("id -un", timeout=10)
        return out.read().decode().strip() == user
    except paramiko.AuthenticationException:
        return False
    finally:
        client.close()


def test_lock_and_unlock(testhost: th.TestHost, testinfra_host) -> None:
    pytest.importorskip("paramiko")
    testhost.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", "/root/id_erin"])
    key = testhost.path("/root/id_erin.pub").read_text().strip()
    erin = {"name": "erin", "password": {"hash": HASH1}, "sshAuthorizedKeys": [key]}
    present = document(users=[erin])
    applied(testhost, present)
    infra = testinfra_host
    assert infra.user("erin").password == HASH1
    assert infra.user("erin").expiration_date is None
    port = testhost.start_sshd()
    private = testhost.path("/root/id_erin")
    assert _ssh_login(port, "erin", private), "a key login must work before the lock"

    locked = document(users=[{**erin, "state": "locked"}])
    report = applied(testhost, locked)
    fields = changed_fields(by_key(report["results"])[("users", "erin")])
    assert fields["state"] == ("present", "locked")
    assert infra.user("erin").password == "!" + HASH1
    assert infra.user("erin").expiration_date == day("1970-01-02")  # usermod -e 1
    assert infra.file("/home/erin/.ssh/authorized_keys").content_string == key + "\n"
    assert not _ssh_login(port, "erin", private), "sshd must refuse the key of a locked account"
    assert_converged(testhost, locked)

    applied(testhost, present)
    assert infra.user("erin").password == HASH1
    assert infra.user("erin").expiration_date is None
    assert _ssh_login(port, "erin", private), "unlocking must give the key login back"
    assert_converged(testhost, present)


# -- 6. expiry -------------------------------------------------------------------------------
def test_expiry_set_change_and_left_alone(testhost: th.TestHost, testinfra_host) -> None:
    infra = testinfra_host
    frank = {"name": "frank", "uid": 1700}
    applied(testhost, document(users=[frank]))
    assert infra.user("frank").expiration_date is None

    for date in ("2027-06-30", "2030-01-01"):
        policy = document(users=[{**frank, "expires": date}])
        report = applied(testhost, policy)
        assert changed_fields(by_key(report["results"])[("users", "frank")])["expires"][1] == date
        assert infra.user("frank").expiration_date == day(date)
        assert_converged(testhost, policy)

    # expires omitted: not managed, so the date set above stays
    assert_converged(testhost, document(users=[frank]))
    assert infra.user("frank").expiration_date == day("2030-01-01")


def test_expiry_cleared(testhost: th.TestHost, testinfra_host) -> None:
    applied(testhost, document(users=[{"name": "frank", "expires": "2027-06-30"}]))
    # Puppet writes `expiry => absent`, Ansible `expires: -1`; here the natural spelling.
    policy = document(users=[{"name": "frank", "expires": "never"}])
    applied(testhost, policy)
    assert testinfra_host.user("frank").expiration_date is None
    assert_converged(testhost, policy)


def test_expiry_never_on_create_and_after_a_lock(testhost: th.TestHost, testinfra_host) -> None:
    """useradd -e "" beats an EXPIRE= default; locked → present with never leaves no expiry."""
    testhost.run(["useradd", "-D", "-e", "2031-01-01"])  # inside the host: its own defaults
    policy = document(users=[{"name": "grace", "expires": "never"}])
    applied(testhost, policy)
    assert testinfra_host.user("grace").expiration_date is None
    assert_converged(testhost, policy)

    applied(testhost, document(users=[{"name": "grace", "state": "locked"}]))
    assert testinfra_host.user("grace").expiration_date == day("1970-01-02")
    applied(testhost, policy)  # back to present (the default state), expires: never
    assert testinfra_host.user("grace").expiration_date is None
    assert_converged(testhost, policy)
    verified = verify_policy(testhost, policy)
    assert verified.returncode == 0, _explain(verified)
    checks = {c["check"]: c["status"] for c in verified.report["checks"]}
    assert checks.get("account never expires") == "pass", checks


# -- 7. password ------------------------------------------------------------------------------
def test_password_hash_is_idempotent_and_never_shown(testhost: th.TestHost, testinfra_host) -> None:
    infra = testinfra_host
    outputs: list[str] = []

    def run(result: CliResult) -> CliResult:
        outputs.append(result.stdout + result.stderr)
        return result

    v1 = document(users=[{"name": "gina", "password": {"hash": HASH1}}])
    planned = run(plan_policy(testhost, v1))
    assert changed_fields(planned.report["changes"])["password"] == (None, "(secret)")
    run(apply_policy(testhost, v1))
    assert infra.user("gina").password == HASH1

    again = run(apply_policy(testhost, v1))  # same hash: nothing to do, no chpasswd
    assert again.returncode == 0 and again.report["results"] == [], _explain(again)
    assert_converged(testhost, v1)

    v2 = document(users=[{"name": "gina", "password": {"hash": HASH2}}])
    planned = run(plan_policy(testhost, v2))
    assert planned.returncode == 2
    assert changed_fields(planned.report["changes"]) == {"password": ("(secret)", "(secret)")}
    steps = [s for c in planned.report["changes"] for s in c["steps"]]
    assert [s["run"][0] for s in steps] == ["chpasswd"] and steps[0]["stdin"] == "(secret)"
    updated = run(apply_policy(testhost, v2))
    assert updated.returncode == 0, _explain(updated)
    assert infra.user("gina").password == HASH2
    assert_converged(testhost, v2)

    # The text report too, with every command shown, after a change by hand.
    testhost.run(["chpasswd", "-e"], input=f"gina:{HASH1}\n")
    text = _text_run(testhost, v2, "plan", "--show-commands")
    outputs.append(text.stdout + text.stderr)
    assert text.returncode == 2, text.stdout + text.stderr
    text = _text_run(testhost, v2, "apply", "--show-commands")
    outputs.append(text.stdout + text.stderr)
    assert text.returncode == 0 and "password: (secret) → (secret)" in text.stdout, text.stdout
    assert "chpasswd" in text.stdout and "< (secret)" in text.stdout
    assert infra.user("gina").password == HASH2

    for out in outputs:
        assert HASH1 not in out and HASH2 not in out
        assert "e2eSalt" not in out  # not even the salt


def _text_run(host: th.TestHost, policy: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``jcstate ARGS --root ROOT POLICY`` with the text report, the policy in a temp dir."""
    with tempfile.TemporaryDirectory(prefix="jcstate-policy-") as tmp:
        path = Path(tmp, "policy.yaml")
        path.write_text(policy)
        return subprocess.run(
            [*jcstate_argv(), args[0], "--root", str(host.root), str(path), *args[1:]],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


# -- 8. keys ---------------------------------------------------------------------------------
def test_keys_set_change_empty(testhost: th.TestHost, testinfra_host) -> None:
    infra = testinfra_host
    path = "/home/hank/.ssh/authorized_keys"
    for keys, text in (([KEY1, KEY2], f"{KEY1}\n{KEY2}\n"), ([KEY3], f"{KEY3}\n"), ([], "")):
        policy = document(users=[{"name": "hank", "sshAuthorizedKeys": keys}])
        applied(testhost, policy)
        f = infra.file(path)
        assert f.exists and f.content_string == text, keys
        assert (f.mode, f.user, f.group) == (0o600, "hank", "hank")
        assert infra.file("/home/hank/.ssh").mode == 0o700
        assert_converged(testhost, policy)

    # Wrong mode and owner by hand: the content is right, the file is not.
    testhost.run(["chmod", "0644", path])
    testhost.run(["chown", "root:root", path])
    policy = document(users=[{"name": "hank", "sshAuthorizedKeys": []}])
    planned = plan_policy(testhost, policy)
    assert planned.returncode == 2 and "sshAuthorizedKeys.file" in changed_fields(
        planned.report["changes"]
    ), _explain(planned)
    applied(testhost, policy)
    f = infra.file(path)
    assert (f.mode, f.user, f.group) == (0o600, "hank", "hank")
    assert_converged(testhost, policy)


def test_planted_symlinks_are_not_followed(testhost: th.TestHost, testinfra_host) -> None:
    infra = testinfra_host
    v1 = document(
        users=[
            {"name": "ivan", "sshAuthorizedKeys": [KEY1]},
            {"name": "judy", "sshAuthorizedKeys": [KEY1]},
        ]
    )
    applied(testhost, v1)
    # Root's own keys, which the users try to get jcstate to overwrite.
    testhost.run(["install", "-d", "-m", "0700", "/root/.ssh"])
    testhost.run(["install", "-m", "0600", "/dev/null", "/root/.ssh/authorized_keys"])
    testhost.path("/root/.ssh/authorized_keys").write_text("root-only-key\n")
    shadow_before = testhost.path("/etc/shadow").read_text().splitlines()
    # ivan swaps his ~/.ssh for a link to /root/.ssh; judy links her key file to /etc/shadow.
    testhost.run(["rm", "-r", "/home/ivan/.ssh"])
    testhost.run(["ln", "-s", "/root/.ssh", "/home/ivan/.ssh"])
    testhost.run(["chown", "-h", "ivan:ivan", "/home/ivan/.ssh"])
    testhost.run(["rm", "/home/judy/.ssh/authorized_keys"])
    testhost.run(["ln", "-s", "/etc/shadow", "/home/judy/.ssh/authorized_keys"])
    testhost.run(["chown", "-h", "judy:judy", "/home/judy/.ssh/authorized_keys"])

    v2 = document(
        users=[
            {"name": "ivan", "sshAuthorizedKeys": [KEY2]},
            {"name": "judy", "sshAuthorizedKeys": [KEY2]},
            {"name": "kate", "sshAuthorizedKeys": [KEY3]},
        ]
    )
    result = apply_policy(testhost, v2)
    assert result.returncode == 1, _explain(result)
    report = result.report
    assert not report["ok"]
    results = by_key(report["results"])
    for user in ("ivan", "judy"):
        (entry,) = results[("users", user)]
        assert entry["status"] in {"refused", "failed"}, entry
        reason = entry.get("message", "") + entry.get("error", "")
        assert "symlink" in reason or "symbolic link" in reason, entry
    assert [e["status"] for e in results[("users", "kate")]] == ["ok"]
    assert infra.file("/home/kate/.ssh/authorized_keys").content_string == KEY3 + "\n"

    # Nothing was written through the links.
    root_keys = infra.file("/root/.ssh/authorized_keys")
    assert root_keys.content_string == "root-only-key\n"
    assert (root_keys.mode, root_keys.user) == (0o600, "root")
    assert infra.file("/root/.ssh").mode == 0o700
    shadow_after = testhost.path("/etc/shadow").read_text().splitlines()
    assert [ln for ln in shadow_after if not ln.startswith("kate:")] == shadow_before
    assert infra.file("/home/ivan/.ssh").is_symlink
    assert infra.file("/home/judy/.ssh/authorized_keys").is_symlink

    # Second plan: only the two refusals are left; kate has converged.
    again = plan_policy(testhost, v2)
    assert again.returncode == 1, _explain(again)
    left = by_key(again.report["changes"])
    assert set(left) == {("users", "ivan"), ("users", "judy")}
    assert all(e.get("error") for es in left.values() for e in es)


# -- 9. admin --------------------------------------------------------------------------------
def test_admin_promote_demote_and_last_admin_lockout(testhost: th.TestHost, testinfra_host) -> None:
    infra = testinfra_host
    alice = {"name": "alice", "password": {"hash": HASH1}}
    bob = {"name": "bob", "password": {"hash": HASH1}}

    both = document(users=[{**alice, "admin": True}, {**bob, "admin": True}])
    applied(testhost, document(users=[{**alice, "admin": True}, {**bob, "admin": False}]))
    assert members(infra, "sudo") == {"alice"}
    applied(testhost, both)  # promote bob
    assert members(infra, "sudo") == {"alice", "bob"}
    assert_converged(testhost, both)

    only_bob = document(users=[{**alice, "admin": False}, {**bob, "admin": True}])
    applied(testhost, only_bob)  # demote alice: bob is still an admin who can log in
    assert members(infra, "sudo") == {"bob"}
    assert "sudo" not in infra.user("alice").groups
    assert_converged(testhost, only_bob)

    # Demoting, locking or removing the last admin is refused, with the reason; nothing changes.
    files_before = account_bytes(testhost)
    nobody = document(users=[{**alice, "admin": False}, {**bob, "admin": False}])
    # (bob keeps admin: true here: without it the ledger would also undo the admin right
    # jcstate granted him, in a second refused change)
    locked = document(users=[{**alice, "admin": False}, {**bob, "admin": True, "state": "locked"}])
    removed = document(users=[{**alice, "admin": False}, {"name": "bob", "state": "absent"}])
    for policy in (nobody, locked, removed):
        refused = apply_policy(testhost, policy)
        assert refused.returncode == 1, _explain(refused)
        (entry,) = by_key(refused.report["results"])[("users", "bob")]
        assert entry["status"] == "refused", entry
        assert "without an admin account that can log in" in entry["error"], entry
        assert "allowLockout: true" in entry["error"], entry
        assert entry["steps"], "the refused change still shows what it would have run"
        assert account_bytes(testhost) == files_before
    assert members(infra, "sudo") == {"bob"}
    text = _text_run(testhost, nobody, "plan")
    assert text.returncode == 1 and "! user bob: refused:" in text.stdout, text.stdout

    # ...unless the policy says it knows what it is doing.
    allowed = document(
        users=[{**alice, "admin": False}, {**bob, "admin": False, "allowLockout": True}]
    )
    applied(testhost, allowed)
    assert members(infra, "sudo") == set()
    assert_converged(testhost, allowed)


# -- 10. bad input ---------------------------------------------------------------------------
BAD_SCHEMA = """\
apiVersion: jcstate/v1
kind: Policy
metadata:
  name: bad-input
selector:
  os: [linux]
spec:
  groups:
    - name: developers
  users:
    - name: alice
      uid: 1501
    - name: bob
      uid: not-a-number
      shel: /bin/bash
"""


def test_bad_input_changes_nothing(testhost: th.TestHost, testinfra_host) -> None:
    files_before = account_bytes(testhost)

    result = apply_policy(testhost, BAD_SCHEMA)
    assert result.returncode == 1, _explain(result)
    problems = {
        (int(line), int(col)): message
        for line, col, message in re.findall(r"policy\.yaml:(\d+):(\d+): (.+)", result.stderr)
    }
    # both problems at once, each where it is: the uid's value, the misspelt key
    assert set(problems) == {(14, 12), (15, 7)}, result.stderr
    assert "uid" in problems[(14, 12)] and "shel" in problems[(15, 7)], result.stderr
    assert "nothing was changed" in result.stderr
    assert account_bytes(testhost) == files_before
    assert not testinfra_host.user("alice").exists
    assert not testinfra_host.group("developers").exists

    outside = Path("/tmp/jcstate-e2e-pwned")
    inside = testhost.path("/tmp/pwned")
    for name in ("bob;touch${IFS}/tmp/pwned", "$(touch /tmp/pwned)", "`touch /tmp/pwned`", "-rf"):
        policy = document(users=[{"name": name}], groups=[{"name": "ok-group"}])
        rejected = apply_policy(testhost, policy)
        assert rejected.returncode == 1, _explain(rejected)
        assert re.search(r"policy\.yaml:\d+:\d+: name .* is not a valid name", rejected.stderr), (
            rejected.stderr
        )
        assert rejected.stdout == ""  # refused at validation: no plan, no report
        assert account_bytes(testhost) == files_before, name
    assert not inside.exists() and not outside.exists()
    assert not testinfra_host.group("ok-group").exists


def test_invalid_names_are_reported_one_problem_per_line(testhost: th.TestHost) -> None:
    """A name holding a newline or a terminal escape must not break or paint the report."""
    files_before = account_bytes(testhost)
    policy = document(users=[{"name": "root\nx"}, {"name": "eve\x1b[2Jwiped"}])
    rejected = apply_policy(testhost, policy)
    assert rejected.returncode == 1, _explain(rejected)
    lines = rejected.stderr.splitlines()
    assert len(lines) == 3, lines  # two problems and the summary
    for line in lines[:2]:
        assert re.match(r"/.*policy\.yaml:\d+:\d+: name ", line), lines
    assert "\x1b" not in rejected.stderr
    assert account_bytes(testhost) == files_before


# -- 11. drift -------------------------------------------------------------------------------
def test_drift_is_planned_exactly_and_repaired(testhost: th.TestHost, testinfra_host) -> None:
    policy = document(
        groups=[{"name": "developers", "gid": 2001}],
        users=[
            {"name": "alice", "uid": 1501, "shell": "/bin/bash", "groups": ["developers"]},
            {
                "name": "bob",
                "uid": 1502,
                "shell": "/bin/bash",
                "fullName": "Bob Builder",
                "groups": ["developers"],
                "password": {"hash": HASH1},
            },
            {"name": "carol", "uid": 1503, "shell": "/bin/bash"},
        ],
    )
    applied(testhost, policy)
    assert_converged(testhost, policy)

    testhost.run(["userdel", "bob"])  # by hand, inside the host
    testhost.run(["usermod", "-s", "/bin/sh", "alice"])
    infra = testinfra_host
    assert not infra.user("bob").exists and infra.user("alice").shell == "/bin/sh"

    planned = plan_policy(testhost, policy)
    assert planned.returncode == 2, _explain(planned)
    changes = by_key(planned.report["changes"])
    assert set(changes) == {("users", "alice"), ("users", "bob")}, changes
    assert [
        (e["action"], [f["field"] for f in e["fields"]]) for e in changes[("users", "alice")]
    ] == [("update", ["shell"])]
    assert changed_fields(changes[("users", "alice")])["shell"] == ("/bin/sh", "/bin/bash")
    assert [e["action"] for e in changes[("users", "bob")]] == ["create"]

    applied(testhost, policy)
    bob = infra.user("bob")
    assert (bob.uid, bob.shell, bob.gecos, bob.password) == (
        1502,
        "/bin/bash",
        "Bob Builder",
        HASH1,
    )
    assert "developers" in bob.groups
    assert infra.user("alice").shell == "/bin/bash"
    assert_converged(testhost, policy)


# -- 12. inside the host ---------------------------------------------------------------------
def test_apply_inside_the_host(testhost: th.TestHost, testinfra_host) -> None:
    policy = document(
        groups=[{"name": "developers", "gid": 2001, "members": ["alice"]}],
        users=[
            {
                "name": "alice",
                "uid": 1501,
                "fullName": "Alice Inside",
                "shell": "/bin/bash",
                "admin": True,
                "password": {"hash": HASH1},
                "sshAuthorizedKeys": [KEY1],
            }
        ],
    )
    testhost.path("/root/policy.yaml").write_text(policy)
    testhost.install_jcstate()

    result = testhost.jcstate("apply", "/root/policy.yaml", "--output", "json")
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert HASH1 not in result.stdout + result.stderr
    report = CliResult([], result.returncode, result.stdout, result.stderr).report
    argvs = [s["run"] for r in report["results"] for s in r["steps"] if "run" in s]
    assert argvs and all("--root" not in argv for argv in argvs), argvs  # acting on its own /

    infra = testinfra_host
    alice = infra.user("alice")
    assert (alice.uid, alice.gecos, alice.shell) == (1501, "Alice Inside", "/bin/bash")
    assert alice.password == HASH1
    assert members(infra, "developers") == {"alice"} and "alice" in members(infra, "sudo")
    keys = infra.file("/home/alice/.ssh/authorized_keys")
    assert (keys.content_string, keys.mode, keys.user) == (KEY1 + "\n", 0o600, "alice")

    again = testhost.jcstate("plan", "/root/policy.yaml", "--output", "json")
    assert again.returncode == 0, f"{again.stdout}\n{again.stderr}"
    assert CliResult([], 0, again.stdout, again.stderr).report["changes"] == []
    assert_converged(testhost, policy)  # and the same from outside


# -- 13. partial failure ---------------------------------------------------------------------
def test_partial_failure_skips_dependents_and_applies_the_rest(
    testhost: th.TestHost, testinfra_host
) -> None:
    infra = testinfra_host
    policy = document(
        groups=[{"name": "team", "members": ["bob", "carol"]}],
        users=[
            {"name": "bob", "primaryGroup": "nosuch"},  # neither on the system nor declared
            # home below a regular file: only useradd finds out, at apply time
            {"name": "dave", "home": "/etc/hostname/dave"},
            {"name": "carol", "uid": 1503},
        ],
    )
    result = apply_policy(testhost, policy)
    assert result.returncode == 1, _explain(result)
    report = result.report
    assert not report["ok"]
    results = by_key(report["results"])

    (bob,) = results[("users", "bob")]
    assert bob["status"] == "refused" and "nosuch" in bob["error"], bob
    (dave,) = results[("users", "dave")]
    assert dave["status"] == "failed", dave
    assert "cannot create directory /etc/hostname/dave" in dave["stderr"], dave
    assert "useradd" in dave["message"] and "exited 12" in dave["message"], dave
    assert [e["status"] for e in results[("users", "carol")]] == ["ok"]
    skipped = [e for e in results[("groups", "team")] if e["status"] == "skipped"]
    assert skipped and "users/bob" in skipped[0]["message"], results[("groups", "team")]
    text = _text_run(testhost, policy, "plan")
    assert "! user bob: refused: primaryGroup nosuch" in text.stdout, text.stdout

    assert not infra.user("bob").exists
    assert infra.user("carol").exists and infra.user("carol").uid == 1503
    assert members(infra, "team") == set()  # skipped: never half-applied
    assert infra.file("/etc/hostname").is_file

    # What is left to do is exactly what failed; carol has converged.
    again = plan_policy(testhost, policy)
    assert again.returncode == 1, _explain(again)
    left = by_key(again.report["changes"])
    assert ("users", "carol") not in left
    assert set(left) <= {("users", "bob"), ("users", "dave"), ("groups", "team")}
