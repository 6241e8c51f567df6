"""Routes of the security-command queue: admins issue, list, show and cancel; devices report.

Each action has its own route so that the role it needs is written next to it (and in
``tests/server/authz_matrix.yaml``): lock, restart, shutdown and run need ``manager``, erase
needs ``administrator`` and a ``confirm`` equal to the device's id, and update (install a
release of the agent: code that runs as root) needs ``administrator`` and a stored release.
Every attempt lands in the audit log: refusals by role in :mod:`jcstate.server.auth`, invalid
commands here (``refused``), accepted ones with outcome ``ok``. The audit keeps the action and
the program's name (or the release's version), never a command line (it may hold anything an
admin typed).

With ``--erase-approvals 2`` an erase is stored ``awaiting approval`` and only queued once a
second, different person approves it (``POST /api/v1/commands/{id}/approve``, administrator);
:mod:`jcstate.server.approvals` says who counts as a person.

Delivery to devices is in the ``work`` long poll (:mod:`jcstate.server.routes.device`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from jcstate.errors import PlanError
from jcstate.modules.commands import MAX_ELEVATION
from jcstate.server.approvals import ApprovalRefused, person_of, settle_lapsed
from jcstate.server.auth import DEVICE, Admin, action_of, require
from jcstate.server.commands import AWAITING, FINAL_STATES, CommandConflict, command_view
from jcstate.server.contract import StrictBody
from jcstate.server.roles import COMMAND_RUNNER
from jcstate.server.routes.admin import _one_device as one_device
from jcstate.server.views import errors

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["commands"])

READ = Depends(require("read-only"))
# a command runner reads the commands it queued, and only those (docs/security.md)
READ_OWN = Depends(require("read-only", COMMAND_RUNNER))
MANAGE = Depends(require("manager"))
# a command runner runs the saved commands assigned to it; managers any saved command
RUN_SAVED = Depends(require("manager", COMMAND_RUNNER))
ADMINISTER = Depends(require("administrator"))


class RunSpec(StrictBody):
    """What action ``run`` executes: ``argv`` (no shell) or ``command`` for ``shell``."""

    model_config = ConfigDict(extra="forbid")
    argv: list[str] | None = None
    command: str | None = None
    shell: str | None = None
    user: str | None = None
    timeout: int | None = Field(None, ge=1, le=86400)


class NewCommand(StrictBody):
    """A command for one device. ``id`` is optional: with it a retry is safe (the same id and
    command return the existing command)."""

    model_config = ConfigDict(extra="forbid")
    id: str | None = None
    delay: int | None = Field(None, ge=0, le=86400, description="restart/shutdown warning, s")
    message: str | None = Field(None, description="restart/shutdown: shown to users")
    notAfter: str | None = Field(None, description="RFC 3339; not delivered after this")
    run: RunSpec | None = None
    confirm: str | None = Field(None, description="erase: the device id, typed back")
    version: str | None = Field(None, description="update: a release stored on the server")
    retry: bool | None = Field(None, description="update: try a version the device holds")


def _ctx(request: Request) -> Any:
    return request.app.state.ctx


def _spec(action: str, body: NewCommand) -> dict[str, Any]:
    spec: dict[str, Any] = {"action": action}
    for key in ("delay", "message", "notAfter", "confirm"):
        value = getattr(body, key)
        if value is not None:
            spec[key] = value
    if body.run is not None:
        spec["run"] = body.run.model_dump(exclude_none=True)
    return spec


def _program(spec: dict[str, Any]) -> str | None:
    run = spec.get("run") or {}
    if run.get("argv"):
        return str(run["argv"][0])
    if run.get("command"):
        return str(run.get("shell") or "(default shell)")
    return None


def _issue(
    request: Request,
    admin: Admin,
    ref: str,
    action: str,
    body: NewCommand,
    elevate: dict[str, Any] | None = None,
    saved: dict[str, Any] | None = None,
) -> Any:
    """Queue ``action`` for one device; ``saved``: the saved command whose argv ``run`` runs."""
    ctx = _ctx(request)
    store = ctx.store

    def refuse(status: int, reason: str, target: str | None = ref) -> HTTPException:
        store.audit(
            admin.actor,
            action_of(request),
            "refused",
            role=admin.role,
            target=target,
            detail={"action": action, "reason": reason},
        )
        return HTTPException(status, reason)

    try:
        device = one_device(ctx, ref)
    except HTTPException as exc:
        raise refuse(exc.status_code, str(exc.detail)) from None
    if device["status"] == "revoked":
        raise refuse(409, "this device is revoked: it will never poll again", device["id"])
    if action == "erase" and body.confirm != device["id"]:
        raise refuse(
            422,
            f"erase needs confirm equal to the device id ({device['id']}, "
            f"{device['hostname']}): one device per request, typed back",
            device["id"],
        )
    if action != "run" and body.run is not None:
        raise refuse(422, f"'run' is only for action run, not {action}", device["id"])
    if action != "update" and (body.version is not None or body.retry is not None):
        raise refuse(422, "'version' and 'retry' are only for action update", device["id"])
    spec = _spec(action, body)
    if elevate is not None:
        spec["elevate"] = elevate
    if saved is not None:
        from jcstate.server.saved import run_spec

        spec["run"] = run_spec(saved)
    if action == "update":
        release = store.release(body.version) if body.version else None
        if release is None:
            raise refuse(
                422,
                f"no release {body.version} on this server (jcstate release list; "
                "jcstate release push WHEEL)"
                if body.version
                else "update needs the version of a release",
                device["id"],
            )
        spec["update"] = {"version": release["version"], "sha256": release["sha256"]}
        if release.get("signature"):
            spec["update"]["signature"] = release["signature"]
        if body.retry:
            spec["update"]["retry"] = True
    person = None
    if action == "erase" and ctx.settings.erase_approvals >= 2:
        try:
            person = person_of(store, admin, "ask for", ctx.queue.clock())
        except ApprovalRefused as exc:
            raise refuse(exc.status, str(exc), device["id"]) from None
    try:
        row, created = ctx.queue.issue(
            device["id"],
            spec,
            admin.actor,
            body.id,
            saved=None if saved is None else (saved["name"], saved["version"]),
            requested_by=person,
        )
    except PlanError as exc:
        raise refuse(
            409 if isinstance(exc, CommandConflict) else 422, str(exc), device["id"]
        ) from None
    if not created and admin.role == COMMAND_RUNNER and row["created_by"] != admin.actor:
        # a retry answers with the existing command, output included: only one's own
        raise refuse(
            409, f"command id {row['id']} is already used on this device by another command"
        )
    if created and row["state"] != AWAITING:
        ctx.waiters.wake_threadsafe(f"device:{device['id']}")
    detail = {"action": action, "command": row["id"], "hostname": device["hostname"]}
    if row["state"] == AWAITING:
        detail.update(state=AWAITING, person=person)
    if _program(spec):
        detail["program"] = _program(spec)
    if "update" in spec:
        detail["version"] = spec["update"]["version"]
    if elevate is not None:  # who, until when and why: what an investigator asks first
        detail.update({k: v for k, v in elevate.items() if k != "seconds"})
    if saved is not None:
        detail["saved"] = saved["name"]
        detail["savedVersion"] = saved["version"]
    if not created:
        detail["retry"] = True
    store.audit(
        admin.actor, action_of(request), "ok", role=admin.role, target=device["id"], detail=detail
    )
    return {**command_view(row, device["hostname"]), "created": created}


@router.post("/devices/{ref}/commands/lock", status_code=201)
def lock(ref: str, body: NewCommand, request: Request, admin: Admin = MANAGE) -> Any:
    """Lock the device's graphical sessions (Linux, Windows)."""
    return _issue(request, admin, ref, "lock", body)


