"""Windows local accounts as ``Get-LocalUser``/``Get-LocalGroup``/``Get-LocalGroupMember`` say.

One PowerShell call (``powershell.SCRIPTS["facts"]``) prints one JSON object,
``{"Users": [...], "Groups": [...], "Console": {...}}``, made with ``ConvertTo-Json -Depth 5
-Compress``. Shapes, as Microsoft documents them for the LocalAccounts objects (LocalUser,
LocalGroup, LocalPrincipal):

* user: ``Name``, ``FullName``, ``Enabled`` (bool), ``SID`` (string, selected as ``.SID.Value``),
  ``AccountExpires`` (null, or a DateTime: ``"\\/Date(1798675200000)\\/"`` from Windows PowerShell
  5.1's ConvertTo-Json, ``"2027-01-01T00:00:00"`` from PowerShell 7);
* group: ``Name``, ``SID``, ``Members``: each ``Name`` (``COMPUTER\\alice``, or ``DOMAIN\\bob``),
  ``SID``, ``ObjectClass`` (``User``/``Group``) and ``PrincipalSource`` (``Local``,
  ``ActiveDirectory``, ``AzureAD``, ``MicrosoftAccount``);
* console: ``UserName`` of ``Win32_ComputerSystem`` (``DOMAIN\\user`` of whoever is logged in at
  the console, null when nobody is) and ``Error``, the message when that CIM query failed (then
  the console user is unknown). Facts without ``Console`` (older output) mean nobody.

Names are case-insensitive on Windows: facts are keyed by the case-folded name. The
Administrators group is found by its well-known SID ``S-1-5-32-544``, never by its name, which is
localised (``Administratoren``, ``Administrateurs``).
"""

from __future__ import annotations

import datetime
import json
import re
from dataclasses import dataclass, field
from typing import Any

from jcstate.errors import HostError
from jcstate.host import Host
from jcstate.modules.users.powershell import script_run

__all__ = ["ADMINISTRATORS_SID", "WinGroup", "WinUser", "WindowsFacts", "gather", "key", "parse"]

ADMINISTRATORS_SID = "S-1-5-32-544"
_MS_DATE = re.compile(r"/Date\((-?\d+)(?:[+-]\d{4})?\)/")


def key(name: str) -> str:
    """How Windows compares account names: case-insensitively."""
    return name.casefold()


@dataclass(frozen=True)
class WinUser:
    name: str
    sid: str
    full_name: str = ""
    enabled: bool = True
    expires: datetime.date | None = None


@dataclass(frozen=True)
class WinMember:
    name: str  # without the COMPUTER\ prefix for local principals
    sid: str
    local: bool


@dataclass(frozen=True)
class WinGroup:
    name: str
    sid: str
    members: tuple[WinMember, ...] = ()

    def local_members(self) -> list[str]:
        return [m.name for m in self.members if m.local]


