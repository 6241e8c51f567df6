"""The re-read after apply, end to end: what jcstate reports is what the account files hold.

Real shadow-utils in fresh Debian test hosts, driven by the real ``jcstate`` command (``--root
ROOT``, or inside the host where a tool must be tampered with), checked through testinfra and
the raw files, never through jcstate's own facts:

* a user created ``state: locked`` with a hash ends with ``!HASH`` in /etc/shadow and the lock's
  expiry (the batched ``chpasswd -e`` used to run after ``usermod -L`` and write it unlocked,
  while the re-read took the expiry alone for "locked");
* a changed ``home`` never leaves the account pointing at a directory that does not exist
  (``pwck -r`` has nothing to say about it): the home moves, or the account points at the
  directory already there and the plan warns;
* a step that silently does less than asked (a ``usermod`` that drops ``-L`` and exits 0) is
  reported ``failed: did not converge``, naming the fact that is still different.
"""

from __future__ import annotations

from typing import Any

import testhost as th
from harness import CliResult, apply_policy, plan_policy
from test_accounts import (
    HASH1,
    HASH2,
    KEY1,
    _explain,
    applied,
    assert_converged,
    by_key,
    changed_fields,
    day,
    document,
)


def shadow(host: th.TestHost, name: str) -> list[str]:
    """The user's /etc/shadow line, split into its nine fields."""
    for line in host.path("/etc/shadow").read_text().splitlines():
        if line.split(":")[0] == name:
            return line.split(":")
    raise AssertionError(f"{name} not in /etc/shadow")


def pwck(host: th.TestHost) -> set[str]:
    """What ``pwck -r`` (read-only) complains about inside the host."""
    result = host.run(["pwck", "-r"], check=False)
    return {line for line in (result.stdout + result.stderr).splitlines() if line.strip()}


def about(lines: set[str], user: str) -> set[str]:
    return {line for line in lines if f"'{user}'" in line}


# -- 1. locked with a hash ---------------------------------------------------------------------
def test_locked_user_with_a_hash_is_created_locked(testhost: th.TestHost, testinfra_host) -> None:
    carol = {"name": "carol", "state": "locked", "password": {"hash": HASH1}}
    dave = {"name": "dave", "password": {"hash": HASH2}}  # a second line in the same batch
    policy = document(users=[carol, dave])
    report = applied(testhost, policy)
    assert HASH1 not in str(report)

    fields = shadow(testhost, "carol")
    assert fields[1] == "!" + HASH1, "the hash must be there, behind the lock's '!'"
    assert fields[7] == "1"  # usermod -e 1: 1970-01-02
    infra = testinfra_host
    assert infra.user("carol").password == "!" + HASH1
    assert infra.user("carol").expiration_date == day("1970-01-02")
    assert shadow(testhost, "dave")[1] == HASH2 and shadow(testhost, "dave")[7] == ""
    assert_converged(testhost, policy)

    # a new hash while locked stays behind the '!' as well (the update path)
    relocked = document(users=[{**carol, "password": {"hash": HASH2}}, dave])
    report = applied(testhost, relocked)
    assert set(changed_fields(by_key(report["results"])[("users", "carol")])) == {"password"}
    assert shadow(testhost, "carol")[1] == "!" + HASH2 and shadow(testhost, "carol")[7] == "1"
    assert_converged(testhost, relocked)

    # and unlocking gives the hash back as it is, without the lock's expiry
    unlocked = document(users=[{**carol, "state": "present", "password": {"hash": HASH2}}])
    report = applied(testhost, unlocked)
    assert changed_fields(by_key(report["results"])[("users", "carol")])["state"] == (
        "locked",
        "present",
    )
    assert shadow(testhost, "carol")[1] == HASH2 and shadow(testhost, "carol")[7] == ""
    assert_converged(testhost, unlocked)


# -- 2. home changes -----------------------------------------------------------------------------
def test_home_moves_with_its_content_and_ownership(testhost: th.TestHost, testinfra_host) -> None:
    baseline = pwck(testhost)  # the stock image has system accounts whose dirs are missing
    erin = {"name": "erin", "uid": 1510, "sshAuthorizedKeys": [KEY1]}
    applied(testhost, document(users=[erin]))
    testhost.path("/home/erin/notes.txt").write_text("notes\n")
    testhost.run(["chown", "erin:", "/home/erin/notes.txt"])

    moved = document(users=[{**erin, "uid": 1610, "home": "/srv/erin"}])
    planned = plan_policy(testhost, moved)
    assert planned.returncode == 2, _explain(planned)
    (change,) = by_key(planned.report["changes"])[("users", "erin")]
    assert changed_fields([change])["home"] == ("/home/erin", "/srv/erin")
    assert planned.report["warnings"] == []
    applied(testhost, moved)

    infra = testinfra_host
    assert infra.user("erin").home == "/srv/erin" and infra.user("erin").uid == 1610
    assert not infra.file("/home/erin").exists, "usermod -m moves the home, it does not copy it"
    for path in ("/srv/erin", "/srv/erin/notes.txt", "/srv/erin/.ssh/authorized_keys"):
        f = infra.file(path)
        assert f.exists and f.uid == 1610 and f.user == "erin", path  # ownership followed
    assert infra.file("/srv/erin/notes.txt").content_string == "notes\n"
    assert infra.file("/srv/erin/.ssh/authorized_keys").content_string == KEY1 + "\n"
    assert about(pwck(testhost), "erin") == set() and pwck(testhost) <= baseline
    assert_converged(testhost, moved)


