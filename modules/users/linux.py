"""Linux users: facts from the account files, changes with useradd/usermod/userdel/chpasswd.

Planning is pure: it compares :class:`~jcstate.modules.accounts.facts.AccountFacts` with the
desired :class:`~jcstate.modules.users.model.UserSpec` list and returns argv lists.

Phases: account create/update (with its password, lock state and authorized keys) 20;
supplementary ``groups`` and ``admin`` of an existing user 30, as a separate change; removal 20
(the engine runs removals last, users before groups).

``state: locked`` locks the password (``usermod -L``) and expires the account
(``usermod -e 1``), because sshd with PAM still accepts keys for a ``!`` password; going back
to ``present`` unlocks and lifts that expiry (or sets ``expires`` when given).

``expires: never`` empties the shadow expiry field with ``usermod -e ""`` (usermod(8): "An input
of -1 or an empty string will blank the account expiration field in the shadow password file");
a new user gets ``useradd -e ""``, which also overrides an ``EXPIRE=`` default in
/etc/default/useradd.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from jcstate.host import Host
from jcstate.modules.accounts import facts as account_facts
from jcstate.modules.accounts.facts import AccountFacts, KeyFile
from jcstate.modules.accounts.files import UserEntry, date_to_days, days_to_date
from jcstate.modules.accounts.lockout import lockout_losses
from jcstate.modules.accounts.shadow import bad_field, bad_name
from jcstate.modules.accounts.shadow import run as shadow_run
from jcstate.modules.users import password
from jcstate.modules.users.authorized_keys import HOME_MODE, plan_keys
from jcstate.modules.users.model import NEVER, UserSpec, expiry_text, state_change
from jcstate.plan import Change, FieldChange, MakeDir, Step
from jcstate.resource import PlanContext
from jcstate.secret import Secret

__all__ = ["BACKEND", "LinuxUsers"]

PHASE_USER = 20
PHASE_MEMBERSHIP = 30
LOCK_EXPIRE = 1  # days since epoch: 1970-01-02, i.e. long expired
_LOCKOUT_HINT = "set allowLockout: true on this user to allow it"


class LinuxUsers:
    """The ``users`` resource on Linux (shadow-utils)."""

    os = "linux"
    supports = frozenset(
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
            "sshAuthorizedKeys",
            "expires",
            "state",
            "removeHome",
            "allowLockout",
        }
    )

    def gather(self, host: Host) -> AccountFacts:
        return account_facts.gather(host)

    def plan(self, desired: list[UserSpec], ctx: PlanContext) -> list[Change]:
        facts: AccountFacts = ctx.facts["users"]
        groups = list(ctx.desired.get("groups") or [])
        env = _Env(
            facts=facts,
            root=ctx.host.root,
            groups_present={g.name for g in groups if g.state == "present"},
            groups_leaving={g.name for g in groups if g.state == "absent"},
            secrets=ctx.secrets,
            users=tuple(desired),
            warnings=ctx.warnings,
        )
        lost = lockout_losses(facts, desired, groups, account_facts.today_days())
        changes: list[Change] = []
        for spec in desired:
            planned = _plan_user(spec, env)
            refusal = _lockout_refusal(spec, facts, lost)
            for change in planned:
                change.source = ctx.source("users", spec.name)
                if refusal and not change.error:
                    change.error = refusal
            changes += planned
        # useradd picks a free uid for a user without one; it must not take one that another
        # change of this run asks for, so those go first (the engine keeps order within a phase)
        return sorted(
            changes, key=lambda c: (c.phase, c.action == "create" and not _has_option(c, "-u"))
        )


@dataclass(frozen=True)
class _Env:
    """What every user's plan looks at besides its own spec."""

    facts: AccountFacts
    root: str
    groups_present: set[str]  # groups the document creates or keeps
    groups_leaving: set[str]
    secrets: Any
    users: tuple[UserSpec, ...] = ()
    warnings: list[str] = field(default_factory=list)  # the plan's warnings (ctx.warnings)

    def group_known(self, name: str) -> bool:
        return name in self.groups_present or (
            name in self.facts.groups and name not in self.groups_leaving
        )

    @property
    def admin_group(self) -> str:
        return self.facts.admin_group(self.groups_present)


