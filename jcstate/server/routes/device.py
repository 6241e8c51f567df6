"""Routes a device calls: enroll, its own record, long-poll for work, post a report, escrow a
FileVault recovery key.

A device can name no other device in any of these: every route acts on the device whose key
signed the request, so reading another device's document, commands or secrets is impossible by
construction.
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from jcstate.secret import Secret
from jcstate.server.auth import device_caller, verify_signature
from jcstate.server.longpoll import answer_work
from jcstate.server.views import wire

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["device"])


class Enrollment(BaseModel):
    """What an agent sends once, signed with the key pair it just made."""

    connectKey: str
    publicKey: str = Field(description="raw Ed25519 public key, base64")
    hostname: str = Field(min_length=1, max_length=255)
    os: str = Field(pattern="^(linux|darwin|windows)$")
    osVersion: str = ""
    arch: str = ""
    agentVersion: str = ""


class Report(BaseModel):
    """A converge's outcome; ``reportId`` is the agent's, so a resend is stored once.

    ``kind: plan``: a plan between converges (nothing applied): it only updates the device's
    drift and the changes it has not applied (docs/state-model.md)."""

    reportId: str = Field(min_length=8, max_length=64)
    kind: Literal["converge", "plan"] = "converge"
    etag: str | None = None
    ok: bool
    changed: bool = False
    report: dict[str, Any] = Field(default_factory=dict)
    facts: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None


def _device_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "hostname": row["hostname"],
        "status": row["status"],
        "labels": row["labels"],
    }


@router.post("/enroll", status_code=201)
async def enroll(request: Request) -> dict[str, Any]:
    """Admit a device with a connect key; the request is signed by the new key (possession)."""
    ctx = request.app.state.ctx
    try:
        data = Enrollment.model_validate_json(await request.body())
    except ValueError as exc:
        raise HTTPException(422, f"bad enrollment: {exc}") from None
    await verify_signature(request, data.publicKey, "")
    nonce = request.headers["X-Jcstate-Nonce"]
    now = time.time()
    if not await run_in_threadpool(ctx.store.use_nonce, "enroll", nonce, now + 600):
        raise HTTPException(401, "replayed request")
    key_row = await run_in_threadpool(ctx.store.connect_key, data.connectKey)
    if key_row is None:
        await run_in_threadpool(
            ctx.store.audit,
            f"host:{data.hostname}",
            "POST /api/v1/enroll",
            "denied",
            detail={"reason": "unknown or revoked connect key"},
        )
        raise HTTPException(403, "unknown or revoked connect key")
    device, created = await run_in_threadpool(
        lambda: ctx.store.enroll(public_key=data.publicKey, key_row=key_row, info=data.model_dump())
    )
    if created:
        await run_in_threadpool(
            ctx.store.audit,
            f"device:{device['id']}",
            "POST /api/v1/enroll",
            "ok",
            target=device["id"],
            detail={"hostname": data.hostname, "connectKey": key_row["id"]},
        )
    return _device_view(device)


@router.get("/device")
async def own_record(request: Request) -> dict[str, Any]:
    """The calling device's own record (also answers while it awaits approval)."""
    return _device_view(await device_caller(request, allow_pending=True))


class Work(BaseModel):
    """The answer to a work request."""

    etag: str
    revision: int | None
    document: dict[str, Any] | None
    secrets: dict[str, dict[str, str]]
    error: str | None
    commands: list[dict[str, Any]]


@router.get("/device/work", response_model=Work)
async def work(
    request: Request, etag: str = "", wait: float = 55.0, commands: int | None = None
) -> Response:
    """Long-poll: answer at once when the device's document differs from ``etag`` or a
    security command after ``commands`` (the highest ``seq`` the agent holds) is waiting, else
    hold the request up to ``wait`` seconds (at most 60) and answer within a second of a change.

    ``document`` is null when unchanged. ``commands`` lists the device's unfinished commands
    after the cursor, oldest first; an agent that sends no cursor is sent none.

    The server normally answers this route in :class:`jcstate.server.longpoll.LongPoll`, in
    front of FastAPI; this handler runs the same code when that is switched off.
    """
    device = await device_caller(request)
    ctx = request.app.state.ctx
    body = await answer_work(ctx, device, etag, wait, commands)
    assert body is not None  # only the raw path lets a push answer for it
    return Response(body, media_type="application/json")


@router.post("/device/reports")
async def post_report(request: Request) -> dict[str, Any]:
    """Store a report (plan, results, facts) once; acknowledge resends of the same report id."""
    ctx = request.app.state.ctx
    device = await device_caller(request)
    try:
        report = Report.model_validate(json.loads(await request.body()))
    except ValueError as exc:
        raise HTTPException(422, f"bad report: {exc}") from None
    stored = await run_in_threadpool(ctx.store.add_report, device["id"], report.model_dump())
    if stored and ctx.metrics is not None:
        ctx.metrics.converged(report.ok, report.changed)
    return {"ack": report.reportId, "duplicate": not stored}


class Escrowed(BaseModel):
    """A FileVault personal recovery key and the volume (LVGUUID) it unlocks, if known."""

    volume: str | None = Field(default=None, max_length=255)
    key: str = Field(min_length=1, max_length=1024, repr=False)


@router.post("/device/escrow")
async def escrow(request: Request) -> dict[str, Any]:
    """Store the calling device's recovery key, sealed by the vault; a resend replaces it.

    The key is never logged: the audit entry names the device and the volume only.
    """
    ctx = request.app.state.ctx
    device = await device_caller(request)
    try:
        data = Escrowed.model_validate(json.loads(await request.body()))
    except ValueError:
        # the validation message could quote the key: say only what is wrong in general
        raise HTTPException(422, "bad escrow: expected {volume: str|null, key: str}") from None
    volume = data.volume or ""
    key = Secret(data.key)
    sealed = ctx.vault.seal("recovery", f"{device['id']}/{volume}", key)
    at = await run_in_threadpool(ctx.store.set_recovery_key, device["id"], volume, sealed)
    await run_in_threadpool(
        ctx.store.audit,
        f"device:{device['id']}",
        "POST /api/v1/device/escrow",
        "ok",
        target=device["id"],
        detail={"volume": volume},
    )
    return wire({"device": device["id"], "volume": volume, "escrowedAt": at})