@dataclass
class WindowsFacts:
    users: dict[str, WinUser] = field(default_factory=dict)  # by key(name)
    groups: dict[str, WinGroup] = field(default_factory=dict)  # by key(name)
    console: str | None = None  # user part of the console session's DOMAIN\user; None: nobody
    console_problem: str | None = None  # why the console user is unknown, if it is

    def on_console(self, user: str) -> bool:
        """Whether ``user`` (a local name) is the one logged in at the console."""
        return self.console is not None and key(self.console) == key(user)

    def user(self, name: str) -> WinUser | None:
        return self.users.get(key(name))

    def group(self, name: str) -> WinGroup | None:
        return self.groups.get(key(name))

    def administrators(self) -> WinGroup | None:
        return next((g for g in self.groups.values() if g.sid == ADMINISTRATORS_SID), None)

    def member_of(self, user: str) -> set[str]:
        """Names of the groups that list ``user`` as a local member."""
        return {
            g.name
            for g in self.groups.values()
            if any(key(m) == key(user) for m in g.local_members())
        }

    def is_admin(self, user: str) -> bool:
        admins = self.administrators()
        return admins is not None and any(key(m) == key(user) for m in admins.local_members())

    def can_log_in(self, user: str, today: datetime.date) -> bool:
        entry = self.user(user)
        return (
            entry is not None and entry.enabled and (entry.expires is None or entry.expires > today)
        )

    def admins(self, today: datetime.date) -> set[str]:
        return {
            u.name
            for u in self.users.values()
            if self.is_admin(u.name) and self.can_log_in(u.name, today)
        }

    def summary(self) -> dict[str, Any]:
        return {
            "users": [
                {
                    "name": u.name,
                    "sid": u.sid,
                    "fullName": u.full_name,
                    "enabled": u.enabled,
                    "expires": u.expires.isoformat() if u.expires else None,
                    "admin": self.is_admin(u.name),
                    "groups": sorted(self.member_of(u.name)),
                }
                for u in self.users.values()
            ],
            "groups": [
                {"name": g.name, "sid": g.sid, "members": [m.name for m in g.members]}
                for g in self.groups.values()
            ],
        }


def parse_date(value: Any) -> datetime.date | None:
    """A ConvertTo-Json DateTime (5.1's /Date(ms)/ or 7's ISO 8601) → date; null → None."""
    if value in (None, ""):
        return None
    text = str(value)
    match = _MS_DATE.fullmatch(text)
    if match:
        stamp = int(match.group(1)) / 1000
        return datetime.datetime.fromtimestamp(stamp, datetime.UTC).date()
    try:
        return datetime.datetime.fromisoformat(text).date()
    except ValueError as exc:
        raise HostError(f"Get-LocalUser: unexpected AccountExpires {text!r}") from exc


def _list(value: Any) -> list[Any]:
    # ConvertTo-Json writes a one-element collection as the element itself unless wrapped in @()
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _short(name: str) -> str:
    return name.rsplit("\\", 1)[-1]


def parse(text: str) -> WindowsFacts:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise HostError(f"powershell: facts are not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise HostError("powershell: facts: expected an object with Users and Groups")
    facts = WindowsFacts()
    for item in _list(data.get("Users")):
        user = WinUser(
            name=str(item["Name"]),
            sid=str(item.get("SID") or ""),
            full_name=str(item.get("FullName") or ""),
            enabled=bool(item.get("Enabled")),
            expires=parse_date(item.get("AccountExpires")),
        )
        facts.users[key(user.name)] = user
    for item in _list(data.get("Groups")):
        members = tuple(
            WinMember(
                name=_short(str(m["Name"]))
                if m.get("PrincipalSource") == "Local"
                else str(m["Name"]),
                sid=str(m.get("SID") or ""),
                local=m.get("PrincipalSource") == "Local" and m.get("ObjectClass") == "User",
            )
            for m in _list(item.get("Members"))
        )
        group = WinGroup(str(item["Name"]), str(item.get("SID") or ""), members)
        facts.groups[key(group.name)] = group
    facts.console, facts.console_problem = _console(data.get("Console"))
    return facts


def _console(value: Any) -> tuple[str | None, str | None]:
    """The facts' Console object → (user part of UserName or None, why unknown or None).

    Only the part after the backslash is kept and compared with local names: a domain account
    of the same name as a local one is then taken for it, which errs on the side of refusing.
    """
    if value is None:
        return None, None
    if not isinstance(value, dict):
        raise HostError("powershell: facts: Console must be an object")
    if value.get("Error"):
        return None, f"Win32_ComputerSystem query failed: {value['Error']}"
    name = value.get("UserName")
    return (_short(str(name)) if name else None), None


def gather(host: Host) -> WindowsFacts:
    """One powershell.exe call for every user, group and membership."""
    step = script_run("facts")
    return parse(host.run(step.argv).stdout)
