"""Limits at the edge of the server: request body size, requests in flight, enrollment rate.

:class:`Edge` is plain ASGI and wraps the whole application, the raw long poll
(:mod:`jcstate.server.longpoll`) included:

- A body larger than its limit gets 413 before it is read into memory: at once when the
  ``Content-Length`` says so, else (chunked) as soon as the bytes received pass the limit. The
  limit is ``Settings.max_body`` (4 MiB by default), larger for the routes in
  ``Settings.body_limits`` (agent releases: 64 MiB).
- Beyond ``Settings.max_in_flight`` requests being answered at once, a new request gets 503
  with ``Retry-After``; held long polls do not count (a fleet holds thousands, each costs a
  socket and no work), nor does the health check.

:class:`RateLimit` is a token bucket per key (a connect key, a client address), in memory: with
several server processes each process limits on its own, so the fleet-wide rate is at most the
per-process rate times the number of processes (docs/server.md, "Limits").
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from fastapi import HTTPException

__all__ = ["Edge", "RateLimit", "TooLarge"]

_WORK = "/api/v1/device/work"
_OPEN = (_WORK, "/api/v1/health")  # not counted in flight


class TooLarge(HTTPException):
    """The body passed its limit (raised from ``receive``; FastAPI passes HTTPException on)."""

    def __init__(self, limit: int):
        super().__init__(413, f"the request body is larger than {limit} bytes")


class Edge:
    """The body-size limit and the in-flight cap, in front of ``app``."""

    def __init__(
        self,
        app: Any,
        *,
        max_body: int,
        body_limits: dict[tuple[str, str], int] | None = None,
        max_in_flight: int = 0,
        retry_after: int = 5,
    ) -> None:
        self.app = app
        self.max_body = max_body
        self.body_limits = body_limits or {}
        self.max_in_flight = max_in_flight  # 0: no cap
        self.retry_after = retry_after
        self.in_flight = 0
        self.shed = 0  # requests answered 503 since the start (tests, metrics)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.body_limits.get((scope["method"], scope["path"]), self.max_body)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _answer(send, 413, TooLarge(limit).detail, close=True)
            return
        counted = self.max_in_flight > 0 and scope["path"] not in _OPEN
        if counted:
            if self.in_flight >= self.max_in_flight:
                self.shed += 1
                await _answer(
                    send,
                    503,
                    "the server is busy: retry later",
                    headers=[(b"retry-after", str(self.retry_after).encode())],
                )
                return
            self.in_flight += 1
        started = False
        received = 0

        async def limited_receive() -> Any:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise TooLarge(limit)
            return message

        async def tracked_send(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        # the long poll answers with uvicorn's own send (jcstate.server.longpoll.direct_writer)
        # and turns TooLarge into its answer itself
        try:
            await self.app(scope, limited_receive, send if scope["path"] == _WORK else tracked_send)
        except TooLarge as exc:  # raised where nothing turned it into an answer
            if not started:
                await _answer(send, 413, exc.detail, close=True)
        finally:
            if counted:
                self.in_flight -= 1


def _content_length(scope: Any) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _answer(
    send: Any,
    status: int,
    detail: str,
    *,
    headers: list[tuple[bytes, bytes]] | None = None,
    close: bool = False,
) -> None:
    body = json.dumps({"detail": detail}).encode()
    head = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *(headers or ()),
    ]
    if close:  # the unread body is still on the wire: this connection cannot carry another
        head.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


class RateLimit:
    """``rate`` requests per minute per key, in bursts of up to ``burst`` (token bucket)."""

    def __init__(
        self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate / 60.0  # tokens per second
        self.burst = burst
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key → (tokens, when)
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """0 when ``key`` may go on (a token is spent), else the seconds until it may."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        with self._lock:
            tokens, when = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - when) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                if len(self._buckets) > 100_000:  # forget full buckets, keep memory bounded
                    self._forget(now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate

    def _forget(self, now: float) -> None:
        for key, (tokens, when) in list(self._buckets.items()):
            if tokens + (now - when) * self.rate >= self.burst:
                del self._buckets[key]

    def check(self, key: str, what: str) -> None:
        """Raise 429 with ``Retry-After`` when ``key`` is over its rate."""
        wait = self.take(key)
        if wait > 0:
            raise HTTPException(
                429,
                f"too many enrollments {what}: retry in {math.ceil(wait)} s",
                headers={"Retry-After": str(math.ceil(wait))},
            )