@router.post("/devices/{ref}/commands/restart", status_code=201)
def restart(ref: str, body: NewCommand, request: Request, admin: Admin = MANAGE) -> Any:
    """Warn logged-in users, wait ``delay`` seconds (default 60), restart; done once the
    device is back with a new boot time."""
    return _issue(request, admin, ref, "restart", body)


@router.post("/devices/{ref}/commands/shutdown", status_code=201)
def shutdown(ref: str, body: NewCommand, request: Request, admin: Admin = MANAGE) -> Any:
    """Warn logged-in users, wait ``delay`` seconds (default 60), power off."""
    return _issue(request, admin, ref, "shutdown", body)


@router.post("/devices/{ref}/commands/run", status_code=201)
def run(ref: str, body: NewCommand, request: Request, admin: Admin = MANAGE) -> Any:
    """Run ``run.argv`` (no shell) or ``run.command`` (a shell) with a timeout; the result has
    the exit code, stdout and stderr tails and the duration."""
    return _issue(request, admin, ref, "run", body)


@router.post("/devices/{ref}/commands/converge", status_code=201)
def converge(ref: str, body: NewCommand, request: Request, admin: Admin = MANAGE) -> Any:
    """Have the agent plan and apply its current document now (as its own re-converge does),
    instead of at its next interval; the result says how the converge went."""
    return _issue(request, admin, ref, "converge", body)


