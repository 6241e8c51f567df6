"""Routes a device calls: enroll, its own record, long-poll for work, post a report, escrow a
FileVault recovery key.

A device can name no other device in any of these: every route acts on the device whose key
signed the request, so reading another device's document, commands or secrets is impossible by
construction.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from jcstate.secret import Secret
from jcstate.server.auth import DEVICE, DEVICE_OR_PENDING, verify_signature
from jcstate.server.contract import StrictBody, authenticates
from jcstate.server.longpoll import answer_work
from jcstate.server.views import wire

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1", tags=["device"])


class Enrollment(StrictBody):
    """What an agent sends once, signed with the key pair it just made."""

    connectKey: str
    publicKey: str = Field(description="raw Ed25519 public key, base64")
    hostname: str = Field(min_length=1, max_length=255)
    os: str = Field(pattern="^(linux|darwin|windows)$")
    osVersion: str = ""
    arch: str = ""
    agentVersion: str = ""


class Report(StrictBody):
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


def _address(request: Request) -> str:
    return request.client.host if request.client else ""


async def _refuse(request: Request, data: Enrollment | None, status: int, reason: str) -> None:
    """Audit a refused enrollment (who tried: the host name it gave, and its address)."""
    host = data.hostname if data is not None else "?"
    await run_in_threadpool(
        request.app.state.ctx.store.audit,
        f"host:{host}"[:200],
        "POST /api/v1/enroll",
        "denied",
        detail={"reason": reason, "address": _address(request), "status": status},
    )


@authenticates
async def enroll_rate(request: Request) -> None:
    """Enrollments per client address (before the body is read): 429 with Retry-After."""
    try:
        request.app.state.ctx.enroll_by_address.check(_address(request), "from this address")
    except HTTPException as exc:
        await _refuse(request, None, 429, str(exc.detail))
        raise


@router.post("/enroll", status_code=201, dependencies=[Depends(enroll_rate)])
async def enroll(data: Enrollment, request: Request) -> dict[str, Any]:
    """Admit a device with a connect key; the request is signed by the new key (possession).

    Refused and audited: a signature by another key than ``publicKey`` (401), a replayed
    request (401), an unknown or revoked connect key (403), too many enrollments from one
    address or with one connect key (429 with ``Retry-After``)."""
    ctx = request.app.state.ctx
    try:
        ctx.enroll_by_key.check(data.connectKey, "with this connect key")
    except HTTPException as exc:
        await _refuse(request, data, 429, str(exc.detail))
        raise
    try:
        await verify_signature(request, data.publicKey, "")
    except HTTPException as exc:
        await _refuse(request, data, exc.status_code, str(exc.detail))
        raise
    nonce = request.headers["X-Jcstate-Nonce"]
    now = time.time()
    if not await run_in_threadpool(ctx.store.use_nonce, "enroll", nonce, now + 600):
        await _refuse(request, data, 401, "replayed request")
        raise HTTPException(401, "replayed request")
    key_row = await run_in_threadpool(ctx.store.connect_key, data.connectKey)
    if key_row is None:
        await _refuse(request, data, 403, "unknown or revoked connect key")
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
async def own_record(device: dict[str, Any] = DEVICE_OR_PENDING) -> dict[str, Any]:
    """The calling device's own record (also answers while it awaits approval)."""
    return _device_view(device)


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
    request: Request,
    etag: str = "",
    wait: float = 55.0,
    commands: int | None = Query(None, ge=0, le=2**63 - 1),
    device: dict[str, Any] = DEVICE,
) -> Response:
    """Long-poll: answer at once when the device's document differs from ``etag`` or a
    security command after ``commands`` (the highest ``seq`` the agent holds) is waiting, else
    hold the request up to ``wait`` seconds (at most 60) and answer within a second of a change.

    ``document`` is null when unchanged. ``commands`` lists the device's unfinished commands
    after the cursor, oldest first; an agent that sends no cursor is sent none.

    The server normally answers this route in :class:`jcstate.server.longpoll.LongPoll`, in
    front of FastAPI; this handler runs the same code when that is switched off.
    """
    ctx = request.app.state.ctx
    body = await answer_work(ctx, device, etag, wait, commands)
    assert body is not None  # only the raw path lets a push answer for it
    return Response(body, media_type="application/json")


@router.post("/device/reports")
async def post_report(
    report: Report, request: Request, device: dict[str, Any] = DEVICE
) -> dict[str, Any]:
    """Store a report (plan, results, facts) once; acknowledge resends of the same report id."""
    ctx = request.app.state.ctx
    stored = await run_in_threadpool(ctx.store.add_report, device["id"], report.model_dump())
    if stored and ctx.metrics is not None:
        ctx.metrics.converged(report.ok, report.changed)
    if stored and report.kind == "converge":
        serving = await ctx.current_serving()
        if device["id"] in serving.canaries:  # a staged rollout's canary: halt or promote now
            from jcstate.server import rollout

            try:
                if await run_in_threadpool(rollout.check, ctx):
                    ctx.waiters.wake_threadsafe("all")
            except Exception as exc:  # the report is stored; the background check retries
                log.warning("checking the staged rollout after a report failed: %s", exc)
    return {"ack": report.reportId, "duplicate": not stored}


class Escrowed(StrictBody):
    """A FileVault personal recovery key and the volume (LVGUUID) it unlocks, if known."""

    volume: str | None = Field(default=None, max_length=255)
    key: str = Field(min_length=1, max_length=1024, repr=False)


@router.post("/device/escrow")
async def escrow(
    data: Escrowed, request: Request, device: dict[str, Any] = DEVICE
) -> dict[str, Any]:
    """Store the calling device's recovery key, sealed by the vault; a resend replaces it.

    The key is never logged: the audit entry names the device and the volume only (a 422
    never quotes the input: jcstate.server.contract.validation_failed).
    """
    ctx = request.app.state.ctx
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