def _lockout_refusal(spec: UserSpec, facts: AccountFacts, lost: set[str]) -> str | None:
    if spec.allow_lockout:
        return None
    if spec.state in ("absent", "locked") and spec.name in facts.console:
        verb = "remove" if spec.state == "absent" else "lock"
        return (
            f"this would {verb} {spec.name}, who is logged in on the console "
            f"({facts.console[spec.name]}); {_LOCKOUT_HINT}"
        )
    if spec.name in lost:
        return (
            f"this would leave the system without an admin account that can log in "
            f"({spec.name} is the last one); {_LOCKOUT_HINT}"
        )
    return None


def _plan_user(spec: UserSpec, env: _Env) -> list[Change]:
    problem = _invalid(spec)
    current = env.facts.users.get(spec.name)
    if problem:
        action = "remove" if spec.state == "absent" else "create" if current is None else "update"
        return [Change("users", spec.name, action, PHASE_USER, error=problem)]
    if spec.state == "absent":
        return [] if current is None else [_remove(spec, env)]
    if spec.admin is False and env.admin_group in (spec.groups or ()):
        return [
            Change(
                "users",
                spec.name,
                "create" if current is None else "update",
                PHASE_USER,
                error=f"groups lists {env.admin_group} but admin is false",
            )
        ]
    if current is None:
        return [_create(spec, env)]
    return [c for c in (_update(spec, current, env), _memberships(spec, env)) if c is not None]


def _has_option(change: Change, option: str) -> bool:
    return any(option in getattr(step, "argv", ()) for step in change.steps[:1])


def _invalid(spec: UserSpec) -> str | None:
    """Values that must not reach a tool, even if validation let them through."""
    problem = bad_name(spec.name)
    if problem:
        return problem
    for label, value in (("fullName", spec.full_name), ("shell", spec.shell), ("home", spec.home)):
        if value is not None and bad_field(label, value):
            return bad_field(label, value)
    for label, value in (("home", spec.home), ("shell", spec.shell)):
        if value is not None and not value.startswith("/"):
            return f"{label} must be an absolute path"
    if spec.password_hash is not None:
        problem = bad_field("password.hash", spec.password_hash.reveal())
        if problem:
            return problem
    for group in [*(spec.groups or ()), *([spec.primary_group] if spec.primary_group else [])]:
        if bad_name(group):
            return f"groups: {bad_name(group)}"
    return None


# -- remove -----------------------------------------------------------------------------------
def _remove(spec: UserSpec, env: _Env) -> Change:
    options = ["-r"] if spec.remove_home else []
    fields = [FieldChange("state", "present", "absent")]
    if spec.remove_home:
        fields.append(FieldChange("home", env.facts.users[spec.name].home, None))
    return Change(
        "users",
        spec.name,
        "remove",
        PHASE_USER,
        fields=fields,
        steps=[shadow_run("userdel", env.root, options, [spec.name])],
        error=_takes_kept_group(spec.name, env),
    )


def _takes_kept_group(name: str, env: _Env) -> str | None:
    """userdel also deletes the user's namesake group (USERGROUPS_ENAB); refuse if it is kept."""
    facts = env.facts
    group = facts.groups.get(name)
    if not (facts.defaults.usergroups and group is not None and name in env.groups_present):
        return None
    sharers = [u for u in facts.users.values() if u.gid == group.gid and u.name != name]
    if facts.users[name].gid != group.gid or sharers or [m for m in group.members if m != name]:
        return None
    return (
        f"userdel would also delete group {name}, which the policy keeps; remove the group "
        "from the policy or give the user another primaryGroup first"
    )


