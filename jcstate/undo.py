"""Undo: what jcstate owns (the :mod:`ledger <jcstate.ledger>`) and no policy wants any more.

Desired state includes "no longer desired". Before the backends plan, :func:`extend` compares
the ledger with the policies' desired state and the facts, and adds to the desired state what
undoes each orphan, in the resources' own vocabulary, so the backends plan it as ordinary
changes with their usual checks (lock-out safety, ``sshd -t``, the last FileVault user):

====================================  =========================================================
The ledger says jcstate …             and no policy wants it any more: the desired state gets
====================================  =========================================================
created user U                        ``onRemoval: lock`` (default): U locked and expired, home
                                      kept; ``delete``: U absent (home kept, like ``state:
                                      absent``); ``keep``: U left as it is. In every case the
                                      memberships and admin right jcstate granted go. A locked
                                      or kept U stays in the ledger as ``retired``: not touched
                                      again, still jcstate's should a policy list it again.
changed user U it did not create      only U's memberships jcstate added go and its admin right
(taken over)                          goes back to what it was; never locked or deleted.
added U to group G (U still wanted)   U leaves G (``leave_groups``), unless a policy lists G.
changed U's admin right, and no       U's admin right back to what it was before jcstate.
policy sets ``admin`` for U now
wrote the sshd/PAM blocks, TOTP       ``sshMfa: {enabled: false}``: the blocks removed and the
files, and no policy has ``sshMfa``   files restored (validated), jcstate's TOTP files removed.
added FileVault users, and no         FileVault's user list without them (never the last one).
policy has ``fileVault``
====================================  =========================================================

The type decides here, once for every OS; each OS backend only says how (its argv). Changes
that undo a whole resource carry the summary ``no longer in any policy`` in plans and reports.

The ledger follows the machine, never the other way round: :func:`record` notes each change
right after it succeeded, and :func:`settle` drops an undo entry only once a fresh plan no
longer needs it. A run killed between an undo and the ledger write therefore finds the entry
again next time; undoing what is already undone plans no change, and the entry goes then.
A user moved from one policy to another is in a policy all along: nothing is undone.
"""

from __future__ import annotations

import dataclasses
import os
import signal
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jcstate.ledger import Ledger
    from jcstate.plan import Change, Plan
    from jcstate.resource import PlanContext

__all__ = [
    "FAULT_AFTER_CLAIM_ENV",
    "FAULT_ENV",
    "KILL_AT_ENV",
    "SUMMARY",
    "Undo",
    "extend",
    "needs",
    "fault_point",
    "mark",
    "record",
    "refresh",
    "settle",
]

SUMMARY = "no longer in any policy"
# Tests only: a path; when that file exists, the run removes it and kills itself with SIGKILL
# right after an undo change and before the ledger write (the crash the design must survive).
FAULT_ENV = "JCSTATE_TEST_KILL_BEFORE_LEDGER_WRITE"
# tests only, as FAULT_ENV: die after a change's claim is in the ledger and before its tool runs
FAULT_AFTER_CLAIM_ENV = "JCSTATE_TEST_KILL_AFTER_LEDGER_CLAIM"
# tests only: die at the Nth point between system changes (after a claim, after a change's tools)
KILL_AT_ENV = "JCSTATE_TEST_KILL_AT_POINT"
_points_passed = 0
_KEEP_FIELDS = frozenset({"groups", "admin"})


@dataclass(frozen=True)
class Undo:
    """One ledger entry that no policy wants any more.

    ``what``: ``user`` (the whole account), ``groups`` (one membership, ``group``), ``admin``,
    ``sshMfa`` or ``fileVault``. ``whole`` is set when the changes for this resource undo it
    entirely (they get the ``no longer in any policy`` summary).
    """

    what: str
    name: str = ""
    group: str = ""
    keep_account: bool = False  # undo only memberships and admin right: never touch the account
    retire: bool = False  # once done, keep the entry as "created, retired" (lock and keep)

    def owns(self, change: Change) -> bool:
        """Whether ``change`` is (part of) this undo."""
        if self.what in ("sshMfa", "fileVault"):
            return change.kind == self.what
        if change.kind != "users" or change.name != self.name:
            return False
        if self.what == "user" or change.error:
            return True
        for fc in change.fields:
            if self.what == "admin" and fc.field == "admin":
                return True
            if self.what == "groups" and fc.field == "groups":
                if self.group in (fc.before or ()) and self.group not in (fc.after or ()):
                    return True
        return False

    @property
    def resource(self) -> str:
        """The resource (spec key) this entry belongs to."""
        return self.what if self.what in ("sshMfa", "fileVault") else "users"

    def pending(self, plan: Plan) -> bool:
        return any(self.owns(c) for c in plan.changes)


