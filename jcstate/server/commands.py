"""The security-command queue: per device, in order, delivered until a result comes back.

A command's life on the server (docs/state-model.md says what each state means to admins)::

    awaiting approval ──a second person approves──▶ queued (a new seq: last in the order)
       │ (an erase, with --erase-approvals 2:  │
       │  never sent while it waits)           └──rejected | lapsed (24 h) | cancelled

    queued ──the device acknowledges it──▶ delivered ──agent starts it──▶ running
       │   (its next request's cursor,        │                            │
       │    or its "running" note)            │ cancel: cancel-requested   │ final result
       │ cancel                               ▼                            ▼
       ▼                                 the device asks for work    succeeded | failed |
    cancelled (the device never            again without a result:   interrupted
    acknowledged it)                       cancelled                 (one result each)

- **Sent is not delivered.** A work answer carrying a command records ``sentAt`` and leaves it
  ``queued``: an answer can be lost and an agent can die before reading it. The command is
  ``delivered`` once the device's next work request carries a cursor (the highest ``seq`` it
  has handled) at or past it, or the device says it is running it. An agent that vanished
  never makes a command look delivered.
- **Order.** ``seq`` is one increasing sequence; a device receives its commands in that order and
  its agent runs them one after the other.
- **No expiry.** A queued command waits however long the device is away, unless it sets
  ``notAfter``: one still queued past that time is settled ``failed`` without being delivered.
- **Redelivery, not loss.** An unfinished command stays in every work answer past the agent's
  cursor until its final result is stored (a lost answer, an agent killed before it journaled
  the command). That is safe because the device journal runs each id at most once.
- **Cancel.** A command the device has not acknowledged is cancelled outright (a device that
  ran it anyway, having read a lost answer, still reports its result, which replaces the
  cancel: the truth wins). One the device has is ``cancelRequested`` and no longer sent; when
  the device asks for work again (a request that began after the cancel) and has sent no result
  for it, it is not running it, and the command is settled ``cancelled``. Restart, shutdown,
  erase and update are the exception: the OS or the updater holds them across the agent's
  restarts, so they wait for their result.
- **One result per (device, command id).** The final result is written with a conditional
  update (``state`` not yet final), so a resend after a lost acknowledgement changes nothing.
- **Policy commands** (``spec.commands``) run on the device through the engine; their results
  arrive through the same route and are kept here with ``source = "policy"``.

Times come from an injectable clock, so tests can move it 30 days on.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from jcstate.errors import PlanError
from jcstate.modules.commands import parse_command
from jcstate.server import db
from jcstate.server.store import Store
from jcstate.server.views import wire

__all__ = [
    "ACTIVE_STATES",
    "AWAITING",
    "FINAL_STATES",
    "CommandConflict",
    "CommandQueue",
    "activity",
    "command_view",
]

Row = dict[str, Any]

ACTIVE_STATES = ("queued", "delivered", "running")
AWAITING = "awaiting approval"  # a two-person erase before its approval: never delivered
FINAL_STATES = ("succeeded", "failed", "interrupted", "cancelled", "rejected", "lapsed")
_RESULT_STATES = ("succeeded", "failed", "interrupted")  # what a device may report as final
MAX_OUTPUT = 64 * 1024  # characters of stdout/stderr kept per command (the device's cap too)
_POWER = ("restart", "shutdown", "erase")
# held by the OS or the updater across the agent's restarts: a cancel waits for their result
_HELD = (*_POWER, "update")


class CommandConflict(PlanError):
    """A command id given by the caller is already used on that device by another command."""


def _rows(result: Iterable[Any]) -> list[Row]:
    return [dict(r._mapping) for r in result]


def _tail(text: Any) -> str:
    text = text if isinstance(text, str) else ""
    return text[-MAX_OUTPUT:]


class CommandQueue:
    """The ``commands`` table, on SQLite or PostgreSQL, behind the store's engine."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.time):
        self.store = store
        self.clock = clock

    # -- admins -----------------------------------------------------------------------------
    def issue(
        self,
        device_id: str,
        spec: dict[str, Any],
        actor: str,
        command_id: str | None = None,
        saved: tuple[str, int] | None = None,
        *,
        requested_by: str | None = None,
    ) -> tuple[Row, bool]:
        """Queue a command for one device; (row, created). Raises PlanError when invalid.

        ``command_id`` lets a caller retry safely: the same id with the same command returns
        the existing row (created False); with a different command it is a CommandConflict.
        ``saved``: the (name, version) of the saved command it runs (:mod:`.saved`).
        ``requested_by`` (a person): the command needs a second person's approval and is
        stored ``awaiting approval`` instead of ``queued`` (:meth:`approve`).
        """
        cid = command_id or "c-" + secrets.token_hex(8)
        command = parse_command({**spec, "id": cid})  # the device's own validation
        body = command.to_dict()
        now = self.clock()
        row = {
            "id": cid,
            "device_id": device_id,
            "source": "admin",
            "action": command.action,
            "body": body,
            "state": "queued" if requested_by is None else AWAITING,
            "cancel_requested": False,
            "not_after": None if command.not_after is None else command.not_after.timestamp(),
            "created_at": now,
            "created_by": actor,
            "deliveries": 0,
            "saved": None if saved is None else saved[0],
            "saved_version": None if saved is None else saved[1],
            "approval": None if requested_by is None else {"requestedBy": requested_by},
        }
        try:
            with self.store.transaction() as conn:
                conn.execute(db.commands.insert().values(**row))
                self.store.notify(conn, f"device:{device_id}")
        except IntegrityError:
            existing = self.one(cid, device_id)
            if existing and existing["source"] == "admin" and existing["body"] == body:
                return existing, False
            raise CommandConflict(
                f"command id {cid} is already used on this device by another command"
            ) from None
        stored = self.one(cid, device_id)
        assert stored is not None
        return stored, True

    def issue_batch(
        self, devices: list[Row], spec: dict[str, Any], actor: str
    ) -> tuple[str, list[Row]]:
        """Queue one command per device as one batch, in one transaction; (batch id, rows).

        Each command gets its own id (a device journal keys on it) and the batch's id.
        Raises PlanError when the command is invalid (before anything is queued).
        """
        batch = "b-" + secrets.token_hex(8)
        now = self.clock()
        rows = []
        for device in devices:
            cid = "c-" + secrets.token_hex(8)
            command = parse_command({**spec, "id": cid})
            rows.append(
                {
                    "id": cid,
                    "device_id": device["id"],
                    "source": "admin",
                    "action": command.action,
                    "body": command.to_dict(),
                    "state": "queued",
                    "cancel_requested": False,
                    "not_after": None
                    if command.not_after is None
                    else command.not_after.timestamp(),
                    "created_at": now,
                    "created_by": actor,
                    "deliveries": 0,
                    "batch_id": batch,
                }
            )
        if rows:
            with self.store.transaction() as conn:
                conn.execute(db.commands.insert(), rows)
                for row in rows:
                    self.store.notify(conn, f"device:{row['device_id']}")
        return batch, self.list(batch=batch, limit=len(rows) or 1)

    def cancel(self, row: Row) -> Row:
        """Cancel: a command the device never acknowledged is cancelled outright; one it has
        (delivered, running) is cancel-requested and settled later (see the module's doc)."""
        c = db.commands
        now = self.clock()
        with self.store.transaction() as conn:
            done = conn.execute(
                c.update()
                .where(c.c.seq == row["seq"], c.c.state.in_(("queued", AWAITING)))
                .values(
                    state="cancelled",
                    finished_at=now,
                    result={
                        "status": "cancelled",
                        "message": "cancelled before it was approved"
                        if row["state"] == AWAITING
                        else "cancelled before the device acknowledged it",
                    },
                )
            ).rowcount
            if not done:
                conn.execute(
                    c.update()
                    .where(
                        c.c.seq == row["seq"],
                        c.c.state.in_(("delivered", "running")),
                        c.c.cancel_requested.is_(False),
                    )
                    .values(cancel_requested=True, cancel_requested_at=now)
                )
        fresh = self.by_seq(row["seq"])
        assert fresh is not None
        return fresh

    # -- two-person erase (jcstate.server.approvals) ------------------------------------------
    def approve(self, row: Row, person: str, actor: str) -> Row | None:
        """Queue a command awaiting approval; the fresh row, or None if it no longer awaits.

        It is queued *last*: a new ``seq`` (the row is written again under the same id), so a
        device whose cursor went past its old place while it waited still receives it.
        """
        c = db.commands
        now = self.clock()
        with self.store.transaction() as conn:
            gone = conn.execute(
                c.delete().where(c.c.seq == row["seq"], c.c.state == AWAITING)
            ).rowcount
            if not gone:
                return None
            approval = {
                **(row.get("approval") or {}),
                "decision": "approved",
                "decidedBy": person,
                "decidedByActor": actor,
                "decidedAt": now,
            }
            fresh = {k: v for k, v in row.items() if k != "seq"}
            fresh.update(state="queued", approval=approval)
            conn.execute(c.insert().values(**fresh))
            self.store.notify(conn, f"device:{row['device_id']}")
        return self.one(row["id"], row["device_id"])

    def reject(self, row: Row, person: str | None, actor: str, reason: str) -> Row | None:
        """End a command awaiting approval as ``rejected``; None if it no longer awaits."""
        c = db.commands
        now = self.clock()
        who = person or actor
        approval = {
            **(row.get("approval") or {}),
            "decision": "rejected",
            "decidedBy": person,
            "decidedByActor": actor,
            "decidedAt": now,
        }
        if reason:
            approval["reason"] = reason
        message = f"rejected by {who}" + (f": {reason}" if reason else "") + "; never sent"
        with self.store.transaction() as conn:
            done = conn.execute(
                c.update()
                .where(c.c.seq == row["seq"], c.c.state == AWAITING)
                .values(
                    state="rejected",
                    finished_at=now,
                    approval=approval,
                    result={"status": "rejected", "message": message},
                )
            ).rowcount
        return self.by_seq(row["seq"]) if done else None

    def lapse(self) -> list[Row]:
        """Settle ``lapsed`` every command still awaiting approval past the approval window;
        the rows it settled (for the audit). Reads first: it runs on every listing."""
        from jcstate.server.approvals import APPROVAL_WINDOW

        c = db.commands
        cutoff = self.clock() - APPROVAL_WINDOW
        late = sa.and_(c.c.state == AWAITING, c.c.created_at <= cutoff)
        with self.store.engine.connect() as conn:
            rows = _rows(conn.execute(c.select().where(late)))
        settled = []
        for row in rows:
            deadline = row["created_at"] + APPROVAL_WINDOW
            approval = {**(row.get("approval") or {}), "decision": "lapsed", "decidedAt": deadline}
            with self.store.transaction() as conn:
                done = conn.execute(
                    c.update()
                    .where(c.c.seq == row["seq"], c.c.state == AWAITING)
                    .values(
                        state="lapsed",
                        finished_at=deadline,
                        approval=approval,
                        result={
                            "status": "lapsed",
                            "message": "nobody approved it within 24 h; never sent",
                        },
                    )
                ).rowcount
            if done:
                settled.append(row)
        return settled

    # -- reading ----------------------------------------------------------------------------
    def by_seq(self, seq: int) -> Row | None:
        with self.store.engine.connect() as conn:
            rows = _rows(conn.execute(db.commands.select().where(db.commands.c.seq == seq)))
        return rows[0] if rows else None

    def one(self, command_id: str, device_id: str) -> Row | None:
        c = db.commands
        with self.store.engine.connect() as conn:
            rows = _rows(
                conn.execute(c.select().where(c.c.id == command_id, c.c.device_id == device_id))
            )
        return rows[0] if rows else None

    def named(self, command_id: str) -> list[Row]:
        """Every row with this id: one for an admin command, one per device for a policy's."""
        c = db.commands
        with self.store.engine.connect() as conn:
            return _rows(conn.execute(c.select().where(c.c.id == command_id).order_by(c.c.seq)))

    def list(
        self,
        device_id: str | None = None,
        state: str | None = None,
        limit: int = 100,
        *,
        action: str | None = None,
        batch: str | None = None,
        since: float | None = None,
        created_by: str | None = None,
    ) -> list[Row]:
        """Newest first; each filter given narrows (``since``: created at or after)."""
        c = db.commands
        q = c.select().order_by(c.c.seq.desc()).limit(limit)
        if device_id is not None:
            q = q.where(c.c.device_id == device_id)
        if state is not None:
            q = q.where(c.c.state == state)
        if action is not None:
            q = q.where(c.c.action == action)
        if batch is not None:
            q = q.where(c.c.batch_id == batch)
        if since is not None:
            q = q.where(c.c.created_at >= since)
        if created_by is not None:
            q = q.where(c.c.created_by == created_by)
        with self.store.engine.connect() as conn:
            return _rows(conn.execute(q))

    def power_states(self, device_ids: Iterable[str] | None = None) -> dict[str, tuple[str, str]]:
        """Per device, the newest restart/shutdown/erase that still says something about it:
        in flight (delivered, running), or succeeded and not followed by a report yet."""
        c, d = db.commands, db.devices
        q = (
            sa.select(c.c.device_id, c.c.action, c.c.state)
            .select_from(c.join(d, d.c.id == c.c.device_id))
            .where(
                c.c.action.in_(_POWER),
                sa.or_(
                    c.c.state.in_(("delivered", "running")),
                    sa.and_(
                        c.c.state == "succeeded",
                        c.c.finished_at > sa.func.coalesce(d.c.last_report_at, 0.0),
                    ),
                ),
            )
            .order_by(c.c.seq)
        )
        if device_ids is not None:
            q = q.where(c.c.device_id.in_(list(device_ids)))
        with self.store.engine.connect() as conn:
            return {r.device_id: (r.action, r.state) for r in conn.execute(q)}

    # -- devices ----------------------------------------------------------------------------
    def deliver(
        self, device_id: str, cursor: int, asked_at: float | None = None
    ) -> list[dict[str, Any]]:
        """Answer a work request carrying ``cursor``: the device's unfinished commands after
        it, oldest first, recorded as sent (they stay ``queued`` until acknowledged).

        The cursor acknowledges every command the device was sent up to it (``delivered``).
        ``asked_at``, when the request began: a cancel-requested command the device has not
        sent a result for by then is settled ``cancelled`` (not for restart, shutdown, erase,
        update). Commands past their ``notAfter`` while still queued are settled ``failed``.
        Reads first and writes only when something is there: this runs on every poll.
        """
        c = db.commands
        mine = sa.and_(c.c.device_id == device_id, c.c.state.in_(ACTIVE_STATES))
        outstanding = sa.and_(mine, c.c.seq > cursor, c.c.cancel_requested.is_(False))
        acked = sa.and_(mine, c.c.state == "queued", c.c.seq <= cursor, c.c.sent_at.is_not(None))
        settled = sa.false()
        if asked_at is not None:
            settled = sa.and_(
                mine,
                c.c.cancel_requested.is_(True),
                c.c.cancel_requested_at < asked_at,
                c.c.action.not_in(_HELD),
            )
        with self.store.engine.connect() as conn:
            anything = sa.or_(outstanding, acked, settled)
            if conn.execute(sa.select(c.c.seq).where(anything).limit(1)).first() is None:
                return []
        now = self.clock()
        queued = sa.and_(outstanding, c.c.state == "queued")
        with self.store.transaction() as conn:
            conn.execute(c.update().where(acked).values(state="delivered", delivered_at=now))
            if asked_at is not None:
                conn.execute(
                    c.update()
                    .where(settled)
                    .values(
                        state="cancelled",
                        finished_at=now,
                        result={
                            "status": "cancelled",
                            "message": "cancel requested; the device asked for work again "
                            "without a result, so it is not running it",
                        },
                    )
                )
            conn.execute(
                c.update()
                .where(queued, c.c.not_after.is_not(None), c.c.not_after < now)
                .values(
                    state="failed",
                    finished_at=now,
                    result={
                        "status": "failed",
                        "message": "not delivered: its notAfter time passed while it was queued",
                    },
                )
            )
            rows = _rows(conn.execute(c.select().where(outstanding).order_by(c.c.seq)))
            if rows:
                conn.execute(
                    c.update()
                    .where(c.c.seq.in_([r["seq"] for r in rows]))
                    .values(
                        deliveries=c.c.deliveries + 1,
                        sent_at=sa.func.coalesce(c.c.sent_at, now),
                    )
                )
        return [{"seq": r["seq"], **r["body"]} for r in rows]

    def record(self, device_id: str, result: dict[str, Any]) -> str:
        """Store a device's result: ``stored``, ``running``, ``duplicate`` or ``ignored``.

        The first final result wins and is never changed; a result for an id the queue never
        held is a policy command's, kept with source ``policy``.
        """
        c = db.commands
        cid, status = str(result.get("id", "")), result.get("status")
        now = self.clock()
        mine = sa.and_(c.c.device_id == device_id, c.c.id == cid)
        # cancelled outright after it was sent: the device may have read the answer anyway,
        # and what it reports is the truth (kept cancel-requested, so admins see both)
        late = sa.and_(c.c.state == "cancelled", c.c.sent_at.is_not(None))
        if status == "running":
            with self.store.transaction() as conn:
                changed = conn.execute(
                    c.update()
                    .where(mine, c.c.state.in_(("queued", "delivered")))
                    .values(
                        state="running",
                        running_at=now,
                        delivered_at=sa.func.coalesce(c.c.delivered_at, now),
                    )
                ).rowcount
                if not changed:
                    changed = conn.execute(
                        c.update()
                        .where(mine, late)
                        .values(
                            state="running",
                            running_at=now,
                            finished_at=None,
                            result=None,
                            delivered_at=sa.func.coalesce(c.c.delivered_at, now),
                            cancel_requested=True,
                            cancel_requested_at=sa.func.coalesce(c.c.cancel_requested_at, now),
                        )
                    ).rowcount
            return "running" if changed else "ignored"
        if status not in _RESULT_STATES:
            return "ignored"
        kept = _kept(result)
        exit_code = kept.get("exitCode") if isinstance(kept.get("exitCode"), int) else None
        with self.store.transaction() as conn:
            changed = conn.execute(
                c.update()
                .where(mine, sa.or_(c.c.state.in_(ACTIVE_STATES), late))
                .values(
                    state=status,
                    finished_at=now,
                    running_at=sa.func.coalesce(c.c.running_at, now),
                    delivered_at=sa.func.coalesce(c.c.delivered_at, now),
                    cancel_requested=sa.or_(c.c.cancel_requested, c.c.state == "cancelled"),
                    cancel_requested_at=sa.func.coalesce(
                        c.c.cancel_requested_at, sa.case((c.c.state == "cancelled", now))
                    ),
                    exit_code=exit_code,
                    result=kept,
                )
            ).rowcount
            if changed:
                return "stored"
            known = conn.execute(sa.select(c.c.seq).where(mine)).first()
            if known is not None:
                return "duplicate"
        try:
            with self.store.transaction() as conn:
                conn.execute(
                    c.insert().values(
                        id=cid,
                        device_id=device_id,
                        source="policy",
                        action=str(result.get("action", "unknown"))[:20],
                        body={"id": cid, "action": result.get("action")},
                        state=status,
                        cancel_requested=False,
                        created_at=now,
                        created_by=f"device:{device_id}",
                        deliveries=0,
                        finished_at=now,
                        exit_code=exit_code,
                        result=kept,
                    )
                )
        except IntegrityError:
            return "duplicate"  # the same result, racing itself through two requests
        return "stored"


