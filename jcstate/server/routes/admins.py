"""Routes for named admin accounts (the people who sign in to the console): administrators only.

``jcstate admin add|list|remove|passwd`` call these with an administrator's token, like every
other admin command. Passwords arrive in the request body (over TLS) and are kept only as an
scrypt verifier; the audit log names the account, never a password.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import Field

from jcstate.errors import JcstateError
from jcstate.server.admins import MIN_PASSWORD, AdminAccounts
from jcstate.server.auth import Admin, action_of, require
from jcstate.server.contract import StrictBody
from jcstate.server.roles import ALL_ROLES

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["admin"])

ADMINISTER = Depends(require("administrator"))


def _accounts(request: Request) -> AdminAccounts:
    return AdminAccounts(request.app.state.ctx.store)


def _audit(request: Request, admin: Admin, target: str, outcome: str = "ok", **detail: Any) -> None:
    request.app.state.ctx.store.audit(
        admin.actor, action_of(request), outcome, role=admin.role, target=target, detail=detail
    )


class NewAdmin(StrictBody):
    name: str = Field(min_length=1, max_length=100)
    role: str = Field(pattern="^(" + "|".join(ALL_ROLES) + ")$")
    password: str = Field(min_length=MIN_PASSWORD, max_length=1024)


class NewPassword(StrictBody):
    password: str = Field(min_length=MIN_PASSWORD, max_length=1024)


@router.get("/admins")
def list_admins(request: Request, admin: Admin = ADMINISTER) -> list[dict[str, Any]]:
    """Console accounts: name, role, whether TOTP is enrolled (never a password or seed)."""
    return _accounts(request).list()


@router.post("/admins", status_code=201)
def add_admin(body: NewAdmin, request: Request, admin: Admin = ADMINISTER) -> dict[str, Any]:
    """A new console account; an administrator enrols TOTP at the first sign-in."""
    try:
        row = _accounts(request).add(body.name, body.role, body.password, admin.actor)
    except JcstateError as exc:
        _audit(request, admin, body.name, "refused", reason=str(exc))
        raise HTTPException(409 if "exists" in str(exc) else 422, str(exc)) from None
    _audit(request, admin, body.name, role=body.role)
    return row


@router.delete("/admins/{name}")
def remove_admin(name: str, request: Request, admin: Admin = ADMINISTER) -> dict[str, Any]:
    """Remove an account; its sessions end at once."""
    if not _accounts(request).remove(name):
        raise HTTPException(404, "no such admin")
    _audit(request, admin, name)
    return {"name": name, "removed": True}


@router.put("/admins/{name}/password")
def set_admin_password(
    name: str, body: NewPassword, request: Request, admin: Admin = ADMINISTER
) -> dict[str, Any]:
    """Set an account's password; its sessions end at once."""
    try:
        done = _accounts(request).set_password(name, body.password)
    except JcstateError as exc:
        _audit(request, admin, name, "refused", reason=str(exc))
        raise HTTPException(422, str(exc)) from None
    if not done:
        raise HTTPException(404, "no such admin")
    _audit(request, admin, name)
    return {"name": name, "passwordChanged": True}
