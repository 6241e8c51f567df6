"""macOS users: facts from ``dscl -plist``, changes with sysadminctl, dscl, dseditgroup, pwpolicy.

Planning is pure: it compares :class:`~jcstate.modules.users.directory.DirectoryFacts` with the
desired :class:`~jcstate.modules.users.model.UserSpec` list and returns argv lists. Formats and
options used, from Apple's manual pages:

* create: ``sysadminctl -addUser NAME [-fullName F] [-UID N] [-GID N] [-shell S] [-home H]
  [-admin] -password -``. sysadminctl's usage text says "Pass '-' instead of password in commands
  above to request prompt": the password is the prompt's answer, written to the tool's standard
  input as a :class:`~jcstate.secret.Secret`, never in argv (``dscl . -passwd`` and
  ``sysadminctl -password PW`` would show it in ``ps``). Not verified on a real Mac: if the prompt
  insists on a terminal, the create fails loudly rather than leaking the password.
* attributes of an existing user: ``dscl . -create /Users/NAME ATTR VALUE`` (dscl(1): "-create
  record_path [key [val ...]]", replaces the values) for RealName, UniqueID, PrimaryGroupID,
  UserShell, NFSHomeDirectory (only the path: the folder is not moved, and the plan warns);
  ``IsHidden 1`` hides an account from the login window (Apple support HT203998),
  ``dscl . -delete /Users/NAME IsHidden`` shows it again.
* groups and admin: ``dseditgroup -o edit -a|-d NAME -t user GROUP`` (dseditgroup(8)); admin is
  membership of the ``admin`` group.
* ``state: locked``: ``pwpolicy -u NAME -disableuser`` / ``-enableuser``; the fact is the
  ``;DisabledUser;`` entry that it adds to AuthenticationAuthority.
* remove: ``sysadminctl -deleteUser NAME`` (deletes the home), with ``-keepHome`` unless
  ``removeHome: true``.

Lock-out safety refuses removing or locking the user logged in at the screen (the owner of
``/dev/console``, see ``directory.py``) unless ``allowLockout: true``; when that owner could not
be read, the plan only warns.

A password is set when the account is created; macOS offers no way to compare a plaintext with
the stored ShadowHashData short of reading the hash, which jcstate does not, so a changed
secret is not re-applied to an existing account (docs/platforms.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jcstate.document.names import name_problem
from jcstate.host import Host
from jcstate.modules.users import directory
from jcstate.modules.users.admins import annotate, ends_session, losses
from jcstate.modules.users.directory import ADMIN_GROUP, DarwinUser, DirectoryFacts, can_log_in
from jcstate.modules.users.model import UserSpec, state_change
from jcstate.plan import Change, FieldChange, Run, Step
from jcstate.resource import PlanContext
from jcstate.secret import Secret

__all__ = ["BACKEND", "DarwinUsers", "dscl_set", "member_argv"]

PHASE_USER = 20
PHASE_MEMBERSHIP = 30
_LOCKOUT_HINT = "set allowLockout: true on this user to allow it"
_SUPPORTED = frozenset(
    {
        "name",
        "uid",
        "fullName",
        "shell",
        "home",
        "primaryGroup",
        "groups",
        "admin",
        "password",
        "state",
        "removeHome",
        "allowLockout",
        "hidden",
    }
)


def dscl_set(name: str, attribute: str, value: str) -> tuple[str, ...]:
    return ("dscl", ".", "-create", f"/Users/{name}", attribute, value)


def member_argv(user: str, group: str, *, add: bool) -> tuple[str, ...]:
    return ("dseditgroup", "-o", "edit", "-a" if add else "-d", user, "-t", "user", group)


@dataclass(frozen=True)
class _Env:
    facts: DirectoryFacts
    groups: tuple[Any, ...]  # GroupSpec of the same document
    users: tuple[UserSpec, ...]
    secrets: Any

    def group_known(self, name: str) -> bool:
        wanted = {g.name: g.state for g in self.groups}
        return wanted.get(name) == "present" or (
            name in self.facts.groups and wanted.get(name) != "absent"
        )

    def created_here(self, name: str) -> bool:
        return any(g.name == name and g.state == "present" for g in self.groups)

    def gid(self, group: str) -> int | None:
        """The group's gid now, or the one the policy gives it."""
        for g in self.groups:
            if g.name == group and g.gid is not None:
                return int(g.gid)
        return self.facts.gid_of(group)


