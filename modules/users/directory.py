"""macOS accounts as Directory Services sees them: one ``dscl`` call for users, one for groups.

Both calls ask for property-list output (``dscl -plist``; dscl(1): "-plist  Print out record(s) or
attribute(s) in XML plist format") of the local node ``.``, listing the attributes wanted by
name, so secrets such as ``ShadowHashData`` never reach jcstate's memory. The output is an XML
plist: an array with one dict per record, whose keys are attribute types
(``dsAttrTypeStandard:RecordName``, ``dsAttrTypeNative:IsHidden``) and whose values are arrays of
strings, even for single values. It is parsed with :mod:`plistlib`, never by scraping text.

The console user (for lock-out safety) is the owner of ``/dev/console``, which the login window
hands to whoever logs in at the screen: ``stat -f %Su /dev/console`` (BSD stat(1): ``-f`` takes a
format, ``%Su`` is the owner's user name). ``root`` means the login window is showing, nobody is
logged in. A failed ``stat`` leaves the console user unknown; planning then warns and refuses
nothing on that account.

Shared by the ``users``, ``groups`` and ``fileVault`` backends for macOS.
"""

from __future__ import annotations

import plistlib
from dataclasses import dataclass, field
from typing import Any

from jcstate.errors import CommandFailed, HostError
from jcstate.host import Host

__all__ = [
    "ADMIN_GROUP",
    "CONSOLE_ARGV",
    "DarwinGroup",
    "DarwinUser",
    "DirectoryFacts",
    "GROUP_ATTRIBUTES",
    "USER_ATTRIBUTES",
    "gather",
    "parse_console",
    "parse_groups",
    "parse_records",
    "parse_users",
]

ADMIN_GROUP = "admin"  # gid 80 on every macOS; membership is what makes an administrator
DISABLED_MARKER = ";DisabledUser;"  # what `pwpolicy -disableuser` adds to AuthenticationAuthority

USER_ATTRIBUTES = (
    "RecordName",
    "UniqueID",
    "PrimaryGroupID",
    "RealName",
    "UserShell",
    "NFSHomeDirectory",
    "IsHidden",
    "AuthenticationAuthority",
)
GROUP_ATTRIBUTES = ("RecordName", "PrimaryGroupID", "GroupMembership")

USERS_ARGV = ("dscl", "-plist", ".", "-readall", "/Users", *USER_ATTRIBUTES)
GROUPS_ARGV = ("dscl", "-plist", ".", "-readall", "/Groups", *GROUP_ATTRIBUTES)
CONSOLE_ARGV = ("stat", "-f", "%Su", "/dev/console")


@dataclass(frozen=True)
class DarwinUser:
    """One local user record."""

    name: str
    uid: int
    gid: int
    real_name: str = ""
    shell: str = ""
    home: str = ""
    hidden: bool = False
    disabled: bool = False  # AuthenticationAuthority carries ;DisabledUser;


@dataclass(frozen=True)
class DarwinGroup:
    """One local group record; ``members`` are short names (GroupMembership)."""

    name: str
    gid: int
    members: tuple[str, ...] = ()


@dataclass
class DirectoryFacts:
    """The local node's users and groups."""

    users: dict[str, DarwinUser] = field(default_factory=dict)
    groups: dict[str, DarwinGroup] = field(default_factory=dict)
    console: str | None = None  # who is logged in at the screen; None: nobody (or unknown)
    console_problem: str | None = None  # why the console user is unknown, if it is

    def gid_of(self, group: str) -> int | None:
        entry = self.groups.get(group)
        return None if entry is None else entry.gid

    def supplementary(self, user: str) -> set[str]:
        return {g.name for g in self.groups.values() if user in g.members}

    def admins(self) -> set[str]:
        """Users who can log in and are in the admin group (lock-out safety's "admin account")."""
        group = self.groups.get(ADMIN_GROUP)
        members = set(group.members) if group else set()
        return {u.name for u in self.users.values() if u.name in members and can_log_in(u)}

    def summary(self) -> dict[str, Any]:
        """JSON-able facts for reports."""
        return {
            "users": [
                {
                    "name": u.name,
                    "uid": u.uid,
                    "gid": u.gid,
                    "home": u.home,
                    "shell": u.shell,
                    "hidden": u.hidden,
                    "locked": u.disabled,
                    "groups": sorted(self.supplementary(u.name)),
                }
                for u in self.users.values()
            ],
            "groups": [
                {"name": g.name, "gid": g.gid, "members": list(g.members)}
                for g in self.groups.values()
            ],
        }


