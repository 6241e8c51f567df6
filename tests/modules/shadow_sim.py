"""A small, honest simulator of what shadow-utils 4.13 does to the account files.

It applies planned steps (argv of useradd/usermod/userdel/groupadd/groupmod/groupdel/gpasswd/
chpasswd, and the MakeDir/WriteFile of authorized keys) to in-memory file texts, failing where
the real tool fails (unknown user or group, name taken, group still someone's primary group,
writing into a directory that does not exist). Only the options jcstate uses are modelled; any
other option fails loudly, so the planner cannot drift from what is simulated. Behaviour was
checked against the real tools on a Debian 12 image (see test_account_tools.py).

:class:`SimHost` is a :class:`~jcstate.host.Host` whose commands and file writes land in a
:class:`System`, so a plan is applied by the real engine (``engine.execute``) exactly as on a
machine: phase by phase, with the ``chpasswd`` batch steps of a phase merged into one run *at the
end of that phase*, after the changes' other steps. Applying steps in plan order instead would
hide every bug that comes from that ordering (a ``usermod -L`` that runs before the hash it was
meant to lock is written).
"""

from __future__ import annotations

import datetime
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from jcstate.errors import CommandFailed
from jcstate.host import Host, RunResult
from jcstate.modules.accounts.facts import AccountFacts, KeyFile
from jcstate.modules.accounts.files import Defaults
from jcstate.plan import MakeDir, Run, Step, WriteFile

_TODAY = 20000
_DIRS = ("/", "/home", "/srv", "/root", "/var")  # there on every system


class SimError(Exception):
    """The real tool would have failed here."""


@dataclass
class _User:
    uid: int
    gid: int
    gecos: str
    home: str
    shell: str
    password: str = "!"
    expire: int | None = None


@dataclass
class _Group:
    gid: int
    members: list[str] = field(default_factory=list)


@dataclass
class _Node:
    mode: int
    uid: int
    gid: int
    text: str | None = None  # None: a directory


