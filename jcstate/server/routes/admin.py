"""Routes for admins (bearer tokens with a role): policies, devices, tokens, keys, secrets, audit.

The role each route needs is written next to it (``require(...)``) and mirrored in the checked-in
authorization table ``tests/server/authz_matrix.yaml``; a route without a row fails the tests.
Every change lands in the audit log; refusals are logged by :mod:`jcstate.server.auth`.
"""

from __future__ import annotations

import base64
import contextlib
import difflib
import secrets as pysecrets
import time
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from pydantic import ConfigDict, Field

from jcstate.errors import DocumentError, JcstateError
from jcstate.secret import REDACTED, Secret
from jcstate.server.auth import Admin, action_of, require
from jcstate.server.blast import account_changes
from jcstate.server.contract import StrictBody
from jcstate.server.render import repo_from_files
from jcstate.server.roles import ALL_ROLES, COMMAND_RUNNER
from jcstate.server.store import Store
from jcstate.server.views import errors, from_rfc3339, wire

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["admin"])

READ = Depends(require("read-only"))
# what a command runner may read besides: itself and the devices, to pick one (docs/security.md)
READ_DEVICES = Depends(require("read-only", COMMAND_RUNNER))
MANAGE = Depends(require("manager"))
ADMINISTER = Depends(require("administrator"))


def _ctx(request: Request) -> Any:
    return request.app.state.ctx


def _audit(request: Request, admin: Admin, target: str | None = None, **detail: Any) -> None:
    _ctx(request).store.audit(
        admin.actor, action_of(request), "ok", role=admin.role, target=target, detail=detail
    )


# -- identity ------------------------------------------------------------------------------
@router.get("/whoami")
def whoami(admin: Admin = READ_DEVICES) -> dict[str, Any]:
    """The calling token's id, name, role and owner (the person it belongs to, or null)."""
    return {"id": admin.token_id, "name": admin.name, "role": admin.role, "owner": admin.owner}


# -- policies ------------------------------------------------------------------------------
class Push(StrictBody):
    files: dict[str, str] = Field(description="repo path → file text")
    message: str = ""
    commit: str | None = Field(
        None, pattern="^[0-9a-fA-F]{7,64}$", description="the git commit the files come from"
    )
    dryRun: bool = False
    canary: str | None = Field(
        None,
        max_length=300,
        pattern=r"^(\d{1,3}(\.\d{1,3})?%|label:[^\x00]+)$",
        description="a staged rollout: the canary wave, 5% or label:KEY=VALUE[,KEY=VALUE]",
    )
    waitSeconds: float = Field(
        300.0,
        ge=0,
        le=30 * 86400,
        description="with canary: how long every canary must stay "
        "converged ok before the rest follows",
    )
    haltOn: int = Field(1, ge=1, le=100000, description="with canary: failed canaries that halt")


@router.post("/revisions", responses=errors(409, 422))
def push(body: Push, request: Request, admin: Admin = MANAGE) -> dict[str, Any]:
    """Validate a repo and store it as the new revision; ``dryRun`` reports the blast radius.

    ``canary``: a staged rollout (docs/server.md, "Staged rollout"): the canary wave gets the
    revision first, the rest when every canary has converged ok for ``waitSeconds``. Refused
    (409) while a rollout is in progress."""
    from jcstate.server.rollout import RolloutError, parse_canary, seed_of

    try:
        repo = repo_from_files(body.files)
    except DocumentError as exc:
        raise HTTPException(422, {"problems": [str(p) for p in exc.problems]}) from None
    staged = None
    if body.canary is not None:
        try:
            parse_canary(body.canary)
        except RolloutError as exc:
            raise HTTPException(422, str(exc)) from None
        staged = {
            "canary": body.canary,
            "wait": body.waitSeconds,
            "halt_on": body.haltOn,
            "seed": seed_of(body.files),
            "actor": admin.actor,
        }
    return _store_revision(
        request, admin, repo, body.files, body.message, body.commit, body.dryRun, staged=staged
    )


