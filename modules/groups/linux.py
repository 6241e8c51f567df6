"""Linux groups: facts from /etc/group and /etc/gshadow, changes with groupadd/groupmod/groupdel
and gpasswd. Planning is pure: it compares facts with the desired groups and returns argv lists.

Phases: create and gid changes 10; authoritative ``members`` 30 (after users exist, phase 20);
removal 10 (removals run after everything else, users' before groups').
"""

from __future__ import annotations

from typing import Any

from jcstate.host import Host
from jcstate.modules.accounts import facts as account_facts
from jcstate.modules.accounts.facts import AccountFacts
from jcstate.modules.accounts.lockout import lockout_losses
from jcstate.modules.accounts.shadow import bad_name
from jcstate.modules.accounts.shadow import run as shadow_run
from jcstate.modules.groups import GroupSpec
from jcstate.plan import Change, FieldChange
from jcstate.resource import PlanContext

__all__ = ["BACKEND", "LinuxGroups"]

PHASE_GROUP = 10
PHASE_MEMBERS = 30
_LOCKOUT_HINT = "set allowLockout: true on this group to allow it"


class LinuxGroups:
    """The ``groups`` resource on Linux (shadow-utils)."""

    os = "linux"
    supports = frozenset({"name", "gid", "members", "state", "allowLockout"})

    def gather(self, host: Host) -> AccountFacts:
        # keys are the users resource's business; lock-out checks use its facts when present
        return account_facts.gather(host, keys=False)

    def plan(self, desired: list[GroupSpec], ctx: PlanContext) -> list[Change]:
        facts: AccountFacts = ctx.facts["groups"]
        users = list(ctx.desired.get("users") or [])
        lock_facts = ctx.facts.get("users") or facts
        lost = lockout_losses(lock_facts, users, desired, account_facts.today_days())
        admin_group = facts.admin_group({g.name for g in desired if g.state == "present"})
        changes: list[Change] = []
        for spec in desired:
            planned = _plan_group(spec, facts, users, desired, ctx.host.root)
            if spec.name == admin_group and lost and not spec.allow_lockout:
                _refuse_lockout(planned, spec, lost)
            for change in planned:
                change.source = ctx.source("groups", spec.name)
            changes += planned
        # groupadd picks a free gid for a group without one; it must not take one that another
        # change of this run asks for, so those go first (the engine keeps order within a phase)
        return sorted(
            changes, key=lambda c: (c.phase, c.action == "create" and "-g" not in _argv(c))
        )


def _argv(change: Change) -> tuple[str, ...]:
    return getattr(change.steps[0], "argv", ()) if change.steps else ()


def _refuse_lockout(planned: list[Change], spec: GroupSpec, lost: set[str]) -> None:
    dropped = lost if spec.state == "absent" else lost - set(spec.members or ())
    if not dropped:
        return
    for change in planned:
        if change.action == "remove" or any(f.field == "members" for f in change.fields):
            change.error = (
                f"this would remove the last admin account(s) ({', '.join(sorted(dropped))}) "
                f"from group {spec.name}; {_LOCKOUT_HINT}"
            )


def _plan_group(
    spec: GroupSpec, facts: AccountFacts, users: list[Any], desired: list[GroupSpec], root: str
) -> list[Change]:
    problem = bad_name(spec.name)
    if problem:
        action = (
            "remove"
            if spec.state == "absent"
            else "update"
            if spec.name in facts.groups
            else "create"
        )
        return [Change("groups", spec.name, action, PHASE_GROUP, error=problem)]
    current = facts.groups.get(spec.name)
    if spec.state == "absent":
        return [] if current is None else [_remove(spec, facts, users, root)]
    changes = []
    if current is None:
        fields = [FieldChange("state", "absent", "present")]
        options: list[str] = []
        if spec.gid is not None:
            fields.append(FieldChange("gid", None, spec.gid))
            options = ["-g", str(spec.gid)]
        change = Change(
            "groups",
            spec.name,
            "create",
            PHASE_GROUP,
            fields=fields,
            steps=[shadow_run("groupadd", root, options, [spec.name])],
        )
        change.error = _gid_taken(spec, facts, desired)
        changes.append(change)
    elif spec.gid is not None and current.gid != spec.gid:
        change = Change(
            "groups",
            spec.name,
            "update",
            PHASE_GROUP,
            fields=[FieldChange("gid", current.gid, spec.gid)],
            steps=[shadow_run("groupmod", root, ["-g", str(spec.gid)], [spec.name])],
        )
        change.error = _gid_taken(spec, facts, desired)
        changes.append(change)
    if spec.members is not None:
        members = _plan_members(spec, facts, users, root)
        if members is not None:
            changes.append(members)
    return changes


