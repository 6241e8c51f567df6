"""The current accounts of a Linux system, read once per run through the host.

``/etc/passwd``, ``/etc/shadow``, ``/etc/group`` and ``/etc/gshadow`` are each read once per
facts round and parsed in-process; the users, groups and ssh_mfa backends share the result
(:meth:`Host.remember`). A user's ``~/.ssh/authorized_keys`` is read on first use only (through
host paths, never following a user-owned symlink): most runs look at a handful of accounts'
keys, and three safe path walks for every passwd entry cost more than the whole plan. A read
that fails (a planted symlink, say) is kept as an error on that user, and only becomes a plan
error if the document manages that user's keys.
"""

from __future__ import annotations

import datetime
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from jcstate.errors import HostError
from jcstate.host import Host
from jcstate.modules.accounts.files import (
    Defaults,
    GroupEntry,
    ShadowEntry,
    UserEntry,
    days_to_date,
    parse_defaults,
    parse_group,
    parse_gshadow,
    parse_passwd,
    parse_shadow,
)

__all__ = [
    "ADMIN_GROUPS",
    "AccountFacts",
    "KeyFile",
    "KeyFiles",
    "PathKinds",
    "gather",
    "read_key_file",
    "today_days",
]

ADMIN_GROUPS = ("sudo", "wheel")  # in this order: Debian/Ubuntu first, then RHEL/Arch/SUSE


@dataclass(frozen=True)
class KeyFile:
    """A user's ``~/.ssh/authorized_keys`` as found (``text`` None: no such file)."""

    text: str | None = None
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    dir_mode: int | None = None
    dir_uid: int | None = None
    dir_gid: int | None = None
    home_exists: bool = True
    error: str | None = None


@dataclass
class AccountFacts:
    """Users, groups and defaults of one system, as the account files say."""

    users: dict[str, UserEntry] = field(default_factory=dict)
    shadow: dict[str, ShadowEntry] = field(default_factory=dict)
    groups: dict[str, GroupEntry] = field(default_factory=dict)
    gshadow: dict[str, tuple[str, ...]] = field(default_factory=dict)
    defaults: Defaults = field(default_factory=Defaults)
    keys: Mapping[str, KeyFile] = field(default_factory=dict)  # by user name; KeyFiles: lazy
    console: dict[str, str] = field(default_factory=dict)  # user → terminal, local sessions only
    # path → "dir" | "link" | "file" (anything else that is not a directory); absent: nothing
    paths: Mapping[str, str] = field(default_factory=dict)

    def group_name(self, gid: int) -> str | None:
        """The name of the group with this gid (the first, as getgrgid does)."""
        for group in self.groups.values():
            if group.gid == gid:
                return group.name
        return None

    def primary_group(self, user: str) -> str | None:
        entry = self.users.get(user)
        return None if entry is None else self.group_name(entry.gid)

    def supplementary(self, user: str) -> set[str]:
        """Groups that list ``user`` as a member (not its primary group)."""
        return {g.name for g in self.groups.values() if user in g.members}

    def admin_group(self, extra: set[str] | frozenset[str] = frozenset()) -> str:
        """The distribution's admin group: ``sudo`` if it exists (or is desired), else ``wheel``."""
        for name in ADMIN_GROUPS:
            if name in self.groups or name in extra:
                return name
        return ADMIN_GROUPS[-1]

    def summary(self) -> dict[str, Any]:
        """JSON-able facts for reports: no password hashes, only whether a password is locked."""
        users = []
        for u in self.users.values():
            sh = self.shadow.get(u.name)
            users.append(
                {
                    "name": u.name,
                    "uid": u.uid,
                    "gid": u.gid,
                    "home": u.home,
                    "shell": u.shell,
                    "groups": sorted(self.supplementary(u.name)),
                    "passwordLocked": bool(sh and sh.password.reveal().startswith(("!", "*"))),
                    "expires": (
                        None
                        if sh is None or sh.expire is None
                        else days_to_date(sh.expire).isoformat()
                    ),
                }
            )
        groups = [
            {"name": g.name, "gid": g.gid, "members": list(g.members)} for g in self.groups.values()
        ]
        return {"users": users, "groups": groups}