def _store_revision(
    request: Request,
    admin: Admin,
    repo: Any,
    files: dict[str, str],
    message: str,
    commit: str | None,
    dry_run: bool,
    rollback_of: int | None = None,
    staged: dict[str, Any] | None = None,
) -> dict[str, Any]:
    from jcstate.server import rollout
    from jcstate.server.history import affected_devices

    ctx = _ctx(request)
    if ctx.settings.erase_approvals >= 2:
        from jcstate.server.approvals import policy_erases

        erases = policy_erases(repo)
        if erases:
            reason = (
                "this server needs two people for an erase (--erase-approvals 2), and a "
                "policy's commands never wait for an approval: erase with `jcstate command "
                "erase DEVICE` instead"
            )
            ctx.store.audit(
                admin.actor,
                action_of(request),
                "refused",
                role=admin.role,
                detail={"reason": reason, "where": erases[:20]},
            )
            raise HTTPException(422, {"problems": [f"{where}: {reason}" for where in erases]})
    if dry_run:
        canaries = None
        if staged is not None:
            active = ctx.store.query_devices(status="active", light=True)[0]
            canaries = set(rollout.choose_canaries(staged["canary"], active, staged["seed"]))
        answer: dict[str, Any] = {"revision": None, "devices": _blast_radius(ctx, repo, canaries)}
        if staged is not None:
            answer["rollout"] = _planned_rollout(ctx, staged, answer["devices"])
        return answer
    latest = rollout.serving(ctx.store).revision  # what the fleet (outside a canary wave) has
    old = None
    if latest is not None:
        with contextlib.suppress(JcstateError):
            old = ctx.renderer.repo(latest)
    try:
        rev = ctx.store.add_revision(
            files, admin.actor, message, commit=commit, rollback_of=rollback_of, rollout=staged
        )
    except rollout.RolloutInProgress as exc:
        raise HTTPException(409, str(exc)) from None
    except rollout.RolloutError as exc:
        raise HTTPException(422, str(exc)) from None
    ctx.renderer.remember(rev, repo)
    ctx.waiters.wake_threadsafe("all")
    # Which devices the revision changes is for the answer, the audit entry and the history
    # (every active device's policies rendered twice): counted once the agents are woken, so
    # it never delays a push reaching them.
    affected = affected_devices(old, repo, ctx.store.query_devices(status="active", light=True)[0])
    ctx.store.set_revision_devices(rev, len(affected))
    detail: dict[str, Any] = {"files": len(files), "message": message, "devices": len(affected)}
    if commit:
        detail["commit"] = commit
    if rollback_of is not None:
        detail["rollbackOf"] = rollback_of
    answer = {"revision": rev, "devices": [], "devicesAffected": len(affected)}
    if staged is not None:
        started = rollout.open_rollout(ctx.store) or {}
        detail.update(canary=staged["canary"], canaryDevices=started.get("devices"))
        answer["rollout"] = {
            "id": started.get("id"),
            "canary": staged["canary"],
            "canaryDevices": len(started.get("devices") or []),
            "previous": started.get("previous"),
            "waitSeconds": staged["wait"],
            "haltOn": staged["halt_on"],
        }
    _audit(request, admin, str(rev), **detail)
    return answer


def _planned_rollout(
    ctx: Any, staged: dict[str, Any], devices: list[dict[str, Any]]
) -> dict[str, Any]:
    """What a staged push would do, for its dry run: the waves, or why it would be refused."""
    from jcstate.server import rollout

    in_progress = rollout.open_rollout(ctx.store)
    canary = [d["id"] for d in devices if d.get("wave") == "canary"]
    plan: dict[str, Any] = {
        "canary": staged["canary"],
        "waves": [
            {"name": "canary", "devices": len(canary)},
            {"name": "rest", "devices": len(devices) - len(canary)},
        ],
        "previous": rollout.serving(ctx.store).revision,
        "waitSeconds": staged["wait"],
        "haltOn": staged["halt_on"],
        "refused": None,
    }
    if in_progress is not None:
        plan["refused"] = f"rollout {in_progress['id']} is in progress: promote or abort it first"
    elif plan["previous"] is None:
        plan["refused"] = "no revision yet for the rest of the fleet: push once without --canary"
    elif not canary:
        plan["refused"] = f"the canary wave {staged['canary']} has no active device"
    return plan


def _blast_radius(ctx: Any, repo: Any, canaries: set[str] | None = None) -> list[dict[str, Any]]:
    """Per active device, what ``repo`` would change; with ``canaries`` (a staged push) each
    device also says its wave, canary devices first."""
    from jcstate.server.states import certain_refusals

    out = []
    enrolled = {r["name"] for r in ctx.store.secret_names("totp")}
    for device in ctx.store.list_devices():
        if device["status"] != "active":
            continue
        entry: dict[str, Any] = {"id": device["id"], "hostname": device["hostname"]}
        if canaries is not None:
            entry["wave"] = "canary" if device["id"] in canaries else "rest"
        try:
            doc = ctx.renderer.document(repo, device)
            entry["policies"] = list(getattr(doc, "policies", []) or [])
            entry["changes"] = account_changes(doc.spec, device.get("facts"))
            # what the device will certainly refuse (an MFA user without a TOTP secret)
            entry["refusals"] = certain_refusals(doc.spec, enrolled)
        except JcstateError as exc:
            entry["error"] = str(exc)
        out.append(entry)
    if canaries is not None:
        out.sort(key=lambda e: e["wave"] != "canary")  # stable: hostname order within a wave
    return out