def _gid_taken(spec: GroupSpec, facts: AccountFacts, desired: list[GroupSpec]) -> str | None:
    if spec.gid is None:  # groupadd picks a free one; two such groups never collide
        return None
    # a gid freed in the same run is still taken when groupadd runs (removals go last)
    for other in facts.groups.values():
        if other.name != spec.name and other.gid == spec.gid:
            return f"gid {spec.gid} is already used by group {other.name}"
    for wanted in desired:
        if wanted.name != spec.name and wanted.gid == spec.gid and wanted.state == "present":
            return f"gid {spec.gid} is also wanted for group {wanted.name}"
    return None


def _plan_members(
    spec: GroupSpec, facts: AccountFacts, users: list[Any], root: str
) -> Change | None:
    wanted = list(dict.fromkeys(spec.members or ()))
    current = facts.groups.get(spec.name)
    have = list(current.members) if current else []
    shadow_have = facts.gshadow.get(spec.name)
    in_step = shadow_have is None or set(shadow_have) == set(have) or current is None
    if set(wanted) == set(have) and in_step:
        return None
    present = {u.name for u in users if u.state != "absent"}
    field = FieldChange("members", sorted(have), sorted(wanted))
    if set(wanted) == set(have):  # only /etc/gshadow is out of step
        field = FieldChange("members (gshadow)", sorted(shadow_have or ()), sorted(wanted))
    change = Change(
        "groups",
        spec.name,
        "update",
        PHASE_MEMBERS,
        fields=[field],
        steps=[shadow_run("gpasswd", root, ["-M", ",".join(wanted)], [spec.name])],
        requires=[("groups", spec.name)] + [("users", m) for m in wanted if m in present],
    )
    unknown = [m for m in wanted if m not in facts.users and m not in present]
    leaving = [m for m in wanted if m in {u.name for u in users if u.state == "absent"}]
    bad = [m for m in wanted if bad_name(m)]
    if bad:
        change.error = f"members: {bad_name(bad[0])}"
    elif leaving:
        change.error = f"members: {', '.join(leaving)} is removed by the policy (state: absent)"
    elif unknown:
        change.error = (
            f"members: no such user {', '.join(unknown)} (not on the system and no policy "
            "creates it)"
        )
    return change


def _remove(spec: GroupSpec, facts: AccountFacts, users: list[Any], root: str) -> Change:
    leaving = {u.name for u in users if u.state == "absent"}
    group = facts.groups[spec.name]
    primary_of = sorted(u.name for u in facts.users.values() if u.gid == group.gid)
    owners = [name for name in primary_of if name not in leaving]
    steps = [shadow_run("groupdel", root, (), [spec.name])]
    if _userdel_removes(spec.name, group.members, primary_of, leaving, facts):
        steps = []  # userdel of its namesake user deletes it first; groupdel would then fail
    change = Change(
        "groups",
        spec.name,
        "remove",
        PHASE_GROUP,
        fields=[FieldChange("state", "present", "absent")],
        steps=steps,
        requires=[("users", name) for name in primary_of if name in leaving],
    )
    if owners:
        change.error = (
            f"group {spec.name} is the primary group of user(s) {', '.join(owners)}; "
            "change their primaryGroup or remove them first"
        )
    return change


def _userdel_removes(
    name: str,
    members: tuple[str, ...],
    primary_of: list[str],
    leaving: set[str],
    facts: AccountFacts,
) -> bool:
    """Whether ``userdel NAME`` (planned in this run) deletes group NAME itself.

    shadow-utils does so with USERGROUPS_ENAB when the group is that user's primary group, has
    no other members and is nobody else's primary group.
    """
    return (
        facts.defaults.usergroups
        and name in leaving
        and primary_of == [name]
        and not [m for m in members if m != name]
    )


BACKEND = LinuxGroups()