def read_key_file(host: Host, home: str) -> KeyFile:
    """Read ``HOME/.ssh/authorized_keys`` and its directory's owner and mode, safely."""
    ssh_dir = home.rstrip("/") + "/.ssh"
    path = ssh_dir + "/authorized_keys"
    try:
        if host.lstat(home) is None:
            return KeyFile(home_exists=False)
        dir_st = host.lstat(ssh_dir)
        if dir_st is not None and stat.S_ISLNK(dir_st.st_mode):
            return KeyFile(error=f"{ssh_dir} is a symlink; jcstate does not follow links there")
        if dir_st is not None and not stat.S_ISDIR(dir_st.st_mode):
            return KeyFile(error=f"{ssh_dir} is not a directory")
        text = host.read_text(path)
        st = host.lstat(path) if text is not None else None
    except (HostError, OSError) as exc:
        return KeyFile(error=f"cannot read {path}: {exc}")
    return KeyFile(
        text=text,
        mode=None if st is None else stat.S_IMODE(st.st_mode),
        uid=None if st is None else st.st_uid,
        gid=None if st is None else st.st_gid,
        dir_mode=None if dir_st is None else stat.S_IMODE(dir_st.st_mode),
        dir_uid=None if dir_st is None else dir_st.st_uid,
        dir_gid=None if dir_st is None else dir_st.st_gid,
    )


def _console_users() -> dict[str, str]:
    """Users with a local (console, tty or X display) session, from utmp via psutil."""
    import psutil

    out: dict[str, str] = {}
    for session in psutil.users():
        term = session.terminal or ""
        local = (
            term == "console"
            or term.startswith(("seat", ":"))
            or (term.startswith("tty") and term[3:].isdigit())
        )
        if local and session.name:
            out.setdefault(session.name, term)
    return out


class KeyFiles(Mapping[str, KeyFile]):
    """Every account's authorized_keys, each read the first time it is asked for."""

    def __init__(self, host: Host, users: Mapping[str, UserEntry]):
        self._host = host
        self._homes = {
            u.name: u.home for u in users.values() if u.home.startswith("/") and u.home.rstrip("/")
        }
        self._read: dict[str, KeyFile] = {}

    def __getitem__(self, name: str) -> KeyFile:
        if name not in self._read:
            self._read[name] = read_key_file(self._host, self._homes[name])
        return self._read[name]

    def __iter__(self) -> Any:
        return iter(self._homes)

    def __len__(self) -> int:
        return len(self._homes)


class PathKinds(Mapping[str, str]):
    """What is at each path asked about (lstat through the host, never following a link)."""

    def __init__(self, host: Host):
        self._host = host
        self._seen: dict[str, str | None] = {}

    def __getitem__(self, path: str) -> str:
        if path not in self._seen:
            self._seen[path] = self._kind(path)
        kind = self._seen[path]
        if kind is None:
            raise KeyError(path)
        return kind

    def _kind(self, path: str) -> str | None:
        try:
            st = self._host.lstat(path)
        except (HostError, OSError):
            return "file"  # unreadable: not a directory jcstate may use or move
        if st is None:
            return None
        if stat.S_ISLNK(st.st_mode):
            return "link"
        return "dir" if stat.S_ISDIR(st.st_mode) else "file"

    def __iter__(self) -> Any:
        return iter([p for p, kind in self._seen.items() if kind is not None])

    def __len__(self) -> int:
        return sum(1 for kind in self._seen.values() if kind is not None)


def gather(host: Host, *, keys: bool = True) -> AccountFacts:
    """The account files, parsed once per facts round (``keys`` is kept for callers; keys are
    always available, read lazily)."""
    return host.remember(("accounts.facts",), lambda: _gather(host))  # type: ignore[no-any-return]


def _gather(host: Host) -> AccountFacts:
    facts = AccountFacts(
        users=parse_passwd(host.read_text("/etc/passwd")),
        shadow=parse_shadow(host.read_text("/etc/shadow")),
        groups=parse_group(host.read_text("/etc/group")),
        gshadow=parse_gshadow(host.read_text("/etc/gshadow")),
        defaults=parse_defaults(
            host.read_text("/etc/login.defs"), host.read_text("/etc/default/useradd")
        ),
    )
    facts.keys = KeyFiles(host, facts.users)
    facts.paths = PathKinds(host)
    # utmp describes the running machine, not a mounted image
    if host.root == "/":
        facts.console = _console_users()
    return facts


def today_days() -> int:
    """Today as days since 1970-01-01 (for expiry checks), in UTC like shadow-utils."""
    now = datetime.datetime.now(datetime.UTC).date()
    return (now - datetime.date(1970, 1, 1)).days