class NewElevation(StrictBody):
    """Admin for ``user`` on one device for ``seconds`` (a ``reason`` is required and
    audited), or ``revoke: true`` to end an elevation now. ``id``: as for other commands."""

    model_config = ConfigDict(extra="forbid")
    id: str | None = None
    user: str = Field(min_length=1, max_length=256)
    seconds: int | None = Field(None, ge=1, le=MAX_ELEVATION, description="how long, s")
    reason: str | None = Field(None, max_length=1000, description="why (audited)")
    revoke: bool = False


@router.post("/devices/{ref}/commands/elevate", status_code=201, responses=errors(404, 409, 422))
def elevate(ref: str, body: NewElevation, request: Request, admin: Admin = MANAGE) -> Any:
    """Just-in-time admin: ``user`` is admin on the device until now + ``seconds``, taken away
    by the device itself at that instant (offline too); ``revoke`` ends it now. Only users a
    policy lists present on the device can be elevated (the command fails otherwise)."""
    import datetime

    reason = (body.reason or "").strip() or None
    if body.revoke:
        if body.seconds is not None:
            raise HTTPException(422, "revoke takes no seconds")
        elevate: dict[str, Any] = {"user": body.user, "revoke": True}
    else:
        if body.seconds is None:
            raise HTTPException(422, "an elevation needs seconds (how long), or revoke: true")
        if reason is None:
            raise HTTPException(422, "an elevation needs a reason (it is audited)")
        until = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=body.seconds)
        elevate = {
            "user": body.user,
            "until": until.replace(microsecond=0).isoformat().replace("+00:00", "Z"),
            "seconds": body.seconds,
        }
    if reason is not None:
        elevate["reason"] = reason
    if body.id is not None and "until" in elevate:
        elevate["until"] = _retried_until(request, ref, body.id, elevate)
    return _issue(request, admin, ref, "elevate", NewCommand(id=body.id), elevate)


def _retried_until(request: Request, ref: str, command_id: str, elevate: dict[str, Any]) -> str:
    """A retry (same id, same user, length and reason) keeps the first request's end, so it
    returns the command already queued instead of conflicting with it over a second."""
    ctx = _ctx(request)
    try:
        device = one_device(ctx, ref)
    except HTTPException:
        return str(elevate["until"])  # _issue refuses it with the reason
    row = ctx.queue.one(command_id, device["id"])
    earlier = ((row or {}).get("body") or {}).get("elevate") or {}
    same = all(earlier.get(k) == elevate.get(k) for k in ("user", "seconds", "reason"))
    if row is not None and row["action"] == "elevate" and same and earlier.get("until"):
        return str(earlier["until"])
    return str(elevate["until"])