# -- password and lock state ------------------------------------------------------------------
@dataclass
class _Password:
    fields: list[FieldChange]
    steps: list[Step]
    after: str  # the shadow field once chpasswd (if any) has run
    error: str | None = None


def _password(spec: UserSpec, shadow_field: str | None, env: _Env) -> _Password:
    """chpasswd when the desired password differs from the shadow one (lock marker ignored).

    A locked account's hash is written already behind its ``!`` (``chpasswd -e`` stores the
    field as given), rather than set unlocked and then locked with ``usermod -L``: chpasswd is a
    batch step, which the engine runs at the end of the phase, *after* the change's usermod, so
    a later ``-L`` would lock the old field and the batch would then write the hash unlocked.
    One write also leaves no moment in which the new hash is usable. A plaintext (secretRef)
    is hashed by chpasswd itself, so a locked account's gets its own chpasswd run, in step
    order, before the ``usermod -L`` that follows it.
    """
    have = shadow_field if shadow_field is not None else "!"
    before = None if shadow_field is None else Secret(shadow_field)
    locked = spec.state == "locked"
    if spec.password_hash is not None:
        if shadow_field is not None and password.without_lock(have) == spec.password_hash.reveal():
            return _Password([], [], have)
        stored = ("!" if locked else "") + spec.password_hash.reveal()
        step = shadow_run(
            "chpasswd",
            env.root,
            ["-e"],
            stdin=password.stdin_line(spec.name, Secret(stored)),
            batch=True,  # chpasswd applies its lines all or nothing: one process for all users
        )
        return _Password([FieldChange("password", before, spec.password_hash)], [step], stored)
    if spec.password_ref is not None:
        plain = env.secrets.password(spec.password_ref) if env.secrets is not None else None
        if plain is None:
            return _Password(
                [], [], have, error=f"password.secretRef {spec.password_ref!r}: no such secret"
            )
        if shadow_field is not None and (
            password.matches(plain, have) or not password.can_verify()
        ):
            return _Password([], [], have)
        step = shadow_run(
            "chpasswd",
            env.root,
            stdin=password.stdin_line(spec.name, plain),
            batch=not locked,
        )
        # the resulting hash is unknown until chpasswd runs; any unlocked one will do here
        return _Password([FieldChange("password", before, Secret("(new)"))], [step], "$set")
    return _Password([], [], have)


def _real_hash(field: str) -> bool:
    return field.lstrip("!") not in ("", "*")


def _lock_facts(spec: UserSpec, shadow_field: str, expire: int | None) -> dict[str, bool]:
    """Each fact that makes a Linux account locked, read on its own (see model.state_change).

    A ``!`` in front of no real hash (``!``, ``!*``) cannot be unlocked (usermod -U refuses a
    passwordless account), so it only counts where the account is to be locked. The lock's
    expiry counts unless ``expires`` manages the expiry itself.
    """
    facts: dict[str, bool] = {}
    if spec.state == "locked" or _real_hash(shadow_field):
        facts["password locked"] = shadow_field.startswith("!")
    if spec.state == "locked" or spec.expires is None or spec.expires is NEVER:
        facts["expired by the lock"] = expire == LOCK_EXPIRE
    return facts


def _lock_options(
    spec: UserSpec, after: str, expire: int | None, fields: list[FieldChange]
) -> list[str]:
    """usermod -L/-U and -e flags that bring password lock and expiry to the desired state."""
    options: list[str] = []
    if spec.state == "locked":
        if not after.startswith("!"):
            options.append("-L")
        if expire != LOCK_EXPIRE:
            options += ["-e", str(LOCK_EXPIRE)]
    else:
        if after.startswith("!") and _real_hash(after):
            options.append("-U")
        if spec.expires is None or spec.expires is NEVER:
            if expire is not None and (spec.expires is NEVER or expire == LOCK_EXPIRE):
                options += ["-e", ""]  # no expiry; also lifts the one that locking set
                if expire != LOCK_EXPIRE:  # the lock's expiry is reported as the state
                    fields.append(FieldChange("expires", _iso(expire), expiry_text(NEVER)))
        elif date_to_days(spec.expires) != expire:
            options += ["-e", spec.expires.isoformat()]
            fields.append(FieldChange("expires", _iso(expire), spec.expires.isoformat()))
    return options