class DarwinUsers:
    """The ``users`` resource on macOS (Directory Services)."""

    os = "darwin"
    supports = _SUPPORTED

    def gather(self, host: Host) -> DirectoryFacts:
        return directory.gather(host)

    def plan(self, desired: list[UserSpec], ctx: PlanContext) -> list[Change]:
        facts: DirectoryFacts = ctx.facts["users"]
        env = _Env(facts, tuple(ctx.desired.get("groups") or ()), tuple(desired), ctx.secrets)
        lost = _losses(facts, desired, env.groups)
        changes: list[Change] = []
        for spec in desired:
            planned = _plan_user(spec, env)
            ctx.warnings += [
                _home_warning(spec.name, f) for c in planned for f in c.fields if _moves(c, f)
            ]
            changes += annotate(
                spec,
                planned,
                ctx,
                supports=self.supports,
                os_label="macOS",
                refusal=lambda change, spec=spec: _lockout_refusal(spec, change, facts, lost),
                console_problem=facts.console_problem,
            )
        # sysadminctl picks a free uid for a user without one: explicit uids go first
        return sorted(changes, key=lambda c: (c.phase, c.action == "create" and not _has_uid(c)))


def _moves(change: Change, field: FieldChange) -> bool:
    return change.action == "update" and field.field == "home"


def _home_warning(name: str, field: FieldChange) -> str:
    """dscl only renames NFSHomeDirectory: say so, since the folder itself stays put."""
    return (
        f"user {name}: on macOS only the account's home path changes (NFSHomeDirectory); the "
        f"folder {field.before} is not moved, and {field.after} must exist for the user's files"
    )


def _lockout_refusal(
    spec: UserSpec, change: Change, facts: DirectoryFacts, lost: set[str]
) -> str | None:
    """Why ``change`` must not run without ``allowLockout: true`` (wording as on Linux)."""
    if spec.allow_lockout:
        return None
    verb = ends_session(change)
    if verb and facts.console == spec.name:
        return (
            f"this would {verb} {spec.name}, who is logged in on the console (/dev/console); "
            f"{_LOCKOUT_HINT}"
        )
    if spec.name in lost:
        return (
            f"this would leave the system without an admin account that can log in "
            f"({spec.name} is the last one); {_LOCKOUT_HINT}"
        )
    return None


def _losses(facts: DirectoryFacts, desired: list[UserSpec], groups: tuple[Any, ...]) -> set[str]:
    admin = facts.groups.get(ADMIN_GROUP)
    members = set(admin.members) if admin else set()
    return losses(
        facts.admins(),
        desired,
        groups,
        ADMIN_GROUP,
        can_log_in_now=lambda n: n in facts.users and can_log_in(facts.users[n]),
        in_admin_group_now=lambda n: n in members,
    )


def _has_uid(change: Change) -> bool:
    return bool(change.steps) and "-UID" in getattr(change.steps[0], "argv", ())


def _invalid(spec: UserSpec) -> str | None:
    """Values that must not reach a tool, even if validation let them through."""
    problem = name_problem("darwin", spec.name)
    if problem:
        return f"{spec.name!r} {problem}"
    for label, value in (("fullName", spec.full_name), ("shell", spec.shell), ("home", spec.home)):
        if value is not None and any(c in value for c in "\n\r\0"):
            return f"{label} must not contain a newline or NUL"
    for label, value in (("home", spec.home), ("shell", spec.shell)):
        if value is not None and not value.startswith("/"):
            return f"{label} must be an absolute path"
    for group in [*(spec.groups or ()), *([spec.primary_group] if spec.primary_group else [])]:
        if name_problem("darwin", group):
            return f"groups: {group!r} {name_problem('darwin', group)}"
    return None


