"""The API's contract, applied to every route: strict bodies, documented errors, and the caller
authenticated before the body is parsed.

Routes follow three rules (docs/api.md, "Writing a route"), and :func:`harden` makes the rest
hold for every route of the app, including routes added later by other modules:

- A request body is a subclass of :class:`StrictBody`: no type coercion (``dryRun: 0`` is not a
  boolean, ``"5"`` is not an integer) and no NUL character in any string (PostgreSQL cannot
  store one, and no file name or label needs it).
- Authentication is a dependency marked :func:`authenticates` (``require(role)`` for admins,
  ``DEVICE`` for signed devices). :func:`harden` runs the marked dependencies of each route
  before FastAPI reads and parses the body, so an anonymous request with a malformed body gets
  401, not 400 or 422; the dependency's answer is kept for the request, so it runs once.
- Every operation documents the shared error answers (:data:`ERRORS`), all with the body
  ``{"detail": ...}`` (:data:`PROBLEM`): a message, a list of validation errors, or an object.
  A validation error (422) never echoes the input, which may hold a secret.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, model_validator
from starlette.concurrency import run_in_threadpool

__all__ = [
    "ERRORS",
    "PROBLEM",
    "StrictBody",
    "authenticates",
    "document_errors",
    "harden",
    "validation_failed",
]

# status → when: the answers any operation may give besides its own success
ERRORS = {
    "400": "the request is malformed (not JSON where JSON is expected)",
    "401": "no valid admin token, or no valid device signature",
    "403": "the caller's role or status does not allow this",
    "404": "no such object",
    "409": "conflicts with the current state",
    "413": "the body is larger than the server accepts",
    "422": "the body or a parameter is not valid",
    "429": "too many requests of this kind from this caller: come back after Retry-After",
    "503": "the server is overloaded: come back after Retry-After",
}

PROBLEM = {
    "title": "Problem",
    "type": "object",
    "required": ["detail"],
    "properties": {
        "detail": {
            "anyOf": [
                {"type": "string"},
                {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["loc", "msg", "type"],
                        "properties": {
                            "loc": {
                                "type": "array",
                                "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                            },
                            "msg": {"type": "string"},
                            "type": {"type": "string"},
                        },
                    },
                },
                {"type": "object"},
            ]
        }
    },
}

_AUTH_MARK = "_jcstate_authenticates"
_SCOPE_KEY = "jcstate.auth"


def _no_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" not in value
    if isinstance(value, dict):
        return all(_no_nul(k) and _no_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(_no_nul(v) for v in value)
    return True


class StrictBody(BaseModel):
    """Base of every request body: strict types, and no NUL in any string."""

    model_config = ConfigDict(strict=True)

    @model_validator(mode="before")
    @classmethod
    def _refuse_nul(cls, data: Any) -> Any:
        if not _no_nul(data):
            raise ValueError("a string contains a NUL character")
        return data


def authenticates(dependency: Callable[..., Any]) -> Callable[..., Any]:
    """Mark ``dependency(request)`` as authenticating the caller: :func:`harden` runs it
    before the body is parsed, and FastAPI's own call then returns the same answer."""
    is_async = inspect.iscoroutinefunction(dependency)

    async def run(request: Request) -> Any:
        memo = request.scope.setdefault(_SCOPE_KEY, {})
        if dependency not in memo:
            if is_async:
                memo[dependency] = await dependency(request)
            else:
                memo[dependency] = await run_in_threadpool(dependency, request)
        return memo[dependency]

    run.__name__ = dependency.__name__
    run.__doc__ = dependency.__doc__
    setattr(run, _AUTH_MARK, True)
    return run


def _auth_first(app: Any, checks: list[Callable[..., Any]]) -> Any:
    """``app`` (a route's ASGI app) behind its authentication dependencies.

    A check may read the body (a device signs it): it is then replayed to ``app``.
    """

    async def authenticated(scope: Any, receive: Any, send: Any) -> None:
        request = Request(scope, receive)
        try:
            for check in checks:
                await check(request)
        except HTTPException as exc:
            response = JSONResponse(
                {"detail": exc.detail}, exc.status_code, headers=dict(exc.headers or {})
            )
            await response(scope, receive, send)
            return
        body = getattr(request, "_body", None)
        if body is None:
            await app(scope, receive, send)
            return
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await app(scope, replay, send)

    return authenticated


async def validation_failed(request: Request, exc: Exception) -> JSONResponse:
    """422 ``{"detail": [{loc, msg, type}, …]}``: where and what, never the input itself."""
    assert isinstance(exc, RequestValidationError)
    detail = [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type"))}
        for e in exc.errors()
    ]
    return JSONResponse({"detail": detail}, 422)


def document_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """Add :data:`ERRORS` to every operation of an OpenAPI description (the 422 of FastAPI
    replaced: its ``HTTPValidationError`` does not describe the messages routes give)."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Problem"] = PROBLEM
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    ref = {"$ref": "#/components/schemas/Problem"}
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            for status, description in ERRORS.items():
                given = responses.get(status)
                if given is None or "HTTPValidationError" in str(given):
                    responses[status] = {
                        "description": description,
                        "content": {"application/json": {"schema": ref}},
                    }
    return schema


def harden(app: FastAPI) -> None:
    """Put every route of ``app`` behind its authentication (once per route)."""
    for route in app.routes:
        if not isinstance(route, APIRoute) or getattr(route, "_jcstate_hardened", False):
            continue
        checks = [
            d.call
            for d in route.dependant.dependencies
            if d.call is not None and getattr(d.call, _AUTH_MARK, False)
        ]
        if checks:
            route.app = _auth_first(route.app, checks)
        route._jcstate_hardened = True  # type: ignore[attr-defined]
