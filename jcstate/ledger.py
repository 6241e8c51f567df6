"""The ownership ledger: what jcstate created or changed on this machine, kept so it can be undone.

A policy says what must be; the ledger remembers what jcstate did to get there, per resource:

* ``users``: per account, whether jcstate ``created`` it, the ``onRemoval`` choice in force when
  a policy last managed it, the supplementary ``groups`` jcstate added it to,
  ``adminBefore``: the account's admin right before jcstate first changed it (present only
  while jcstate's change stands), and ``retired`` once it left every policy and was locked or
  kept (then it is not touched again unless a policy lists it again);
* ``sshMfa``: whether jcstate's blocks are in sshd's and PAM's files (``config``) and whose
  TOTP secret file it wrote (``totpFiles``);
* ``fileVault``: the users jcstate added to FileVault (``users``).

It is one JSON file (``/var/lib/jcstate/ledger.json`` by default; the agent keeps it in its
state directory) written through :class:`~jcstate.host.Host` atomically: a temporary file,
fsync, rename, fsync of the directory. The trade-off is deliberate about what can go wrong:

* no file at all is an empty ledger: the first run on a machine owns nothing yet, and losing
  the file can only make jcstate *forget* what it owns, never remove anything;
* a file that cannot be read or parsed is a :class:`~jcstate.errors.LedgerError` naming the
  file and what is wrong: the run plans nothing and changes nothing, never "everything is
  gone, undo it all".

What to do with the ledger (plan undo, record changes) is :mod:`jcstate.undo`'s business;
this module only holds, checks and stores the data. It never holds a secret: names only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jcstate.errors import HostError, LedgerError

if TYPE_CHECKING:
    from jcstate.host import Host

__all__ = ["DEFAULT_PATH", "ON_REMOVAL", "Ledger", "UserRecord"]

DEFAULT_PATH = "/var/lib/jcstate/ledger.json"
FILE_NAME = "ledger.json"  # inside the agent's state directory
VERSION = 1
ON_REMOVAL = ("lock", "delete", "keep")
DEFAULT_ON_REMOVAL = "lock"


@dataclass
class UserRecord:
    """What jcstate did to one account."""

    created: bool = False
    on_removal: str = DEFAULT_ON_REMOVAL
    groups: set[str] = field(default_factory=set)  # memberships jcstate added
    admin_before: bool | None = None  # None: jcstate has not changed the admin right
    # the account left every policy and its onRemoval was carried out (locked or kept): it is
    # not touched again, but stays jcstate's creation should a policy list it again
    retired: bool = False

    @property
    def empty(self) -> bool:
        """Nothing of this account is jcstate's (an entry then goes)."""
        return not self.created and not self.groups and self.admin_before is None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"created": self.created, "onRemoval": self.on_removal}
        if self.groups:
            out["groups"] = sorted(self.groups)
        if self.admin_before is not None:
            out["adminBefore"] = self.admin_before
        if self.retired:
            out["retired"] = True
        return out