@router.post("/devices/{ref}/commands/update", status_code=201)
def update(ref: str, body: NewCommand, request: Request, admin: Admin = ADMINISTER) -> Any:
    """Install a release of the agent (``version``, stored with ``POST /api/v1/releases``);
    ``retry`` asks again for a version the device holds after three failed attempts."""
    return _issue(request, admin, ref, "update", body)


@router.post("/devices/{ref}/commands/erase", status_code=201)
def erase(ref: str, body: NewCommand, request: Request, admin: Admin = ADMINISTER) -> Any:
    """Erase one device; ``confirm`` must be its id. On a server started with
    ``--erase-approvals 2`` the erase is stored ``awaiting approval`` (never sent) until a
    second person approves it; asking needs a token that belongs to a person."""
    return _issue(request, admin, ref, "erase", body)


class SavedRun(StrictBody):
    """Run a saved command: nothing of the program can be given here, only when and the id."""

    model_config = ConfigDict(extra="forbid")
    id: str | None = None
    notAfter: str | None = Field(None, description="RFC 3339; not delivered after this")


@router.post(
    "/devices/{ref}/commands/saved/{saved}", status_code=201, responses=errors(404, 409, 422)
)
def run_saved(
    ref: str,
    body: SavedRun,
    request: Request,
    saved: str = Path(pattern="^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"),
    admin: Admin = RUN_SAVED,
) -> Any:
    """Run the saved command ``saved`` on one device, as a ``run`` command with its argv and
    timeout. A command runner may run only the saved commands assigned to it; managers and
    administrators any."""
    from jcstate.server.saved import SavedCommands, assignee

    ctx = _ctx(request)
    row = SavedCommands(ctx.store).get(saved)
    if admin.role == COMMAND_RUNNER:
        kind, ident = assignee(admin.actor)
        if row is None or not SavedCommands(ctx.store).assigned(saved, kind, ident):
            # one answer for "missing" and "not yours": a runner learns no other names
            ctx.store.audit(
                admin.actor,
                action_of(request),
                "denied",
                role=admin.role,
                target=ref,
                detail={"saved": saved, "reason": "saved command not assigned to this caller"},
            )
            raise HTTPException(
                403,
                f"saved command {saved} is not assigned to you "
                "(jcstate command saved list shows yours)",
            )
    if row is None:
        ctx.store.audit(
            admin.actor,
            action_of(request),
            "refused",
            role=admin.role,
            target=ref,
            detail={"saved": saved, "reason": "no such saved command"},
        )
        raise HTTPException(404, f"no saved command {saved} (jcstate command saved list)")
    command = NewCommand(id=body.id, notAfter=body.notAfter)
    return _issue(request, admin, ref, "run", command, saved=row)


class NewBatch(StrictBody):
    """One command for every active device matching ``where`` (labels, AND) and ``os``.

    ``dryRun`` answers which devices match without queueing anything (the CLI shows them
    before asking). Erase and update are never sent in bulk."""

    model_config = ConfigDict(extra="forbid")
    where: dict[str, str] = Field(default_factory=dict, description="label KEY → VALUE")
    os: str | None = None
    all: bool = Field(False, description="every active device (where and os empty)")
    dryRun: bool = False
    delay: int | None = Field(None, ge=0, le=86400, description="restart/shutdown warning, s")
    message: str | None = Field(None, description="restart/shutdown: shown to users")
    notAfter: str | None = Field(None, description="RFC 3339; not delivered after this")
    run: RunSpec | None = None


