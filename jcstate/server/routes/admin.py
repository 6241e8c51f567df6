"""Routes for admins (bearer tokens with a role): policies, devices, tokens, keys, secrets, audit.

The role each route needs is written next to it (``require(...)``) and mirrored in the checked-in
authorization table ``tests/server/authz_matrix.yaml``; a route without a row fails the tests.
Every change lands in the audit log; refusals are logged by :mod:`jcstate.server.auth`.
"""

from __future__ import annotations

import base64
import secrets as pysecrets
import time
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import Field

from jcstate.errors import DocumentError, JcstateError
from jcstate.secret import Secret
from jcstate.server.auth import Admin, action_of, require
from jcstate.server.blast import account_changes
from jcstate.server.contract import StrictBody
from jcstate.server.render import repo_from_files
from jcstate.server.roles import ROLES

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["admin"])

READ = Depends(require("read-only"))
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
def whoami(admin: Admin = READ) -> dict[str, str]:
    """The calling token's id, name and role."""
    return {"id": admin.token_id, "name": admin.name, "role": admin.role}


# -- policies ------------------------------------------------------------------------------
class Push(StrictBody):
    files: dict[str, str] = Field(description="repo path → file text")
    message: str = ""
    dryRun: bool = False


@router.post("/revisions")
def push(body: Push, request: Request, admin: Admin = MANAGE) -> dict[str, Any]:
    """Validate a repo and store it as the new revision; ``dryRun`` reports the blast radius."""
    ctx = _ctx(request)
    try:
        repo = repo_from_files(body.files)
    except DocumentError as exc:
        raise HTTPException(422, {"problems": [str(p) for p in exc.problems]}) from None
    if body.dryRun:
        return {"revision": None, "devices": _blast_radius(ctx, repo)}
    rev = ctx.store.add_revision(body.files, admin.actor, body.message)
    ctx.renderer.remember(rev, repo)
    ctx.waiters.wake_threadsafe("all")
    _audit(request, admin, str(rev), files=len(body.files), message=body.message)
    return {"revision": rev, "devices": []}


def _blast_radius(ctx: Any, repo: Any) -> list[dict[str, Any]]:
    out = []
    for device in ctx.store.list_devices():
        if device["status"] != "active":
            continue
        entry: dict[str, Any] = {"id": device["id"], "hostname": device["hostname"]}
        try:
            doc = ctx.renderer.document(repo, device)
            entry["policies"] = list(getattr(doc, "policies", []) or [])
            entry["changes"] = account_changes(doc.spec, device.get("facts"))
        except JcstateError as exc:
            entry["error"] = str(exc)
        out.append(entry)
    return out


@router.get("/revisions")
def list_revisions(request: Request, admin: Admin = READ) -> list[dict[str, Any]]:
    """Revisions, newest first (without their files)."""
    return _ctx(request).store.list_revisions()


@router.get("/revisions/{revision}")
def show_revision(
    request: Request,
    revision: int = Path(ge=0, le=2**63 - 1),  # a database integer
    admin: Admin = READ,
) -> dict[str, Any]:
    """One revision with its files."""
    row = _ctx(request).store.revision(revision)
    if row is None:
        raise HTTPException(404, "no such revision")
    return row


# -- devices -------------------------------------------------------------------------------
def _device_summary(
    ctx: Any, row: dict[str, Any], power: dict[str, tuple[str, str]] | None = None
) -> dict[str, Any]:
    """``power``: the queue's power states of many devices at once (listings)."""
    from jcstate.server.commands import activity

    now = time.time()
    last_seen = ctx.store.seen_at(row)
    online = last_seen is not None and now - last_seen < ctx.online_after
    if power is None:
        power = ctx.queue.power_states([row["id"]])
    in_flight = power.get(row["id"])
    gen = ctx.generation()
    current = None
    if row["status"] == "active":
        current = ctx.renderer.etag(row, gen)
    return {
        "id": row["id"],
        "hostname": row["hostname"],
        "os": row["os"],
        "osVersion": row["os_version"],
        "arch": row["arch"],
        "agentVersion": row["agent_version"],
        "labels": row["labels"],
        "status": row["status"],
        # after a restart/shutdown/erase: restarting, shutting down, shut down, erasing, erased
        "activity": (activity(*in_flight, online) or None) if in_flight else None,
        "online": online,
        "enrolledAt": row["enrolled_at"],
        "lastSeen": last_seen,
        "lastReportAt": row["last_report_at"],
        "lastReportOk": row["last_report_ok"],
        # drift: the device has not converged on its current document, or its last run changed
        # something (the system had moved away from the policy)
        "drift": None
        if row["last_report_at"] is None
        else bool(
            row["applied_etag"] != current
            or not row["last_report_ok"]
            or row["last_report_changed"]
        ),
    }


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


@router.get("/devices")
def list_devices(request: Request, admin: Admin = READ) -> list[dict[str, Any]]:
    """Every enrolled device with online state, last report and drift."""
    ctx = _ctx(request)
    power = ctx.queue.power_states()
    return [_device_summary(ctx, r, power) for r in ctx.store.list_devices()]