def _kept(result: dict[str, Any]) -> dict[str, Any]:
    """The parts of a device's result the server keeps, output tail-capped."""
    keys = (
        "status",
        "message",
        "exitCode",
        "truncated",
        "timedOut",
        "duration",
        "startedAt",
        "finishedAt",
    )
    kept = {k: result.get(k) for k in keys if k in result}
    for stream in ("stdout", "stderr"):
        text = result.get(stream)
        if isinstance(text, str):
            kept[stream] = _tail(text)
            if len(text) > MAX_OUTPUT:
                kept["truncated"] = True
    if isinstance(kept.get("message"), str):
        kept["message"] = kept["message"][:4096]
    return kept


def activity(action: str, state: str, online: bool) -> str:
    """What a device is doing after a power command, for ``devices`` and ``device show``."""
    if state in ("delivered", "running"):
        return {"restart": "restarting", "shutdown": "shutting down", "erase": "erasing"}[action]
    if action == "shutdown":
        return "shutting down" if online else "shut down"
    if action == "erase":
        return "erased"
    return ""


def command_view(row: Row, hostname: str | None = None) -> dict[str, Any]:
    """A command as admins see it (API and CLI)."""
    from jcstate.server.approvals import approval_view

    result = row.get("result") or {}
    body = row.get("body") or {}
    view: dict[str, Any] = {
        "id": row["id"],
        "seq": row["seq"],
        "device": row["device_id"],
        "source": row["source"],
        "action": row["action"],
        "state": row["state"],
        "cancelRequested": bool(row["cancel_requested"]),
        "createdAt": row["created_at"],
        "createdBy": row["created_by"],
        "sentAt": row.get("sent_at"),
        "deliveredAt": row["delivered_at"],
        "deliveries": row["deliveries"],
        "cancelRequestedAt": row.get("cancel_requested_at"),
        "runningAt": row["running_at"],
        "finishedAt": row["finished_at"],
        "notAfter": body.get("notAfter"),
        "exitCode": row["exit_code"],
        "message": result.get("message", ""),
        "stdout": result.get("stdout", ""),
        "stderr": result.get("stderr", ""),
        "truncated": bool(result.get("truncated", False)),
        "timedOut": bool(result.get("timedOut", False)),
        "duration": result.get("duration"),
    }
    if hostname is not None:
        view["hostname"] = hostname
    approval = approval_view(row)
    if approval is not None:
        view["approval"] = approval
    if row.get("batch_id"):
        view["batch"] = row["batch_id"]
    if row.get("saved"):
        view["saved"] = {"name": row["saved"], "version": row.get("saved_version")}
    for key, name in (
        ("run", "run"),
        ("delay", "delay"),
        ("message", "warning"),
        ("update", "update"),
        ("elevate", "elevate"),
    ):
        if key in body:
            view[name] = body[key]
    return wire(view)