def _issue_batch(request: Request, admin: Admin, action: str, body: NewBatch) -> Any:
    from jcstate.server.routes.admin import Where, devices_where

    ctx = _ctx(request)
    if action != "run" and body.run is not None:
        raise HTTPException(422, f"'run' is only for action run, not {action}")
    where = Where(where=body.where, os=body.os, all=body.all)
    devices = devices_where(ctx, where, active_only=True)
    listed = [{"id": d["id"], "hostname": d["hostname"]} for d in devices]
    if body.dryRun:
        return {"batch": None, "action": action, "count": len(devices), "devices": listed}
    if not devices:
        raise HTTPException(404, "no active device matches: nothing queued")
    spec = _spec(action, NewCommand(**body.model_dump(include={"delay", "message", "notAfter"})))
    if body.run is not None:
        spec["run"] = body.run.model_dump(exclude_none=True)
    try:
        batch, rows = ctx.queue.issue_batch(devices, spec, admin.actor)
    except PlanError as exc:
        ctx.store.audit(
            admin.actor,
            action_of(request),
            "refused",
            role=admin.role,
            detail={"action": action, "reason": str(exc)},
        )
        raise HTTPException(422, str(exc)) from None
    for d in devices:
        ctx.waiters.wake_threadsafe(f"device:{d['id']}")
    detail: dict[str, Any] = {"action": action, "batch": batch, "count": len(rows)}
    detail.update(where=body.where, os=body.os)
    if _program(spec):
        detail["program"] = _program(spec)
    ctx.store.audit(
        admin.actor, action_of(request), "ok", role=admin.role, target=batch, detail=detail
    )
    names = {d["id"]: d["hostname"] for d in devices}
    commands = sorted(
        (command_view(r, names.get(r["device_id"])) for r in rows),
        key=lambda c: c.get("hostname") or "",
    )
    return {
        "batch": batch,
        "action": action,
        "count": len(rows),
        "devices": listed,
        "commands": commands,
    }


@router.post("/commands/batch/lock", status_code=201, responses=errors(404, 422))
def lock_where(body: NewBatch, request: Request, admin: Admin = MANAGE) -> Any:
    """Lock every matching device: one command each, one batch."""
    return _issue_batch(request, admin, "lock", body)


@router.post("/commands/batch/restart", status_code=201, responses=errors(404, 422))
def restart_where(body: NewBatch, request: Request, admin: Admin = MANAGE) -> Any:
    """Restart every matching device: one command each, one batch."""
    return _issue_batch(request, admin, "restart", body)


@router.post("/commands/batch/shutdown", status_code=201, responses=errors(404, 422))
def shutdown_where(body: NewBatch, request: Request, admin: Admin = MANAGE) -> Any:
    """Shut down every matching device: one command each, one batch."""
    return _issue_batch(request, admin, "shutdown", body)


@router.post("/commands/batch/run", status_code=201, responses=errors(404, 422))
def run_where(body: NewBatch, request: Request, admin: Admin = MANAGE) -> Any:
    """Run a program on every matching device: one command each, one batch."""
    return _issue_batch(request, admin, "run", body)


@router.get("/batches/{batch}", responses=errors(404))
def show_batch(batch: str, request: Request, admin: Admin = READ) -> dict[str, Any]:
    """A batch: how many of its commands are in each state, and each command."""
    ctx = _ctx(request)
    rows = ctx.queue.list(batch=batch, limit=100000)
    if not rows:
        raise HTTPException(404, "no such batch")
    names = _hostnames(ctx)
    states: dict[str, int] = {}
    for r in rows:
        states[r["state"]] = states.get(r["state"], 0) + 1
    commands = sorted(
        (command_view(r, names.get(r["device_id"])) for r in rows),
        key=lambda c: c.get("hostname") or "",
    )
    first = commands[0]
    return {
        "batch": batch,
        "action": first["action"],
        "createdAt": first["createdAt"],
        "createdBy": first["createdBy"],
        "count": len(rows),
        "states": states,
        "done": all(r["state"] in FINAL_STATES for r in rows),
        "commands": commands,
    }


def _hostnames(ctx: Any) -> dict[str, str]:
    return {d["id"]: d["hostname"] for d in ctx.store.list_devices()}