@dataclass
class System:
    """Users, groups and the files under homes, as the tools see them."""

    users: dict[str, _User] = field(default_factory=dict)
    groups: dict[str, _Group] = field(default_factory=dict)
    nodes: dict[str, _Node] = field(default_factory=dict)  # homes, ~/.ssh, authorized_keys
    defaults: Defaults = field(default_factory=Defaults)

    # -- reading back, exactly as gather() would ---------------------------------------------
    def files(self) -> dict[str, str]:
        passwd = "".join(
            f"{n}:x:{u.uid}:{u.gid}:{u.gecos}:{u.home}:{u.shell}\n" for n, u in self.users.items()
        )
        shadow = "".join(
            f"{n}:{u.password}:{_TODAY}:0:99999:7::{'' if u.expire is None else u.expire}:\n"
            for n, u in self.users.items()
        )
        group = "".join(f"{n}:x:{g.gid}:{','.join(g.members)}\n" for n, g in self.groups.items())
        gshadow = "".join(f"{n}:!::{','.join(g.members)}\n" for n, g in self.groups.items())
        return {"passwd": passwd, "shadow": shadow, "group": group, "gshadow": gshadow}

    def key_files(self) -> dict[str, KeyFile]:
        out = {}
        for name, user in self.users.items():
            if user.home not in self.nodes:
                out[name] = KeyFile(home_exists=False)
                continue
            d = self.nodes.get(user.home + "/.ssh")
            f = self.nodes.get(user.home + "/.ssh/authorized_keys")
            out[name] = KeyFile(
                text=None if f is None else f.text,
                mode=None if f is None else f.mode,
                uid=None if f is None else f.uid,
                gid=None if f is None else f.gid,
                dir_mode=None if d is None else d.mode,
                dir_uid=None if d is None else d.uid,
                dir_gid=None if d is None else d.gid,
            )
        return out

    def facts(self, parse: object) -> AccountFacts:
        """AccountFacts via the real parsers (``parse`` is account_cases.facts_from)."""
        facts: AccountFacts = parse(self.files())  # type: ignore[operator]
        facts.defaults = self.defaults
        facts.keys = self.key_files()
        facts.paths = {p: "dir" if n.text is None else "file" for p, n in self.nodes.items()}
        facts.paths.update(dict.fromkeys(_DIRS, "dir"))
        return facts

    # -- applying --------------------------------------------------------------------------
    def apply(self, step: Step) -> None:
        if isinstance(step, Run):
            self._run(list(step.argv), None if step.stdin is None else _plain(step.stdin))
        elif isinstance(step, MakeDir):
            self._mkdir(step.path, step.mode, step.owner, step.group)
        elif isinstance(step, WriteFile):
            self._write(step.path, _plain(step.content), step.mode, step.owner, step.group)
        else:
            raise SimError(f"step not simulated: {step}")

    def _ids(self, owner: object, group: object) -> tuple[int, int]:
        uid = self.users[owner].uid if isinstance(owner, str) else owner
        gid = self.groups[group].gid if isinstance(group, str) else group
        if not isinstance(uid, int) or not isinstance(gid, int):
            raise SimError(f"cannot resolve {owner}:{group}")
        return uid, gid

    def _exists(self, path: str) -> bool:
        return path in self.nodes or path in _DIRS

    def _mkdir(self, path: str, mode: int, owner: object, group: object) -> None:
        if not self._exists(posixpath.dirname(path)):
            raise SimError(f"mkdir {path}: parent missing")
        node = self.nodes.get(path)
        if node is not None and node.text is not None:
            raise SimError(f"mkdir {path}: is a file")
        self.nodes[path] = _Node(mode, *self._ids(owner, group))

    def _write(self, path: str, text: str, mode: int, owner: object, group: object) -> None:
        parent = self.nodes.get(posixpath.dirname(path))
        if parent is None or parent.text is not None:
            raise SimError(f"write {path}: no such directory")
        self.nodes[path] = _Node(mode, *self._ids(owner, group), text=text)

    def _run(self, argv: list[str], stdin: str | None) -> None:
        tool, rest = argv[0], argv[1:]
        if rest[:1] == ["--root"]:
            rest = rest[2:]
        options, operands = (
            (rest[: rest.index("--")], rest[rest.index("--") + 1 :]) if "--" in rest else (rest, [])
        )
        getattr(self, "_" + tool)(_Options(options), operands, stdin)

    # -- groups ----------------------------------------------------------------------------
    def _free_gid(self, wanted: int | None = None) -> int:
        used = {g.gid for g in self.groups.values()}
        if wanted is not None and wanted not in used:
            return wanted
        return next(i for i in range(1000, 60000) if i not in used)

    def _group(self, name: str) -> _Group:
        if name in self.groups:
            return self.groups[name]
        for g in self.groups.values():
            if name.isdigit() and g.gid == int(name):
                return g
        raise SimError(f"group '{name}' does not exist")

    def _groupadd(self, opts: _Options, operands: list[str], stdin: str | None) -> None:
        (name,) = operands
        gid = opts.take("-g")
        opts.done()
        if name in self.groups:
            raise SimError(f"group '{name}' already exists")
        if gid is not None and any(g.gid == int(gid) for g in self.groups.values()):
            raise SimError(f"GID '{gid}' already exists")
        self.groups[name] = _Group(int(gid) if gid is not None else self._free_gid())

    def _groupmod(self, opts: _Options, operands: list[str], stdin: str | None) -> None:
        (name,) = operands
        gid = int(opts.take("-g") or "x")
        opts.done()
        group = self._group(name)
        if any(g.gid == gid for n, g in self.groups.items() if n != name):
            raise SimError(f"GID '{gid}' already exists")
        for user in self.users.values():  # 4.13 moves primary members along
            if user.gid == group.gid:
                user.gid = gid
        group.gid = gid

    def _groupdel(self, opts: _Options, operands: list[str], stdin: str | None) -> None:
        (name,) = operands
        opts.done()
        group = self._group(name)
        if any(u.gid == group.gid for u in self.users.values()):
            raise SimError(f"cannot remove the primary group of a user ({name})")
        del self.groups[name]

    def _gpasswd(self, opts: _Options, operands: list[str], stdin: str | None) -> None:
        (name,) = operands
        group = self._group(name)
        members, add, delete = opts.take("-M"), opts.take("-a"), opts.take("-d")
        opts.done()
        if members is not None:
            wanted = [m for m in members.split(",") if m]
            for m in wanted:
                if m not in self.users:
                    raise SimError(f"user '{m}' does not exist")
            group.members = list(dict.fromkeys(wanted))
        elif add is not None:
            if add not in group.members:
                group.members.append(add)
        elif delete is not None:
            if delete not in group.members:
                raise SimError(f"user '{delete}' is not a member of '{name}'")
            group.members.remove(delete)

    # -- users -----------------------------------------------------------------------------
    def _useradd(self, opts: _Options, operands: list[str], stdin: str | None) -> None:
        (name,) = operands
        if name in self.users:
            raise SimError(f"user '{name}' already exists")
        uid = opts.take("-u")
        used = {u.uid for u in self.users.values()}
        if uid is not None and int(uid) in used:
            raise SimError(f"UID {uid} is not unique")
        new_uid = (
            int(uid) if uid is not None else next(i for i in range(1000, 60000) if i not in used)
        )
        gecos, shell, home = opts.take("-c") or "", opts.take("-s"), opts.take("-d")
        primary, user_group = opts.take("-g"), opts.flag("-U")
        extra, expire, make_home = opts.take("-G"), opts.take("-e"), opts.flag("-m")
        opts.done()
        if primary is not None:
            gid = self._group(primary).gid
        elif user_group or self.defaults.usergroups:
            if name in self.groups:
                raise SimError(
                    f"group {name} exists - if you want to add this user to that group, use -g."
                )
            gid = self._free_gid(new_uid)
            self.groups[name] = _Group(gid)
        else:
            gid = self._group(self.defaults.group).gid
        for g in (extra or "").split(","):
            if g:
                self._group(g)
        home = home or self.defaults.home_base.rstrip("/") + "/" + name
        self.users[name] = _User(
            new_uid, gid, gecos, home, shell or self.defaults.shell, expire=_expire(expire)
        )
        for g in (extra or "").split(","):
            if g and name not in self._group(g).members:
                self._group(g).members.append(name)
        if make_home and home not in self.nodes:
            if not self._exists(posixpath.dirname(home)):
                raise SimError(f"cannot create {home}")
            self.nodes[home] = _Node(0o755, new_uid, gid)

    def _usermod(self, opts: _Options, operands: list[str], stdin: str | None) -> None:
        (name,) = operands
        user = self._user(name)
        uid = opts.take("-u")
        old_uid, old_gid = user.uid, user.gid
        if uid is not None:
            if any(u.uid == int(uid) for n, u in self.users.items() if n != name):
                raise SimError(f"UID '{uid}' already exists")
            user.uid = int(uid)
        for flag, attr in (("-c", "gecos"), ("-s", "shell")):
            value = opts.take(flag)
            if value is not None:
                setattr(user, attr, value)
        new_home, move = opts.take("-d"), opts.flag("-m")
        primary = opts.take("-g")
        if primary is not None:
            user.gid = self._group(primary).gid
        if move and new_home is not None and new_home != user.home:
            self._move_home(user.home, new_home)
        if new_home is not None:
            user.home = new_home
        # 4.13 re-owns what in the home belongs to the old uid/gid (after a move, the new home)
        for path, node in self.nodes.items():
            if path == user.home or path.startswith(user.home.rstrip("/") + "/"):
                if uid is not None and node.uid == old_uid:
                    node.uid = user.uid
                if primary is not None and node.gid == old_gid:
                    node.gid = user.gid
        append, extra = opts.flag("-a"), opts.take("-G")
        if extra is not None:
            if not append:
                raise SimError("usermod -G without -a is not used by jcstate")
            for g in extra.split(","):
                if name not in self._group(g).members:
                    self._group(g).members.append(name)
        expire = opts.take("-e")
        if expire is not None:
            user.expire = _expire(expire)
        if opts.flag("-L") and not user.password.startswith("!"):
            user.password = "!" + user.password
        if opts.flag("-U") and user.password.startswith("!"):
            if user.password == "!":
                pass  # 4.13 refuses: "would result in a passwordless account", exit 0
            else:
                user.password = user.password[1:]
        opts.done()

    def _move_home(self, old: str, new: str) -> None:
        """usermod -d NEW -m, as 4.13 does it (checked on Debian 12)."""
        if self._exists(new):
            # exit 12; the real tool has already written the new home into /etc/passwd by then
            raise SimError(f"directory {new} exists")
        if old not in self.nodes or self.nodes[old].text is not None:
            return  # "The previous home directory (...) does not exist": exit 0, nothing moved
        if not self._exists(posixpath.dirname(new)):
            raise SimError(f"cannot rename directory {old} to {new}")
        prefix = old.rstrip("/") + "/"
        for path in [p for p in self.nodes if p == old or p.startswith(prefix)]:
            self.nodes[new + path[len(old) :]] = self.nodes.pop(path)

    def _userdel(self, opts: _Options, operands: list[str], stdin: str | None) -> None:
        (name,) = operands
        remove_home = opts.flag("-r")
        opts.done()
        user = self._user(name)
        del self.users[name]
        for group in self.groups.values():
            if name in group.members:
                group.members.remove(name)
        own = self.groups.get(name)
        if (
            self.defaults.usergroups
            and own is not None
            and own.gid == user.gid
            and not own.members
            and not any(u.gid == own.gid for u in self.users.values())
        ):
            del self.groups[name]
        if remove_home:
            for path in [p for p in self.nodes if p == user.home or p.startswith(user.home + "/")]:
                del self.nodes[path]

    def _chpasswd(self, opts: _Options, operands: list[str], stdin: str | None) -> None:
        encrypted = opts.flag("-e")
        opts.done()
        if not encrypted:
            raise SimError("plaintext chpasswd is not simulated (needs crypt)")
        lines = [line.partition(":") for line in (stdin or "").splitlines()]
        for name, _, _ in lines:  # all or nothing: an unknown user fails the whole run
            self._user(name)
        for name, _, value in lines:
            self._user(name).password = value  # stored as given, a leading "!" included

    def _user(self, name: str) -> _User:
        if name not in self.users:
            raise SimError(f"user '{name}' does not exist")
        return self.users[name]


