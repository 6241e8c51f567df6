"""The console's plumbing: templates, security headers, the signed-in admin, CSRF, forms.

Pages are rendered on the server with Jinja2 (autoescaping on: a hostname or label is always
text, never markup). Every page response carries a strict Content-Security-Policy: scripts and
styles only from ``/static`` (no inline script), no framing, no referrer.

:func:`signed_in` is the console's counterpart of :func:`jcstate.server.auth.require`: the
caller is a named admin with a live session instead of a token, checked against the same
roles, and refusals land in the same audit log under ``admin:NAME``.
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from jcstate.server.admins import AdminAccounts
from jcstate.server.auth import Admin, action_of
from jcstate.server.roles import allows
from jcstate.server.sessions import Session, Sessions
from jcstate.server.views import from_rfc3339, rfc3339

__all__ = ["ConsoleAdmin", "PageError", "SecurityHeaders", "page", "signed_in"]

HERE = Path(__file__).parent
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-store"),
]


class SecurityHeaders:
    """ASGI middleware: the console's headers on every response outside ``/api/``."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/api/"):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in _HEADERS if k not in names]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


@dataclass(frozen=True)
class ConsoleAdmin(Admin):
    """A named admin signed in to the console (``token_id`` holds the name)."""

    session: Session | None = None

    @property
    def actor(self) -> str:
        return f"admin:{self.name}"

    @property
    def person(self) -> str | None:
        return self.name


class PageError(Exception):
    """Shown to the browser as a page with ``status``."""

    def __init__(self, status: int, message: str, title: str = ""):
        super().__init__(message)
        self.status, self.message, self.title = status, message, title or _TITLES.get(status, "")


class Redirect(Exception):
    def __init__(self, url: str):
        super().__init__(url)
        self.url = url


_TITLES = {
    400: "Bad request",
    401: "Not signed in",
    403: "Not allowed",
    404: "Not found",
    409: "Conflict",
    422: "Not accepted",
    429: "Too many attempts",
}


def _seconds(ts: float | str) -> float:
    """A time as the store keeps it (POSIX seconds) or as the API sends it (RFC 3339)."""
    return from_rfc3339(ts) if isinstance(ts, str) else float(ts)


def _when(ts: float | str | None) -> str:
    if ts is None:
        return "never"
    return dt.datetime.fromtimestamp(_seconds(ts), dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _iso(ts: float | str | None) -> str:
    if ts is None:
        return ""
    return rfc3339(_seconds(ts)) or ""


def _tail(text: str | None, lines: int = 5) -> str:
    return "\n".join((text or "").rstrip("\n").splitlines()[-lines:])


ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(HERE / "templates")),
    autoescape=True,  # every value is text unless a template says otherwise (none does)
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.filters["when"] = _when
ENV.filters["iso"] = _iso
ENV.filters["tail"] = _tail
ENV.filters["tojson_text"] = lambda v: json.dumps(v, indent=2, sort_keys=True, default=str)
ENV.globals["allows"] = allows


def page(
    request: Request, template: str, admin: ConsoleAdmin | None, status: int = 200, **values: Any
) -> HTMLResponse:
    """Render ``template`` with the admin, their CSRF token and ``values``."""
    html = ENV.get_template(template).render(
        admin=admin,
        csrf=admin.session.csrf if admin and admin.session else values.pop("csrf", ""),
        path=request.url.path,
        **values,
    )
    return HTMLResponse(html, status_code=status)


def cookie_name(request: Request) -> str:
    # __Host- cookies are refused by browsers unless Secure, so the plain name serves HTTP
    return "__Host-jcstate" if request.url.scheme == "https" else "jcstate"


def set_session_cookie(response: Response, request: Request, value: str, max_age: float) -> None:
    response.set_cookie(
        cookie_name(request),
        value,
        max_age=int(max_age),
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_session_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(
        cookie_name(request),
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


async def form_of(request: Request) -> dict[str, str]:
    """The submitted form (application/x-www-form-urlencoded), one value per field."""
    if "form" not in request.state._state:
        body = await request.body()
        if len(body) > 256 * 1024:
            raise PageError(413, "the form is too large")
        fields = urllib.parse.parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        request.state.form = {k: v[-1] for k, v in fields.items()}
    return dict(request.state.form)


def ctx_of(request: Request) -> Any:
    return request.app.state.ctx


def sessions_of(request: Request) -> Sessions:
    return request.app.state.console_sessions  # type: ignore[no-any-return]


def address_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def signed_in(needed: str = "read-only", *also: str, touch: bool = True) -> Any:
    """A dependency: the admin of the request's session, with at least role ``needed`` or one
    of the side roles ``also`` (:mod:`jcstate.server.roles`).
    ``touch=False`` for a page's automatic refreshes: they do not keep a session from idling.

    No live session: a GET is sent to the sign-in page, anything else refused (401). A
    state-changing request must carry the session's CSRF token in the form's ``csrf`` field.
    """

    async def dependency(request: Request) -> ConsoleAdmin:
        store = ctx_of(request).store
        cookie = request.cookies.get(cookie_name(request))
        session = sessions_of(request).find(cookie, touch=touch)
        row = AdminAccounts(store).get(session.admin) if session else None
        if session is None or session.stage != "ok" or row is None:
            if request.method in ("GET", "HEAD"):
                target = urllib.parse.quote(request.url.path, safe="/")
                raise Redirect(f"/signin?next={target}")
            store.audit(
                "anonymous", action_of(request), "denied", detail={"reason": "not signed in"}
            )
            raise PageError(401, "Your session has ended. Sign in again.")
        admin = ConsoleAdmin(row["name"], row["name"], row["role"], session=session)
        if request.method not in ("GET", "HEAD"):
            sent = (await form_of(request)).get("csrf", "")
            if not hmac.compare_digest(sent.encode(), session.csrf.encode()):
                store.audit(
                    admin.actor,
                    action_of(request),
                    "denied",
                    role=admin.role,
                    target=request.path_params.get("device"),
                    detail={"reason": "missing or wrong CSRF token"},
                )
                raise PageError(403, "This form has expired or did not come from this console.")
        if not allows(admin.role, needed, also):
            store.audit(
                admin.actor,
                action_of(request),
                "denied",
                role=admin.role,
                target=request.path_params.get("device"),
                detail={"reason": f"needs role {needed}"},
            )
            raise PageError(403, f"This needs the {needed} role; you are {admin.role}.")
        return admin

    dependency.__name__ = "signed_in_" + "_or_".join(r.replace("-", "_") for r in (needed, *also))
    return dependency


def error_page(request: Request, exc: Exception) -> Response:
    if isinstance(exc, Redirect):
        return RedirectResponse(exc.url, status_code=303)
    assert isinstance(exc, PageError)
    return page(request, "error.html", None, exc.status, title=exc.title, message=exc.message)
