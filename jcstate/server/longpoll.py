"""The long poll (``GET /api/v1/device/work``): hold a device's request until its document or
command queue changes, then answer at once.

A push wakes every held request of the fleet, so the wake is the server's hot path: at 10,000
devices each microsecond per answer is 10 ms of latency for the last one. Two things keep it
short:

- Devices whose documents are provably identical share one rendering, one etag and one prebuilt
  answer (:class:`~jcstate.server.render.Rendered.answer`); a woken request looks its rendering
  up without a database query or a thread and sends those bytes.
- :class:`LongPoll` serves this one route as raw ASGI, in front of FastAPI: authentication is the
  same code as every device route's (:func:`~jcstate.server.auth.authenticate_device`), but the
  answer does not go back through FastAPI's middleware, routing, dependency and response
  layers. The FastAPI
  route stays for the OpenAPI description and serves the same :func:`answer_work` when the raw
  path is switched off (``Settings.raw_longpoll``).
"""

from __future__ import annotations

import functools
import json
import math
import time
import urllib.parse
from typing import Any

from fastapi import HTTPException
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from jcstate.server.auth import authenticate_device

__all__ = ["WORK_PATH", "LongPoll", "answer_work", "work_params"]

WORK_PATH = "/api/v1/device/work"
_JSON = (b"content-type", b"application/json")


def work_params(query: dict[str, str]) -> tuple[str, float, int | None]:
    """``etag``, ``wait`` and ``commands`` of a work request. Raises 422 on bad values."""
    etag = query.get("etag", "")
    try:
        wait = float(query.get("wait", "55"))
        commands = int(query["commands"]) if query.get("commands", "") != "" else None
    except ValueError:
        raise HTTPException(422, "wait must be a number and commands an integer") from None
    if not math.isfinite(wait):
        raise HTTPException(422, "wait must be a finite number")
    return etag, wait, commands


async def answer_work(
    ctx: Any,
    device: dict[str, Any],
    etag: str,
    wait: float,
    commands: int | None,
    send: Any = None,
) -> bytes | None:
    """The work answer for an authenticated device: at once when its document differs from
    ``etag`` or commands after the cursor ``commands`` wait, else after holding the request up
    to ``wait`` seconds (at most ``ctx.max_wait``) or until a change for it.

    With ``send`` (the raw ASGI path) a push may answer the held request itself (see
    :class:`~jcstate.server.wake.Waiters`); None is returned then, as the answer has gone."""
    deadline = time.monotonic() + max(0.0, min(wait, ctx.max_wait))
    reload = False  # the row read by authentication is fresh on the first pass
    check_queue = commands is not None  # the queue changes only with a "device" wake
    while True:
        with ctx.waiters.register(device["id"]) as woken:
            # state is read after registering, so a change in between still wakes us
            rendered = None
            generation = await ctx.current_generation()
            if not reload:
                # the common wake (a push to every device) needs no database and no thread
                rendered = ctx.renderer.cached(device, generation)
            if rendered is None:
                device, rendered = await run_in_threadpool(_state, ctx, device["id"])
            if device is None or device["status"] != "active":
                raise HTTPException(403, "this device is no longer active")
            queued: list[dict[str, Any]] = []
            if check_queue:
                queued = await run_in_threadpool(ctx.queue.deliver, device["id"], commands)
            if rendered.etag != etag:
                return _full_answer(rendered, queued) if queued else rendered.answer
            if queued:
                return _answer(etag, rendered.revision, queued)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return _answer(etag, rendered.revision, [])
            if send is not None:
                woken.deliver = functools.partial(_deliver, ctx, device, etag, send)
            await woken.wait(remaining)
            if woken.answered:
                return None
            reload = "device" in woken.reasons
            check_queue = commands is not None and reload


async def _deliver(ctx: Any, device: dict[str, Any], etag: str, send: Any) -> bool:
    """Answer a held request from the wake of a push, when that needs nothing but caches:
    the commonest case, a new revision whose rendering this device shares with others."""
    generation = ctx.cached_generation()
    if generation is None:
        return False
    rendered = ctx.renderer.cached(device, generation)
    if rendered is None or rendered.etag == etag:
        return False
    await _send(send, 200, rendered.answer)
    return True


def _answer(etag: str, revision: int | None, commands: list[dict[str, Any]]) -> bytes:
    """An answer without a document: nothing changed, or only commands are new."""
    body = {
        "etag": etag,
        "revision": revision,
        "document": None,
        "secrets": {},
        "error": None,
        "commands": commands,
    }
    return json.dumps(body, separators=(",", ":")).encode()


def _full_answer(rendered: Any, commands: list[dict[str, Any]]) -> bytes:
    # the document part was serialised once for every device sharing it: add the etag and
    # commands around those bytes (same members, same order as _answer)
    return b"".join(
        (
            b'{"etag":',
            json.dumps(rendered.etag).encode(),
            b",",
            rendered.body,
            b',"commands":',
            json.dumps(commands, separators=(",", ":")).encode(),
            b"}",
        )
    )


def _state(ctx: Any, device_id: str) -> tuple[dict[str, Any] | None, Any]:
    device = ctx.store.device(device_id)
    if device is None:
        return None, None
    return device, ctx.renderer.for_device(device, ctx.generation())


class LongPoll:
    """Serves ``GET /api/v1/device/work`` as raw ASGI; :class:`~jcstate.server.app.App` calls
    it before FastAPI's middleware and routing. Errors are answered as FastAPI does
    (``{"detail": ...}``)."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    @staticmethod
    def handles(scope: Any) -> bool:
        return scope["type"] == "http" and scope["path"] == WORK_PATH and scope["method"] == "GET"

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            body = await self._work(scope, receive, send)
        except HTTPException as exc:
            headers = [
                (k.lower().encode("latin-1"), v.encode("latin-1"))
                for k, v in (exc.headers or {}).items()
            ]
            await _send(send, exc.status_code, json.dumps({"detail": exc.detail}).encode(), headers)
            return
        if body is not None:  # None: a push answered it already
            await _send(send, 200, body)

    async def _work(self, scope: Any, receive: Any, send: Any) -> bytes | None:
        request = Request(scope, receive)
        raw_query = scope.get("query_string", b"").decode("latin-1")
        target = scope["path"] + ("?" + raw_query if raw_query else "")
        device = await authenticate_device(
            self.ctx, "GET", target, request.headers, await request.body()
        )
        query = dict(urllib.parse.parse_qsl(raw_query, keep_blank_values=True))
        etag, wait, commands = work_params(query)
        return await answer_work(self.ctx, device, etag, wait, commands, send)


async def _send(
    send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [_JSON, (b"content-length", str(len(body)).encode()), *(headers or ())],
        }
    )
    await send({"type": "http.response.body", "body": body})