def needs(ledger: Ledger | None) -> set[str]:
    """The resources whose facts the undo layer reads for what ``ledger`` owns (the engine
    reads only those and the ones the document manages)."""
    if ledger is None:
        return set()
    keys: set[str] = set()
    if ledger.users:
        keys.add("users")
    if ledger.ssh_mfa_config or ledger.totp_files:
        keys.add("sshMfa")
    if ledger.file_vault_users:
        keys.add("fileVault")
    return keys


def extend(ctx: PlanContext) -> list[Undo]:
    """Add to ``ctx.desired`` what undoes the ledger's orphans; the undo entries considered."""
    ledger: Ledger | None = ctx.ledger
    if ledger is None:
        return []
    undos: list[Undo] = []
    if "users" in ctx.facts:  # unread accounts: nothing can be judged, nothing settles
        undos += _users(ledger, ctx)
    undos += _ssh_mfa(ledger, ctx)
    undos += _file_vault(ledger, ctx)
    return undos


def _user_exists(facts: Any, name: str) -> bool:
    find = getattr(facts, "user", None)  # Windows: names are case-insensitive
    if callable(find):
        return find(name) is not None
    return name in getattr(facts, "users", {})


def _users(ledger: Ledger, ctx: PlanContext) -> list[Undo]:
    from jcstate.modules.users.model import UserSpec
    from jcstate.registry import resource

    backend = resource("users").backend(ctx.host.os)
    fold = str.casefold if getattr(backend, "names_ignore_case", False) else str
    declared = list(ctx.desired.get("users") or [])
    by_name = {u.name: u for u in declared}
    by_key = {fold(u.name): u.name for u in declared}
    listed = _group_members(ctx)
    undos: list[Undo] = []
    synthesised: list[UserSpec] = []
    for name, rec in sorted(ledger.users.items()):
        spec = by_name.get(by_key.get(fold(name), name))
        if spec is None:
            if not _user_exists(ctx.facts["users"], name):
                undos.append(Undo("user", name))  # already gone: nothing to do, entry settles
                continue
            if rec.retired:
                continue  # undone already (locked or kept): not touched again
            choice = rec.on_removal if rec.created else "keep"
            admin = rec.admin_before  # None: jcstate never changed it, leave it alone
            if choice == "delete":
                synthesised.append(UserSpec(name, state="absent"))
            else:
                synthesised.append(
                    UserSpec(
                        name,
                        state="locked" if choice == "lock" else "present",
                        admin=admin,
                        leave_groups=tuple(sorted(rec.groups - listed.get(name, set()))),
                    )
                )
            undos.append(
                Undo(
                    "user",
                    name,
                    keep_account=choice == "keep",
                    retire=rec.created and choice != "delete",
                )
            )
            continue
        if spec.state == "absent":
            continue  # the policy removes the account; the ledger entry goes with it
        leave = sorted(rec.groups - set(spec.groups or ()) - listed.get(name, set()))
        admin = spec.admin
        if spec.admin is None and rec.admin_before is not None:
            admin = rec.admin_before
            undos.append(Undo("admin", name))
        undos += [Undo("groups", name, g) for g in leave]
        if leave or admin != spec.admin:
            by_name[spec.name] = dataclasses.replace(spec, admin=admin, leave_groups=tuple(leave))
    if synthesised or any(by_name[u.name] is not u for u in declared):
        ctx.desired["users"] = [by_name[u.name] for u in declared] + synthesised
    return undos


def _group_members(ctx: PlanContext) -> dict[str, set[str]]:
    """user → groups a policy lists the user in (an authoritative ``members``): never left."""
    out: dict[str, set[str]] = {}
    for group in ctx.desired.get("groups") or []:
        for member in getattr(group, "members", None) or ():
            out.setdefault(member, set()).add(group.name)
    return out


def _ssh_mfa(ledger: Ledger, ctx: PlanContext) -> list[Undo]:
    if "sshMfa" in ctx.desired or not (ledger.ssh_mfa_config or ledger.totp_files):
        return []
    if "sshMfa" in ctx.facts:  # this OS has the resource and its state was read
        from jcstate.modules.ssh_mfa import SshMfa

        ctx.desired["sshMfa"] = SshMfa(enabled=False)
        return [Undo("sshMfa")]
    return []


def _file_vault(ledger: Ledger, ctx: PlanContext) -> list[Undo]:
    if "fileVault" in ctx.desired or not ledger.file_vault_users:
        return []
    facts = ctx.facts.get("fileVault")
    if facts is None:
        return []
    enabled = tuple(getattr(facts, "users", ()))
    ours = ledger.file_vault_users & set(enabled)
    if getattr(facts, "on", False) and ours:
        from jcstate.modules.filevault import FileVault

        keep = tuple(sorted(set(enabled) - ours))
        ctx.desired["fileVault"] = FileVault(enabled=True, users=keep)
    return [Undo("fileVault")]


