"""Windows groups: ``New-LocalGroup``, ``Remove-LocalGroup``, ``Add-/Remove-LocalGroupMember``.

Authoritative ``members`` manage the group's *local* user members only: domain, Azure AD and
Microsoft-account principals (PrincipalSource other than ``Local``) and nested groups are left
alone, since a local policy cannot name them reliably. A policy group named ``Administrators``
means the group with SID ``S-1-5-32-544`` whatever its localised name; it can never be created
or removed, only its members managed. ``gid`` has no Windows meaning and is reported skipped.
"""

from __future__ import annotations

from typing import Any

from jcstate.document.names import name_problem
from jcstate.host import Host
from jcstate.modules.groups import GroupSpec
from jcstate.modules.users import winfacts
from jcstate.modules.users.admins import losses
from jcstate.modules.users.powershell import script_run
from jcstate.modules.users.windows import ADMINISTRATORS, member_run, today
from jcstate.modules.users.winfacts import ADMINISTRATORS_SID, WindowsFacts, WinGroup, key
from jcstate.plan import Change, FieldChange, Step
from jcstate.resource import PlanContext

__all__ = ["BACKEND", "WindowsGroups"]

PHASE_GROUP = 10
PHASE_MEMBERS = 30
_LOCKOUT_HINT = "set allowLockout: true on this group to allow it"


def _current(spec: GroupSpec, facts: WindowsFacts) -> WinGroup | None:
    admins = facts.administrators()
    if key(spec.name) == key(ADMINISTRATORS) and admins is not None:
        return admins
    return facts.group(spec.name)


class WindowsGroups:
    """The ``groups`` resource on Windows (LocalAccounts)."""

    os = "windows"
    supports = frozenset({"name", "members", "state", "allowLockout"})

    def gather(self, host: Host) -> WindowsFacts:
        return winfacts.gather(host)

    def plan(self, desired: list[GroupSpec], ctx: PlanContext) -> list[Change]:
        facts: WindowsFacts = ctx.facts["groups"]
        users = list(ctx.desired.get("users") or [])
        admins = facts.administrators()
        now = today()
        changes: list[Change] = []
        for spec in desired:
            planned = _plan_group(spec, facts, users)
            current = _current(spec, facts)
            if current is not None and current.sid == ADMINISTRATORS_SID and not spec.allow_lockout:
                lost = losses(
                    facts.admins(now),
                    users,
                    [spec],
                    spec.name,
                    can_log_in_now=lambda n: facts.can_log_in(n, now),
                    in_admin_group_now=facts.is_admin,
                    same=lambda a, b: key(a) == key(b),
                )
                where = admins.name if admins else spec.name
                for change in planned:
                    if lost and not change.error:
                        change.error = (
                            f"this would remove the last admin account(s) "
                            f"({', '.join(sorted(lost))}) from {where}; {_LOCKOUT_HINT}"
                        )
            if spec.gid is not None:
                ctx.warnings.append(f"groups/{spec.name}: gid not supported on Windows (skipped)")
                for change in planned:
                    change.skipped_fields = ["gid"]
            for change in planned:
                change.source = ctx.source("groups", spec.name)
            changes += planned
        return changes


def _plan_group(spec: GroupSpec, facts: WindowsFacts, users: list[Any]) -> list[Change]:
    current = _current(spec, facts)
    problem = name_problem("windows", spec.name)
    if problem:
        action = "remove" if spec.state == "absent" else "update" if current else "create"
        return [Change("groups", spec.name, action, PHASE_GROUP, error=f"{spec.name!r} {problem}")]
    builtin = current is not None and current.sid == ADMINISTRATORS_SID
    if spec.state == "absent":
        if current is None:
            return []
        change = Change(
            "groups",
            spec.name,
            "remove",
            PHASE_GROUP,
            fields=[FieldChange("state", "present", "absent")],
            steps=[script_run("Remove-LocalGroup", {"name": current.name})],
        )
        if builtin:
            change.error = (
                f"{current.name} ({ADMINISTRATORS_SID}) is built in and cannot be removed"
            )
        return [change]
    changes: list[Change] = []
    if current is None:
        changes.append(
            Change(
                "groups",
                spec.name,
                "create",
                PHASE_GROUP,
                fields=[FieldChange("state", "absent", "present")],
                steps=[script_run("New-LocalGroup", {"name": spec.name})],
            )
        )
    if spec.members is not None:
        members = _plan_members(spec, current, facts, users)
        if members is not None:
            changes.append(members)
    return changes


def _plan_members(
    spec: GroupSpec, current: WinGroup | None, facts: WindowsFacts, users: list[Any]
) -> Change | None:
    wanted = list(dict.fromkeys(spec.members or ()))
    have = current.local_members() if current else []
    have_keys = {key(m) for m in have}
    want_keys = {key(m) for m in wanted}
    if have_keys == want_keys:
        return None
    add = [m for m in wanted if key(m) not in have_keys]
    drop = [m for m in have if key(m) not in want_keys]
    name = current.name if current else spec.name
    sid = ADMINISTRATORS_SID if current is not None and current.sid == ADMINISTRATORS_SID else None
    steps: list[Step] = []
    if add:
        steps.append(member_run(name, add, add=True, sid=sid))
    if drop:
        steps.append(member_run(name, drop, add=False, sid=sid))
    present = {key(u.name): u.name for u in users if u.state != "absent"}
    leaving = {key(u.name) for u in users if u.state == "absent"}
    change = Change(
        "groups",
        spec.name,
        "update",
        PHASE_MEMBERS,
        fields=[FieldChange("members", sorted(have), sorted(wanted))],
        steps=steps,
        requires=[("groups", spec.name)]
        + [("users", present[key(m)]) for m in wanted if key(m) in present],
    )
    bad = [m for m in wanted if name_problem("windows", m)]
    unknown = [m for m in wanted if facts.user(m) is None and key(m) not in present]
    if bad:
        change.error = f"members: {bad[0]!r} {name_problem('windows', bad[0])}"
    elif [m for m in wanted if key(m) in leaving]:
        change.error = "members: a member is removed by the policy (state: absent)"
    elif unknown:
        change.error = (
            f"members: no such user {', '.join(unknown)} (not on the system and no policy "
            "creates it)"
        )
    return change


BACKEND = WindowsGroups()
