"""Lock-out safety: would a plan leave the system without an administrator who can log in?

Definitions (documented in docs/resources/users.md):

* A user **can log in** when their shell is not ``nologin``/``false``, their account has not
  expired (shadow expiry unset or after today), and they have a usable password (a hash that does
  not start with ``!`` or ``*``) or at least one authorized SSH key. Keys count even with a
  locked password because sshd with PAM lets key logins through a ``!`` password; that is why
  ``state: locked`` also expires the account.
* An **admin account** is a user who can log in and is a member (supplementary or primary) of
  the admin group (``sudo``, else ``wheel``), or ``root`` (uid 0) with a usable password.

A plan is refused when the system has at least one admin account now and would have none once
the desired users and groups are applied. Every change that takes a current admin away (remove,
lock, ``admin: false``, leaving them out of the admin group's authoritative ``members``, or
making their login unusable) is then marked with the reason; ``allowLockout: true`` on that
resource lets it through.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from jcstate.modules.accounts.facts import AccountFacts, KeyFile
from jcstate.modules.accounts.files import date_to_days
from jcstate.modules.users.model import NEVER

__all__ = ["Account", "admins_after", "admins_now", "lockout_losses"]


@dataclass(frozen=True)
class Account:
    """What lock-out safety needs to know about one user."""

    name: str
    uid: int
    shell: str
    password: str  # the shadow field, only inspected for lock markers
    has_keys: bool
    expire: int | None
    in_admin_group: bool


def _shell_ok(shell: str) -> bool:
    return not (shell.endswith("/nologin") or shell.endswith("/false"))


def _password_ok(password: str) -> bool:
    return not password.startswith(("!", "*"))


def _has_keys(text: str | None) -> bool:
    return any(
        line.strip() and not line.lstrip().startswith("#") for line in (text or "").splitlines()
    )


def _is_admin(acc: Account, today: int) -> bool:
    if not _shell_ok(acc.shell) or (acc.expire is not None and acc.expire <= today):
        return False
    if acc.uid == 0 and _password_ok(acc.password):
        return True
    return acc.in_admin_group and (_password_ok(acc.password) or acc.has_keys)


def _current(facts: AccountFacts, admin_group: str) -> dict[str, Account]:
    group = facts.groups.get(admin_group)
    out: dict[str, Account] = {}
    for u in facts.users.values():
        sh = facts.shadow.get(u.name)
        member = group is not None and (u.name in group.members or u.gid == group.gid)
        out[u.name] = Account(
            name=u.name,
            uid=u.uid,
            shell=u.shell,
            password="*" if sh is None else sh.password.reveal(),
            has_keys=_has_keys(facts.keys.get(u.name, KeyFile()).text),
            expire=None if sh is None else sh.expire,
            in_admin_group=member,
        )
    return out


def admins_now(facts: AccountFacts, today: int) -> set[str]:
    admin_group = facts.admin_group()
    return {a.name for a in _current(facts, admin_group).values() if _is_admin(a, today)}


def _project(
    acc: Account | None,
    spec: Any,
    admin_members: set[str] | None,
    admin_group: str,
    admin_gid_primary: bool,
    default_shell: str,
) -> Account | None:
    """``acc`` once ``spec`` (a UserSpec or None) and the admin group's members are applied."""
    if spec is not None and spec.state == "absent":
        return None
    if acc is None and spec is None:
        return None
    name = spec.name if spec is not None else acc.name  # type: ignore[union-attr]
    password = "!" if acc is None else acc.password
    expire = None if acc is None else acc.expire
    member = False if acc is None else acc.in_admin_group
    has_keys = False if acc is None else acc.has_keys
    uid = -1 if acc is None else acc.uid
    shell = default_shell if acc is None else acc.shell
    if admin_members is not None:
        member = name in admin_members or admin_gid_primary
    if spec is not None:
        uid = spec.uid if spec.uid is not None else uid
        shell = spec.shell or shell
        if spec.password_hash is not None:
            password = spec.password_hash.reveal()
        elif spec.password_ref is not None:
            password = "$ref"
        elif spec.state == "present" and password.lstrip("!") not in ("", "*"):
            password = password.lstrip("!")  # state: present unlocks
        if spec.ssh_authorized_keys is not None:
            has_keys = any(k.strip() for k in spec.ssh_authorized_keys)
        if spec.expires is NEVER:
            expire = None
        elif spec.expires is not None:
            expire = date_to_days(spec.expires)
        elif spec.state == "present" and expire == 1:
            expire = None  # the lock's expiry is lifted on unlock
        if spec.state == "locked":
            password, expire = "!" + password, 1
        if spec.groups is not None and admin_group in spec.groups:
            member = True
        if spec.admin is not None:
            member = spec.admin or admin_gid_primary
        if spec.primary_group is not None:
            member = member or spec.primary_group == admin_group
    return Account(name, uid, shell, password, has_keys, expire, member)


def admins_after(
    facts: AccountFacts, users: Iterable[Any], groups: Iterable[Any], today: int
) -> set[str]:
    """Admin accounts once the desired users and groups are applied."""
    group_specs = {g.name: g for g in groups}
    admin_group = facts.admin_group({n for n, g in group_specs.items() if g.state == "present"})
    admin_spec = group_specs.get(admin_group)
    if admin_spec is not None and admin_spec.state == "absent":
        admin_members: set[str] | None = set()
    elif admin_spec is not None and admin_spec.members is not None:
        admin_members = set(admin_spec.members)
    else:
        admin_members = None
    current = _current(facts, admin_group)
    specs = {u.name: u for u in users}
    group = facts.groups.get(admin_group)
    out = set()
    for name in set(current) | set(specs):
        acc = current.get(name)
        primary = acc is not None and group is not None and facts.users[name].gid == group.gid
        projected = _project(
            acc, specs.get(name), admin_members, admin_group, primary, facts.defaults.shell
        )
        if projected is not None and _is_admin(projected, today):
            out.add(name)
    return out


def lockout_losses(
    facts: AccountFacts, users: Iterable[Any], groups: Iterable[Any], today: int
) -> set[str]:
    """Current admins the plan takes away, when it takes away all of them (else empty)."""
    users, groups = list(users), list(groups)
    before = admins_now(facts, today)
    after = admins_after(facts, users, groups, today)
    if not before or after:
        return set()
    return before - after