def can_log_in(user: DarwinUser) -> bool:
    """Not disabled and with a real shell (service accounts have /usr/bin/false)."""
    return not user.disabled and not user.shell.endswith(("/false", "/nologin"))


def _attribute(key: str) -> str:
    # "dsAttrTypeStandard:RealName" and "dsAttrTypeNative:IsHidden" both become the bare name
    return key.rsplit(":", 1)[-1]


def parse_records(data: bytes) -> list[dict[str, list[str]]]:
    """dscl -plist -readall output → one {attribute: [values]} dict per record."""
    try:
        root = plistlib.loads(data)
    except (plistlib.InvalidFileException, ValueError) as exc:
        raise HostError(f"dscl: output is not a property list: {exc}") from exc
    if isinstance(root, dict):  # a single record (dscl -read) is a dict, not an array
        root = [root]
    if not isinstance(root, list):
        raise HostError("dscl: expected an array of records")
    records = []
    for item in root:
        if not isinstance(item, dict):
            continue
        record: dict[str, list[str]] = {}
        for key, value in item.items():
            values = value if isinstance(value, list) else [value]
            record[_attribute(str(key))] = [str(v) for v in values]
        records.append(record)
    return records


def _first(record: dict[str, list[str]], attr: str, default: str = "") -> str:
    values = record.get(attr) or []
    return values[0] if values else default


def _int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def parse_users(data: bytes) -> dict[str, DarwinUser]:
    out: dict[str, DarwinUser] = {}
    for record in parse_records(data):
        name = _first(record, "RecordName")
        uid = _int(_first(record, "UniqueID"))
        if not name or uid is None:
            continue  # a record without a name or id is not an account jcstate can manage
        authority = record.get("AuthenticationAuthority") or []
        out[name] = DarwinUser(
            name=name,
            uid=uid,
            gid=_int(_first(record, "PrimaryGroupID")) or 0,
            real_name=_first(record, "RealName"),
            shell=_first(record, "UserShell"),
            home=_first(record, "NFSHomeDirectory"),
            hidden=_first(record, "IsHidden") in ("1", "YES", "yes", "true"),
            disabled=any(DISABLED_MARKER in a for a in authority),
        )
    return out


def parse_groups(data: bytes) -> dict[str, DarwinGroup]:
    out: dict[str, DarwinGroup] = {}
    for record in parse_records(data):
        name = _first(record, "RecordName")
        gid = _int(_first(record, "PrimaryGroupID"))
        if not name or gid is None:
            continue
        out[name] = DarwinGroup(name, gid, tuple(record.get("GroupMembership") or ()))
    return out


def parse_console(returncode: int, stdout: str, stderr: str) -> tuple[str | None, str | None]:
    """``stat -f %Su /dev/console``'s result → (console user or None, why unknown or None)."""
    owner = stdout.strip()
    if returncode != 0 or not owner or "\n" in owner:
        detail = stderr.strip() or f"exit status {returncode}, output {stdout.strip()!r}"
        return None, f"stat /dev/console failed: {detail}"
    return (None if owner == "root" else owner), None


def gather(host: Host) -> DirectoryFacts:
    """Two dscl calls, whatever the number of accounts, and one stat for the console user."""
    users = host.run(USERS_ARGV)
    groups = host.run(GROUPS_ARGV)
    try:
        console = host.run(CONSOLE_ARGV, check=False)
    except CommandFailed as exc:  # stat missing or hung: raised even with check=False
        user, problem = None, f"stat /dev/console failed: {exc}"
    else:
        user, problem = parse_console(console.returncode, console.stdout, console.stderr)
    return DirectoryFacts(
        users=parse_users(users.stdout.encode()),
        groups=parse_groups(groups.stdout.encode()),
        console=user,
        console_problem=problem,
    )
