"""Sign-in, TOTP (and its enrolment on an administrator's first sign-in), sign-out.

The sign-in form is protected against cross-site posting by a double-submit token (a cookie
scoped to ``/signin`` and the same value in the form), since there is no session yet. Every
failure is audited and counted: five per account or twenty per address within 15 minutes and
further attempts are refused, whatever the password (see :mod:`jcstate.server.admins`).
"""

from __future__ import annotations

import base64
import hmac
import secrets
import time
import urllib.parse

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from jcstate.secret import Secret
from jcstate.server.admins import AdminAccounts, hash_password, totp_step, verify_password
from jcstate.server.console.web import (
    PageError,
    address_of,
    clear_session_cookie,
    cookie_name,
    ctx_of,
    form_of,
    page,
    sessions_of,
    set_session_cookie,
)
from jcstate.server.sessions import Session

router = APIRouter(include_in_schema=False)

PRE = "jcstate_signin"
_DUMMY = hash_password("a password nobody has")  # unknown names take as long as known ones


def _safe_next(target: str | None) -> str:
    """Only a path on this console: never another site after sign-in."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/devices"
    return target


def _signin_form(request: Request, status: int = 200, error: str = "", name: str = "") -> Response:
    token = secrets.token_urlsafe(24)
    resp = page(
        request,
        "signin.html",
        None,
        status,
        csrf=token,
        error=error,
        name=name,
        next=_safe_next(request.query_params.get("next")),
    )
    resp.set_cookie(
        PRE,
        token,
        path="/signin",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        max_age=3600,
    )
    return resp


@router.get("/signin")
def signin_page(request: Request) -> Response:
    return _signin_form(request)


def _audit(request: Request, outcome: str, account: str, **detail: str) -> None:
    ctx_of(request).store.audit(
        f"admin:{account}" if outcome == "ok" else "anonymous",
        "console sign-in",
        outcome,
        target=f"admin:{account}",
        detail={"address": address_of(request), **detail},
    )


@router.post("/signin")
async def signin(request: Request) -> Response:
    form = await form_of(request)
    sent, expected = form.get("csrf", ""), request.cookies.get(PRE, "")
    if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise PageError(403, "The sign-in form expired or came from another site; try again.")
    name, password = form.get("username", "").strip(), form.get("password", "")
    accounts = AdminAccounts(ctx_of(request).store)
    address = address_of(request)
    why = accounts.throttled(name, address)
    if why:
        _audit(request, "refused", name, reason=why)
        return _signin_form(request, 429, why.capitalize() + ".", name)
    row = accounts.get(name)
    if not verify_password(password, row["password_hash"] if row else _DUMMY) or row is None:
        accounts.note_failure(name, address)
        _audit(request, "denied", name, reason="wrong name or password")
        return _signin_form(request, 401, "Wrong name or password.", name)
    target = _safe_next(form.get("next"))
    sessions = sessions_of(request)
    if row["role"] == "administrator":
        pending = None
        if not row["totp_sealed"]:
            seed = base64.b32encode(secrets.token_bytes(20)).decode()
            pending = ctx_of(request).vault.seal("admin-totp-pending", name, Secret(seed))
        session_id = sessions.create(name, "enrol" if pending else "totp", pending)
        resp: Response = RedirectResponse(
            "/signin/totp?next=" + urllib.parse.quote(target), status_code=303
        )
    else:
        session_id = sessions.create(name, "ok")
        _audit(request, "ok", name, role=row["role"])
        resp = RedirectResponse(target, status_code=303)
    set_session_cookie(resp, request, session_id, sessions.lifetime)
    resp.delete_cookie(PRE, path="/signin")
    return resp


def _half_session(request: Request) -> tuple[str, Session]:
    session = sessions_of(request).find(request.cookies.get(cookie_name(request)))
    if session is None or session.stage not in ("totp", "enrol"):
        raise PageError(401, "Sign in with your name and password first.")
    return request.cookies[cookie_name(request)], session


def _totp_page(request: Request, session: Session, status: int = 200, error: str = "") -> Response:
    from jcstate.cli.totp import otpauth_uri

    qr, seed = None, None
    if session.stage == "enrol":
        secret = ctx_of(request).vault.open(
            "admin-totp-pending",
            session.admin,
            session.pending_totp,
        )
        seed = secret.reveal()
        uri = otpauth_uri(session.admin, secret, "jcstate console")
        try:
            from jcstate.cli.totp import png_bytes

            qr = "data:image/png;base64," + base64.b64encode(png_bytes(uri)).decode()
        except Exception:  # no qrcode package: the seed is shown as text to type in
            qr = None
    return page(
        request,
        "totp.html",
        None,
        status,
        csrf=session.csrf,
        enrol=session.stage == "enrol",
        qr=qr,
        seed=seed,
        error=error,
        next=_safe_next(request.query_params.get("next")),
    )


@router.get("/signin/totp")
def totp_page(request: Request) -> Response:
    _, session = _half_session(request)
    return _totp_page(request, session)


@router.post("/signin/totp")
async def totp_check(request: Request) -> Response:
    old_id, session = _half_session(request)
    form = await form_of(request)
    if not hmac.compare_digest(form.get("csrf", "").encode(), session.csrf.encode()):
        raise PageError(403, "This form has expired or did not come from this console.")
    ctx = ctx_of(request)
    name: str = session.admin
    accounts = AdminAccounts(ctx.store)
    address = address_of(request)
    why = accounts.throttled(name, address)
    if why:
        _audit(request, "refused", name, reason=why, step="totp")
        return _totp_page(request, session, 429, why.capitalize() + ".")
    row = accounts.get(name)
    if row is None:
        raise PageError(401, "This account no longer exists.")
    enrol = session.stage == "enrol"
    if enrol:
        secret = ctx.vault.open("admin-totp-pending", name, session.pending_totp)
    else:
        secret = ctx.vault.open("admin-totp", name, row["totp_sealed"])
    step = totp_step(secret.reveal(), form.get("code", ""), time.time())
    if step is not None and enrol:
        accounts.set_totp(name, ctx.vault.seal("admin-totp", name, secret), step)
    elif step is not None and not accounts.use_totp_step(name, step):
        step = None  # a code already used: a replay
    if step is None:
        accounts.note_failure(name, address)
        _audit(request, "denied", name, reason="wrong TOTP code", step="totp")
        return _totp_page(request, session, 401, "Wrong or already used code.")
    sessions = sessions_of(request)
    sessions.end(old_id)  # a fresh id once fully signed in
    new_id = sessions.create(name, "ok")
    _audit(request, "ok", name, role=row["role"], totp="enrolled" if enrol else "checked")
    resp = RedirectResponse(_safe_next(form.get("next")), status_code=303)
    set_session_cookie(resp, request, new_id, sessions.lifetime)
    return resp


@router.post("/signout")
async def signout(request: Request) -> Response:
    session = sessions_of(request).find(request.cookies.get(cookie_name(request)))
    form = await form_of(request)
    if session is not None:
        if not hmac.compare_digest(form.get("csrf", "").encode(), session.csrf.encode()):
            raise PageError(403, "This form has expired or did not come from this console.")
        sessions_of(request).end(session)
        ctx_of(request).store.audit(f"admin:{session.admin}", "console sign-out", "ok")
    resp = RedirectResponse("/signin", status_code=303)
    clear_session_cookie(resp, request)
    return resp
