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
- Under uvicorn's httptools protocol a 200 answer is written whole, status line, headers and
  body in one ``transport.write`` (:func:`direct_writer`), and the wake of a push writes each
  held request's answer itself, synchronously, one after the other: 14–22 µs per answer on
  the bench machine (docs/server.md, "Capacity") instead of two ASGI ``send`` calls, two system
  calls and a task switch.
"""

from __future__ import annotations

import functools
import json
import math
import time
import urllib.parse
from collections.abc import Callable
from email.utils import formatdate
from typing import Any

from fastapi import HTTPException
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from jcstate.server.auth import authenticate_device

try:  # the HTTP protocol `jcstate server` runs (uvicorn with httptools)
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle as _HttpToolsCycle
    from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string
except ImportError:  # pragma: no cover - httptools is a dependency; other servers use ASGI send
    _HttpToolsCycle = None

__all__ = ["WORK_PATH", "LongPoll", "answer_work", "direct_writer", "work_params"]

WORK_PATH = "/api/v1/device/work"
_JSON = (b"content-type", b"application/json")

# write(body, later=None): answer 200 with body; with a list ``later``, the bookkeeping after
# the write is appended to it as a callable instead of run (see Waiters)
Writer = Callable[..., bool]


def work_params(query: dict[str, str]) -> tuple[str, float, int | None]:
    """``etag``, ``wait`` and ``commands`` of a work request. Raises 422 on bad values."""
    etag = query.get("etag", "")
    try:
        wait = float(query.get("wait", "55"))
        commands = int(query["commands"]) if "commands" in query else None
    except ValueError:
        raise HTTPException(422, "wait must be a number and commands an integer") from None
    if not math.isfinite(wait):
        raise HTTPException(422, "wait must be a finite number")
    if commands is not None and not 0 <= commands < 2**63:  # a database integer
        raise HTTPException(422, "commands must be an integer from 0 to 2**63-1")
    return etag, wait, commands


async def answer_work(
    ctx: Any,
    device: dict[str, Any],
    etag: str,
    wait: float,
    commands: int | None,
    write: Writer | None = None,
) -> bytes | None:
    """The work answer for an authenticated device: at once when its document differs from
    ``etag`` or commands after the cursor ``commands`` wait, else after holding the request up
    to ``wait`` seconds (at most ``ctx.max_wait``) or until a change for it.

    With ``write`` (see :func:`direct_writer`) a push may answer the held request itself (see
    :class:`~jcstate.server.wake.Waiters`); None is returned then, as the answer has gone."""
    deadline = time.monotonic() + max(0.0, min(wait, ctx.max_wait))
    if ctx.draining:  # the server is stopping: answer at once, the agent comes back later
        deadline = 0.0
    asked_at = ctx.queue.clock()  # a cancel requested before this settles (CommandQueue)
    reload = False  # the row read by authentication is fresh on the first pass
    check_queue = commands is not None  # the queue changes only with a "device" wake
    while True:
        with ctx.waiters.register(device["id"]) as woken:
            # state is read after registering, so a change in between still wakes us
            rendered = None
            generation = await ctx.current_generation(device["id"])
            if not reload:
                # the common wake (a push to every device) needs no database and no thread
                rendered = ctx.renderer.cached(device, generation)
            if rendered is None:
                device, rendered = await run_in_threadpool(_state, ctx, device["id"])
            if device is None or device["status"] != "active":
                raise HTTPException(403, "this device is no longer active")
            queued: list[dict[str, Any]] = []
            if check_queue:
                queued = await run_in_threadpool(
                    ctx.queue.deliver, device["id"], commands, asked_at
                )
            if rendered.etag != etag:
                return _full_answer(rendered, queued) if queued else rendered.answer
            if queued:
                return _answer(etag, rendered.revision, queued)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return _answer(etag, rendered.revision, [], draining=ctx.draining)
            if write is not None:
                woken.deliver = functools.partial(_deliver, ctx, device, etag, write)
            await woken.wait(remaining)
            if woken.answered:
                return None
            if "drain" in woken.reasons:  # the server is stopping (Waiters.drain)
                return _answer(etag, rendered.revision, [], draining=True)
            reload = "device" in woken.reasons
            check_queue = commands is not None and reload


def _deliver(ctx: Any, device: dict[str, Any], etag: str, write: Writer, later: list[Any]) -> bool:
    """Answer a held request from the wake of a push, when that needs nothing but caches:
    the commonest case, a new revision whose rendering this device shares with others."""
    generation = ctx.cached_generation(device["id"])
    if generation is None:
        return False
    rendered = ctx.renderer.cached(device, generation)
    if rendered is None or rendered.etag == etag:
        return False
    return write(rendered.answer, later)


def direct_writer(send: Any) -> Writer | None:
    """A function that answers 200 with a JSON body in one write, when ``send`` is uvicorn's
    httptools protocol (what ``jcstate server`` runs); else None, and the answer goes through
    ASGI ``send``.

    It does what uvicorn's ``send`` does for a response whose length is known — status line,
    headers, body, then completion (keep-alive or close) — but builds the bytes once for every
    device that gets the same answer and writes them in one call. It returns False, having
    written nothing, when it cannot (the response has started, the client is gone, or its
    socket buffer is full); the caller then uses ``send``, which waits for the buffer.
    ``tests/server/test_longpoll.py`` checks byte for byte that both write the same answer.
    """
    cycle = getattr(send, "__self__", None)
    if _HttpToolsCycle is None or type(cycle) is not _HttpToolsCycle:
        return None
    return functools.partial(_write_whole, cycle)


def _write_whole(cycle: Any, body: bytes, later: list[Any] | None = None) -> bool:
    if cycle.response_started or cycle.disconnected or cycle.flow.write_paused:
        return False
    cycle.response_started = True
    cycle.waiting_for_100_continue = False
    cycle.transport.write(_ok_response(body, cycle.keep_alive))
    cycle.response_complete = True
    if later is None:
        _complete(cycle)
    else:  # a wake: the next answer's bytes first; nothing runs in between either way
        later.append(functools.partial(_complete, cycle))
    return True


def _complete(cycle: Any) -> None:
    """What uvicorn's ``send`` does once a response's last byte is written."""
    if cycle.access_log:  # the line uvicorn's send logs (`jcstate server --access-log`)
        scope = cycle.scope
        cycle.access_logger.info(
            '%s - "%s %s HTTP/%s" %d',
            get_client_addr(scope),
            scope["method"],
            get_path_with_query_string(scope),
            scope["http_version"],
            200,
        )
    cycle.message_event.set()
    if not cycle.keep_alive:
        cycle.transport.close()
    cycle.on_response()


_OK_HEAD = (
    b"HTTP/1.1 200 OK\r\ndate: %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
)
_date: list[Any] = [0, b""]  # (second, "date" header value), as uvicorn refreshes it
_last_ok: list[Any] = [None, b"", b""]  # (body, date, response): a wake sends one body N times


def _ok_response(body: bytes, keep_alive: bool) -> bytes:
    now = int(time.time())
    if now != _date[0]:
        _date[0], _date[1] = now, formatdate(now, usegmt=True).encode()
    date = _date[1]
    if keep_alive and _last_ok[0] is body and _last_ok[1] is date:
        return _last_ok[2]
    head = _OK_HEAD % (date, len(body))
    if not keep_alive:
        return head + b"connection: close\r\n\r\n" + body
    response = head + b"\r\n" + body
    _last_ok[:] = (body, date, response)
    return response


def _answer(
    etag: str, revision: int | None, commands: list[dict[str, Any]], draining: bool = False
) -> bytes:
    """An answer without a document: nothing changed, or only commands are new.

    ``draining``: the server is stopping; the agent retries quickly (every fraction of a second)
    until it is back, instead of backing off."""
    body: dict[str, Any] = {
        "etag": etag,
        "revision": revision,
        "document": None,
        "secrets": {},
        "error": None,
        "commands": commands,
    }
    if draining:
        body["draining"] = True
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
    return device, ctx.renderer.for_device(device, ctx.generation(device_id))


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
        write = direct_writer(send)
        try:
            body = await self._work(scope, receive, write)
        except HTTPException as exc:
            headers = [
                (k.lower().encode("latin-1"), v.encode("latin-1"))
                for k, v in (exc.headers or {}).items()
            ]
            await _send(send, exc.status_code, json.dumps({"detail": exc.detail}).encode(), headers)
            return
        if body is not None and not (write is not None and write(body)):
            await _send(send, 200, body)  # (None: a push answered it already)

    async def _work(self, scope: Any, receive: Any, write: Writer | None) -> bytes | None:
        request = Request(scope, receive)
        raw_query = scope.get("query_string", b"").decode("latin-1")
        target = scope["path"] + ("?" + raw_query if raw_query else "")
        device = await authenticate_device(
            self.ctx, "GET", target, request.headers, await request.body()
        )
        query = dict(urllib.parse.parse_qsl(raw_query, keep_blank_values=True))
        etag, wait, commands = work_params(query)
        return await answer_work(self.ctx, device, etag, wait, commands, write)


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