@router.get("/commands", responses=errors(404, 409, 422))
def list_commands(
    request: Request,
    device: str | None = None,
    state: str | None = None,
    action: str | None = None,
    batch: str | None = None,
    since: str | None = Query(
        None, description="RFC 3339: created at or after", json_schema_extra={"format": "date-time"}
    ),
    limit: int = 100,
    admin: Admin = READ_OWN,
) -> list[dict[str, Any]]:
    """Commands, newest first; ``device`` (id or hostname), ``state``, ``action``, ``batch``
    and ``since`` filter. A command runner sees only the commands it queued."""
    from jcstate.server.views import from_rfc3339

    ctx = _ctx(request)
    device_id = one_device(ctx, device)["id"] if device else None
    after = None
    if since is not None:
        try:
            after = from_rfc3339(since)
        except ValueError:
            raise HTTPException(422, f"since {since!r} is not an RFC 3339 time or date") from None
    _lapse(request)
    names = _hostnames(ctx)
    rows = ctx.queue.list(
        device_id,
        state,
        min(max(limit, 1), 10000),
        action=action,
        batch=batch,
        since=after,
        created_by=admin.actor if admin.role == COMMAND_RUNNER else None,
    )
    return [command_view(r, names.get(r["device_id"])) for r in rows]


def _one_command(
    ctx: Any, command_id: str, device: str | None, created_by: str | None = None
) -> dict[str, Any]:
    rows = ctx.queue.named(command_id)
    if created_by is not None:  # a command runner's: the others do not exist for it
        rows = [r for r in rows if r["created_by"] == created_by]
    if device:
        device_id = one_device(ctx, device)["id"]
        rows = [r for r in rows if r["device_id"] == device_id]
    if not rows:
        raise HTTPException(404, "no such command")
    if len(rows) > 1:
        raise HTTPException(
            409,
            f"{len(rows)} devices ran a command {command_id} (a policy's); add device=ID: "
            + ", ".join(r["device_id"] for r in rows),
        )
    return dict(rows[0])


@router.get("/commands/{command_id}")
def show_command(
    command_id: str, request: Request, device: str | None = None, admin: Admin = READ_OWN
) -> dict[str, Any]:
    """One command: state, exit code, output tails and times (a command runner: one it
    queued)."""
    ctx = _ctx(request)
    _lapse(request)
    own = admin.actor if admin.role == COMMAND_RUNNER else None
    row = _one_command(ctx, command_id, device, own)
    return command_view(row, _hostnames(ctx).get(row["device_id"]))


@router.post("/commands/{command_id}/cancel")
def cancel_command(
    command_id: str, request: Request, device: str | None = None, admin: Admin = MANAGE
) -> dict[str, Any]:
    """Cancel: a command the device has not acknowledged is cancelled outright; one it has is
    marked cancel-requested, and settled ``cancelled`` when the device asks for work again
    without a result for it (its result, if one comes, is still stored)."""
    ctx = _ctx(request)
    _lapse(request)
    row = _one_command(ctx, command_id, device)
    if row["source"] != "admin":
        raise HTTPException(409, "a policy's command is not queued here: remove it from the policy")
    fresh = ctx.queue.cancel(row)
    if fresh["state"] == "cancelled":
        outcome = "cancelled"
    elif fresh["cancel_requested"] and fresh["state"] in ("delivered", "running"):
        outcome = "cancel-requested"
    else:
        outcome = f"already {fresh['state']}"
    ctx.store.audit(
        admin.actor,
        action_of(request),
        "ok",
        role=admin.role,
        target=row["device_id"],
        detail={"command": command_id, "result": outcome},
    )
    return {**command_view(fresh), "cancel": outcome}


# -- two-person erase ---------------------------------------------------------------------------
def _lapse(request: Request) -> None:
    settle_lapsed(_ctx(request))


def _awaiting(request: Request, admin: Admin, command_id: str, device: str | None) -> Any:
    """The command awaiting approval, or an HTTPException (audited as refused)."""
    ctx = _ctx(request)
    _lapse(request)
    row = _one_command(ctx, command_id, device)
    if row["state"] != AWAITING:
        reason = f"command {command_id} is {row['state']}, not awaiting approval"
        if row["state"] == "lapsed":
            reason += ": nobody approved it within 24 h; ask for a new erase"
        _refused(request, admin, row, reason)
        raise HTTPException(409, reason)
    return row


