"""macOS groups: facts from ``dscl -plist . -readall /Groups``, changes with dseditgroup and dscl.

* create: ``dseditgroup -o create [-i GID] NAME`` (dseditgroup(8): "-i gid  the group id");
* gid: ``dscl . -create /Groups/NAME PrimaryGroupID GID``;
* authoritative ``members``: one ``dseditgroup -o edit -a|-d USER -t user NAME`` per user to
  add or drop (dseditgroup keeps GroupMembership and the GUID list GroupMembers in step, which a
  bare ``dscl -create GroupMembership`` would not);
* remove: ``dseditgroup -o delete NAME``.

Phases as on Linux: create and gid 10, members 30, removal 10 (removals run last).
"""

from __future__ import annotations

from typing import Any

from jcstate.document.names import name_problem
from jcstate.host import Host
from jcstate.modules.groups import GroupSpec
from jcstate.modules.users import directory
from jcstate.modules.users.admins import losses
from jcstate.modules.users.darwin import member_argv
from jcstate.modules.users.directory import ADMIN_GROUP, DirectoryFacts, can_log_in
from jcstate.plan import Change, FieldChange, Run
from jcstate.resource import PlanContext

__all__ = ["BACKEND", "DarwinGroups"]

PHASE_GROUP = 10
PHASE_MEMBERS = 30
_LOCKOUT_HINT = "set allowLockout: true on this group to allow it"


class DarwinGroups:
    """The ``groups`` resource on macOS (Directory Services)."""

    os = "darwin"
    supports = frozenset({"name", "gid", "members", "state", "allowLockout"})

    def gather(self, host: Host) -> DirectoryFacts:
        return directory.gather(host)

    def plan(self, desired: list[GroupSpec], ctx: PlanContext) -> list[Change]:
        facts: DirectoryFacts = ctx.facts["groups"]
        users = list(ctx.desired.get("users") or [])
        admin = facts.groups.get(ADMIN_GROUP)
        lost = losses(
            facts.admins(),
            users,
            desired,
            ADMIN_GROUP,
            can_log_in_now=lambda n: n in facts.users and can_log_in(facts.users[n]),
            in_admin_group_now=lambda n: admin is not None and n in admin.members,
        )
        changes: list[Change] = []
        for spec in desired:
            planned = _plan_group(spec, facts, users, desired)
            if spec.name == ADMIN_GROUP and lost and not spec.allow_lockout:
                for change in planned:
                    if change.action == "remove" or any(
                        f.field == "members" for f in change.fields
                    ):
                        change.error = (
                            f"this would remove the last admin account(s) "
                            f"({', '.join(sorted(lost))}) from group {spec.name}; {_LOCKOUT_HINT}"
                        )
            for change in planned:
                change.source = ctx.source("groups", spec.name)
            changes += planned
        return sorted(
            changes, key=lambda c: (c.phase, c.action == "create" and "-i" not in _argv(c))
        )


def _argv(change: Change) -> tuple[str, ...]:
    return getattr(change.steps[0], "argv", ()) if change.steps else ()


def _gid_taken(spec: GroupSpec, facts: DirectoryFacts, desired: list[GroupSpec]) -> str | None:
    for other in facts.groups.values():
        if other.name != spec.name and other.gid == spec.gid:
            return f"gid {spec.gid} is already used by group {other.name}"
    for wanted in desired:
        if wanted.name != spec.name and wanted.gid == spec.gid and wanted.state == "present":
            return f"gid {spec.gid} is also wanted for group {wanted.name}"
    return None


def _plan_group(
    spec: GroupSpec, facts: DirectoryFacts, users: list[Any], desired: list[GroupSpec]
) -> list[Change]:
    current = facts.groups.get(spec.name)
    problem = name_problem("darwin", spec.name)
    if problem:
        action = "remove" if spec.state == "absent" else "update" if current else "create"
        return [Change("groups", spec.name, action, PHASE_GROUP, error=f"{spec.name!r} {problem}")]
    if spec.state == "absent":
        return [] if current is None else [_remove(spec, facts, users)]
    changes: list[Change] = []
    if current is None:
        fields = [FieldChange("state", "absent", "present")]
        argv: tuple[str, ...] = ("dseditgroup", "-o", "create")
        if spec.gid is not None:
            fields.append(FieldChange("gid", None, spec.gid))
            argv += ("-i", str(spec.gid))
        change = Change(
            "groups",
            spec.name,
            "create",
            PHASE_GROUP,
            fields=fields,
            steps=[Run((*argv, spec.name))],
        )
        change.error = _gid_taken(spec, facts, desired) if spec.gid is not None else None
        changes.append(change)
    elif spec.gid is not None and spec.gid != current.gid:
        change = Change(
            "groups",
            spec.name,
            "update",
            PHASE_GROUP,
            fields=[FieldChange("gid", current.gid, spec.gid)],
            steps=[
                Run(
                    (
                        "dscl",
                        ".",
                        "-create",
                        f"/Groups/{spec.name}",
                        "PrimaryGroupID",
                        str(spec.gid),
                    )
                )
            ],
        )
        change.error = _gid_taken(spec, facts, desired)
        changes.append(change)
    if spec.members is not None:
        members = _plan_members(spec, facts, users)
        if members is not None:
            changes.append(members)
    return changes


def _plan_members(spec: GroupSpec, facts: DirectoryFacts, users: list[Any]) -> Change | None:
    wanted = list(dict.fromkeys(spec.members or ()))
    current = facts.groups.get(spec.name)
    have = list(current.members) if current else []
    if set(wanted) == set(have):
        return None
    steps = [Run(member_argv(u, spec.name, add=True)) for u in wanted if u not in have]
    steps += [Run(member_argv(u, spec.name, add=False)) for u in have if u not in wanted]
    present = {u.name for u in users if u.state != "absent"}
    leaving = {u.name for u in users if u.state == "absent"}
    change = Change(
        "groups",
        spec.name,
        "update",
        PHASE_MEMBERS,
        fields=[FieldChange("members", sorted(have), sorted(wanted))],
        steps=steps,
        requires=[("groups", spec.name)] + [("users", m) for m in wanted if m in present],
    )
    bad = [m for m in wanted if name_problem("darwin", m)]
    unknown = [m for m in wanted if m not in facts.users and m not in present]
    if bad:
        change.error = f"members: {bad[0]!r} {name_problem('darwin', bad[0])}"
    elif [m for m in wanted if m in leaving]:
        change.error = (
            f"members: {', '.join(m for m in wanted if m in leaving)} is removed by "
            "the policy (state: absent)"
        )
    elif unknown:
        change.error = (
            f"members: no such user {', '.join(unknown)} (not on the system and no policy "
            "creates it)"
        )
    return change


def _remove(spec: GroupSpec, facts: DirectoryFacts, users: list[Any]) -> Change:
    leaving = {u.name for u in users if u.state == "absent"}
    gid = facts.groups[spec.name].gid
    owners = sorted(u.name for u in facts.users.values() if u.gid == gid and u.name not in leaving)
    change = Change(
        "groups",
        spec.name,
        "remove",
        PHASE_GROUP,
        fields=[FieldChange("state", "present", "absent")],
        steps=[Run(("dseditgroup", "-o", "delete", spec.name))],
        requires=[
            ("users", u.name) for u in facts.users.values() if u.gid == gid and u.name in leaving
        ],
    )
    if owners:
        change.error = (
            f"group {spec.name} is the primary group of user(s) {', '.join(owners)}; "
            "change their primaryGroup or remove them first"
        )
    return change


BACKEND = DarwinGroups()