@router.get("/devices/{ref}")
def show_device(ref: str, request: Request, admin: Admin = READ) -> dict[str, Any]:
    """One device (by id or hostname) with its facts, last report and newest commands."""
    from jcstate.server.commands import command_view

    ctx = _ctx(request)
    row = _one_device(ctx, ref)
    last = ctx.store.last_report(row["id"])
    return {
        **_device_summary(ctx, row),
        "facts": row["facts"],
        "lastReport": None if last is None else last["body"],
        "commands": [command_view(c) for c in ctx.queue.list(row["id"], limit=20)],
    }


@router.get("/devices/{ref}/document")
def device_document(ref: str, request: Request, admin: Admin = READ) -> dict[str, Any]:
    """The document the device is sent now, without its secrets."""
    ctx = _ctx(request)
    rendered = ctx.renderer.for_device(_one_device(ctx, ref), ctx.generation())
    return {
        "etag": rendered.etag,
        "revision": rendered.revision,
        "document": rendered.document,
        "error": rendered.error,
        "secrets": {k: sorted(v) for k, v in rendered.secrets.items()},
    }


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
            "escrowedAt": r["escrowed_at"],
        }
        for r in rows
    ]
    _audit(request, admin, row["id"], volumes=[r["volume"] for r in rows])
    return keys if every else keys[0]


# -- admin tokens --------------------------------------------------------------------------
class NewToken(StrictBody):
    role: str = Field(pattern="^(" + "|".join(ROLES) + ")$")
    name: str = ""


def _token_view(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row.get(k) for k in ("id", "name", "role", "created_at", "created_by", "revoked_at")}


@router.get("/tokens")
def list_tokens(request: Request, admin: Admin = ADMINISTER) -> list[dict[str, Any]]:
    """Tokens (never their secrets: only hashes are stored)."""
    return [_token_view(r) for r in _ctx(request).store.list_tokens()]


@router.post("/tokens", status_code=201)
def create_token(body: NewToken, request: Request, admin: Admin = ADMINISTER) -> dict[str, Any]:
    """A new token; its secret is in this response only."""
    row, plain = _ctx(request).store.create_token(body.name or body.role, body.role, admin.token_id)
    _audit(request, admin, row["id"], role=body.role)
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
    return _ctx(request).store.list_connect_keys()


@router.post("/connect-keys", status_code=201)
def create_connect_key(
    body: NewConnectKey, request: Request, admin: Admin = ADMINISTER
) -> dict[str, Any]:
    """A new connect key; devices enrolled with it get its labels."""
    row = _ctx(request).store.create_connect_key(
        body.name or "connect key", auto_approve=body.autoApprove, labels=body.labels
    )
    _audit(request, admin, row["id"], autoApprove=body.autoApprove)
    return row


@router.delete("/connect-keys/{key_id}")
def revoke_connect_key(key_id: str, request: Request, admin: Admin = ADMINISTER) -> dict[str, Any]:
    """Revoke a connect key: new enrollments with it are refused at once."""
    if not _ctx(request).store.revoke_connect_key(key_id):
        raise HTTPException(404, "no such live connect key")
    _audit(request, admin, key_id)
    return {"id": key_id, "revoked": True}


# -- secrets held by the server ------------------------------------------------------------
@router.get("/totp")
def list_totp(request: Request, admin: Admin = READ) -> list[dict[str, Any]]:
    """Users with a TOTP secret on the server (never the secrets)."""
    return _ctx(request).store.secret_names("totp")


@router.post("/totp/{user}", status_code=201)
def enroll_totp(user: str, request: Request, admin: Admin = MANAGE) -> dict[str, Any]:
    """Create (or replace) a user's TOTP secret; it is returned in this response only, and
    reaches only devices whose document lists the user in ``sshMfa.users``."""
    ctx = _ctx(request)
    secret = base64.b32encode(pysecrets.token_bytes(20)).decode().rstrip("=")
    ctx.store.set_secret("totp", user, ctx.vault.seal("totp", user, Secret(secret)))
    ctx.waiters.wake_threadsafe("all")
    _audit(request, admin, user)
    return {"user": user, "secret": secret}


@router.delete("/totp/{user}")
def delete_totp(user: str, request: Request, admin: Admin = MANAGE) -> dict[str, Any]:
    """Forget a user's TOTP secret."""
    if not _ctx(request).store.delete_secret("totp", user):
        raise HTTPException(404, "no TOTP secret for this user")
    _ctx(request).waiters.wake_threadsafe("all")
    _audit(request, admin, user)
    return {"user": user, "deleted": True}


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
@router.get("/audit")
def list_audit(
    request: Request, limit: int = 200, admin: Admin = ADMINISTER
) -> list[dict[str, Any]]:
    """The newest audit entries: admin actions and refused attempts."""
    return _ctx(request).store.list_audit(min(max(limit, 1), 10000))