def _iso(days: int | None) -> str | None:
    return None if days is None else days_to_date(days).isoformat()


# -- create -----------------------------------------------------------------------------------
def _create(spec: UserSpec, env: _Env) -> Change:
    fields = [FieldChange("state", "absent", spec.state)]
    options: list[str] = []
    requires: list[tuple[str, str]] = []
    errors: list[str] = []
    if spec.uid is not None:
        fields.append(FieldChange("uid", None, spec.uid))
        options += ["-u", str(spec.uid)]
        errors += _uid_taken(spec, env)
    for label, flag, value in (
        ("fullName", "-c", spec.full_name),
        ("shell", "-s", spec.shell),
        ("home", "-d", spec.home),
    ):
        if value is not None:
            fields.append(FieldChange(label, None, value))
            options += [flag, value]
    primary = _primary_group(spec, env)
    if spec.primary_group is not None:
        fields.append(FieldChange("primaryGroup", None, spec.primary_group))
    if primary is None:
        pass  # the OS default group (GROUP= in /etc/default/useradd)
    elif primary == spec.name and not env.group_known(primary):
        options.append("-U")  # useradd makes the namesake group itself
        if primary in env.groups_leaving:
            errors.append(
                f"useradd would create group {primary}, which the policy removes; set primaryGroup"
            )
    else:
        options += ["-g", primary]
        if not env.group_known(primary):
            errors.append(f"primaryGroup {primary}: no such group and no policy creates it")
        elif primary in env.groups_present:
            requires.append(("groups", primary))
    extra = list(dict.fromkeys(spec.groups or ()))
    if spec.groups:
        fields.append(FieldChange("groups", [], sorted(extra)))
    if spec.admin:
        fields.append(FieldChange("admin", False, True))
        if env.admin_group not in extra:
            extra.append(env.admin_group)
    if extra:
        options += ["-G", ",".join(extra)]
        for group in extra:
            if not env.group_known(group):
                errors.append(f"groups: no such group {group} and no policy creates it")
            elif group in env.groups_present:
                requires.append(("groups", group))
    if spec.state == "locked":
        options += ["-e", str(LOCK_EXPIRE)]
    elif spec.expires is not None:
        fields.append(FieldChange("expires", None, expiry_text(spec.expires)))
        options += ["-e", "" if spec.expires is NEVER else spec.expires.isoformat()]
    options.append("-m")
    steps: list[Step] = [shadow_run("useradd", env.root, options, [spec.name])]
    pw = _password(spec, None, env)
    fields += pw.fields
    steps += pw.steps
    if pw.error:
        errors.append(pw.error)
    if spec.state == "locked" and pw.steps and not pw.after.startswith("!"):
        steps.append(shadow_run("usermod", env.root, ["-L"], [spec.name]))
    if spec.ssh_authorized_keys is not None:
        home = spec.home or _default_home(spec.name, env)
        keys = plan_keys(
            spec.name, _owner_group(primary, env), spec.ssh_authorized_keys, home, None, None
        )
        fields += keys.fields
        steps += keys.steps
        if keys.error:
            errors.append(keys.error)
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


def _primary_group(spec: UserSpec, env: _Env) -> str | None:
    """The -g argument for useradd (None: let useradd pick its default)."""
    if spec.primary_group is not None:
        return spec.primary_group
    if env.facts.defaults.usergroups:
        # useradd refuses to make the namesake group when it exists already: join it instead
        return spec.name
    return None


