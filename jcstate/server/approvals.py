"""Two-person erase: who counts as a person, and what an erase needs before it is queued.

A server started with ``--erase-approvals 2`` stores an erase as ``awaiting approval``: it is
not sent to the device until a second, *different person* approves it (or it ends
``rejected``, or ``lapsed`` after :data:`APPROVAL_WINDOW`). The queue's side of it (states,
the new place in the delivery order) is in :mod:`jcstate.server.commands`; this module decides
who may ask and who may approve (docs/security.md, "Two-person erase").

Persons are compared, not tokens: two tokens of one administrator are one person. A person is
a named console account (:mod:`jcstate.server.admins`): a console session acts as its account;
a token acts for the account it was created for (``jcstate token create --owner ACCOUNT``,
which needs that account's password, so no administrator mints a token in a colleague's name).
A token of nobody (CI, the first start's token) can neither ask for nor approve an erase.

Any administrator can add accounts and set passwords, so a stolen administrator token could
make up a "second person". Two rules make that slow and loud instead of instant and silent:
an account counts as a person only once it is :data:`SETTLED` (24 h after it was added or its
password last set), and it must hold the ``administrator`` role. The account changes are in the
audit log in the meantime (``POST /api/v1/admins``, ``PUT /api/v1/admins/{name}/password``),
and a colleague whose password was reset finds they can no longer sign in.

The trade-off: two people who act together, or whoever owns the server's database, can erase
anything; and a fresh server cannot two-person erase during its first day.
"""

from __future__ import annotations

from typing import Any

from jcstate.errors import JcstateError
from jcstate.server.auth import Admin
from jcstate.server.store import Store
from jcstate.server.views import rfc3339

__all__ = [
    "APPROVAL_WINDOW",
    "SETTLED",
    "ApprovalRefused",
    "approval_view",
    "person_of",
    "policy_erases",
    "settle_lapsed",
]

APPROVAL_WINDOW = 24 * 3600.0  # an erase not approved within this lapses
SETTLED = 24 * 3600.0  # an account is a person this long after it was added or re-passworded


class ApprovalRefused(JcstateError):
    """The caller may not ask for or approve this erase; ``status`` is the HTTP status."""

    def __init__(self, message: str, status: int = 403):
        super().__init__(message)
        self.status = status


def person_of(store: Store, admin: Admin, doing: str, now: float) -> str:
    """The person behind ``admin`` (an administrator's console account), or ApprovalRefused.

    ``doing``: "ask for" or "approve", for the message.
    """
    from jcstate.server.admins import AdminAccounts

    name = admin.person
    if not name:
        raise ApprovalRefused(
            f"this server needs two administrators for an erase (--erase-approvals 2), so it "
            f"must know who you are to {doing} one: token {admin.token_id} ({admin.name}) "
            "belongs to no one. Use a token of your own (jcstate token create --owner ACCOUNT "
            "--role administrator) or the console"
        )
    account = AdminAccounts(store).get(name)
    if account is None:
        raise ApprovalRefused(
            f"the account {name} this token belongs to no longer exists: it cannot {doing} an erase"
        )
    if account["role"] != "administrator":
        raise ApprovalRefused(
            f"{name} is a {account['role']} account: only an administrator's account can "
            f"{doing} an erase"
        )
    since = max(account["created_at"], account["password_changed_at"])
    if now - since < SETTLED:
        raise ApprovalRefused(
            f"the account {name} was added or had its password set at {rfc3339(since)}, less "
            f"than 24 h ago: it can {doing} an erase from {rfc3339(since + SETTLED)} (so that "
            "one stolen administrator token cannot make up a second person)"
        )
    return name


def policy_erases(repo: Any) -> list[str]:
    """Where a policy of ``repo`` may erase devices (a command with action ``erase``, or one
    whose action or command list is a template), one line each. A server with two-person
    erase refuses such a push: a policy's commands run on the device through the engine and
    never wait for an approval in the queue."""
    from jcstate.document.render import is_template

    found = []
    for policy in repo.policies:
        commands = policy.spec.get("commands") if isinstance(policy.spec, dict) else None
        if is_template(commands):
            found.append(f"{policy.file}: policy {policy.name}: its commands are a template")
            continue
        for command in commands if isinstance(commands, list) else []:
            action = command.get("action") if isinstance(command, dict) else None
            if action == "erase" or is_template(action):
                found.append(
                    f"{policy.file}: policy {policy.name}: command {command.get('id')} "
                    f"{'erases' if action == 'erase' else 'has a templated action'}"
                )
    return found


def approval_view(row: dict[str, Any]) -> dict[str, Any] | None:
    """What a command's approval says, for ``command show`` (None for commands without one)."""
    approval = row.get("approval")
    if not approval:
        return None
    view = {
        "requestedBy": approval.get("requestedBy"),
        "deadline": rfc3339(row["created_at"] + APPROVAL_WINDOW),
        "decision": approval.get("decision"),
        "decidedBy": approval.get("decidedBy"),
        "decidedByActor": approval.get("decidedByActor"),
        "decidedAt": rfc3339(approval.get("decidedAt")),
        "reason": approval.get("reason"),
    }
    return {k: v for k, v in view.items() if v is not None}


def settle_lapsed(ctx: Any) -> None:
    """Settle ``lapsed`` the erases nobody approved in time, each in the audit log (actor
    ``server``). Run before anything shows or decides commands (API and console): lapsing
    is decided by the clock, and nothing else needs to wake up for it."""
    for row in ctx.queue.lapse():
        ctx.store.audit(
            "server",
            "lapse",
            "ok",
            target=row["device_id"],
            detail={
                "command": row["id"],
                "action": row["action"],
                "requestedBy": (row.get("approval") or {}).get("requestedBy"),
                "reason": "nobody approved it within 24 h",
            },
        )
