"""Releases of the agent: administrators upload wheels, devices download them by sha256.

An agent release is code that runs as root on every device, so uploading and deleting one
needs ``administrator`` (read-only and up may list them). The server checks an upload with
the agent's own :func:`~jcstate.agent.wheel.inspect_wheel` (a pure-Python wheel of jcstate
whose metadata names a usable version) and keeps it in the database, so every server process
serves the same bytes. Every admin action is audited: ``ok``, or ``refused`` with the reason.

Releases are signed offline with the release key (``jcstate release sign``); the upload carries
the signature (``?signature=``), the server stores and forwards it in ``update`` commands but
cannot make one, and each device installs only what verifies with the key it pinned
(:mod:`jcstate.agent.release_key`). The server cannot check it either (it never holds the key):
an unsigned or forged release is stored, and refused on every device.

A device fetches a release with a signed ``GET /api/v1/device/releases/{sha256}``; the digest
comes in its ``update`` command (:mod:`jcstate.server.routes.commands`), and the device checks
it again. Any active device may download any release; an unknown digest is 404.
"""

from __future__ import annotations

import hashlib
import re
import threading
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from starlette.concurrency import run_in_threadpool

from jcstate.agent.wheel import MAX_WHEEL_BYTES, BadWheel, inspect_wheel
from jcstate.server import db
from jcstate.server.auth import DEVICE, Admin, action_of, require
from jcstate.server.views import wire

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["releases"])

READ = Depends(require("read-only"))
ADMINISTER = Depends(require("administrator"))
_SHA256 = re.compile(r"[0-9a-f]{64}")


class _Cache:
    """The newest few wheels by digest: 10,000 devices updating must not read the database
    10,000 times. Content-addressed, so a cached body is never stale; whether the release still
    exists is asked of the database on each download."""

    def __init__(self, size: int = 4):
        self.size = size
        self._items: dict[str, tuple[str, bytes]] = {}
        self._lock = threading.Lock()

    def get(self, sha256: str) -> tuple[str, bytes] | None:
        with self._lock:
            return self._items.get(sha256)

    def put(self, sha256: str, item: tuple[str, bytes]) -> None:
        with self._lock:
            self._items[sha256] = item
            while len(self._items) > self.size:
                self._items.pop(next(iter(self._items)))


_cache = _Cache()


def _view(row: dict[str, Any]) -> dict[str, Any]:
    return wire(
        {
            "version": row["version"],
            "sha256": row["sha256"],
            "size": row["size"],
            "filename": row["filename"],
            "createdAt": row["created_at"],
            "createdBy": row["created_by"],
            "signed": bool(row.get("signature")),
        }
    )


def _audit(request: Request, admin: Admin, outcome: str, target: str | None, **detail: Any) -> None:
    request.app.state.ctx.store.audit(
        admin.actor, action_of(request), outcome, role=admin.role, target=target, detail=detail
    )


