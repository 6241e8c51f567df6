"""Windows users: facts and changes with PowerShell's LocalAccounts module.

Every change is a fixed script run by ``powershell.exe -EncodedCommand`` with its data as JSON
on standard input (see ``powershell.py`` for why); passwords travel as a SecureString read from
stdin. Cmdlets (Microsoft.PowerShell.LocalAccounts, learn.microsoft.com):

* create: ``New-LocalUser -Name -Password <SecureString> [-FullName] [-AccountExpires |
  -AccountNeverExpires] [-Disabled]``;
* change: ``Set-LocalUser -Name [-FullName] [-AccountExpires | -AccountNeverExpires]``
  (``expires: never`` is ``-AccountNeverExpires``: ``-AccountExpires`` takes no null, and the
  cmdlets refuse the two together);
  ``state: locked`` is ``Disable-LocalUser``, back to present ``Enable-LocalUser``;
* remove: ``Remove-LocalUser -Name`` (the profile folder stays: ``removeHome`` is skipped);
* admin: ``Add-/Remove-LocalGroupMember`` on the group found with ``Get-LocalGroup -SID
  S-1-5-32-544``, so a German "Administratoren" works the same.

Lock-out safety refuses removing or disabling the user logged in at the console
(``Win32_ComputerSystem.UserName``, gathered with the other facts) unless ``allowLockout: true``;
when that query failed, the plan only warns.

Not manageable through LocalAccounts and reported as skipped: uid (Windows has SIDs), shell,
home, primaryGroup, sshAuthorizedKeys, hidden, removeHome. A password is set at creation only;
Windows offers no way to compare it without trying a logon.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from jcstate.document.names import name_problem
from jcstate.host import Host
from jcstate.modules.users import winfacts
from jcstate.modules.users.admins import annotate, ends_session, losses
from jcstate.modules.users.model import NEVER, UserSpec, expiry_text, state_change
from jcstate.modules.users.powershell import script_run
from jcstate.modules.users.winfacts import ADMINISTRATORS_SID, WindowsFacts, WinUser, key
from jcstate.plan import Change, FieldChange, Step
from jcstate.resource import PlanContext
from jcstate.secret import Secret

__all__ = ["BACKEND", "WindowsUsers", "member_run"]

PHASE_USER = 20
PHASE_MEMBERSHIP = 30
ADMINISTRATORS = "Administrators"  # how a policy names the group; resolved by SID on the device
_LOCKOUT_HINT = "set allowLockout: true on this user to allow it"


def member_run(group: str, users: list[str], *, add: bool, sid: str | None = None) -> Step:
    """Add-/Remove-LocalGroupMember; the group by SID when known (Administrators), else name."""
    data: dict[str, Any] = {"members": users}
    if sid is not None:
        data["groupSid"] = sid
    else:
        data["group"] = group
    return script_run("Add-LocalGroupMember" if add else "Remove-LocalGroupMember", data)


def today() -> datetime.date:
    return datetime.datetime.now(datetime.UTC).date()


@dataclass(frozen=True)
class _Env:
    facts: WindowsFacts
    groups: tuple[Any, ...]
    secrets: Any

    def wanted(self, group: str) -> str | None:
        spec = next((g for g in self.groups if key(g.name) == key(group)), None)
        return None if spec is None else spec.state

    def group_known(self, group: str) -> bool:
        state = self.wanted(group)
        return state == "present" or (self.facts.group(group) is not None and state != "absent")


def _is_admin_group(name: str, facts: WindowsFacts) -> bool:
    admins = facts.administrators()
    return key(name) == key(ADMINISTRATORS) or (
        admins is not None and key(name) == key(admins.name)
    )


class WindowsUsers:
    """The ``users`` resource on Windows (LocalAccounts)."""

    os = "windows"
    supports = frozenset(
        {"name", "fullName", "groups", "admin", "password", "expires", "state", "allowLockout"}
    )
    names_ignore_case = True  # DANA and dana are one account (the undo layer compares so)

    def gather(self, host: Host) -> WindowsFacts:
        return winfacts.gather(host)

    def plan(self, desired: list[UserSpec], ctx: PlanContext) -> list[Change]:
        facts: WindowsFacts = ctx.facts["users"]
        env = _Env(facts, tuple(ctx.desired.get("groups") or ()), ctx.secrets)
        now = today()
        admins = facts.administrators()
        lost = (
            losses(
                facts.admins(now),
                desired,
                [g for g in env.groups if _is_admin_group(g.name, facts)],
                admins.name if admins else ADMINISTRATORS,
                can_log_in_now=lambda n: facts.can_log_in(n, now),
                in_admin_group_now=facts.is_admin,
                same=lambda a, b: key(a) == key(b),
            )
            if admins
            else set()
        )
        lost_keys = {key(n) for n in lost}
        changes: list[Change] = []
        for spec in desired:
            planned = _plan_user(spec, env)
            changes += annotate(
                spec,
                planned,
                ctx,
                supports=self.supports,
                os_label="Windows",
                refusal=lambda change, spec=spec: _lockout_refusal(spec, change, facts, lost_keys),
                console_problem=facts.console_problem,
            )
        return changes


def _lockout_refusal(
    spec: UserSpec, change: Change, facts: WindowsFacts, lost_keys: set[str]
) -> str | None:
    """Why ``change`` must not run without ``allowLockout: true`` (wording as on Linux)."""
    if spec.allow_lockout:
        return None
    verb = ends_session(change)
    if verb and facts.on_console(spec.name):
        return (
            f"this would {verb} {spec.name}, who is logged in on the console "
            f"(Win32_ComputerSystem.UserName); {_LOCKOUT_HINT}"
        )
    if key(spec.name) in lost_keys:
        return (
            "this would leave the system without an admin account that can log in "
            f"({spec.name} is the last one); {_LOCKOUT_HINT}"
        )
    return None


def _plan_user(spec: UserSpec, env: _Env) -> list[Change]:
    current = env.facts.user(spec.name)
    problem = name_problem("windows", spec.name)
    if (
        problem is None
        and spec.full_name is not None
        and any(c in spec.full_name for c in "\r\n\0")
    ):
        problem = "fullName must not contain a newline or NUL"
    if problem is not None:
        action = "remove" if spec.state == "absent" else "create" if current is None else "update"
        text = problem if problem.startswith("fullName") else f"{spec.name!r} {problem}"
        return [Change("users", spec.name, action, PHASE_USER, error=text)]
    if spec.state == "absent":
        if current is None:
            return []
        return [
            Change(
                "users",
                spec.name,
                "remove",
                PHASE_USER,
                fields=[FieldChange("state", "present", "absent")],
                steps=[script_run("Remove-LocalUser", {"name": current.name})],
            )
        ]
    if current is None:
        return [_create(spec, env)]
    return [c for c in (_update(spec, current), _memberships(spec, current, env)) if c is not None]


def _password(spec: UserSpec, env: _Env) -> tuple[Secret | None, str | None]:
    if spec.password_ref is None:
        return (
            None,
            "Windows needs password.secretRef to create a user (a crypt hash cannot be used)",
        )
    plain = env.secrets.password(spec.password_ref) if env.secrets is not None else None
    if plain is None:
        return None, f"password.secretRef {spec.password_ref!r}: no such secret"
    if any(c in plain.reveal() for c in "\r\n\0"):
        return None, f"password.secretRef {spec.password_ref!r}: must be one line"
    return plain, None


def _create(spec: UserSpec, env: _Env) -> Change:
    fields = [FieldChange("state", "absent", spec.state)]
    data: dict[str, Any] = {"name": spec.name}
    errors: list[str] = []
    if spec.full_name is not None:
        fields.append(FieldChange("fullName", None, spec.full_name))
        data["fullName"] = spec.full_name
    if spec.expires is not None:
        fields.append(FieldChange("expires", None, expiry_text(spec.expires)))
    if spec.expires is None or spec.expires is NEVER:
        data["neverExpires"] = True
    else:
        data["expires"] = spec.expires.isoformat()
    if spec.state == "locked":
        data["disabled"] = True
    plain, problem = _password(spec, env)
    if problem:
        errors.append(problem)
    fields.append(FieldChange("password", None, Secret("(new)")))
    steps: list[Step] = [script_run("New-LocalUser", data, plain or Secret(""))]
    requires: list[tuple[str, str]] = []
    extra = [g for g in dict.fromkeys(spec.groups or ()) if not _is_admin_group(g, env.facts)]
    if spec.groups:
        fields.append(FieldChange("groups", [], sorted(extra)))
    for group in extra:
        steps.append(member_run(group, [spec.name], add=True))
        if not env.group_known(group):
            errors.append(f"groups: no such group {group} and no policy creates it")
        elif env.wanted(group) == "present":
            requires.append(("groups", group))
    if spec.admin or len(extra) < len(spec.groups or ()):
        fields.append(FieldChange("admin", False, True))
        steps.append(member_run(ADMINISTRATORS, [spec.name], add=True, sid=ADMINISTRATORS_SID))
    return Change(
        "users",
        spec.name,
        "create",
        PHASE_USER,
        fields=fields,
        steps=steps,
        requires=requires,
        error="; ".join(errors) or None,
    )


def _update(spec: UserSpec, current: WinUser) -> Change | None:
    fields: list[FieldChange] = []
    steps: list[Step] = []
    data: dict[str, Any] = {"name": current.name}
    if spec.full_name is not None and spec.full_name != current.full_name:
        fields.append(FieldChange("fullName", current.full_name, spec.full_name))
        data["fullName"] = spec.full_name
    wanted = None if spec.expires is NEVER else spec.expires  # the fact has None for "never"
    if spec.expires is not None and wanted != current.expires:
        fields.append(
            FieldChange("expires", expiry_text(current.expires), expiry_text(spec.expires))
        )
        if wanted is None:
            data["neverExpires"] = True
        else:
            data["expires"] = wanted.isoformat()
    if len(data) > 1:
        steps.append(script_run("Set-LocalUser", data))
    state = state_change(spec.state, {"disabled": not current.enabled})
    if state is not None:
        fields.append(state)
        verb = "Disable-LocalUser" if spec.state == "locked" else "Enable-LocalUser"
        steps.append(script_run(verb, {"name": current.name}))
    if not fields:
        return None
    return Change("users", spec.name, "update", PHASE_USER, fields=fields, steps=steps)


def _memberships(spec: UserSpec, current: WinUser, env: _Env) -> Change | None:
    facts = env.facts
    have = facts.member_of(current.name)
    have_keys = {key(g) for g in have}
    wanted = [g for g in dict.fromkeys(spec.groups or ()) if not _is_admin_group(g, facts)]
    add = [g for g in wanted if key(g) not in have_keys]
    leaving = {key(g) for g in spec.leave_groups}
    leave = [g for g in have if key(g) in leaving and not _is_admin_group(g, facts)]
    fields: list[FieldChange] = []
    steps: list[Step] = [member_run(g, [current.name], add=True) for g in add]
    steps += [member_run(g, [current.name], add=False) for g in sorted(leave)]
    if add or leave:
        fields.append(FieldChange("groups", sorted(have), sorted((have | set(add)) - set(leave))))
    is_admin = facts.is_admin(current.name)
    want_admin = (
        spec.admin
        if spec.admin is not None
        else (True if len(wanted) < len(spec.groups or ()) else None)
    )
    if want_admin is True and not is_admin:
        fields.append(FieldChange("admin", False, True))
        steps.append(member_run(ADMINISTRATORS, [current.name], add=True, sid=ADMINISTRATORS_SID))
    if want_admin is False and is_admin:
        fields.append(FieldChange("admin", True, False))
        steps.append(member_run(ADMINISTRATORS, [current.name], add=False, sid=ADMINISTRATORS_SID))
    if not fields:
        return None
    unknown = [g for g in add if not env.group_known(g)]
    return Change(
        "users",
        spec.name,
        "update",
        PHASE_MEMBERSHIP,
        fields=fields,
        steps=steps,
        requires=[("users", spec.name)]
        + [("groups", g) for g in add if env.wanted(g) == "present"],
        error=f"groups: no such group {', '.join(unknown)} and no policy creates it"
        if unknown
        else None,
    )


BACKEND = WindowsUsers()