def _revision_view(row: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """A revision for admins: who by name, the git commit, the files' paths, devices changed."""
    author = str(row["author"])
    kind, _, ident = author.partition(":")
    files = row.get("files") or {}
    return wire(
        {
            "id": row["id"],
            "created_at": row["created_at"],
            "author": author,
            "authorName": names.get(ident, ident or author) if kind == "token" else author,
            "message": row["message"],
            "commit": row.get("commit"),
            "paths": sorted(files),
            "devicesAffected": row.get("devices"),
            "rollbackOf": row.get("rollback_of"),
        }
    )


@router.get("/revisions")
def list_revisions(
    request: Request, limit: int = Query(100, ge=1, le=10000), admin: Admin = READ
) -> list[dict[str, Any]]:
    """Revisions, newest first, with the paths of their files (not the files)."""
    store = _ctx(request).store
    names = store.token_names()
    return [_revision_view(r, names) for r in store.list_revisions(limit)]


def _revision(request: Request, revision: int) -> dict[str, Any]:
    row = _ctx(request).store.revision(revision)
    if row is None:
        raise HTTPException(404, f"no revision {revision} (jcstate revisions lists them)")
    return dict(row)


@router.get("/revisions/{revision}")
def show_revision(
    request: Request,
    revision: int = Path(ge=0, le=2**63 - 1),  # a database integer
    admin: Admin = READ,
) -> dict[str, Any]:
    """One revision with its files."""
    row = _revision(request, revision)
    view = _revision_view(row, _ctx(request).store.token_names())
    return {**view, "files": row["files"]}


@router.get("/revisions/{revision}/diff", responses=errors(404))
def diff_revision(
    revision: int,
    request: Request,
    against: int | None = Query(None, description="the older revision (default: the one before)"),
    admin: Admin = READ,
) -> dict[str, Any]:
    """A unified diff of the files from ``against`` to ``revision``."""
    new = _revision(request, revision)
    if against is None:
        against = _ctx(request).store.previous_revision_id(revision)
    old_files = {} if against is None else _revision(request, against)["files"]
    lines: list[str] = []
    changed = []
    for path in sorted(set(old_files) | set(new["files"])):
        a, b = old_files.get(path), new["files"].get(path)
        if a == b:
            continue
        changed.append(path)
        lines.extend(
            difflib.unified_diff(
                (a or "").splitlines(keepends=True),
                (b or "").splitlines(keepends=True),
                fromfile=f"{against}/{path}" if a is not None else "/dev/null",
                tofile=f"{revision}/{path}" if b is not None else "/dev/null",
            )
        )
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n\\ No newline at end of file\n"
    return {"from": against, "to": revision, "paths": changed, "diff": "".join(lines)}


class Rollback(StrictBody):
    model_config = ConfigDict(extra="forbid")
    message: str = ""
    dryRun: bool = False


@router.post("/revisions/{revision}/rollback", responses=errors(404, 409, 422))
def rollback_revision(
    revision: int, body: Rollback, request: Request, admin: Admin = MANAGE
) -> dict[str, Any]:
    """Push the files of an older revision again, as a new revision (``dryRun``: the blast
    radius only). History is never rewritten: the rollback is itself a revision."""
    row = _revision(request, revision)
    try:
        repo = repo_from_files(row["files"])
    except DocumentError as exc:  # a revision that no longer validates with this server
        raise HTTPException(422, {"problems": [str(p) for p in exc.problems]}) from None
    message = body.message or f"rollback to revision {revision}"
    return _store_revision(
        request, admin, repo, row["files"], message, row.get("commit"), body.dryRun, revision
    )


# -- devices -------------------------------------------------------------------------------
def _device_summary(
    ctx: Any, row: dict[str, Any], power: dict[str, tuple[str, str]] | None = None
) -> dict[str, Any]:
    """``power``: the queue's power states of many devices at once (listings)."""
    from jcstate.server.commands import activity
    from jcstate.server.states import failures

    now = time.time()
    last_seen = ctx.store.seen_at(row)
    online = last_seen is not None and now - last_seen < ctx.online_after
    if power is None:
        power = ctx.queue.power_states([row["id"]])
    in_flight = power.get(row["id"])
    current = None
    if row["status"] == "active":
        current = ctx.renderer.etag(row, ctx.generation(row["id"]))
    return wire(
        {
            "id": row["id"],
            "hostname": row["hostname"],
            "os": row["os"],
            "osVersion": row["os_version"],
            "arch": row["arch"],
            "agentVersion": row["agent_version"],
            "labels": row["labels"],
            "status": row["status"],
            # what the device acknowledged of a restart/shutdown/erase (docs/state-model.md)
            "activity": (activity(*in_flight, online) or None) if in_flight else None,
            # its last request is within twice the long-poll hold (a missed poll and more)
            "online": online,
            "enrolledAt": row["enrolled_at"],
            "lastSeen": last_seen,
            "lastReportAt": row["last_report_at"],
            "lastReportOk": row["last_report_ok"],
            # the device's last converge was on the document it is sent now
            "documentCurrent": None
            if row["last_report_at"] is None
            else row["applied_etag"] == current,
            # the device's last plan (a converge, or a plan between converges) had changes it has
            # not applied; None until it reported a plan (jcstate.server.states)
            "drift": row.get("drift"),
            "lastPlanAt": row.get("last_plan_at"),
            "failures": failures(row.get("last_plan")),
        }
    )


def _one_device(ctx: Any, ref: str) -> dict[str, Any]:
    rows = ctx.store.devices_named(ref)
    if not rows:
        raise HTTPException(404, "no such device")
    if len(rows) > 1:
        raise HTTPException(
            409,
            f"{len(rows)} devices are named {ref}; use the device id: "
            + ", ".join(r["id"] for r in rows),
        )
    return rows[0]


_LABEL_QUERY = Query(
    [],
    description="KEY=VALUE; repeat for AND",
    json_schema_extra={"items": {"type": "string", "pattern": "^[^=\\x00]+=[^\\x00]*$"}},
)
# a time in a query: what the schema says, so that a client (or a fuzzer) sends one
RFC3339 = {"format": "date-time"}
_STATUSES = ("online", "offline", "failed", "drift", "pending", "active", "revoked")


def parse_labels(pairs: list[str], what: str = "label") -> dict[str, str]:
    """``["team=eng", "site=paris"]`` → a dict; 422 naming a pair without ``=``."""
    out = {}
    for text in pairs:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise HTTPException(422, f"{what} {text!r}: expected KEY=VALUE")
        out[key] = value
    return out


def select_devices(
    ctx: Any,
    *,
    labels: dict[str, str] | None = None,
    os: str | None = None,
    status: str | None = None,
    search: str | None = None,
    sort: str = "hostname",
    limit: int | None = None,
    offset: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    """(one page of device rows, how many match): the filters of ``GET /devices``, in SQL."""
    now = time.time()
    query: dict[str, Any] = {"labels": labels, "os": os, "search": search, "sort": sort}
    if status == "online":
        query["seen_since"] = now - ctx.online_after
    elif status == "offline":
        query["unseen_since"] = now - ctx.online_after
    elif status == "failed":
        query["failed"] = True
    elif status == "drift":
        query["drift"] = True  # the device's last plan had changes it has not applied
    elif status is not None:
        query["status"] = status
    try:
        return ctx.store.query_devices(**query, limit=limit, offset=offset)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None


@router.get(
    "/devices",
    responses={
        200: {"headers": {"X-Total-Count": {"description": "devices matching the filters"}}},
        **errors(422),
    },
)
def list_devices(
    request: Request,
    response: Response,
    label: list[str] = _LABEL_QUERY,
    os: str | None = Query(None, description="linux, darwin, windows", pattern="^[^\\x00]*$"),
    status: str | None = Query(None, pattern="^(" + "|".join(_STATUSES) + ")$"),
    search: str | None = Query(None, description="hostname or id prefix", pattern="^[^\\x00]*$"),
    sort: str = Query(
        "hostname",
        description="a field; -field for descending",
        pattern="^-?(" + "|".join(Store._DEVICE_SORTS) + ")$",
    ),
    limit: int | None = Query(None, ge=1, le=10000),
    page: int = Query(1, ge=1),
    admin: Admin = READ_DEVICES,
) -> list[dict[str, Any]]:
    """Devices with online state, last report and drift, filtered and sorted by the database;
    one page of ``limit`` (every match without it). ``X-Total-Count`` says how many match."""
    ctx = _ctx(request)
    if any("\x00" in text for text in (os or "", search or "", *label)):
        raise HTTPException(422, "a query parameter contains a NUL character")
    try:
        rows, total = select_devices(
            ctx,
            labels=parse_labels(label),
            os=os,
            status=status,
            search=search,
            sort=sort,
            limit=limit,
            offset=(page - 1) * (limit or 0),
        )
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    response.headers["X-Total-Count"] = str(total)
    power = ctx.queue.power_states([r["id"] for r in rows]) if rows else {}
    return [_device_summary(ctx, r, power) for r in rows]


@router.get("/devices/{ref}")
def show_device(ref: str, request: Request, admin: Admin = READ_DEVICES) -> dict[str, Any]:
    """One device (by id or hostname) with its facts, last report and newest commands (a
    command runner: the newest it queued)."""
    from jcstate.server.commands import command_view

    ctx = _ctx(request)
    row = _one_device(ctx, ref)
    last = ctx.store.last_report(row["id"])
    own = admin.actor if admin.role == COMMAND_RUNNER else None
    return {
        **_device_summary(ctx, row),
        "facts": row["facts"],
        "lastReport": None if last is None else last["body"],
        "lastPlan": row.get("last_plan"),
        "commands": [command_view(c) for c in ctx.queue.list(row["id"], limit=20, created_by=own)],
    }


@router.get("/devices/{ref}/document")
def device_document(ref: str, request: Request, admin: Admin = READ) -> dict[str, Any]:
    """The document the device is sent now, without its secrets: the server-held ones are
    named only (``secrets``), and a password hash written in a policy shows as ``(secret)``."""
    ctx = _ctx(request)
    row = _one_device(ctx, ref)
    rendered = ctx.renderer.for_device(row, ctx.generation(row["id"]))
    return {
        "etag": rendered.etag,
        "revision": rendered.revision,
        "document": _hashes_hidden(rendered.document),
        "error": rendered.error,
        "secrets": {k: sorted(v) for k, v in rendered.secrets.items()},
    }


def _hashes_hidden(value: Any) -> Any:
    """``value`` with every ``password: {hash: …}`` shown as ``(secret)`` (the SPEC's rule for
    hashes in anything shown; the policy repo itself, ``GET /revisions/{n}``, keeps them)."""
    if isinstance(value, dict):
        return {
            k: {**v, "hash": REDACTED}
            if k == "password" and isinstance(v, dict) and v.get("hash") is not None
            else _hashes_hidden(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_hashes_hidden(v) for v in value]
    return value


class Labels(StrictBody):
    labels: dict[str, str]


@router.put("/devices/{ref}/labels")
def set_labels(ref: str, body: Labels, request: Request, admin: Admin = MANAGE) -> dict[str, Any]:
    """Replace a device's labels (policies select on them); wakes the device."""
    ctx = _ctx(request)
    row = _one_device(ctx, ref)
    ctx.store.set_device(row["id"], labels=body.labels)
    ctx.waiters.wake_threadsafe(f"device:{row['id']}")
    _audit(request, admin, row["id"], labels=body.labels)
    return _device_summary(ctx, ctx.store.device(row["id"]))


class LabelChange(StrictBody):
    """Labels to add (or change) and keys to remove; the others are kept."""

    model_config = ConfigDict(extra="forbid")
    add: dict[str, str] = Field(default_factory=dict)
    remove: list[str] = Field(default_factory=list)


@router.patch("/devices/{ref}/labels", responses=errors(404, 409, 422))
def change_labels(
    ref: str, body: LabelChange, request: Request, admin: Admin = MANAGE
) -> dict[str, Any]:
    """Add and remove some of a device's labels (``PUT`` replaces them all); wakes the device."""
    ctx = _ctx(request)
    row = _one_device(ctx, ref)
    ctx.store.update_labels([row["id"]], body.add, body.remove)
    ctx.waiters.wake_threadsafe(f"device:{row['id']}")
    _audit(request, admin, row["id"], add=body.add, remove=body.remove)
    return _device_summary(ctx, ctx.store.device(row["id"]))


class Where(StrictBody):
    """Which devices a bulk request is for: every label equal (AND), and the OS if given.

    Revoked devices are never included. At least one condition is required: a request for
    the whole fleet says so with ``where: {}`` *and* ``all: true``."""

    model_config = ConfigDict(extra="forbid")
    where: dict[str, str] = Field(default_factory=dict, description="label KEY → VALUE")
    os: str | None = None
    all: bool = False


def devices_where(ctx: Any, body: Where, *, active_only: bool) -> list[dict[str, Any]]:
    """The devices a bulk request targets; 422 when it names no condition."""
    if not body.where and body.os is None and not body.all:
        raise HTTPException(
            422, "give where (label KEY=VALUE) or os; all=true to target every device"
        )
    rows, _ = ctx.store.query_devices(
        labels=body.where, os=body.os, status="active" if active_only else None
    )
    return [r for r in rows if r["status"] != "revoked"]


class BulkLabels(Where):
    add: dict[str, str] = Field(default_factory=dict)
    remove: list[str] = Field(default_factory=list)


@router.patch("/labels", responses=errors(422))
def change_labels_where(
    body: BulkLabels, request: Request, admin: Admin = MANAGE
) -> dict[str, Any]:
    """Add and remove labels on every device matching ``where`` (and ``os``), in one
    transaction; answers how many devices matched and their ids and hostnames."""
    ctx = _ctx(request)
    rows = devices_where(ctx, body, active_only=False)
    if rows:
        ctx.store.update_labels([r["id"] for r in rows], body.add, body.remove)
        ctx.waiters.wake_threadsafe("all")
    _audit(
        request,
        admin,
        None,
        where=body.where,
        os=body.os,
        add=body.add,
        remove=body.remove,
        matched=len(rows),
    )
    return {
        "matched": len(rows),
        "devices": [{"id": r["id"], "hostname": r["hostname"]} for r in rows],
    }


def _set_status(request: Request, admin: Admin, ref: str, status: str) -> dict[str, Any]:
    ctx = _ctx(request)
    row = _one_device(ctx, ref)
    ctx.store.set_device(row["id"], status=status)
    ctx.waiters.wake_threadsafe(f"device:{row['id']}")
    _audit(request, admin, row["id"], hostname=row["hostname"])
    return _device_summary(ctx, ctx.store.device(row["id"]))


@router.post("/devices/{ref}/approve")
def approve_device(ref: str, request: Request, admin: Admin = ADMINISTER) -> dict[str, Any]:
    """Let a pending device (enrolled with a key that needs approval) receive work."""
    return _set_status(request, admin, ref, "active")


@router.post("/devices/{ref}/revoke")
def revoke_device(ref: str, request: Request, admin: Admin = ADMINISTER) -> dict[str, Any]:
    """Refuse the device's credential from now on; its held long-poll ends at once."""
    return _set_status(request, admin, ref, "revoked")


# -- escrowed FileVault recovery keys -------------------------------------------------------
@router.get("/devices/{ref}/recovery-key")
def recovery_key(
    ref: str,
    request: Request,
    volume: str | None = None,
    every: bool = Query(False, alias="all"),
    admin: Admin = ADMINISTER,
) -> Any:
    """The device's escrowed FileVault recovery key: the newest, that of ``volume``, or with
    ``all=true`` one entry per volume (newest first). Every read is audited, never the key."""
    ctx = _ctx(request)
    row = _one_device(ctx, ref)
    rows = ctx.store.recovery_keys(row["id"])
    if volume is not None:
        rows = [r for r in rows if r["volume"] == volume]
    if not every:
        rows = rows[:1]
    if not rows:
        ctx.store.audit(
            admin.actor,
            action_of(request),
            "failed",
            role=admin.role,
            target=row["id"],
            detail={"reason": "no recovery key escrowed", "volume": volume},
        )
        raise HTTPException(404, "no recovery key escrowed for this device")
    keys = [
        {
            "device": row["id"],
            "volume": r["volume"],
            "key": ctx.vault.open(
                "recovery", f"{row['id']}/{r['volume']}", r["ciphertext"]
            ).reveal(),
            "escrowedAt": wire({"at": r["escrowed_at"]})["at"],
        }
        for r in rows
    ]
    _audit(request, admin, row["id"], volumes=[r["volume"] for r in rows])
    return keys if every else keys[0]


# -- admin tokens --------------------------------------------------------------------------
class NewToken(StrictBody):
    role: str = Field(pattern="^(" + "|".join(ALL_ROLES) + ")$")
    name: str = ""
    expiresAt: str | None = Field(None, description="RFC 3339; the token is refused after it")
    owner: str | None = Field(
        None, max_length=100, description="the console account (person) the token belongs to"
    )
    ownerPassword: str | None = Field(
        None, max_length=1024, description="with owner: that account's password"
    )
    ownerTotp: str | None = Field(
        None, max_length=10, description="with owner: its authenticator code, when it has one"
    )


def _check_owner(request: Request, admin: Admin, body: NewToken) -> str:
    """The account a new token will belong to, once its owner proved it is them: the
    account's password (and TOTP code), so no administrator mints a token in a colleague's
    name. Refusals are audited and count as failed sign-ins of that account."""
    from jcstate.server.admins import AdminAccounts, totp_step, verify_password
    from jcstate.server.roles import allows

    ctx = _ctx(request)
    accounts = AdminAccounts(ctx.store)
    owner = body.owner or ""

    def refuse(status: int, reason: str) -> HTTPException:
        ctx.store.audit(
            admin.actor,
            action_of(request),
            "refused",
            role=admin.role,
            target=owner,
            detail={"owner": owner, "reason": reason},
        )
        return HTTPException(status, reason)

    row = accounts.get(owner)
    if row is None:
        raise refuse(422, f"no console account named {owner!r} (jcstate admin list; admin add)")
    if not allows(row["role"], body.role):
        raise refuse(
            422, f"{owner} is a {row['role']}: a token of theirs can be at most {row['role']}"
        )
    throttled = accounts.throttled(owner, "api")
    if throttled:
        raise refuse(429, throttled)
    if not body.ownerPassword or not verify_password(body.ownerPassword, row["password_hash"]):
        accounts.note_failure(owner, "api")
        raise refuse(403, f"wrong password for {owner}: only they can create a token of theirs")
    if row.get("totp_sealed"):
        secret = ctx.vault.open("admin-totp", owner, row["totp_sealed"])
        step = totp_step(secret.reveal(), body.ownerTotp or "", time.time())
        if step is None or not accounts.use_totp_step(owner, step):
            accounts.note_failure(owner, "api")
            raise refuse(
                403,
                f"{owner} has an authenticator app: give its current code (--totp); "
                "a code is accepted once",
            )
    return owner


def _token_view(row: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    if row.get("revoked_at") is not None:
        state = "revoked"
    elif row.get("expires_at") is not None and row["expires_at"] <= now:
        state = "expired"
    else:
        state = "live"
    keys = (
        "id",
        "name",
        "role",
        "owner",
        "created_at",
        "created_by",
        "last_used_at",
        "expires_at",
    )
    return wire(
        {**{k: row.get(k) for k in keys}, "revoked_at": row.get("revoked_at"), "state": state}
    )


@router.get("/tokens")
def list_tokens(request: Request, admin: Admin = ADMINISTER) -> list[dict[str, Any]]:
    """Tokens (never their secrets: only hashes are stored)."""
    return [_token_view(r) for r in _ctx(request).store.list_tokens()]


@router.post("/tokens", status_code=201, responses=errors(422))
def create_token(body: NewToken, request: Request, admin: Admin = ADMINISTER) -> dict[str, Any]:
    """A new token; its secret is in this response only."""
    expires = None
    if body.expiresAt is not None:
        try:
            expires = from_rfc3339(body.expiresAt)
        except ValueError:
            raise HTTPException(
                422, f"expiresAt {body.expiresAt!r} is not an RFC 3339 time"
            ) from None
        if expires <= time.time():
            raise HTTPException(422, f"expiresAt {body.expiresAt} is in the past")
    if body.owner is None and (body.ownerPassword is not None or body.ownerTotp is not None):
        raise HTTPException(422, "ownerPassword and ownerTotp go with owner")
    owner = _check_owner(request, admin, body) if body.owner is not None else None
    row, plain = _ctx(request).store.create_token(
        body.name or body.role, body.role, admin.token_id, expires, owner=owner
    )
    extra = {"owner": owner} if owner else {}
    _audit(request, admin, row["id"], role=body.role, name=row["name"], **extra)
    return {**_token_view(row), "token": plain}


@router.delete("/tokens/{token_id}")
def revoke_token(token_id: str, request: Request, admin: Admin = ADMINISTER) -> dict[str, Any]:
    """Revoke a token at once."""
    if not _ctx(request).store.revoke_token(token_id):
        raise HTTPException(404, "no such live token")
    _audit(request, admin, token_id)
    return {"id": token_id, "revoked": True}


# -- connect keys --------------------------------------------------------------------------
class NewConnectKey(StrictBody):
    name: str = ""
    autoApprove: bool = True
    labels: dict[str, str] = Field(default_factory=dict)


@router.get("/connect-keys")
def list_connect_keys(request: Request, admin: Admin = ADMINISTER) -> list[dict[str, Any]]:
    """Connect keys (not secrets: a key only admits a device)."""
    return [wire(r) for r in _ctx(request).store.list_connect_keys()]


@router.post("/connect-keys", status_code=201)
def create_connect_key(
    body: NewConnectKey, request: Request, admin: Admin = ADMINISTER
) -> dict[str, Any]:
    """A new connect key; devices enrolled with it get its labels."""
    row = _ctx(request).store.create_connect_key(
        body.name or "connect key", auto_approve=body.autoApprove, labels=body.labels
    )
    _audit(request, admin, row["id"], autoApprove=body.autoApprove)
    return wire(row)


@router.delete("/connect-keys/{key_id}")
def revoke_connect_key(key_id: str, request: Request, admin: Admin = ADMINISTER) -> dict[str, Any]:
    """Revoke a connect key: new enrollments with it are refused at once."""
    if not _ctx(request).store.revoke_connect_key(key_id):
        raise HTTPException(404, "no such live connect key")
    _audit(request, admin, key_id)
    return {"id": key_id, "revoked": True}


# -- secrets held by the server ------------------------------------------------------------
def _totp_devices(ctx: Any, user: str) -> list[dict[str, Any]]:
    """Active devices whose current document lists ``user`` in ``sshMfa.users``."""
    return _totp_users(ctx).get(user, [])


def _totp_users(ctx: Any) -> dict[str, list[dict[str, Any]]]:
    """User → the active devices whose current document lists them in ``sshMfa.users``,
    each with whether it has applied that document (so holds the current secret: acknowledged
    by its report, not inferred). One pass over the fleet, with the renderings the work route
    shares (a fleet selected by labels renders a handful of documents, not one per device)."""
    from jcstate.server.render import needed_secrets

    serving = ctx.serving()
    out: dict[str, list[dict[str, Any]]] = {}
    if serving.revision is None:
        return out
    # full rows: a rendering is cached by etag, which leaves out the facts templates may read
    rows, _ = ctx.store.query_devices(status="active")
    for row in rows:
        rendered = ctx.renderer.for_device(row, serving.of(row["id"]))
        if rendered.document is None:
            continue
        users = needed_secrets(rendered.document.get("spec") or {})[0]
        applied = row["applied_etag"] is not None and row["applied_etag"] == rendered.etag
        for user in users:
            out.setdefault(user, []).append(
                {"id": row["id"], "hostname": row["hostname"], "applied": applied}
            )
    return out


def _managed_by_policy(ctx: Any, user: str) -> bool:
    """Whether a policy of a revision devices are sent lists ``user`` in ``sshMfa.users``:
    the fleet's and, during a staged rollout, the canaries' (never an aborted revision, which
    may be the newest)."""
    serving = ctx.serving()
    for rev in {serving.revision, serving.canary_revision} - {None}:
        try:
            repo = ctx.renderer.repo(rev)
        except JcstateError:
            continue
        for policy in repo.policies:
            mfa = (policy.spec or {}).get("sshMfa") or {}
            if user in (mfa.get("users") or []):
                return True
    return False


@router.get("/totp")
def list_totp(request: Request, admin: Admin = READ) -> list[dict[str, Any]]:
    """Users with a TOTP secret on the server (never the secrets): when enrolled, and which
    devices hold the current secret (``devices``: applied it) or are still to (``pending``)."""
    ctx = _ctx(request)
    out = []
    holders = _totp_users(ctx)
    for row in ctx.store.secret_names("totp"):
        devices = holders.get(row["name"], [])
        out.append(
            wire(
                {
                    "user": row["name"],
                    "enrolledAt": row["updated_at"],
                    "devices": [
                        {"id": d["id"], "hostname": d["hostname"]} for d in devices if d["applied"]
                    ],
                    "pending": [
                        {"id": d["id"], "hostname": d["hostname"]}
                        for d in devices
                        if not d["applied"]
                    ],
                }
            )
        )
    return out


@router.post("/totp/{user}", status_code=201, responses=errors(409))
def enroll_totp(
    user: str,
    request: Request,
    rotate: bool = Query(False, description="replace the user's existing secret"),
    force: bool = Query(False, description="enroll a user no policy lists in sshMfa.users"),
    admin: Admin = MANAGE,
) -> dict[str, Any]:
    """Create a user's TOTP secret (``rotate``: replace it); it is returned in this response
    only, and reaches only devices whose document lists the user in ``sshMfa.users``
    (``devices`` in the answer)."""
    ctx = _ctx(request)
    exists = ctx.store.sealed_secret("totp", user) is not None
    if exists and not rotate:
        raise HTTPException(
            409,
            f"{user} already has a TOTP secret; rotate=true replaces it (the user must scan the "
            "new code, and every device holding the old one gets the new one)",
        )
    if not exists and not force and not _managed_by_policy(ctx, user):
        raise HTTPException(
            409,
            f"no policy lists {user} in sshMfa.users, so no device would get the secret; "
            "force=true enrolls anyway (push a policy that lists the user)",
        )
    secret = base64.b32encode(pysecrets.token_bytes(20)).decode().rstrip("=")
    ctx.store.set_secret("totp", user, ctx.vault.seal("totp", user, Secret(secret)))
    ctx.waiters.wake_threadsafe("all")
    _audit(request, admin, user, rotated=exists)
    devices = [{"id": d["id"], "hostname": d["hostname"]} for d in _totp_devices(ctx, user)]
    return {"user": user, "secret": secret, "rotated": exists, "devices": devices}


@router.delete("/totp/{user}", responses=errors(404))
def delete_totp(user: str, request: Request, admin: Admin = MANAGE) -> dict[str, Any]:
    """Forget a user's TOTP secret; ``devices`` lists those whose document still asks for it
    (their next run removes the secret file and reports the missing secret as a failure)."""
    ctx = _ctx(request)
    if not ctx.store.delete_secret("totp", user):
        raise HTTPException(404, "no TOTP secret for this user")
    ctx.waiters.wake_threadsafe("all")
    _audit(request, admin, user)
    devices = [{"id": d["id"], "hostname": d["hostname"]} for d in _totp_devices(ctx, user)]
    return {"user": user, "deleted": True, "devices": devices}


class Password(StrictBody):
    password: str = Field(min_length=1)


@router.put("/passwords/{ref}")
def set_password(
    ref: str, body: Password, request: Request, admin: Admin = ADMINISTER
) -> dict[str, Any]:
    """Store a password named by ``password.secretRef``; sent only to devices that need it."""
    ctx = _ctx(request)
    ctx.store.set_secret("passwords", ref, ctx.vault.seal("passwords", ref, Secret(body.password)))
    ctx.waiters.wake_threadsafe("all")
    _audit(request, admin, ref)
    return {"ref": ref, "stored": True}


# -- audit ---------------------------------------------------------------------------------
def _time_param(name: str, text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return from_rfc3339(text)
    except ValueError:
        raise HTTPException(422, f"{name} {text!r} is not an RFC 3339 time or date") from None


@router.get("/audit", responses=errors(422))
def list_audit(
    request: Request,
    limit: int = 200,
    actor: str | None = Query(None, description="token name or id, or an actor as recorded"),
    action: str | None = Query(None, description="command.erase, or a family: command"),
    device: str | None = Query(None, description="the target device (id or hostname)"),
    outcome: str | None = Query(None, description="ok, denied, refused, failed"),
    since: str | None = Query(None, description="RFC 3339", json_schema_extra=RFC3339),
    until: str | None = Query(None, description="RFC 3339", json_schema_extra=RFC3339),
    admin: Admin = ADMINISTER,
) -> list[dict[str, Any]]:
    """The newest audit entries (admin actions and refused attempts), filtered: actions in
    words, actors by name, with the outcome and its reason."""
    from jcstate.server.audit import audit_view, routes_named

    store = _ctx(request).store
    names = store.token_names()
    actors = None
    if actor is not None:
        actors = [actor, f"token:{actor}"]
        actors += [f"token:{i}" for i, n in names.items() if n == actor]
    target = None
    if device is not None:
        found = store.devices_named(device)
        target = found[0]["id"] if len(found) == 1 else device
    rows = store.list_audit(
        min(max(limit, 1), 10000),
        actors=actors,
        actions=None if action is None else routes_named(action),
        target=target,
        outcome=outcome,
        since=_time_param("since", since),
        until=_time_param("until", until),
    )
    return [audit_view(r, names) for r in rows]