class _Options:
    """Options of one command, consumed one by one; leftovers mean an unmodelled option."""

    def __init__(self, argv: list[str]):
        self._argv = list(argv)

    def take(self, flag: str) -> str | None:
        if flag not in self._argv:
            return None
        i = self._argv.index(flag)
        value = self._argv[i + 1]
        del self._argv[i : i + 2]
        return value

    def flag(self, flag: str) -> bool:
        if flag in self._argv:
            self._argv.remove(flag)
            return True
        return False

    def done(self) -> None:
        if self._argv:
            raise SimError(f"options not simulated: {self._argv}")


def _expire(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    if value.lstrip("-").isdigit():
        return int(value) if int(value) >= 0 else None
    return (datetime.date.fromisoformat(value) - datetime.date(1970, 1, 1)).days


def _plain(value: object) -> str:
    reveal = getattr(value, "reveal", None)
    return reveal() if callable(reveal) else str(value)


class SimHost(Host):
    """A Host whose commands and file steps act on a simulated :class:`System`."""

    def __init__(self, system: System):
        super().__init__(root="/", os_name="linux")
        self.system = system

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: Any = None,
        check: bool = True,
        timeout: float | None = 300,
        env: Any = None,
        chroot: bool = False,
    ) -> RunResult:
        argv = tuple(str(a) for a in argv)
        self.commands_run.append(argv)
        try:
            self.system.apply(Run(argv, stdin=stdin))
        except SimError as exc:
            if check:
                raise CommandFailed(argv, 1, str(exc)) from exc
            return RunResult(argv, 1, "", str(exc), 0.0)
        return RunResult(argv, 0, "", "", 0.0)

    def make_dir(
        self, path: str, *, mode: int = 0o755, owner: Any = None, group: Any = None
    ) -> None:
        self._step(MakeDir(path, mode, owner, group))

    def write_file(  # type: ignore[override]
        self, path: str, content: Any, *, mode: int = 0o644, owner: Any = None, group: Any = None
    ) -> None:
        self._step(WriteFile(path, content, mode, owner, group))

    def _step(self, step: Step) -> None:
        try:
            self.system.apply(step)
        except SimError as exc:
            raise OSError(str(exc)) from exc