@dataclass
class Ledger:
    """What jcstate owns on one machine; ``path`` is where it lives on ``host``."""

    path: str
    host: Host | None = None  # None: never saved (plan, tests)
    users: dict[str, UserRecord] = field(default_factory=dict)
    ssh_mfa_config: bool = False  # jcstate's blocks are in sshd's and PAM's files
    totp_files: set[str] = field(default_factory=set)
    file_vault_users: set[str] = field(default_factory=set)

    @classmethod
    def load(cls, host: Host, path: str = DEFAULT_PATH) -> Ledger:
        """The ledger at ``path`` on ``host``; empty when the file does not exist yet."""
        try:
            text = host.read_text(path)
        except HostError as exc:
            raise LedgerError(f"cannot read the ownership ledger {path}: {exc}") from exc
        if text is None:
            return cls(path, host)
        return cls.parse(text, path, host)

    @classmethod
    def parse(cls, text: str, path: str, host: Host | None = None) -> Ledger:
        """Check and read a ledger file's text (raises LedgerError naming what is wrong)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise _damaged(path, f"line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
        if not isinstance(data, dict) or data.get("version") != VERSION:
            raise _damaged(path, f"not a version {VERSION} ledger")
        ledger = cls(path, host)
        users = data.get("users", {})
        if not isinstance(users, dict):
            raise _damaged(path, "users: expected a mapping")
        for name, entry in users.items():
            ledger.users[name] = _user(path, name, entry)
        mfa = data.get("sshMfa", {})
        if not isinstance(mfa, dict) or not isinstance(mfa.get("config", False), bool):
            raise _damaged(path, "sshMfa: expected {config: bool, totpFiles: [names]}")
        ledger.ssh_mfa_config = mfa.get("config", False)
        ledger.totp_files = _names(path, "sshMfa.totpFiles", mfa.get("totpFiles", []))
        vault = data.get("fileVault", {})
        if not isinstance(vault, dict):
            raise _damaged(path, "fileVault: expected {users: [names]}")
        ledger.file_vault_users = _names(path, "fileVault.users", vault.get("users", []))
        return ledger

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "users": {name: rec.to_dict() for name, rec in sorted(self.users.items())},
            "sshMfa": {"config": self.ssh_mfa_config, "totpFiles": sorted(self.totp_files)},
            "fileVault": {"users": sorted(self.file_vault_users)},
        }

    def text(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save(self) -> None:
        """Write the ledger atomically (temporary file, fsync, rename, fsync of the directory)."""
        if self.host is None:
            return
        try:
            self.host.write_file(self.path, self.text(), mode=0o600, make_dirs=True, sync_dir=True)
        except (HostError, OSError) as exc:
            raise LedgerError(f"cannot write the ownership ledger {self.path}: {exc}") from exc

    def user(self, name: str) -> UserRecord:
        """The account's record, made empty when there is none (dropped again if left empty)."""
        return self.users.setdefault(name, UserRecord())

    def tidy(self) -> None:
        """Drop the accounts of which nothing is jcstate's any more."""
        for name in [n for n, rec in self.users.items() if rec.empty]:
            del self.users[name]

    def summary(self) -> dict[str, Any]:
        """Names only, for the facts a device reports (the server's blast radius reads it)."""
        return {
            "users": {
                name: {
                    "created": rec.created,
                    "onRemoval": rec.on_removal,
                    "groups": sorted(rec.groups),
                    "admin": rec.admin_before is not None,
                    "retired": rec.retired,
                }
                for name, rec in sorted(self.users.items())
            },
            "sshMfa": self.ssh_mfa_config,
            "totpFiles": sorted(self.totp_files),
            "fileVaultUsers": sorted(self.file_vault_users),
        }


def _damaged(path: str, what: str) -> LedgerError:
    return LedgerError(
        f"the ownership ledger {path} is damaged ({what}); nothing was changed. Restore it from "
        "a backup, or move it aside to start an empty one (jcstate then forgets what it owns "
        "here and undoes nothing of it)"
    )


def _names(path: str, label: str, value: Any) -> set[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _damaged(path, f"{label}: expected a list of names")
    return set(value)


def _user(path: str, name: Any, entry: Any) -> UserRecord:
    where = f"users.{name}"
    if not isinstance(name, str) or not name or not isinstance(entry, dict):
        raise _damaged(path, f"{where}: expected a mapping")
    created = entry.get("created", False)
    on_removal = entry.get("onRemoval", DEFAULT_ON_REMOVAL)
    admin = entry.get("adminBefore")
    retired = entry.get("retired", False)
    if not isinstance(created, bool) or not isinstance(retired, bool):
        raise _damaged(path, f"{where}.created/retired: expected true or false")
    if on_removal not in ON_REMOVAL:
        raise _damaged(path, f"{where}.onRemoval: expected one of {', '.join(ON_REMOVAL)}")
    if admin is not None and not isinstance(admin, bool):
        raise _damaged(path, f"{where}.adminBefore: expected true or false")
    groups = _names(path, f"{where}.groups", entry.get("groups", []))
    return UserRecord(created, on_removal, groups, admin, retired)