def _plan_user(spec: UserSpec, env: _Env) -> list[Change]:
    current = env.facts.users.get(spec.name)
    problem = _invalid(spec)
    if problem:
        action = "remove" if spec.state == "absent" else "create" if current is None else "update"
        return [Change("users", spec.name, action, PHASE_USER, error=problem)]
    if spec.state == "absent":
        return [] if current is None else [_remove(spec, current)]
    if spec.admin is False and ADMIN_GROUP in (spec.groups or ()):
        action = "create" if current is None else "update"
        return [
            Change(
                "users",
                spec.name,
                action,
                PHASE_USER,
                error=f"groups lists {ADMIN_GROUP} but admin is false",
            )
        ]
    if current is None:
        return [_create(spec, env)]
    return [c for c in (_update(spec, current, env), _memberships(spec, env)) if c is not None]


def _remove(spec: UserSpec, current: DarwinUser) -> Change:
    argv: tuple[str, ...] = ("sysadminctl", "-deleteUser", spec.name)
    fields = [FieldChange("state", "present", "absent")]
    if spec.remove_home:
        fields.append(FieldChange("home", current.home, None))
    else:
        argv += ("-keepHome",)
    return Change("users", spec.name, "remove", PHASE_USER, fields=fields, steps=[Run(argv)])


def _uid_taken(spec: UserSpec, env: _Env) -> str | None:
    for user in env.facts.users.values():
        if user.uid == spec.uid and user.name != spec.name:
            return f"uid {spec.uid} is already used by user {user.name}"
    for other in env.users:
        if other.uid == spec.uid and other.name != spec.name and other.state != "absent":
            return f"uid {spec.uid} is also wanted for user {other.name}"
    return None


def _password(spec: UserSpec, env: _Env) -> tuple[Secret | None, str | None]:
    """The plaintext for the prompt, or why there is none."""
    if spec.password_ref is None:
        return None, "macOS needs password.secretRef to create a user (a crypt hash cannot be used)"
    plain = env.secrets.password(spec.password_ref) if env.secrets is not None else None
    if plain is None:
        return None, f"password.secretRef {spec.password_ref!r}: no such secret"
    if any(c in plain.reveal() for c in "\n\r\0"):
        return None, f"password.secretRef {spec.password_ref!r}: must be one line"
    return plain, None


def _create(spec: UserSpec, env: _Env) -> Change:
    fields = [FieldChange("state", "absent", spec.state)]
    argv: list[str] = ["sysadminctl", "-addUser", spec.name]
    errors: list[str] = []
    requires: list[tuple[str, str]] = []
    if spec.full_name is not None:
        fields.append(FieldChange("fullName", None, spec.full_name))
        argv += ["-fullName", spec.full_name]
    if spec.uid is not None:
        fields.append(FieldChange("uid", None, spec.uid))
        argv += ["-UID", str(spec.uid)]
        errors += [e for e in [_uid_taken(spec, env)] if e]
    if spec.primary_group is not None:
        fields.append(FieldChange("primaryGroup", None, spec.primary_group))
        gid = env.gid(spec.primary_group)
        if gid is None:
            errors.append(
                f"primaryGroup {spec.primary_group}: no such group, or created without a gid "
                "(macOS takes the primary group as a number: give the group a gid)"
            )
        else:
            argv += ["-GID", str(gid)]
            if env.created_here(spec.primary_group):
                requires.append(("groups", spec.primary_group))
    for label, flag, value in (("shell", "-shell", spec.shell), ("home", "-home", spec.home)):
        if value is not None:
            fields.append(FieldChange(label, None, value))
            argv += [flag, value]
    if spec.admin:
        fields.append(FieldChange("admin", False, True))
        argv.append("-admin")
    plain, problem = _password(spec, env)
    if problem:
        errors.append(problem)
    fields.append(FieldChange("password", None, Secret("(new)")))
    argv += ["-password", "-"]
    steps: list[Step] = [Run(tuple(argv), stdin=Secret(plain.reveal() + "\n") if plain else None)]
    if spec.hidden:
        fields.append(FieldChange("hidden", False, True))
        steps.append(Run(dscl_set(spec.name, "IsHidden", "1")))
    extra = [g for g in dict.fromkeys(spec.groups or ()) if g != ADMIN_GROUP or not spec.admin]
    if extra:
        fields.append(FieldChange("groups", [], sorted(extra)))
    for group in extra:
        steps.append(Run(member_argv(spec.name, group, add=True)))
        if not env.group_known(group):
            errors.append(f"groups: no such group {group} and no policy creates it")
        elif env.created_here(group):
            requires.append(("groups", group))
    if spec.state == "locked":
        steps.append(Run(("pwpolicy", "-u", spec.name, "-disableuser")))
    return Change(
        "users",
        spec.name,
        "create",
        PHASE_USER,
        fields=fields,
        steps=steps,
        requires=list(dict.fromkeys(requires)),
        error="; ".join(errors) or None,
    )


