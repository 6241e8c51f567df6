"""Time-bound admin: ``admin: {until: T}`` resolved, once for every OS, at the run's instant.

Before the backends plan, :func:`resolve` turns each user's ``admin: {until: T}`` into
``admin: true`` while ``now < T`` and into "admin not managed" from ``T`` on; the undo layer
(:mod:`jcstate.undo`) then takes back the right only if the ownership ledger says jcstate
granted it (``adminBefore``), exactly as for a policy that stops saying ``admin``. So every
backend (Linux sudo/wheel, macOS admin, Windows Administrators) grants and removes with its
ordinary code, and lock-out safety refuses a removal that would leave no admin able to log in.

After planning, :func:`annotate` makes the plan say why: a grant reads ``admin: false →
until 2027-01-31T18:00:00Z`` and a removal carries the summary ``admin until … ended``.

Where ``now`` comes from is the caller's business: standalone runs use the wall clock; the
agent passes its own clock, which a step backwards cannot move back (jcstate/agent/expiry.py).
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jcstate.plan import Change
    from jcstate.resource import PlanContext

__all__ = ["ENDED", "annotate", "now_utc", "resolve"]

ENDED = "admin until {} ended"


def now_utc() -> datetime.datetime:
    """The wall clock, as an aware UTC datetime."""
    return datetime.datetime.now(datetime.UTC)


def _now(ctx: PlanContext) -> datetime.datetime:
    if ctx.now is None:
        ctx.now = now_utc()
    return ctx.now  # type: ignore[no-any-return]


def resolve(ctx: PlanContext) -> None:
    """Replace each time-bound admin in ``ctx.desired["users"]`` by its value at ``ctx.now``."""
    from jcstate.modules.users.model import admin_at

    users = ctx.desired.get("users")
    if not users or not any(getattr(u, "admin_until", None) for u in users):
        return
    now = _now(ctx)
    ctx.desired["users"] = [admin_at(u, now) for u in users]


def _bound(ctx: PlanContext) -> dict[str, Any]:
    return {u.name: u for u in ctx.declared.get("users") or [] if getattr(u, "admin_until", None)}


def annotate(changes: list[Change], ctx: PlanContext) -> None:
    """Show ``until T`` on grants of a time-bound right and say why an ended one is removed."""
    from jcstate.modules.users.model import instant_text
    from jcstate.plan import FieldChange

    bound = _bound(ctx)
    if not bound:
        return
    now = _now(ctx)
    for change in changes:
        spec = bound.get(change.name) if change.kind == "users" else None
        if spec is None:
            continue
        until = instant_text(spec.admin_until)
        for i, fc in enumerate(change.fields):
            if fc.field != "admin":
                continue
            if fc.after is True and now < spec.admin_until:
                change.fields[i] = FieldChange("admin", fc.before, f"until {until}")
            elif fc.after is False and now >= spec.admin_until:
                change.summary = change.summary or ENDED.format(until)