def _owner_group(primary: str | None, env: _Env) -> str:
    """The group that will own the user's files (for authorized_keys)."""
    if primary is not None:
        return primary
    default = env.facts.defaults.group
    return (env.facts.group_name(int(default)) if default.isdigit() else default) or default


def _default_home(name: str, env: _Env) -> str:
    return env.facts.defaults.home_base.rstrip("/") + "/" + name


def _uid_taken(spec: UserSpec, env: _Env) -> list[str]:
    taken = [
        f"uid {spec.uid} is already used by user {u.name}"
        for u in env.facts.users.values()
        if u.uid == spec.uid and u.name != spec.name
    ]
    taken += [
        f"uid {spec.uid} is also wanted for user {u.name}"
        for u in env.users
        if u.uid == spec.uid and u.name != spec.name and u.state != "absent"
    ]
    return taken[:1]


# -- update -----------------------------------------------------------------------------------
def _gecos_matches(gecos: str, full_name: str) -> bool:
    # adduser writes "Full Name,,,": the other GECOS subfields are not ours to manage
    return gecos == full_name or ("," not in full_name and gecos.split(",", 1)[0] == full_name)


def _update(spec: UserSpec, current: UserEntry, env: _Env) -> Change | None:
    facts = env.facts
    fields: list[FieldChange] = []
    options: list[str] = []
    errors: list[str] = []
    requires: list[tuple[str, str]] = []
    if spec.uid is not None and spec.uid != current.uid:
        fields.append(FieldChange("uid", current.uid, spec.uid))
        options += ["-u", str(spec.uid)]
        errors += _uid_taken(spec, env)
    if spec.full_name is not None and not _gecos_matches(current.gecos, spec.full_name):
        fields.append(FieldChange("fullName", current.gecos, spec.full_name))
        options += ["-c", spec.full_name]
    if spec.shell is not None and spec.shell != current.shell:
        fields.append(FieldChange("shell", current.shell, spec.shell))
        options += ["-s", spec.shell]
    home_steps: list[Step] = []
    moved_home = False
    if spec.home is not None and spec.home != current.home:
        fields.append(FieldChange("home", current.home, spec.home))
        group = spec.primary_group or facts.group_name(current.gid) or current.gid
        home = _new_home(spec.name, spec.home, current, group, env)
        options += home.options
        home_steps = home.steps
        moved_home = home.moved
        if home.error:
            errors.append(home.error)
    primary_now = facts.primary_group(spec.name)
    if spec.primary_group is not None and spec.primary_group != primary_now:
        fields.append(FieldChange("primaryGroup", primary_now, spec.primary_group))
        options += ["-g", spec.primary_group]
        if not env.group_known(spec.primary_group):
            errors.append(
                f"primaryGroup {spec.primary_group}: no such group and no policy creates it"
            )
        elif spec.primary_group in env.groups_present:
            requires.append(("groups", spec.primary_group))
    shadow = facts.shadow.get(spec.name)
    shadow_field = "!" if shadow is None else shadow.password.reveal()
    expire = None if shadow is None else shadow.expire
    pw = _password(spec, shadow_field, env)
    if pw.error:
        errors.append(pw.error)
    fields += pw.fields
    options += _lock_options(spec, pw.after, expire, fields)
    state = state_change(spec.state, _lock_facts(spec, shadow_field, expire))
    if state is not None:
        fields.append(state)
    steps: list[Step] = list(pw.steps)
    if options:
        steps.append(shadow_run("usermod", env.root, options, [spec.name]))
    steps += home_steps
    if spec.ssh_authorized_keys is not None:
        primary: str | int = spec.primary_group or primary_now or current.gid
        home = spec.home or current.home
        key_file: KeyFile | None
        if home == current.home or moved_home:
            # usermod -m carries ~/.ssh along: what is there now is what the new home will hold
            key_file = facts.keys.get(spec.name, KeyFile(home_exists=False))
        elif home_steps:
            key_file = KeyFile()  # a new, empty home made by the step above
        else:
            key_file = None  # an existing directory, not read: the key steps write it anyway
        uid = spec.uid if spec.uid is not None else current.uid
        group = facts.groups.get(primary) if isinstance(primary, str) else None
        ids = None if group is None else (uid, group.gid)
        keys = plan_keys(spec.name, primary, spec.ssh_authorized_keys, home, key_file, ids)
        fields += keys.fields
        steps += keys.steps
        if keys.error:
            errors.append(keys.error)
    if not fields and not errors and not steps:
        # a step with no field to show would be a planner bug: planned (and seen by the re-read
        # after apply) rather than dropped, so it can never hide a difference
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


