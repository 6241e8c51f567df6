"""Who is calling: an admin token with a role, or a device proving its key on every request.

Admins send ``Authorization: Bearer <token>``; the server keeps only the token's SHA-256. Devices
sign each request (:mod:`jcstate.agent.signing`); the server keeps only the public key, refuses
a date more than ``MAX_SKEW`` seconds off and a nonce it has seen, so a captured request cannot
be replayed. Every refusal on an admin route lands in the audit log.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from jcstate.agent import signing
from jcstate.server.contract import authenticates
from jcstate.server.roles import allows
from jcstate.server.store import Store

__all__ = [
    "DEVICE",
    "DEVICE_OR_PENDING",
    "Admin",
    "action_of",
    "authenticate_device",
    "check_signature",
    "device_caller",
    "require",
    "verify_signature",
]


@dataclass(frozen=True)
class Admin:
    """An authenticated admin token."""

    token_id: str
    name: str
    role: str
    owner: str | None = None  # the console account the token belongs to (tokens.owner)

    @property
    def actor(self) -> str:
        return f"token:{self.token_id}"

    @property
    def person(self) -> str | None:
        """The person acting (a console account's name), or None for a token of nobody."""
        return self.owner


def action_of(request: Request) -> str:
    """``METHOD /route/{template}``: the audit log names routes, not ids typed into them."""
    route = request.scope.get("route")
    return f"{request.method} {getattr(route, 'path', request.url.path)}"


def require(needed: str, *also: str) -> Any:
    """A dependency admitting admin tokens whose role is at least ``needed`` on the ladder,
    or one of the side roles ``also`` (:mod:`jcstate.server.roles`)."""

    def dependency(request: Request) -> Admin:
        store: Store = request.app.state.ctx.store
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        row = store.token_by_secret(token.strip()) if scheme.lower() == "bearer" and token else None
        now = time.time()
        if row is None:
            store.audit(
                "anonymous", action_of(request), "denied", detail={"reason": "no valid token"}
            )
            raise HTTPException(
                401, "a valid admin token is required", headers={"WWW-Authenticate": "Bearer"}
            )
        dead = _dead(row, now)
        if dead:
            # recorded as that token: an investigation asks who kept trying
            store.audit(
                f"token:{row['id']}",
                action_of(request),
                "denied",
                role=row["role"],
                target=request.path_params.get("ref"),
                detail={"reason": dead[0]},
            )
            raise HTTPException(401, dead[1], headers={"WWW-Authenticate": "Bearer"})
        store.token_used(row["id"], now)
        admin = Admin(row["id"], row["name"], row["role"], row.get("owner"))
        if not allows(admin.role, needed, also):
            store.audit(
                admin.actor,
                action_of(request),
                "denied",
                role=admin.role,
                target=request.path_params.get("ref"),  # the device an action was aimed at
                detail={"reason": f"needs role {needed}"},
            )
            raise HTTPException(403, f"this action needs the {needed} role")
        return admin

    dependency.__name__ = "require_" + "_or_".join(r.replace("-", "_") for r in (needed, *also))
    return authenticates(dependency)


def _dead(row: dict[str, Any], now: float) -> tuple[str, str] | None:
    """(audit reason, message for the caller) for a revoked or expired token; None if live."""
    from jcstate.server.views import rfc3339

    what = f"token {row['id']} ({row['name']})"
    if row.get("revoked_at") is not None:
        return (
            "revoked",
            f"{what} was revoked at {rfc3339(row['revoked_at'])}: "
            "ask an administrator for a new token",
        )
    if row.get("expires_at") is not None and row["expires_at"] <= now:
        return (
            "expired",
            f"{what} expired at {rfc3339(row['expires_at'])}: "
            "ask an administrator for a new token (jcstate token create --expires 30d)",
        )
    return None


async def verify_signature(request: Request, public_key: str, device_id: str) -> bytes:
    """Check the request's signature, date and nonce; return the body. Raises 401."""
    body = await request.body()
    target = request.url.path
    if request.url.query:
        target += "?" + request.url.query
    check_signature(request.method, target, request.headers, body, public_key, device_id)
    return body


def check_signature(
    method: str,
    target: str,
    headers: Mapping[str, str],
    body: bytes,
    public_key: str,
    device_id: str,
) -> None:
    """Check a request's signature over ``method``, ``target`` (path?query) and ``body``,
    its date and the nonce's length. Raises 401."""
    date, nonce, sig = (
        headers.get(signing.DATE),
        headers.get(signing.NONCE),
        headers.get(signing.SIGNATURE),
    )
    if not (date and nonce and sig) or len(nonce) > 64:
        raise HTTPException(401, "request is not signed")
    try:
        skew = abs(time.time() - int(date))
    except ValueError:
        raise HTTPException(401, "bad request date") from None
    if skew > signing.MAX_SKEW:
        raise HTTPException(401, f"request date is {int(skew)} s off the server's clock")
    digest = hashlib.sha256(body).hexdigest()
    message = signing.message_for(method, target, digest, date, nonce, device_id)
    if not signing.verify(public_key, sig, message):
        raise HTTPException(401, "bad request signature")


async def device_caller(request: Request, *, allow_pending: bool = False) -> dict[str, Any]:
    """The device that signed this request (its row). 401 unknown or bad, 403 revoked/pending."""
    body = await request.body()
    target = request.url.path
    if request.url.query:
        target += "?" + request.url.query
    return await authenticate_device(
        request.app.state.ctx,
        request.method,
        target,
        request.headers,
        body,
        allow_pending=allow_pending,
    )


async def authenticate_device(
    ctx: Any,
    method: str,
    target: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    allow_pending: bool = False,
) -> dict[str, Any]:
    """The device whose key signed this request, its row read fresh; the nonce is spent.

    401 for an unknown device, a bad signature or a replay; 403 for a revoked device, or a
    pending one unless ``allow_pending``.
    """
    try:
        return await _authenticate_device(
            ctx, method, target, headers, body, allow_pending=allow_pending
        )
    except HTTPException as exc:
        # every refusal is audited, with the route's template when the path names an object
        device_id = headers.get(signing.DEVICE, "")[:64]
        if not (device_id.isascii() and device_id.isprintable()):
            device_id = "?"
        path = target.split("?", 1)[0]
        if path.startswith("/api/v1/device/releases/"):
            path = "/api/v1/device/releases/{sha256}"
        await run_in_threadpool(
            ctx.store.audit,
            f"device:{device_id}" if device_id else "anonymous",
            f"{method} {path}",
            "denied",
            target=device_id or None,
            detail={"reason": str(exc.detail)},
        )
        raise


async def _authenticate_device(
    ctx: Any,
    method: str,
    target: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    allow_pending: bool,
) -> dict[str, Any]:
    store: Store = ctx.store
    device_id = headers.get(signing.DEVICE, "")
    # a device's public key never changes, so it is cached; its status is read fresh below
    public_key = ctx.public_keys.get(device_id)
    if public_key is None and device_id:
        public_key = await run_in_threadpool(store.public_key, device_id)
        if public_key is not None:
            ctx.public_keys[device_id] = public_key
    if public_key is None:
        raise HTTPException(401, "unknown device")
    check_signature(method, target, headers, body, public_key, device_id)
    now = time.time()
    nonce = headers[signing.NONCE]
    device = await run_in_threadpool(
        store.accept_request, device_id, nonce, now + 2 * signing.MAX_SKEW, now
    )
    if device is None:
        raise HTTPException(401, "replayed request")
    if device["status"] == "revoked":
        raise HTTPException(403, "this device has been revoked")
    if device["status"] == "pending" and not allow_pending:
        raise HTTPException(403, "this device awaits an administrator's approval")
    return device


async def signed_device(request: Request) -> dict[str, Any]:
    """The active device that signed this request (a dependency: ``device = DEVICE``)."""
    return await device_caller(request)


async def signed_device_or_pending(request: Request) -> dict[str, Any]:
    """The device that signed this request, also while it awaits approval."""
    return await device_caller(request, allow_pending=True)


# run before the body is parsed (jcstate.server.contract.harden)
DEVICE = Depends(authenticates(signed_device))
DEVICE_OR_PENDING = Depends(authenticates(signed_device_or_pending))