def test_home_pointed_at_an_existing_directory_with_a_warning(
    testhost: th.TestHost, testinfra_host
) -> None:
    baseline = pwck(testhost)
    frank = {"name": "frank"}
    applied(testhost, document(users=[frank]))
    testhost.run(["mkdir", "-p", "/srv/projects/frank"])

    policy = document(users=[{**frank, "home": "/srv/projects/frank"}])
    planned = plan_policy(testhost, policy)
    assert planned.returncode == 2, _explain(planned)
    warning = (
        "user frank: home /srv/projects/frank exists already: the account points there, and "
        "the old home /home/frank stays where it is"
    )
    assert planned.report["warnings"] == [warning]
    report = applied(testhost, policy)
    assert report["warnings"] == [warning]

    infra = testinfra_host
    assert infra.user("frank").home == "/srv/projects/frank"
    assert infra.file("/home/frank").is_directory, "the old home stays"
    assert infra.file("/srv/projects/frank").user == "root", "an existing directory is not taken"
    assert about(pwck(testhost), "frank") == set() and pwck(testhost) <= baseline
    assert_converged(testhost, policy)

    # a regular file where the home should go: refused at plan time, nothing changes
    testhost.run(["touch", "/srv/not-a-dir"])
    refused = apply_policy(testhost, document(users=[{**frank, "home": "/srv/not-a-dir"}]))
    assert refused.returncode == 1, _explain(refused)
    (result,) = by_key(refused.report["results"])[("users", "frank")]
    assert result["status"] == "refused" and "not a directory" in result["error"], result
    assert infra.user("frank").home == "/srv/projects/frank"


# -- 3. a step that silently does less -------------------------------------------------------
USERMOD_WITHOUT_LOCK = """#!/bin/sh
# A usermod that silently ignores -L (exit 0), as a broken or wrapped tool might.
for arg do
  shift
  [ "$arg" = "-L" ] && continue
  set -- "$@" "$arg"
done
exec /usr/sbin/usermod "$@"
"""


def _inside(host: th.TestHost, *args: str) -> CliResult:
    result = host.jcstate(*args)
    return CliResult(list(args), result.returncode, result.stdout, result.stderr)


def test_strict_reread_fails_a_lock_that_did_not_take(testhost: th.TestHost) -> None:
    """The expiry took, the '!' did not: the old re-read called that locked and reported ok."""
    grace = {"name": "grace", "password": {"hash": HASH1}}
    applied(testhost, document(users=[grace]))
    locked = document(users=[{**grace, "state": "locked"}])
    testhost.path("/root/locked.yaml").write_text(locked)
    # jcstate runs tools by name from a fixed PATH that starts with /usr/local/sbin
    wrapper = testhost.path("/usr/local/sbin/usermod")
    wrapper.write_text(USERMOD_WITHOUT_LOCK)
    wrapper.chmod(0o755)

    result = _inside(testhost, "apply", "/root/locked.yaml", "--output", "json")
    assert result.returncode == 1, _explain(result)
    report: Any = result.report
    assert not report["ok"]
    (grace_result,) = by_key(report["results"])[("users", "grace")]
    assert grace_result["status"] == "failed", grace_result
    assert grace_result["message"] == (
        "did not converge: still differs after apply "
        "(state: partly locked (expired by the lock) → locked)"
    ), grace_result
    assert shadow(testhost, "grace")[1] == HASH1 and shadow(testhost, "grace")[7] == "1"

    # with the real tool back, the next run finishes the lock and reports ok
    wrapper.unlink()
    again = _inside(testhost, "apply", "/root/locked.yaml", "--output", "json")
    assert again.returncode == 0, _explain(again)
    assert [r["status"] for r in again.report["results"]] == ["ok"]
    assert shadow(testhost, "grace")[1] == "!" + HASH1
    assert_converged(testhost, locked)