def mark(changes: list[Change], undos: list[Undo]) -> None:
    """Label the changes that undo a whole resource, and keep an undone account untouched.

    A kept or taken-over account only loses what jcstate granted: any change to it that is
    not about memberships or the admin right (a state the synthesised entry would imply) is
    dropped here, once, for every OS.
    """
    whole = [u for u in undos if u.what in ("user", "sshMfa", "fileVault")]
    keep = {u.name for u in whole if u.what == "user" and u.keep_account}
    changes[:] = [
        c
        for c in changes
        if not (
            c.kind == "users"
            and c.name in keep
            and not c.error
            and {f.field for f in c.fields} - _KEEP_FIELDS
        )
    ]
    for change in changes:
        if any(u.owns(change) for u in whole):
            change.summary = change.summary or SUMMARY
            change.source = change.source or "ownership ledger"


def record(ledger: Ledger, change: Change, on_removal: dict[str, str]) -> bool:
    """Note in the ledger what a change that just succeeded did; True when the ledger changed."""
    before = ledger.text()
    if change.kind == "users":
        _record_user(ledger, change, on_removal)
    elif change.kind == "sshMfa":
        _record_ssh_mfa(ledger, change)
    elif change.kind == "fileVault":
        for fc in change.fields:
            if fc.field == "users":
                added = set(fc.after or ()) - set(fc.before or ())
                gone = set(fc.before or ()) - set(fc.after or ())
                ledger.file_vault_users = (ledger.file_vault_users | added) - gone
            elif fc.field == "enabled" and fc.after is False:
                ledger.file_vault_users.clear()
    ledger.tidy()
    return ledger.text() != before


def _record_user(ledger: Ledger, change: Change, on_removal: dict[str, str]) -> None:
    if change.action == "remove":
        ledger.users.pop(change.name, None)
        return
    rec = ledger.user(change.name)
    if change.action == "create":
        rec.created = True
        rec.on_removal = on_removal.get(change.name, rec.on_removal)
    for fc in change.fields:
        if fc.field == "groups":
            have, want = set(fc.before or ()), set(fc.after or ())
            rec.groups = (rec.groups | (want - have)) - (have - want)
        elif fc.field == "admin":
            if rec.admin_before is None:
                rec.admin_before = bool(fc.before)
            elif rec.admin_before == bool(fc.after):
                rec.admin_before = None  # back to what it was: nothing of it is ours now


def _record_ssh_mfa(ledger: Ledger, change: Change) -> None:
    names = {fc.field for fc in change.fields}
    if "package" in names:
        return  # an installed package stays: other software may use it
    if "users" in names:  # the sshd+PAM transaction
        after = next(fc.after for fc in change.fields if fc.field == "users")
        ledger.ssh_mfa_config = bool(after)
    elif change.action == "remove":
        ledger.totp_files.discard(change.name)
    else:
        ledger.totp_files.add(change.name)


def settle(ledger: Ledger, undos: list[Undo], plan: Plan, read: Iterable[str]) -> bool:
    """Drop the undo entries a fresh plan no longer needs; True when the ledger changed.

    ``read``: the resources whose facts that plan could read; an entry of another one stays.
    """
    before = ledger.text()
    known = set(read)
    for undo in undos:
        if undo.resource not in known or undo.pending(plan):
            continue
        if undo.what == "user" and undo.retire and undo.name in ledger.users:
            ledger.users[undo.name] = dataclasses.replace(
                ledger.users[undo.name], groups=set(), admin_before=None, retired=True
            )
        elif undo.what == "user":
            ledger.users.pop(undo.name, None)
        elif undo.what == "groups" and undo.name in ledger.users:
            ledger.users[undo.name].groups.discard(undo.group)
        elif undo.what == "admin" and undo.name in ledger.users:
            ledger.users[undo.name].admin_before = None
        elif undo.what == "sshMfa":
            ledger.ssh_mfa_config = False
            ledger.totp_files.clear()
        elif undo.what == "fileVault":
            ledger.file_vault_users.clear()
    ledger.tidy()
    return ledger.text() != before


def refresh(ledger: Ledger, declared: list[Any]) -> bool:
    """Keep each managed account's ``onRemoval`` as its policies say now, and take a retired
    account back when a policy lists it again; True when the ledger changed."""
    changed = False
    for spec in declared:
        rec = ledger.users.get(spec.name)
        if rec is None or spec.state == "absent":
            continue
        if rec.retired:
            rec.retired = False
            changed = True
        if rec.created and rec.on_removal != spec.on_removal:
            rec.on_removal = spec.on_removal
            changed = True
    return changed


def fault_point(env: str = FAULT_ENV) -> None:
    """Tests only (see FAULT_ENV): die here once, as a power cut or ``kill -9`` would."""
    flag = os.environ.get(env)
    if flag and os.path.exists(flag):
        os.unlink(flag)
        os.kill(os.getpid(), signal.SIGKILL)


def counted_fault_point() -> None:
    """Tests only (see KILL_AT_ENV): SIGKILL at the Nth point this process passes."""
    global _points_passed
    at = os.environ.get(KILL_AT_ENV)
    if not at:
        return
    _points_passed += 1
    if _points_passed == int(at):
        os.kill(os.getpid(), signal.SIGKILL)
