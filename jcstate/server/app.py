"""The FastAPI application: one :class:`ServerContext` shared by every route.

``create_app(settings)`` migrates the database, builds the store, renderer and waiters, and on
startup starts the PostgreSQL notification listener (several server processes) and a task that
prunes spent request nonces.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from jcstate import __version__
from jcstate.agent.wheel import MAX_WHEEL_BYTES
from jcstate.server import console, contract, db, rollout
from jcstate.server.commands import CommandQueue
from jcstate.server.limits import Edge, RateLimit
from jcstate.server.longpoll import LongPoll
from jcstate.server.metrics import Metrics
from jcstate.server.peer import TrustedProxies, resolve
from jcstate.server.render import Renderer
from jcstate.server.rollout import Serving
from jcstate.server.routes import admin, admins, commands, device, releases, rollouts, saved
from jcstate.server.store import NOTIFY_CHANNEL, Store
from jcstate.server.vault import Vault
from jcstate.server.wake import Waiters, listen

__all__ = ["App", "DrainingServer", "ServerContext", "Settings", "create_app"]

log = logging.getLogger(__name__)


@dataclass
class Settings:
    database: str  # sqlite:///… or postgresql://…
    secret_key: bytes  # 32 bytes: seals TOTP secrets and passwords at rest
    max_wait: float = 60.0  # longest a work request is held
    # a device whose last request is this recent is online; None: twice max_wait, so a device
    # is offline once it missed a whole long poll (docs/state-model.md)
    online_after: float | None = None
    migrate: bool = True
    clock: Callable[[], float] = time.time  # the command queue's clock (tests move it)
    erase_approvals: int = 1  # 2: an erase waits for a second person's approval (issue 15)
    raw_longpoll: bool = True  # serve the work route as raw ASGI (jcstate.server.longpoll)
    session_idle: float = 1800.0  # a console session ends after this long without a request
    session_lifetime: float = 12 * 3600.0  # and this long after sign-in, whatever happens
    announce: bool = True  # print at startup where the console is and how to get in
    trusted_proxies: tuple[str, ...] = ()  # CIDRs whose X-Forwarded-For/-Proto are believed
    metrics_token: str | None = None  # lets a scraper off loopback read /metrics
    # limits (jcstate.server.limits, docs/server.md "Limits")
    max_body: int = 4 * 1024 * 1024  # a larger request body gets 413
    max_in_flight: int = 256  # requests answered at once (held polls apart); more get 503
    enroll_per_address: float = 120.0  # enrollments a minute per client address (0: no limit)
    enroll_per_key: float = 600.0  # enrollments a minute per connect key (0: no limit)
    enroll_burst: int = 1000  # how many of them may come at once
    rollout_check: float = 1.0  # seconds between checks of a staged rollout's canaries


@dataclass
class ServerContext:
    """What routes share: the store, the renderer, the held long-polls."""

    settings: Settings
    store: Store
    vault: Vault
    renderer: Renderer
    waiters: Waiters = field(default_factory=Waiters)
    _gen: tuple[int, float, Serving] | None = None
    _gen_lock: threading.Lock = field(default_factory=threading.Lock)
    public_keys: dict[str, str] = field(default_factory=dict)  # device id → key (immutable)
    queue: CommandQueue | None = None  # security commands (set by create_app)
    metrics: Metrics | None = None  # set by create_app
    enroll_by_address: RateLimit | None = None  # set by create_app
    enroll_by_key: RateLimit | None = None
    _gen_refresh: asyncio.Future[Serving] | None = None
    draining: bool = False  # the server is stopping: work requests are answered at once

    @property
    def max_wait(self) -> float:
        return self.settings.max_wait

    @property
    def online_after(self) -> float:
        if self.settings.online_after is not None:
            return self.settings.online_after
        return 2 * self.settings.max_wait

    def drain(self) -> None:
        """The server is stopping: answer held polls now and new ones at once (event loop)."""
        self.draining = True
        self.waiters.drain()

    def cached_generation(self, device_id: str | None = None) -> tuple[int | None, float] | None:
        """A device's generation when known without a query (the event loop must not block)."""
        gen = self._gen
        if gen and gen[0] == self.waiters.wakes_all and time.monotonic() - gen[1] < 2.0:
            return gen[2].of(device_id)
        return None

    async def current_generation(self, device_id: str | None = None) -> tuple[int | None, float]:
        """A device's generation, read by one query however many held polls a push wakes."""
        cached = self.cached_generation(device_id)
        if cached is not None:
            return cached
        return (await self.current_serving()).of(device_id)

    async def current_serving(self) -> Serving:
        """:meth:`serving` without blocking the event loop (one query for every caller)."""
        gen = self._gen
        if gen and gen[0] == self.waiters.wakes_all and time.monotonic() - gen[1] < 2.0:
            return gen[2]
        if self._gen_refresh is None or self._gen_refresh.done():
            from starlette.concurrency import run_in_threadpool

            self._gen_refresh = asyncio.ensure_future(run_in_threadpool(self.serving))
        return await asyncio.shield(self._gen_refresh)

    async def prepare_wake(self) -> None:
        """Before a push wakes the held polls: read the new generation and have its revisions
        parsed (a staged rollout serves two), so that a woken poll finds both in memory (also
        in a server process the push did not go through)."""
        from starlette.concurrency import run_in_threadpool

        serving = await self.current_serving()
        for revision in (serving.revision, serving.canary_revision):
            if revision is not None:
                await run_in_threadpool(self.renderer.repo, revision)

    def generation(self, device_id: str | None = None) -> tuple[int | None, float]:
        """(revision, secrets generation) the device is sent: its wave's revision during a
        staged rollout (:mod:`jcstate.server.rollout`); without a device, that of every device
        outside the canary wave."""
        return self.serving().of(device_id)

    def serving(self) -> Serving:
        """What each device is sent, cached until the next "all" wake.

        10,000 devices woken by one push read it once, not 10,000 times; the short expiry
        covers a lost notification.
        """
        with self._gen_lock:
            wakes = self.waiters.wakes_all
            if self._gen and self._gen[0] == wakes and time.monotonic() - self._gen[1] < 2.0:
                return self._gen[2]
            value = rollout.serving(self.store)
            self._gen = (wakes, time.monotonic(), value)
            return value


