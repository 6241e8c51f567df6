"""A simulated Mac: the state behind dscl, sysadminctl, dseditgroup, pwpolicy and fdesetup.

It is a :class:`~jcstate.host.Host` whose ``run`` interprets exactly the argument vectors the
jcstate macOS backends emit, keeps users, groups and FileVault state, and answers in the formats
Apple documents; anything else raises :class:`ModelError` (a test failure, never a silent
success). It is a model, not a Mac: what it says about macOS is only as true as the sources cited:

* ``dscl -plist . -readall /Users|/Groups ATTR...``: dscl(1) "-plist: print out record(s) or
  attribute(s) in XML plist format"; an array of dicts keyed ``dsAttrTypeStandard:NAME`` (and
  ``dsAttrTypeNative:NAME`` for attributes outside the standard map, such as IsHidden), every
  value an array of strings. Only the attributes asked for, and only those the record has.
* ``dscl . -create PATH ATTR VALUE`` replaces the values (and creates the record if missing);
  ``dscl . -delete PATH ATTR`` removes the attribute.
* ``sysadminctl -addUser``: usage text in sysadminctl(8)/``sysadminctl -h``; defaults as
  System Settings makes accounts: first free uid from 501, gid 20 (staff), shell /bin/zsh, home
  /Users/NAME, RealName = NAME. "Pass '-' instead of password ... to request prompt": the model
  reads that answer from stdin and requires it there.
* ``sysadminctl -deleteUser NAME [-keepHome]``; ``dseditgroup -o create [-i GID] | delete |
  edit -a|-d USER -t user GROUP`` (dseditgroup(8)); ``pwpolicy -u NAME -disableuser|
  -enableuser`` (adds/removes ``;DisabledUser;`` in AuthenticationAuthority).
* ``fdesetup status|list|enable -defer|add -inputplist|remove -user|disable -inputplist``
  (fdesetup(8)): status lines "FileVault is On." / "FileVault is Off." / "Deferred enablement
  appears to be active for user 'NAME'."; list lines "shortname,UUID"; the deferral file is a
  plist with RecoveryKey, LVGUUID, EnabledUser, written when the deferred user logs in
  (:meth:`MacModel.login`).
* ``stat -f %Su /dev/console`` (BSD stat(1), ``%Su``: the owner's user name): the login window
  gives /dev/console to whoever logs in at the screen, so it prints the user last logged in with
  :meth:`MacModel.login`, or ``root`` when nobody is; ``console_unreadable`` makes it fail.
"""

from __future__ import annotations

import plistlib
import uuid
from dataclasses import dataclass, field
from typing import Any

from jcstate.errors import CommandFailed
from jcstate.host import Host, RunResult
from jcstate.secret import Secret

from . import ModelError
from .files import MemoryFiles


@dataclass
class MacUser:
    uid: int
    gid: int = 20
    real_name: str = ""
    shell: str = "/bin/zsh"
    home: str = ""
    hidden: bool = False
    disabled: bool = False
    password: str | None = None  # the model's only copy; tests read it to check delivery
    guid: str = field(default_factory=lambda: str(uuid.uuid4()).upper())


@dataclass
class MacGroup:
    gid: int
    members: list[str] = field(default_factory=list)


@dataclass
class FileVaultState:
    on: bool = False
    deferred_to: str | None = None  # "" = the next user who logs in
    deferral_file: str | None = None
    users: list[str] = field(default_factory=list)


