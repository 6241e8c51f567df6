"""Routes of a staged rollout (``jcstate rollout status|promote|abort``).

A rollout starts with a push (``POST /api/v1/revisions`` with ``canary``); these routes show
it and end it by hand. Promote and abort change what devices are sent, so they need the role
a push needs (manager); the status is read-only. See :mod:`jcstate.server.rollout`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from jcstate.server import rollout
from jcstate.server.auth import Admin, action_of, require
from jcstate.server.contract import StrictBody
from jcstate.server.views import errors, wire

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["admin"])

READ = Depends(require("read-only"))
MANAGE = Depends(require("manager"))


class EndRollout(StrictBody):
    message: str = ""
    force: bool = False  # promote: a halted rollout too


class AbortRollout(StrictBody):
    message: str = ""


@router.get("/rollout", responses=errors(404))
async def rollout_status(request: Request, admin: Admin = READ) -> dict[str, Any]:
    """The newest staged rollout: its state, waves with per-wave counts (pending, converged,
    failed, offline, against the revision each device is sent now), its canaries and what it
    waits for."""
    ctx = request.app.state.ctx
    view = await run_in_threadpool(rollout.status, ctx)
    if view is None:
        raise HTTPException(404, "no staged rollout yet (jcstate push REPO --canary 5% starts one)")
    return wire(view)


def _open_or_409(ctx: Any) -> dict[str, Any]:
    ro = rollout.open_rollout(ctx.store)
    if ro is None:
        raise HTTPException(409, "no rollout is in progress (jcstate rollout status)")
    return ro


@router.post("/rollout/promote", responses=errors(409))
def promote_rollout(body: EndRollout, request: Request, admin: Admin = MANAGE) -> dict[str, Any]:
    """Send the rollout's revision to every device now, without waiting for the canaries;
    a halted rollout only with ``force``."""
    ctx = request.app.state.ctx
    ro = _open_or_409(ctx)
    if ro["state"] == "halted" and not body.force:
        raise HTTPException(
            409,
            f"rollout {ro['id']} halted ({ro['reason']}); force=true sends its revision to "
            "every device anyway, abort sends every device back",
        )
    reason = body.message or f"promoted by hand ({admin.name})"
    if not rollout.promote(ctx.store, ro["id"], admin.actor, reason, force=body.force):
        raise HTTPException(409, "the rollout changed meanwhile (jcstate rollout status)")
    ctx.waiters.wake_threadsafe("all")
    _audit(ctx, request, admin, ro, forced=ro["state"] == "halted")
    return wire(rollout.status(ctx) or {})


@router.post("/rollout/abort", responses=errors(409))
def abort_rollout(body: AbortRollout, request: Request, admin: Admin = MANAGE) -> dict[str, Any]:
    """Send every device, canaries included, back to the revision before the rollout's; the
    aborted revision is never sent again (history keeps it)."""
    ctx = request.app.state.ctx
    ro = _open_or_409(ctx)
    reason = body.message or f"aborted by hand ({admin.name})"
    if not rollout.abort(ctx.store, ro["id"], admin.actor, reason):
        raise HTTPException(409, "the rollout changed meanwhile (jcstate rollout status)")
    ctx.waiters.wake_threadsafe("all")
    _audit(ctx, request, admin, ro)
    return wire(rollout.status(ctx) or {})


def _audit(ctx: Any, request: Request, admin: Admin, ro: dict[str, Any], **detail: Any) -> None:
    ctx.store.audit(
        admin.actor,
        action_of(request),
        "ok",
        role=admin.role,
        target=str(ro["revision"]),
        detail={"rollout": ro["id"], "was": ro["state"], **detail},
    )