@dataclass
class _Home:
    options: list[str]
    steps: list[Step]
    moved: bool = False
    error: str | None = None


def _new_home(name: str, new: str, current: UserEntry, group: str | int, env: _Env) -> _Home:
    """usermod -d, so that the account never points at a directory that does not exist.

    The new path free: the home moves there (``-m``; usermod renames it, or copies across file
    systems, and re-owns it with a changed uid or group in the same call). The new path taken
    by a directory: the account points there (``-m`` would fail on it) and the plan warns that
    the old home stays. No old home to move (usermod -m would only print a message and leave
    the account without a home), or one that other accounts share or that is ``/``: the new
    home is made, empty, owned by the user (and ``group``), and the old one is left alone.
    """
    facts = env.facts
    kind = facts.paths.get(new)
    if kind == "file":
        return _Home([], [], error=f"home {new} exists and is not a directory; choose another path")
    if kind is not None:
        env.warnings.append(
            f"user {name}: home {new} exists already: the account points there, and the old "
            f"home {current.home} stays where it is"
        )
        return _Home(["-d", new], [])
    shared = current.home.rstrip("/") == "" or any(
        u.home == current.home and u.name != name for u in facts.users.values()
    )
    old = facts.paths.get(current.home)
    if old in ("dir", "link") and not shared:
        return _Home(["-d", new, "-m"], [], moved=True)
    if old in ("dir", "link"):
        env.warnings.append(
            f"user {name}: the old home {current.home} is shared with other accounts (or is /) "
            f"and stays where it is; {new} is made empty"
        )
    return _Home(["-d", new], [MakeDir(new, HOME_MODE, name, group)])


def _memberships(spec: UserSpec, env: _Env) -> Change | None:
    """Additive supplementary groups and the admin group, for a user that exists already."""
    facts = env.facts
    have = facts.supplementary(spec.name)
    primary = spec.primary_group or facts.primary_group(spec.name)
    admin = env.admin_group
    add = [g for g in dict.fromkeys(spec.groups or ()) if g not in have and g != primary]
    leave = [g for g in spec.leave_groups if g in have and g != admin]
    fields: list[FieldChange] = []
    steps: list[Step] = []
    if add or leave:
        fields.append(FieldChange("groups", sorted(have), sorted((have | set(add)) - set(leave))))
    is_admin = admin in have or admin == primary
    if spec.admin is True and not is_admin:
        fields.append(FieldChange("admin", False, True))
        if admin not in add:
            add.append(admin)
    if add:
        steps.append(shadow_run("usermod", env.root, ["-a", "-G", ",".join(add)], [spec.name]))
    if spec.admin is False and admin in have:
        fields.append(FieldChange("admin", True, False))
        steps.append(shadow_run("gpasswd", env.root, ["-d", spec.name], [admin]))
    steps += [shadow_run("gpasswd", env.root, ["-d", spec.name], [g]) for g in leave]
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
        requires=[("users", spec.name)] + [("groups", g) for g in add if g in env.groups_present],
        error=(
            f"groups: no such group {', '.join(unknown)} and no policy creates it"
            if unknown
            else None
        ),
    )


BACKEND = LinuxUsers()