class _Fail(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def _standard(attr: str) -> str:
    native = {"IsHidden"}
    return ("dsAttrTypeNative:" if attr in native else "dsAttrTypeStandard:") + attr


class MacModel(MemoryFiles, Host):
    """A Mac with an admin account (``ladmin``), the stock groups, FileVault off."""

    def __init__(self) -> None:
        # a root that is not "/": nothing may mistake the model for the running machine
        super().__init__(root="/nonexistent/jcstate-model-macos", os_name="darwin")
        self._init_files("/var", "/var/db")
        self.users: dict[str, MacUser] = {
            "root": MacUser(0, 0, "System Administrator", "/bin/sh", "/var/root", disabled=True),
            "_www": MacUser(
                70, 70, "World Wide Web Server", "/usr/bin/false", "/Library/WebServer"
            ),
            "ladmin": MacUser(
                501, 20, "Local Admin", "/bin/zsh", "/Users/ladmin", password="ladmin-pw"
            ),
        }
        self.groups: dict[str, MacGroup] = {
            "wheel": MacGroup(0, ["root"]),
            "staff": MacGroup(20, ["root"]),
            "_www": MacGroup(70),
            "admin": MacGroup(80, ["root", "ladmin"]),
        }
        self.homes: set[str] = {"/Users/ladmin", "/var/root"}
        self.fv = FileVaultState()
        self.stdin_seen: list[str] = []  # what reached stdin, for tests that check secrets
        self.console_user: str | None = None  # who is logged in at the screen
        self.console_unreadable = False  # stat of /dev/console fails (for "unknown" tests)

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
        data = stdin.reveal() if isinstance(stdin, Secret) else stdin
        if data is not None:
            self.stdin_seen.append(data)
        tool = {
            "dscl": self._dscl,
            "sysadminctl": self._sysadminctl,
            "dseditgroup": self._dseditgroup,
            "pwpolicy": self._pwpolicy,
            "fdesetup": self._fdesetup,
            "stat": self._stat,
        }.get(argv[0])
        if tool is None:
            raise ModelError(f"not a macOS tool this model knows: {argv}")
        try:
            out = tool(list(argv[1:]), data)
            result = RunResult(argv, 0, out, "", 0.0)
        except _Fail as exc:
            result = RunResult(argv, exc.code, "", str(exc), 0.0)
        if check and result.returncode:
            raise CommandFailed(argv, result.returncode, result.stderr)
        return result

    # -- hand edits for drift tests, and the user's side of FileVault ------------------------
    def login(self, user: str) -> None:
        """``user`` logs in at the screen: they own /dev/console, and a deferred enablement for
        them (or anyone) now happens."""
        if user not in self.users:
            raise ModelError(f"login: no such user {user}")
        self.console_user = user
        if self.fv.deferred_to is None or self.fv.deferred_to not in ("", user):
            return
        self.fv.on, self.fv.users, self.fv.deferred_to = True, [user], None
        info = {
            "EnabledUser": user,
            "LVGUUID": "5A7B0000-1111-2222-3333-444455556666",
            "RecoveryKey": "AB12-CD34-EF56-GH78-IJ90-KL12",
            "SerialNumber": "C02MODEL0001",
        }
        if self.fv.deferral_file is not None:
            self.write_file(self.fv.deferral_file, plistlib.dumps(info))

    # -- stat --------------------------------------------------------------------------------
    def _stat(self, args: list[str], stdin: str | None) -> str:
        if args != ["-f", "%Su", "/dev/console"]:
            raise ModelError(f"stat: only the console owner is modelled, not {args}")
        if self.console_unreadable:
            raise _Fail(1, "stat: /dev/console: stat: Operation not permitted")
        user = self.console_user
        return f"{user if user in self.users else 'root'}\n"

    # -- dscl --------------------------------------------------------------------------------
    def _dscl(self, args: list[str], stdin: str | None) -> str:
        if args[:4] == ["-plist", ".", "-readall", "/Users"]:
            return self._readall(args[4:], self._user_record)
        if args[:4] == ["-plist", ".", "-readall", "/Groups"]:
            return self._readall(args[4:], self._group_record)
        if len(args) == 5 and args[:2] == [".", "-create"]:
            return self._dscl_create(args[2], args[3], args[4])
        if len(args) == 4 and args[:2] == [".", "-delete"]:
            kind, name = self._path(args[2])
            if kind != "Users" or args[3] != "IsHidden" or name not in self.users:
                raise ModelError(f"dscl -delete not modelled: {args}")
            self.users[name].hidden = False
            return ""
        raise ModelError(f"dscl usage not modelled: {args}")

    def _path(self, path: str) -> tuple[str, str]:
        parts = path.split("/")
        if len(parts) != 3 or parts[0] or parts[1] not in ("Users", "Groups"):
            raise ModelError(f"dscl record path not modelled: {path}")
        return parts[1], parts[2]

    def _dscl_create(self, path: str, attr: str, value: str) -> str:
        kind, name = self._path(path)
        if kind == "Groups":
            if attr != "PrimaryGroupID" or name not in self.groups:
                raise ModelError(f"dscl -create {path} {attr} not modelled")
            self.groups[name].gid = int(value)
            return ""
        user = self.users.get(name)
        if user is None:
            raise ModelError(f"dscl -create on missing user {name}: would make a broken record")
        setters = {"RealName": "real_name", "UserShell": "shell", "NFSHomeDirectory": "home"}
        if attr in setters:
            setattr(user, setters[attr], value)
        elif attr in ("UniqueID", "PrimaryGroupID"):
            setattr(user, "uid" if attr == "UniqueID" else "gid", int(value))
        elif attr == "IsHidden":
            user.hidden = value == "1"
        else:
            raise ModelError(f"dscl attribute not modelled: {attr}")
        return ""

    def _user_record(self, name: str) -> dict[str, list[str]]:
        u = self.users[name]
        authority = [";ShadowHash;HASHLIST:<SALTED-SHA512-PBKDF2>"]
        if u.disabled:
            authority.insert(0, ";DisabledUser;")
        record = {
            "RecordName": [name],
            "UniqueID": [str(u.uid)],
            "PrimaryGroupID": [str(u.gid)],
            "RealName": [u.real_name],
            "UserShell": [u.shell],
            "NFSHomeDirectory": [u.home],
            "AuthenticationAuthority": authority,
            "GeneratedUID": [u.guid],
            # present on real records and never asked for: must not be returned
            "ShadowHashData": ["<binary>"],
        }
        if u.hidden:
            record["IsHidden"] = ["1"]
        return record

    def _group_record(self, name: str) -> dict[str, list[str]]:
        g = self.groups[name]
        record = {"RecordName": [name], "PrimaryGroupID": [str(g.gid)]}
        if g.members:
            record["GroupMembership"] = list(g.members)
        return record

    def _readall(self, attrs: list[str], record: Any) -> str:
        if not attrs or "ShadowHashData" in attrs:
            raise ModelError("readall must name its attributes, never the password hash")
        source = self.users if record == self._user_record else self.groups
        out = []
        for name in sorted(source):
            full = record(name)
            out.append({_standard(a): full[a] for a in attrs if a in full})
        return plistlib.dumps(out).decode()

    # -- sysadminctl -------------------------------------------------------------------------
    def _sysadminctl(self, args: list[str], stdin: str | None) -> str:
        if args[:1] == ["-deleteUser"] and len(args) in (2, 3):
            name = args[1]
            if len(args) == 3 and args[2] != "-keepHome":
                raise ModelError(f"sysadminctl option not modelled: {args[2]}")
            user = self.users.pop(name, None)
            if user is None:
                raise _Fail(1, f"User {name} not found")
            for group in self.groups.values():
                if name in group.members:
                    group.members.remove(name)
            if len(args) == 2:
                self.homes.discard(user.home)
            return ""
        if args[:1] != ["-addUser"] or len(args) < 2:
            raise ModelError(f"sysadminctl usage not modelled: {args}")
        name, rest = args[1], args[2:]
        opts: dict[str, str] = {}
        admin = False
        while rest:
            flag = rest.pop(0)
            if flag == "-admin":
                admin = True
            elif flag in ("-fullName", "-UID", "-GID", "-shell", "-home", "-password") and rest:
                opts[flag] = rest.pop(0)
            else:
                raise ModelError(f"sysadminctl -addUser option not modelled: {flag}")
        if opts.get("-password") != "-":
            raise ModelError("the password must come from the prompt (-password -), never argv")
        if not stdin or not stdin.endswith("\n"):
            raise _Fail(1, "no password given at the prompt")
        if name in self.users:
            raise _Fail(1, f"User {name} already exists")
        uid = int(opts["-UID"]) if "-UID" in opts else self._free_uid()
        if any(u.uid == uid for u in self.users.values()):
            raise _Fail(1, f"UID {uid} is already in use")
        home = opts.get("-home", f"/Users/{name}")
        self.users[name] = MacUser(
            uid,
            int(opts.get("-GID", 20)),
            opts.get("-fullName", name),
            opts.get("-shell", "/bin/zsh"),
            home,
            password=stdin.rstrip("\n"),
        )
        self.homes.add(home)
        if admin:
            self.groups["admin"].members.append(name)
        return ""

    def _free_uid(self) -> int:
        taken = {u.uid for u in self.users.values()}
        return next(n for n in range(501, 60000) if n not in taken)

    # -- dseditgroup, pwpolicy ---------------------------------------------------------------
    def _dseditgroup(self, args: list[str], stdin: str | None) -> str:
        if args[:3] == ["-o", "create", "-i"] and len(args) == 5:
            gid, name = int(args[3]), args[4]
            if any(g.gid == gid for g in self.groups.values()):
                raise _Fail(1, f"gid {gid} already in use")
            return self._new_group(name, gid)
        if args[:2] == ["-o", "create"] and len(args) == 3:
            taken = {g.gid for g in self.groups.values()}
            return self._new_group(args[2], next(n for n in range(501, 60000) if n not in taken))
        if args[:2] == ["-o", "delete"] and len(args) == 3:
            if self.groups.pop(args[2], None) is None:
                raise _Fail(64, f"Group not found: {args[2]}")
            return ""
        if (
            len(args) == 7
            and args[:2] == ["-o", "edit"]
            and args[2] in ("-a", "-d")
            and args[4:6] == ["-t", "user"]
        ):
            user, group = args[3], args[6]
            if user not in self.users:
                raise _Fail(64, f"Record was not found: {user}")
            if group not in self.groups:
                raise _Fail(64, f"Group not found: {group}")
            members = self.groups[group].members
            if args[2] == "-a" and user not in members:
                members.append(user)
            elif args[2] == "-d" and user in members:
                members.remove(user)
            return ""
        raise ModelError(f"dseditgroup usage not modelled: {args}")

    def _new_group(self, name: str, gid: int) -> str:
        if name in self.groups:
            raise _Fail(1, f"Group already exists: {name}")
        self.groups[name] = MacGroup(gid)
        return ""

    def _pwpolicy(self, args: list[str], stdin: str | None) -> str:
        if len(args) != 3 or args[0] != "-u" or args[2] not in ("-disableuser", "-enableuser"):
            raise ModelError(f"pwpolicy usage not modelled: {args}")
        if args[1] not in self.users:
            raise _Fail(1, f"user {args[1]} not found")
        self.users[args[1]].disabled = args[2] == "-disableuser"
        return ""

    # -- fdesetup ----------------------------------------------------------------------------
    def _fdesetup(self, args: list[str], stdin: str | None) -> str:
        verb = args[0] if args else ""
        fv = self.fv
        if args == ["status"]:
            text = "FileVault is On.\n" if fv.on else "FileVault is Off.\n"
            if fv.deferred_to is not None:
                text += f"Deferred enablement appears to be active for user '{fv.deferred_to}'.\n"
            return text
        if args == ["list"]:
            if not fv.on:
                raise _Fail(1, "Error: FileVault is Off.")
            return "".join(f"{u},{self.users[u].guid}\n" for u in fv.users)
        if (
            verb == "enable"
            and args[1:2] == ["-defer"]
            and args[3:] == ["-forceatlogin", "0", "-dontaskatlogout"]
        ):
            if fv.on:
                raise _Fail(1, "Error: FileVault is already enabled.")
            fv.deferred_to, fv.deferral_file = "", args[2]
            if args[2].rsplit("/", 1)[0] not in self.dirs:
                raise _Fail(1, f"Error: cannot write to {args[2]}")
            return ""
        if args == ["add", "-inputplist"] or args == ["disable", "-inputplist"]:
            info = self._credentials(stdin)
            if verb == "disable":
                fv.on, fv.users = False, []
                return ""
            for extra in info.get("AdditionalUsers", []):
                name = extra.get("Username")
                if name not in self.users or self.users[name].password != extra.get("Password"):
                    raise _Fail(1, f"Error: unable to authenticate user {name}")
                if name not in fv.users:
                    fv.users.append(name)
            return ""
        if verb == "remove" and len(args) == 3 and args[1] == "-user":
            if args[2] not in fv.users:
                raise _Fail(1, f"Error: {args[2]} is not a FileVault user")
            if len(fv.users) == 1:
                raise _Fail(1, "Error: cannot remove the last FileVault user")
            fv.users.remove(args[2])
            return ""
        raise ModelError(f"fdesetup usage not modelled: {args}")

    def _credentials(self, stdin: str | None) -> dict[str, Any]:
        if not self.fv.on:
            raise _Fail(1, "Error: FileVault is Off.")
        try:
            info = plistlib.loads((stdin or "").encode())
        except Exception as exc:  # noqa: BLE001 - any parse failure is fdesetup's error
            raise _Fail(1, "Error: invalid input plist") from exc
        user, password = info.get("Username"), info.get("Password")
        if user not in self.fv.users or self.users[user].password != password:
            raise _Fail(1, "Error: unable to authenticate")
        return dict(info)