def _refused(request: Request, admin: Admin, row: Any, reason: str) -> None:
    _ctx(request).store.audit(
        admin.actor,
        action_of(request),
        "refused",
        role=admin.role,
        target=row["device_id"],
        detail={"command": row["id"], "action": row["action"], "reason": reason},
    )


def _decided(request: Request, admin: Admin, row: Any, fresh: Any, **detail: Any) -> Any:
    ctx = _ctx(request)
    if fresh is None:  # another administrator decided first
        reason = f"command {row['id']} was decided by someone else meanwhile"
        _refused(request, admin, row, reason)
        raise HTTPException(409, reason)
    approval = fresh.get("approval") or {}
    ctx.store.audit(
        admin.actor,
        action_of(request),
        "ok",
        role=admin.role,
        target=row["device_id"],
        detail={
            "command": row["id"],
            "action": row["action"],
            "requestedBy": approval.get("requestedBy"),
            "person": approval.get("decidedBy"),
            **detail,
        },
    )
    return command_view(fresh, _hostnames(ctx).get(row["device_id"]))


@router.post("/commands/{command_id}/approve", responses=errors(404, 409))
def approve_command(
    command_id: str, request: Request, device: str | None = None, admin: Admin = ADMINISTER
) -> dict[str, Any]:
    """Approve an erase awaiting approval: it is queued for its device (last in its order).
    The approver must be a person (a console account's token or session) other than the one
    who asked."""
    ctx = _ctx(request)
    row = _awaiting(request, admin, command_id, device)
    requester = (row.get("approval") or {}).get("requestedBy")
    try:
        person = person_of(ctx.store, admin, "approve", ctx.queue.clock())
    except ApprovalRefused as exc:
        _refused(request, admin, row, str(exc))
        raise HTTPException(exc.status, str(exc)) from None
    if person == requester:
        reason = (
            f"{person} asked for this erase: a different administrator must approve it "
            "(another token of yours is still you)"
        )
        _refused(request, admin, row, reason)
        raise HTTPException(403, reason)
    fresh = ctx.queue.approve(row, person, admin.actor)
    view = _decided(request, admin, row, fresh)
    ctx.waiters.wake_threadsafe(f"device:{row['device_id']}")
    return view


class Rejection(StrictBody):
    """Why the erase is rejected (kept in the command and the audit log)."""

    reason: str = Field("", max_length=1000)


@router.post("/commands/{command_id}/reject", responses=errors(404, 409))
def reject_command(
    command_id: str,
    request: Request,
    body: Rejection | None = None,
    device: str | None = None,
    admin: Admin = ADMINISTER,
) -> dict[str, Any]:
    """Reject an erase awaiting approval: it ends ``rejected`` and is never sent. Any
    administrator may reject, the one who asked included (withdrawing is always safe)."""
    ctx = _ctx(request)
    row = _awaiting(request, admin, command_id, device)
    reason = (body.reason if body else "").strip()
    fresh = ctx.queue.reject(row, admin.person, admin.actor, reason)
    return _decided(request, admin, row, fresh, reason=reason or None)


# -- devices -----------------------------------------------------------------------------------
class Results(StrictBody):
    """Results from the device's journal: final ones until acknowledged, ``running`` once."""

    results: list[dict[str, Any]] = Field(max_length=500)


@router.post("/device/commands/results", tags=["device"])
async def post_results(
    body: Results, request: Request, device: dict[str, Any] = DEVICE
) -> dict[str, Any]:
    """Store each result once per (device, command id); acknowledge finals, even duplicates."""
    ctx = _ctx(request)
    acks, duplicates = [], []
    for result in body.results:
        outcome = await run_in_threadpool(ctx.queue.record, device["id"], result)
        if result.get("status") != "running":
            acks.append(result.get("id"))
        if outcome == "duplicate":
            duplicates.append(result.get("id"))
    return {"acks": acks, "duplicates": duplicates}