def _update(spec: UserSpec, current: DarwinUser, env: _Env) -> Change | None:
    fields: list[FieldChange] = []
    steps: list[Step] = []
    errors: list[str] = []
    requires: list[tuple[str, str]] = []
    if spec.uid is not None and spec.uid != current.uid:
        fields.append(FieldChange("uid", current.uid, spec.uid))
        steps.append(Run(dscl_set(spec.name, "UniqueID", str(spec.uid))))
        errors += [e for e in [_uid_taken(spec, env)] if e]
    for label, attr, have, want in (
        ("fullName", "RealName", current.real_name, spec.full_name),
        ("shell", "UserShell", current.shell, spec.shell),
        ("home", "NFSHomeDirectory", current.home, spec.home),
    ):
        if want is not None and want != have:
            fields.append(FieldChange(label, have, want))
            steps.append(Run(dscl_set(spec.name, attr, want)))
    if spec.primary_group is not None:
        gid = env.gid(spec.primary_group)
        if gid is None:
            errors.append(f"primaryGroup {spec.primary_group}: no such group with a known gid")
        elif gid != current.gid:
            now = next((g.name for g in env.facts.groups.values() if g.gid == current.gid), None)
            fields.append(FieldChange("primaryGroup", now or current.gid, spec.primary_group))
            steps.append(Run(dscl_set(spec.name, "PrimaryGroupID", str(gid))))
            if env.created_here(spec.primary_group):
                requires.append(("groups", spec.primary_group))
    if spec.hidden is not None and spec.hidden != current.hidden:
        fields.append(FieldChange("hidden", current.hidden, spec.hidden))
        steps.append(
            Run(dscl_set(spec.name, "IsHidden", "1"))
            if spec.hidden
            else Run(("dscl", ".", "-delete", f"/Users/{spec.name}", "IsHidden"))
        )
    state = state_change(spec.state, {"disabled": current.disabled})
    if state is not None:
        fields.append(state)
        verb = "-disableuser" if spec.state == "locked" else "-enableuser"
        steps.append(Run(("pwpolicy", "-u", spec.name, verb)))
    if not fields and not errors:
        return None
    return Change(
        "users",
        spec.name,
        "update",
        PHASE_USER,
        fields=fields,
        steps=steps,
        requires=requires,
        error="; ".join(errors) or None,
    )


def _memberships(spec: UserSpec, env: _Env) -> Change | None:
    """Additive supplementary groups and the admin group, for a user that exists already."""
    have = env.facts.supplementary(spec.name)
    add = [g for g in dict.fromkeys(spec.groups or ()) if g not in have]
    leave = [g for g in spec.leave_groups if g in have and g != ADMIN_GROUP]
    fields: list[FieldChange] = []
    if add or leave:
        fields.append(FieldChange("groups", sorted(have), sorted((have | set(add)) - set(leave))))
    if spec.admin is True and ADMIN_GROUP not in have:
        fields.append(FieldChange("admin", False, True))
        if ADMIN_GROUP not in add:
            add.append(ADMIN_GROUP)
    steps: list[Step] = [Run(member_argv(spec.name, g, add=True)) for g in add]
    if spec.admin is False and ADMIN_GROUP in have:
        fields.append(FieldChange("admin", True, False))
        steps.append(Run(member_argv(spec.name, ADMIN_GROUP, add=False)))
    steps += [Run(member_argv(spec.name, g, add=False)) for g in leave]
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
        requires=[("users", spec.name)] + [("groups", g) for g in add if env.created_here(g)],
        error=f"groups: no such group {', '.join(unknown)} and no policy creates it"
        if unknown
        else None,
    )


BACKEND = DarwinUsers()
