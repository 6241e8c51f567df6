"""The Admins and tokens page (administrators only): console accounts, API tokens, connect keys.

Each change calls the API's own route function with the signed-in administrator, so it is
validated and audited exactly as through the API. A new token's secret is shown once.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from jcstate.server.admins import AdminAccounts
from jcstate.server.console.web import ConsoleAdmin, PageError, ctx_of, form_of, page, signed_in
from jcstate.server.roles import ALL_ROLES
from jcstate.server.routes import admin as api
from jcstate.server.routes import admins as api_admins

router = APIRouter(include_in_schema=False)

ADMINISTER = Depends(signed_in("administrator"))


def _show(request: Request, admin: ConsoleAdmin, status: int = 200, **values: Any) -> Response:
    store = ctx_of(request).store
    return page(
        request,
        "admins.html",
        admin,
        status,
        admins=AdminAccounts(store).list(),
        tokens=[t for t in store.list_tokens() if t["revoked_at"] is None],
        keys=[k for k in store.list_connect_keys() if k["revoked_at"] is None],
        roles=ALL_ROLES,
        error=values.pop("error", ""),
        created=values.pop("created", None),
        **values,
    )


@router.get("/admins")
def admins_page(request: Request, admin: ConsoleAdmin = ADMINISTER) -> Response:
    return _show(request, admin)


async def _call(request: Request, admin: ConsoleAdmin, fn: Any, *args: Any) -> Any:
    """Run an API route function as this admin; its refusal becomes a message on the page."""
    try:
        return await run_in_threadpool(fn, *args, request, admin)
    except HTTPException as exc:
        raise PageError(exc.status_code, str(exc.detail)) from None


def _back() -> Response:
    return RedirectResponse("/admins", status_code=303)


@router.post("/admins")
async def add_admin(request: Request, admin: ConsoleAdmin = ADMINISTER) -> Response:
    form = await form_of(request)
    try:
        body = api_admins.NewAdmin(
            name=form.get("name", ""), role=form.get("role", ""), password=form.get("password", "")
        )
    except ValidationError:
        return _show(request, admin, 422, error="Give a name, a role and a password.")
    try:
        await _call(request, admin, api_admins.add_admin, body)
    except PageError as exc:
        return _show(request, admin, exc.status, error=exc.message)
    return _back()


@router.post("/admins/{name}/remove")
async def remove_admin(name: str, request: Request, admin: ConsoleAdmin = ADMINISTER) -> Response:
    if name == admin.name:
        return _show(request, admin, 409, error="You cannot remove yourself.")
    await _call(request, admin, api_admins.remove_admin, name)
    return _back()


@router.post("/tokens")
async def create_token(request: Request, admin: ConsoleAdmin = ADMINISTER) -> Response:
    form = await form_of(request)
    try:
        body = api.NewToken(role=form.get("role", ""), name=form.get("name", ""))
    except ValidationError:
        return _show(request, admin, 422, error="Choose a role for the token.")
    made = await _call(request, admin, api.create_token, body)
    return _show(
        request,
        admin,
        201,
        created={"kind": "token", "name": made["name"], "secret": made["token"]},
    )


@router.post("/tokens/{token_id}/revoke")
async def revoke_token(
    token_id: str, request: Request, admin: ConsoleAdmin = ADMINISTER
) -> Response:
    await _call(request, admin, api.revoke_token, token_id)
    return _back()


@router.post("/connect-keys")
async def create_key(request: Request, admin: ConsoleAdmin = ADMINISTER) -> Response:
    form = await form_of(request)
    labels: dict[str, str] = {}
    for pair in form.get("labels", "").split(","):
        if pair.strip():
            key, sep, value = pair.partition("=")
            if not sep or not key.strip():
                return _show(request, admin, 422, error=f"Label {pair.strip()!r}: use KEY=VALUE.")
            labels[key.strip()] = value.strip()
    body = api.NewConnectKey(
        name=form.get("name", ""), autoApprove=form.get("approve") != "manual", labels=labels
    )
    made = await _call(request, admin, api.create_connect_key, body)
    return _show(
        request,
        admin,
        201,
        created={"kind": "connect key", "name": made["name"], "secret": made["key"]},
    )


@router.post("/connect-keys/{key_id}/revoke")
async def revoke_key(key_id: str, request: Request, admin: ConsoleAdmin = ADMINISTER) -> Response:
    await _call(request, admin, api.revoke_connect_key, key_id)
    return _back()
