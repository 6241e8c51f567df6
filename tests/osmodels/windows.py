"""A simulated Windows: the state behind PowerShell's LocalAccounts cmdlets.

A :class:`~jcstate.host.Host` whose ``run`` accepts only ``powershell.exe -NoProfile
-NonInteractive -EncodedCommand <script>``, decodes the script (UTF-16LE base64, as
about_PowerShell_exe documents ``-EncodedCommand``) and requires it to be, byte for byte, one of
the scripts in ``jcstate.modules.users.powershell.SCRIPTS``; it then carries out that script's
cmdlet on its own state with the JSON data (and password line) read from stdin. It cannot run
PowerShell: what it checks is the protocol (fixed script, data as JSON on stdin, password as the
second stdin line) and the cmdlets' documented behaviour (learn.microsoft.com,
Microsoft.PowerShell.LocalAccounts):

* New-LocalUser fails if the name exists (UserExistsException) or is longer than 20 characters
  (InvalidNameException); Set-/Enable-/Disable-/Remove-LocalUser fail on a missing user
  (UserNotFoundException). Names compare case-insensitively. ``-AccountNeverExpires`` clears an
  expiry (``-AccountExpires`` takes no null); giving both fails (InvalidParametersException, as
  the cmdlets' BeginProcessing does in PowerShell's LocalAccounts source).
* Add-LocalGroupMember fails when a member is already in the group (MemberExistsException),
  Remove-LocalGroupMember when it is not (MemberNotFoundException): jcstate's member scripts
  compare SIDs first (``$have``) and only call the cmdlet when needed, which the model mirrors;
  a member that is no user fails (PrincipalNotFoundException). ``Get-LocalGroup -SID``
  finds the group by SID, so the Administrators group may carry a localised name here
  (``WindowsModel(admin_name="Administratoren")`` models a German Windows).
* Facts are printed the way Windows PowerShell 5.1's ``ConvertTo-Json -Compress`` prints the
  facts script's objects: DateTime as ``"\\/Date(ms)\\/"``, members' Name as ``COMPUTER\\user``.
  Their ``Console`` object carries Win32_ComputerSystem's ``UserName`` (``COMPUTER\\user`` of the
  user last :meth:`WindowsModel.login`'d, null when nobody is) or, when ``console_error`` is set,
  that query's error message with a null UserName.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from typing import Any

from jcstate.errors import CommandFailed
from jcstate.host import Host, RunResult
from jcstate.modules.users.powershell import POWERSHELL, SCRIPTS, decode
from jcstate.secret import Secret

from . import ModelError
from .files import MemoryFiles

COMPUTER = "WS01"
DOMAIN_SID = "S-1-5-21-1004336348-1177238915-682003330"


@dataclass
class WinUser:
    name: str
    sid: str
    full_name: str = ""
    enabled: bool = True
    expires: datetime.date | None = None
    password: str | None = None


@dataclass
class WinGroup:
    name: str
    sid: str
    members: list[tuple[str, str, str]] = field(default_factory=list)  # (name, sid, source)


class _Fail(Exception):
    pass


def _key(name: str) -> str:
    return name.casefold()


def _expiry_parameters(d: dict[str, Any]) -> None:
    """New-/Set-LocalUser refuse -AccountExpires together with -AccountNeverExpires."""
    if d.get("expires") is not None and d.get("neverExpires"):
        raise _Fail(
            "AccountExpires and AccountNeverExpires cannot be used together. "
            "(InvalidParametersException)"
        )


class WindowsModel(MemoryFiles, Host):
    """A workstation with Administrator (disabled), Guest, an enabled admin ``it-admin``."""

    def __init__(self, admin_name: str = "Administrators") -> None:
        super().__init__(root="/nonexistent/jcstate-model-windows", os_name="windows")
        self._init_files()
        self.next_rid = 1001
        self.users: dict[str, WinUser] = {}
        self.groups: dict[str, WinGroup] = {}
        for name, rid, enabled in (("Administrator", 500, False), ("Guest", 501, False)):
            self.users[_key(name)] = WinUser(name, f"{DOMAIN_SID}-{rid}", enabled=enabled)
        self.groups[_key(admin_name)] = WinGroup(admin_name, "S-1-5-32-544")
        self.groups["users"] = WinGroup("Users", "S-1-5-32-545")
        self.add_user("it-admin", "IT Admin", password="it-pw")
        self.groups[_key(admin_name)].members += [
            self._principal("Administrator"),
            (r"CORP\Domain Admins", "S-1-5-21-99-512", "ActiveDirectory"),
        ]
        self._join(admin_name, "it-admin")
        self.stdin_seen: list[str] = []
        self.console_user: str | None = None  # who is logged in at the console
        self.console_error: str | None = None  # the CIM query's failure, for "unknown" tests

    def login(self, user: str) -> None:
        """``user`` logs in at the console (Win32_ComputerSystem.UserName shows them)."""
        if _key(user) not in self.users:
            raise ModelError(f"login: no such user {user}")
        self.console_user = self.users[_key(user)].name

    def add_user(self, name: str, full_name: str = "", password: str | None = None) -> None:
        """A hand edit (drift) or setup: a local user as New-LocalUser would make it."""
        self.users[_key(name)] = WinUser(
            name, f"{DOMAIN_SID}-{self.next_rid}", full_name, password=password
        )
        self.next_rid += 1

    def admins_group(self) -> WinGroup:
        return next(g for g in self.groups.values() if g.sid == "S-1-5-32-544")

    def _principal(self, user: str) -> tuple[str, str, str]:
        entry = self.users[_key(user)]
        return (f"{COMPUTER}\\{entry.name}", entry.sid, "Local")

    def _join(self, group: str, user: str) -> None:
        self.groups[_key(group)].members.append(self._principal(user))

    # -- Host ------------------------------------------------------------------------------
    def run(
        self,
        argv: Any,
        *,
        stdin: str | Secret | None = None,
        check: bool = True,
        timeout: float | None = 300,
        env: Any = None,
        chroot: bool = False,
    ) -> RunResult:
        argv = tuple(str(a) for a in argv)
        self.commands_run.append(argv)
        if argv[:-1] != POWERSHELL:
            raise ModelError(f"not the powershell invocation this model knows: {argv}")
        script = decode(argv[-1])
        name = next((n for n, text in SCRIPTS.items() if text == script), None)
        if name is None:
            raise ModelError(f"unknown script:\n{script}")
        data = stdin.reveal() if isinstance(stdin, Secret) else stdin
        if data is not None:
            self.stdin_seen.append(data)
        lines = (data or "").splitlines()
        try:
            out = self._script(name, lines)
            result = RunResult(argv, 0, out, "", 0.0)
        except _Fail as exc:
            result = RunResult(argv, 1, "", f"{name} : {exc}", 0.0)
        if check and result.returncode:
            raise CommandFailed(argv, result.returncode, result.stderr)
        return result

    def _script(self, name: str, lines: list[str]) -> str:
        if name == "facts":
            if lines:
                raise ModelError("the facts script takes no input")
            return self._facts()
        if not lines:
            raise ModelError(f"{name}: no JSON data on stdin")
        d = json.loads(lines[0])
        if name == "New-LocalUser":
            if len(lines) != 2:
                raise ModelError("New-LocalUser: the password must be the second stdin line")
            return self._new_user(d, lines[1])
        if len(lines) != 1:
            raise ModelError(f"{name}: unexpected extra stdin lines")
        if name in ("Set-LocalUser", "Enable-LocalUser", "Disable-LocalUser", "Remove-LocalUser"):
            user = self.users.get(_key(d["name"]))
            if user is None:
                raise _Fail(f"User {d['name']} was not found. (UserNotFoundException)")
            if name == "Remove-LocalUser":
                del self.users[_key(d["name"])]
                for group in self.groups.values():
                    group.members = [m for m in group.members if m[1] != user.sid]
            elif name == "Set-LocalUser":
                self._set(user, d)
            else:
                user.enabled = name == "Enable-LocalUser"
            return ""
        if name == "New-LocalGroup":
            if _key(d["name"]) in self.groups:
                raise _Fail(f"Group {d['name']} already exists. (GroupExistsException)")
            self.groups[_key(d["name"])] = WinGroup(d["name"], f"{DOMAIN_SID}-{self.next_rid}")
            self.next_rid += 1
            return ""
        if name == "Remove-LocalGroup":
            if self.groups.pop(_key(d["name"]), None) is None:
                raise _Fail(f"Group {d['name']} was not found. (GroupNotFoundException)")
            return ""
        if name in ("Add-LocalGroupMember", "Remove-LocalGroupMember"):
            return self._members(name, d)
        raise ModelError(f"script {name} is not modelled")

    def _new_user(self, d: dict[str, Any], password: str) -> str:
        _expiry_parameters(d)  # checked before anything is made, as BeginProcessing does
        if len(d["name"]) > 20:
            raise _Fail(f"The name {d['name']} is not valid. (InvalidNameException)")
        if _key(d["name"]) in self.users:
            raise _Fail(f"User {d['name']} already exists. (UserExistsException)")
        self.add_user(d["name"], d.get("fullName") or "", password=password)
        user = self.users[_key(d["name"])]
        self._set(user, d)
        user.enabled = not d.get("disabled")
        return ""

    def _set(self, user: WinUser, d: dict[str, Any]) -> None:
        _expiry_parameters(d)
        if d.get("fullName") is not None:
            user.full_name = d["fullName"]
        if d.get("expires") is not None:
            user.expires = datetime.date.fromisoformat(d["expires"])
        if d.get("neverExpires"):
            user.expires = None

    def _members(self, name: str, d: dict[str, Any]) -> str:
        if "groupSid" in d:
            group = next((g for g in self.groups.values() if g.sid == d["groupSid"]), None)
        else:
            group = self.groups.get(_key(d["group"]))
        if group is None:
            raise _Fail("Group was not found. (GroupNotFoundException)")
        for member in d["members"]:
            entry = self.users.get(_key(member))
            if entry is None:
                raise _Fail(f"Principal {member} was not found. (PrincipalNotFoundException)")
            inside = any(m[1] == entry.sid for m in group.members)
            if name == "Add-LocalGroupMember" and not inside:
                group.members.append(self._principal(member))
            elif name == "Remove-LocalGroupMember" and inside:
                group.members = [m for m in group.members if m[1] != entry.sid]
        return ""

    def _facts(self) -> str:
        def date(value: datetime.date | None) -> str | None:
            if value is None:
                return None
            ms = int(
                datetime.datetime(
                    value.year, value.month, value.day, tzinfo=datetime.UTC
                ).timestamp()
                * 1000
            )
            return f"/Date({ms})/"

        users = [
            {
                "Name": u.name,
                "FullName": u.full_name,
                "Enabled": u.enabled,
                "SID": u.sid,
                "AccountExpires": date(u.expires),
            }
            for u in self.users.values()
        ]
        groups = [
            {
                "Name": g.name,
                "SID": g.sid,
                "Members": [
                    {
                        "Name": n,
                        "SID": s,
                        "ObjectClass": "Group" if "Admins" in n else "User",
                        "PrincipalSource": src,
                    }
                    for n, s, src in g.members
                ],
            }
            for g in self.groups.values()
        ]
        logged_in = self.console_user is not None and _key(self.console_user) in self.users
        console = {
            "UserName": None
            if self.console_error or not logged_in
            else f"{COMPUTER}\\{self.console_user}",
            "Error": self.console_error,
        }
        text = json.dumps(
            {"Users": users, "Groups": groups, "Console": console}, separators=(",", ":")
        )
        # Windows PowerShell 5.1 escapes the slashes of its DateTime form: "\/Date(ms)\/"
        return text.replace('"/Date(', '"\\/Date(').replace(')/"', ')\\/"')
