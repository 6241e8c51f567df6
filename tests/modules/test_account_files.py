"""The account-file parsers on real Debian 12 files, and gather() through a Host with a root."""

from __future__ import annotations

import datetime
import os
import shutil
from pathlib import Path

import pytest
from account_cases import DEBIAN12

from jcstate.host import Host
from jcstate.modules.accounts.facts import gather
from jcstate.modules.accounts.files import (
    date_to_days,
    days_to_date,
    parse_defaults,
    parse_group,
    parse_gshadow,
    parse_passwd,
    parse_shadow,
)
from jcstate.secret import Secret


def _text(name: str) -> str:
    return (DEBIAN12 / name).read_text()


def test_debian_passwd() -> None:
    users = parse_passwd(_text("passwd"))
    assert users["root"].uid == 0 and users["root"].home == "/root"
    assert users["nobody"].uid == 65534 and users["nobody"].shell == "/usr/sbin/nologin"
    assert len(users) == len(_text("passwd").splitlines())


def test_debian_shadow_hashes_are_secrets() -> None:
    shadow = parse_shadow(_text("shadow"))
    assert isinstance(shadow["root"].password, Secret)
    assert shadow["daemon"].password.reveal() == "*"
    assert all(entry.expire is None for entry in shadow.values())
    assert "(secret)" in repr(shadow["root"])


def test_debian_group_and_gshadow() -> None:
    groups = parse_group(_text("group"))
    assert groups["sudo"].gid == 27 and groups["sudo"].members == ()
    assert groups["users"].gid == 100
    assert set(parse_gshadow(_text("gshadow"))) == set(groups)


def test_debian_defaults() -> None:
    defaults = parse_defaults(_text("login.defs"), _text("useradd"))
    assert defaults.home_base == "/home"
    assert defaults.usergroups is True
    assert defaults.shell == "/bin/sh"


def test_defaults_when_files_say_otherwise() -> None:
    defaults = parse_defaults("USERGROUPS_ENAB no\n", 'HOME="/export/home"\nGROUP=100\n')
    assert (defaults.home_base, defaults.usergroups, defaults.group) == (
        "/export/home",
        False,
        "100",
    )


def test_members_expiry_and_bad_lines() -> None:
    users = parse_passwd(
        "alice:x:1501:1501::/home/alice:/bin/bash\nbroken:x:12\n"
        "bad:x:notanumber:1::/:/bin/sh\n+nis::::::\n\n"
    )
    assert list(users) == ["alice"]
    groups = parse_group("dev:x:2001:alice,bob\nempty:x:2002:\n")
    assert groups["dev"].members == ("alice", "bob") and groups["empty"].members == ()
    shadow = parse_shadow("a:!$6$x$y:20000:0:99999:7::20999:\nb:*:20000::::::\n")
    assert shadow["a"].expire == 20999 and shadow["b"].expire is None
    assert days_to_date(20999) == datetime.date(2027, 6, 30)
    assert date_to_days(datetime.date(1970, 1, 2)) == 1


def _root_with_accounts(tmp_path: Path) -> Path:
    etc = tmp_path / "etc"
    (etc / "default").mkdir(parents=True)
    for name in ("passwd", "shadow", "group", "gshadow", "login.defs"):
        shutil.copy(DEBIAN12 / name, etc / name)
    shutil.copy(DEBIAN12 / "useradd", etc / "default" / "useradd")
    with open(etc / "passwd", "a") as f:
        f.write("alice:x:1501:1501::/home/alice:/bin/bash\nbob:x:1502:1502::/home/bob:/bin/sh\n")
    ssh = tmp_path / "home" / "alice" / ".ssh"
    ssh.mkdir(parents=True, mode=0o700)
    (ssh / "authorized_keys").write_text("ssh-ed25519 AAAA alice@laptop\n")
    os.chmod(ssh, 0o700)
    os.chmod(ssh / "authorized_keys", 0o600)
    return tmp_path


def test_gather_reads_files_and_keys(tmp_path: Path) -> None:
    facts = gather(Host(root=str(_root_with_accounts(tmp_path))))
    assert facts.users["alice"].uid == 1501
    assert facts.keys["alice"].text == "ssh-ed25519 AAAA alice@laptop\n"
    assert facts.keys["alice"].mode == 0o600 and facts.keys["alice"].dir_mode == 0o700
    assert facts.keys["bob"].home_exists is False
    assert facts.console == {}  # utmp is only read for the running machine
    summary = facts.summary()
    assert {"name": "sudo", "gid": 27, "members": []} in summary["groups"]
    assert "$" not in str(summary)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to plant a link owned by another uid")
def test_gather_planted_symlink_is_an_error_not_a_crash(tmp_path: Path) -> None:
    root = _root_with_accounts(tmp_path)
    bob = root / "home" / "bob"
    bob.mkdir(parents=True)
    (root / "secret").write_text("not bob's\n")
    os.symlink("/secret", bob / ".ssh")
    os.lchown(bob / ".ssh", 1502, 1502)
    facts = gather(Host(root=str(root)))
    assert facts.keys["bob"].error and "symlink" in facts.keys["bob"].error
    assert facts.keys["bob"].text is None
    keys = root / "home" / "alice" / ".ssh" / "authorized_keys"
    keys.unlink()
    os.symlink("/secret", keys)
    os.lchown(keys, 1501, 1501)
    facts = gather(Host(root=str(root)))
    assert facts.keys["alice"].error and "symlink" in facts.keys["alice"].error


def test_console_sessions_are_read_on_first_use_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from jcstate.modules.accounts import facts as account_facts

    reads: list[int] = []
    monkeypatch.setattr(
        account_facts, "_console_users", lambda: reads.append(1) or {"alice": "tty1"}
    )
    console = account_facts.ConsoleUsers()
    assert reads == []  # a plan that removes or locks no one never asks
    assert "alice" in console and console["alice"] == "tty1" and "bob" not in console
    assert dict(console) == {"alice": "tty1"} and len(console) == 1
    assert reads == [1]  # read once, then kept