async def _body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_WHEEL_BYTES:
        raise HTTPException(413, f"a release is at most {MAX_WHEEL_BYTES} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_WHEEL_BYTES:
            raise HTTPException(413, f"a release is at most {MAX_WHEEL_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


_SIGNATURE = re.compile(r"[A-Za-z0-9+/]{86}==")  # 64 bytes in base64


@router.post(
    "/releases",
    status_code=201,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
async def upload(
    request: Request, signature: str | None = None, admin: Admin = ADMINISTER
) -> dict[str, Any]:
    """Store an agent release: the body is the wheel itself (``application/octet-stream``).

    ``signature``: the release key's signature (``jcstate release sign``), base64; devices
    refuse a release without one that verifies with their pinned key. 422 when the body is not
    a pure-Python wheel of jcstate with a usable version, or the signature is not base64 of 64
    bytes; 409 when that version is already stored (delete it first); 413 above 64 MiB.
    """
    ctx = request.app.state.ctx
    if signature is not None and not _SIGNATURE.fullmatch(signature):
        reason = "signature: expected the base64 of a 64-byte Ed25519 signature"
        await run_in_threadpool(_audit, request, admin, "refused", None, reason=reason)
        raise HTTPException(422, reason)
    try:
        data = await _body(request)
    except HTTPException as exc:
        await run_in_threadpool(_audit, request, admin, "refused", None, reason=exc.detail)
        raise
    sha256 = hashlib.sha256(data).hexdigest()
    try:
        wheel = inspect_wheel(data)
    except BadWheel as exc:
        await run_in_threadpool(
            _audit, request, admin, "refused", None, reason=str(exc), sha256=sha256
        )
        raise HTTPException(422, str(exc)) from None
    row = await run_in_threadpool(
        lambda: ctx.store.add_release(
            version=wheel.version,
            sha256=sha256,
            filename=wheel.filename,
            data=data,
            created_by=admin.actor,
            signature=signature,
        )
    )
    if row is None:
        existing = await run_in_threadpool(ctx.store.release, wheel.version)
        reason = (
            f"release {wheel.version} is already stored (sha256 {existing['sha256']}); "
            "delete it first to replace it"
            if existing is not None
            else f"these bytes are already stored as another release (sha256 {sha256})"
        )
        await run_in_threadpool(
            _audit, request, admin, "refused", wheel.version, reason=reason, sha256=sha256
        )
        raise HTTPException(409, reason)
    await run_in_threadpool(
        _audit,
        request,
        admin,
        "ok",
        wheel.version,
        sha256=sha256,
        size=len(data),
        signed=signature is not None,
    )
    return _view(row)


@router.get("/releases")
def list_releases(request: Request, admin: Admin = READ) -> list[dict[str, Any]]:
    """Every stored release (never the bytes), newest upload first."""
    return [_view(r) for r in request.app.state.ctx.store.list_releases()]


def _waiting_updates(ctx: Any, version: str) -> list[str]:
    """Ids of update commands for ``version`` that devices have not finished."""
    from jcstate.server.commands import ACTIVE_STATES

    c = db.commands
    with ctx.store.engine.connect() as conn:
        rows = conn.execute(
            c.select().where(c.c.action == "update", c.c.state.in_(ACTIVE_STATES))
        ).fetchall()
    return [r.id for r in rows if (r.body or {}).get("update", {}).get("version") == version]


@router.delete("/releases/{version}")
def delete_release(
    version: str, request: Request, force: bool = False, admin: Admin = ADMINISTER
) -> dict[str, Any]:
    """Delete a release. 409 while update commands for it are unfinished (their devices could
    no longer download it), unless ``force=true``; they then fail on the device."""
    ctx = request.app.state.ctx
    row = ctx.store.release(version)
    if row is None:
        raise HTTPException(404, "no such release")
    waiting = _waiting_updates(ctx, version)
    if waiting and not force:
        reason = (
            f"{len(waiting)} update command(s) for {version} are not finished "
            f"({', '.join(waiting[:5])}); cancel them, or delete with force=true"
        )
        _audit(request, admin, "refused", version, reason=reason)
        raise HTTPException(409, reason)
    ctx.store.delete_release(version)
    _audit(request, admin, "ok", version, sha256=row["sha256"], unfinished=len(waiting))
    return {"version": version, "deleted": True}


@router.get(
    "/device/releases/{sha256}",
    tags=["device"],
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {"schema": {"type": "string"}}}}},
)
async def download(sha256: str, request: Request, device: dict[str, Any] = DEVICE) -> Response:
    """The wheel with this sha256 (``application/octet-stream``) for the signed device."""
    ctx = request.app.state.ctx
    if not _SHA256.fullmatch(sha256) or not await run_in_threadpool(ctx.store.has_release, sha256):
        raise HTTPException(404, "no release with this sha256")
    item = _cache.get(sha256)
    if item is None:
        item = await run_in_threadpool(ctx.store.release_data, sha256)
        if item is None:  # deleted between the two questions
            raise HTTPException(404, "no release with this sha256")
        _cache.put(sha256, item)
    filename, data = item
    return Response(
        data,
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
