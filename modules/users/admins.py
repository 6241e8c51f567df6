"""Lock-out safety where being an administrator is one group membership (macOS, Windows).

The macOS and Windows backends hand over who is an admin account now (in the ``admin`` group,
or the group with SID ``S-1-5-32-544``, and able to log in) and the policy's users and groups;
:func:`losses` projects the plan and answers which current admins it takes away, but only when
it takes away *all* of them, exactly like the Linux rule in ``modules/accounts/lockout.py``.
A projected admin must be kept, enabled (``state: present``) and in the admin group.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from jcstate.modules.users.skipped import skipped

if TYPE_CHECKING:
    from jcstate.modules.users.model import UserSpec
    from jcstate.plan import Change
    from jcstate.resource import PlanContext

__all__ = ["annotate", "ends_session", "losses"]


def losses(
    admins_now: set[str],
    users: Iterable[Any],
    groups: Iterable[Any],
    admin_group: str,
    *,
    can_log_in_now: Callable[[str], bool],
    in_admin_group_now: Callable[[str], bool],
    same: Callable[[str, str], bool] = str.__eq__,
) -> set[str]:
    """Current admins the plan removes, when it removes every one of them (else empty).

    ``same`` compares names (Windows names are case-insensitive). ``can_log_in_now`` and
    ``in_admin_group_now`` describe accounts the policy does not mention.
    """
    specs = list(users)
    group_spec = next((g for g in groups if same(g.name, admin_group)), None)
    if group_spec is not None and group_spec.state == "absent":
        members: list[str] | None = []
    elif group_spec is not None and group_spec.members is not None:
        members = list(group_spec.members)
    else:
        members = None

    def after(name: str) -> bool:
        spec = next((u for u in specs if same(u.name, name)), None)
        if spec is not None and spec.state != "present":
            return False  # absent, or locked: cannot log in
        if spec is None and not can_log_in_now(name):
            return False
        member = in_admin_group_now(name)
        if members is not None:
            member = any(same(m, name) for m in members)
        if spec is not None:
            if spec.groups is not None and any(same(g, admin_group) for g in spec.groups):
                member = True
            if spec.admin is not None:
                member = spec.admin
        return member

    candidates = set(admins_now) | {u.name for u in specs}
    if not admins_now or any(after(name) for name in candidates):
        return set()
    return set(admins_now)


def ends_session(change: Change) -> str | None:
    """ "remove" or "lock" when ``change`` takes an existing account away, else None."""
    if change.action == "remove":
        return "remove"
    if change.action == "update" and any(
        f.field == "state" and f.after == "locked" for f in change.fields
    ):
        return "lock"
    return None


def annotate(
    spec: UserSpec,
    planned: list[Change],
    ctx: PlanContext,
    *,
    supports: frozenset[str],
    os_label: str,
    refusal: Callable[[Change], str | None],
    console_problem: str | None,
) -> list[Change]:
    """What the macOS and Windows backends add to a user's changes: the fields this OS skips
    (on the changes and as a warning), the policy line, lock-out refusals, and a warning when
    the console user could not be read for a change that would end a session."""
    not_here = skipped(spec, supports)
    if not_here:
        ctx.warnings.append(
            f"users/{spec.name}: {', '.join(not_here)} not supported on {os_label} (skipped)"
        )
    for change in planned:
        change.skipped_fields = not_here
        change.source = ctx.source("users", spec.name)
        why = refusal(change)
        if why and not change.error:
            change.error = why
        if ends_session(change) and console_problem and not spec.allow_lockout:
            ctx.warnings.append(
                f"users/{spec.name}: not checked whether {spec.name} is logged in on the "
                f"console ({console_problem})"
            )
    return planned
