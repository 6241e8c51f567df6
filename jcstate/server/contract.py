"""The API's contract, applied to every route: strict bodies, documented errors, and the caller
authenticated before the body is parsed.

Routes follow three rules (docs/api.md, "Writing a route"); the app's exception handlers and
its OpenAPI description (:func:`document_errors`) do the rest for every route:

- A request body is a subclass of :class:`StrictBody`: no type coercion (``dryRun: 0`` is not a
  boolean, ``"5"`` is not an integer) and no NUL character in any string (PostgreSQL cannot
  store one, and no file name or label needs it).
- Authentication is a dependency marked :func:`authenticates` (``require(role)`` for admins,
  ``DEVICE`` for signed devices). FastAPI runs dependencies before it validates a body against
  its model, but it decodes JSON before any dependency: the handlers of 400 and 422 run the
  route's marked dependencies first (:func:`authenticate_first`), so an anonymous request
  with a malformed body gets 401, not 400 or 422. A marked dependency's answer is kept for
  the request, so it runs (and audits) once.
- Every operation documents the shared error answers (:data:`ERRORS`), all with the body
  ``{"detail": ...}`` (:data:`PROBLEM`): a message, a list of validation errors, or an object.
  A validation error (422) never echoes the input, which may hold a secret.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

from fastapi import HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, model_validator
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

__all__ = [
    "ERRORS",
    "PROBLEM",
    "StrictBody",
    "authenticates",
    "document_errors",
    "authenticate_first",
    "http_error",
    "method_not_allowed",
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

_NO_NUL = "^[^\\x00]*$"
_JSON_VALUE_REF = {"$ref": "#/components/schemas/JsonValue"}
JSON_VALUE = {
    "title": "JsonValue",
    "description": "any JSON value without a NUL character in a string or a member name",
    "anyOf": [
        {"type": "string", "pattern": _NO_NUL},
        {"type": "number"},
        {"type": "boolean"},
        {"type": "null"},
        {"type": "array", "items": _JSON_VALUE_REF},
        {
            "type": "object",
            "propertyNames": {"pattern": _NO_NUL},
            "additionalProperties": _JSON_VALUE_REF,
        },
    ],
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
    """Mark ``dependency(request)`` as authenticating the caller: :func:`authenticate_first`
    runs it before a body error is answered; it runs once per request however often called."""
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


async def authenticate_first(request: Request) -> None:
    """Run the authentication dependencies of the request's route (memoized: a dependency
    that has run already is not run again). Raises their HTTPException (401, 403)."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    for dependency in getattr(dependant, "dependencies", ()):
        if getattr(dependency.call, _AUTH_MARK, False):
            await dependency.call(request)


async def method_not_allowed(request: Request, exc: Exception) -> JSONResponse:
    """405 with an ``Allow`` listing every method the description gives the path (FastAPI
    names only those of the first route that matched it)."""
    allowed: set[str] = set()
    for template, operations in request.app.openapi().get("paths", {}).items():
        if re.fullmatch(re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)), request.url.path):
            allowed |= {method.upper() for method in operations}
    return JSONResponse(
        {"detail": "Method Not Allowed"}, 405, headers={"Allow": ", ".join(sorted(allowed))}
    )


async def http_error(request: Request, exc: Exception) -> Response:
    """FastAPI's answer to an HTTPException, but a body it could not parse (400) is answered
    only once the caller is authenticated."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:
        try:
            await authenticate_first(request)
        except HTTPException as refused:
            return await http_exception_handler(request, refused)
    return await http_exception_handler(request, exc)


async def validation_failed(request: Request, exc: Exception) -> JSONResponse:
    """422 ``{"detail": [{loc, msg, type}, …]}``: where and what, never the input itself;
    401/403 instead when the caller is not authenticated (FastAPI parses a JSON body before
    it runs the dependencies)."""
    assert isinstance(exc, RequestValidationError)
    try:
        await authenticate_first(request)
    except HTTPException as refused:
        return await http_exception_handler(request, refused)  # type: ignore[return-value]
    detail = [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type"))}
        for e in exc.errors()
    ]
    return JSONResponse({"detail": detail}, 422)


def _strict_bodies(cls: type = StrictBody) -> set[str]:
    names = set()
    for sub in cls.__subclasses__():
        names |= {sub.__name__} | _strict_bodies(sub)
    return names


def _nul_free(node: Any) -> None:
    """Say in a body's schema what :class:`StrictBody` enforces: no NUL in any string."""
    if isinstance(node, list):
        for item in node:
            _nul_free(item)
        return
    if not isinstance(node, dict):
        return
    if node.get("type") == "string" and "pattern" not in node:
        node["pattern"] = _NO_NUL
    if node.get("type") == "object":
        node.setdefault("propertyNames", {"pattern": _NO_NUL})
        if node.get("additionalProperties", True) in (True, {}):
            node["additionalProperties"] = _JSON_VALUE_REF
    if node.get("type") == "array" and node.get("items") in (None, True, {}):
        node["items"] = _JSON_VALUE_REF
    for key, value in node.items():
        if key not in ("propertyNames", "pattern", "default", "examples"):
            _nul_free(value)


def document_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """Add :data:`ERRORS` to every operation of an OpenAPI description (the 422 of FastAPI
    replaced: its ``HTTPValidationError`` does not describe the messages routes give), and
    write the rules of :class:`StrictBody` into the schemas of request bodies."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    strict = _strict_bodies()
    for name, body in components.items():
        if name.split("-")[0] in strict:
            _nul_free(body)
    components["Problem"] = PROBLEM
    components["JsonValue"] = JSON_VALUE
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