class App(FastAPI):
    """The FastAPI application, with the long poll served in front of it (see
    :mod:`jcstate.server.longpoll`): at a push, every microsecond per answer counts 10,000
    times."""

    longpoll: LongPoll | None = None
    trusted: TrustedProxies = TrustedProxies()
    metrics: Metrics | None = None
    edge: Edge | None = None  # body and in-flight limits, in front of everything

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.edge is not None:
            await self.edge(scope, receive, send)
        else:
            await self.dispatch(scope, receive, send)

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            self.openapi_schema = contract.document_errors(super().openapi())
        return self.openapi_schema

    async def dispatch(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        resolve(scope, self.trusted)  # the client's address, one way for every route
        if self.longpoll is not None and self.longpoll.handles(scope):
            await self.longpoll(scope, receive, send)  # not timed: its duration is the hold
        elif self.metrics is None:
            await super().__call__(scope, receive, send)
        else:
            await self._timed(scope, receive, send, self.metrics)

    async def _timed(self, scope: Any, receive: Any, send: Any, metrics: Metrics) -> None:
        status = [500]  # what an exception that escapes the app becomes

        async def noting(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        started = time.perf_counter()
        try:
            await super().__call__(scope, receive, noting)
        finally:
            metrics.request(scope, status[0], time.perf_counter() - started)


def create_app(settings: Settings) -> FastAPI:
    engine = db.connect(settings.database)
    if settings.migrate:
        db.migrate(engine)
    store = Store(engine)
    vault = Vault(settings.secret_key)
    ctx = ServerContext(settings, store, vault, Renderer(store, vault))
    ctx.queue = CommandQueue(store, clock=settings.clock)
    ctx.enroll_by_address = RateLimit(settings.enroll_per_address, settings.enroll_burst)
    ctx.enroll_by_key = RateLimit(settings.enroll_per_key, settings.enroll_burst)
    ctx.waiters.prepare = ctx.prepare_wake  # once per push, before the held polls wake

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx.waiters.bind(asyncio.get_running_loop())
        # Thousands of held long polls keep millions of objects alive; with the default
        # thresholds the cyclic GC rescans them all many times a second and a 10,000-device
        # server spends its CPU there. Objects from startup are frozen out of collection and
        # young collections run less often.
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)
        tasks = [asyncio.create_task(_prune_nonces(store)), asyncio.create_task(_flush_seen(store))]
        tasks.append(asyncio.create_task(_check_rollout(ctx)))
        if store.is_postgres:
            ready = asyncio.Event()
            tasks.append(
                asyncio.create_task(listen(settings.database, ctx.waiters, NOTIFY_CHANNEL, ready))
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ready.wait(), 10)
        if settings.announce:
            console.announce(store)
        try:
            yield
        finally:
            store.flush_seen()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            engine.dispose()

    app = App(
        title="jcstate",
        version=__version__,
        description="Declarative device management server: policies, devices, long-poll work.",
        lifespan=lifespan,
        docs_url=None,  # the Swagger UI loads scripts from a CDN; /openapi.json is enough
        redoc_url=None,
    )
    app.state.ctx = ctx
    app.trusted = TrustedProxies(settings.trusted_proxies)
    app.metrics = ctx.metrics = Metrics(ctx, settings.metrics_token)
    ctx.waiters.on_wake = app.metrics.woke
    app.add_exception_handler(RequestValidationError, contract.validation_failed)
    app.add_exception_handler(405, contract.method_not_allowed)
    app.add_exception_handler(StarletteHTTPException, contract.http_error)
    app.edge = Edge(
        app.dispatch,
        max_body=settings.max_body,
        body_limits={("POST", "/api/v1/releases"): MAX_WHEEL_BYTES + 65536},
        max_in_flight=settings.max_in_flight,
    )
    app.include_router(device.router)
    app.include_router(admin.router)
    app.include_router(commands.router)
    app.include_router(releases.router)
    app.include_router(admins.router)
    app.include_router(saved.router)
    app.include_router(rollouts.router)
    console.install(app, idle=settings.session_idle, lifetime=settings.session_lifetime)
    if settings.raw_longpoll:
        app.longpoll = LongPoll(ctx)

    @app.get("/api/v1/health", tags=["health"])
    def health() -> dict[str, Any]:
        """Liveness (no authentication): version and database kind."""
        return {"ok": True, "version": __version__, "database": engine.dialect.name}

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        """Prometheus text format, for the metrics token or a loopback client."""
        from starlette.concurrency import run_in_threadpool

        from jcstate.server.metrics import CONTENT_TYPE, allowed

        address = request.client.host if request.client else ""
        if not allowed(app.metrics, address, request.headers.get("authorization", "")):
            raise HTTPException(
                401,
                "metrics need the metrics token (--metrics-token-file) or a loopback client",
                headers={"WWW-Authenticate": "Bearer"},
            )
        held = len(ctx.waiters)  # on the event loop: the waiters are not thread-safe
        body = await run_in_threadpool(app.metrics.render, held)
        return Response(body, media_type=CONTENT_TYPE)

    return app


async def _flush_seen(store: Store) -> None:
    from starlette.concurrency import run_in_threadpool

    while True:
        await asyncio.sleep(5)
        try:
            await run_in_threadpool(store.flush_seen)
        except Exception as exc:  # a busy database must not stop the flushing
            log.warning("writing last-seen times failed: %s", exc)


async def _check_rollout(ctx: ServerContext) -> None:
    """Halt or promote a staged rollout when its canaries say so (jcstate.server.rollout):
    the wait ends with no request to notice it, so the server looks every second."""
    from starlette.concurrency import run_in_threadpool

    while True:
        await asyncio.sleep(ctx.settings.rollout_check)
        try:
            if await run_in_threadpool(rollout.check, ctx):
                ctx.waiters.wake_threadsafe("all")
        except Exception as exc:  # a busy database must not stop the checks
            log.warning("checking the staged rollout failed: %s", exc)


async def _prune_nonces(store: Store) -> None:
    from starlette.concurrency import run_in_threadpool

    while True:
        await asyncio.sleep(60)
        try:
            await run_in_threadpool(store.prune_nonces, time.time())
        except Exception as exc:  # never let housekeeping take the server down
            log.warning("pruning request nonces failed: %s", exc)


class DrainingServer(uvicorn.Server):
    """uvicorn's server, stopping (SIGTERM, SIGINT) without dropping anyone: it stops
    accepting connections, answers every held long poll at once (the answers say
    ``draining``, so agents retry every fraction of a second until a server is back), lets
    requests in flight finish, then runs the application's shutdown."""

    async def shutdown(self, sockets: list[Any] | None = None) -> None:
        for server in self.servers:
            server.close()  # no new connections (uvicorn's own shutdown does it again)
        app = self.config.app
        ctx = getattr(getattr(app, "state", None), "ctx", None)
        if ctx is not None:
            ctx.drain()
            await asyncio.sleep(0)  # the woken polls write their answers
        await super().shutdown(sockets)
