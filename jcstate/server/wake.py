"""Long-poll wake-ups: a held ``work`` request returns within a second of a change for it.

Each waiting request registers a :class:`Wakeup` (a future) under its device id. A change wakes
either one device (``device:<id>``: labels, approval, revocation) or all of them (``all``: a new
policy revision, a secret). On PostgreSQL every server process LISTENs on one channel and the
store NOTIFYs inside the changing transaction, so a push through one process wakes agents held
by another; on SQLite there is one process and the wake is local.

A wake only tells a waiter to look again: it recomputes its state, and a missed wake costs at
most one poll period, never a lost update.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Iterator

__all__ = ["Wakeup", "Waiters", "listen"]

log = logging.getLogger(__name__)


class Wakeup:
    """One held request's wake-up: a future, and why it was set (``all`` and/or ``device``)."""

    __slots__ = ("answered", "deliver", "future", "reasons")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.future: asyncio.Future[None] = loop.create_future()
        self.reasons: set[str] = set()
        # set by a held request that can be answered by whoever wakes it (see Waiters)
        self.deliver: Callable[[list[Callable[[], None]]], bool] | None = None
        self.answered = False

    def set(self, reason: str) -> None:
        self.reasons.add(reason)
        if not self.future.done():
            self.future.set_result(None)

    def is_set(self) -> bool:
        return self.future.done()

    async def wait(self, timeout: float) -> None:
        """Until set, or ``timeout`` seconds (one timer handle, no extra task)."""
        if self.future.done():
            return
        handle = self.future.get_loop().call_later(timeout, self._expire)
        try:
            await self.future
        finally:
            handle.cancel()

    def _expire(self) -> None:
        if not self.future.done():
            self.future.set_result(None)


class Waiters:
    """The long-poll requests held by this process, by device id.

    A wake of everyone (a push) first runs ``prepare`` once (the server reads the new
    generation there), then sets every waiter: 10,000 woken requests find the state ready
    instead of each asking for it. Wakes that arrive while that runs are folded into it.

    A waiter with a ``deliver`` callable is answered by the wake itself, one after the other,
    before any woken task runs: the answers leave at the pace of writing them, not of
    switching between 10,000 tasks. ``deliver(later)`` is synchronous (it writes to a socket
    buffer and never waits) and returns False when it cannot answer; the request then wakes
    and answers itself. What must follow a written answer but not delay the next one (the
    HTTP protocol's bookkeeping) it appends to ``later``, run once every answer is written:
    all of it before the event loop runs anything else.
    """

    def __init__(self, prepare: Callable[[], Awaitable[object]] | None = None) -> None:
        self._by_device: dict[str, set[Wakeup]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.wakes_all = 0  # counts "all" wakes: lets caches of global state know they are stale
        self.prepare = prepare
        self._broadcast: asyncio.Task[None] | None = None
        self._pending_all = False
        # metrics: called after a push's wake with (seconds since the notification, polls)
        self.on_wake: Callable[[float, int], None] | None = None
        self._woken_at = 0.0

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def __len__(self) -> int:
        return sum(len(s) for s in self._by_device.values())

    @contextlib.contextmanager
    def register(self, device_id: str) -> Iterator[Wakeup]:
        """A wake-up set on the next wake for this device; register *before* reading state."""
        event = Wakeup(self._loop or asyncio.get_running_loop())
        group = self._by_device.get(device_id)
        if group is None:
            group = self._by_device[device_id] = set()
        group.add(event)
        try:
            yield event
        finally:
            group = self._by_device.get(device_id)
            if group is not None:
                group.discard(event)
                if not group:
                    del self._by_device[device_id]

    def wake(self, payload: str) -> None:
        """Wake per a notification payload: ``all`` or ``device:<id>``. Event-loop thread only."""
        if payload == "all":
            self.wakes_all += 1
            if self.prepare is None:
                self._set_all()
                return
            self._pending_all = True
            if self._broadcast is None or self._broadcast.done():
                self._woken_at = time.monotonic()
                self._broadcast = asyncio.ensure_future(self._run_broadcast())
        elif payload.startswith("device:"):
            for event in list(self._by_device.get(payload[7:], ())):
                event.set("device")

    async def _run_broadcast(self) -> None:
        reads = 0
        while self._pending_all:
            self._pending_all = False
            try:
                if self.prepare is not None:
                    await self.prepare()
            except Exception as exc:  # the waiters will read the state themselves
                log.warning("preparing a wake failed: %s", exc)
            reads += 1
            if self._pending_all and reads < 3:
                continue  # another change came in meanwhile (on PostgreSQL a push's NOTIFY
                # and its local wake): what was read may be stale, read again first
            await self._deliver_all()

    async def _deliver_all(self) -> None:
        started = time.monotonic()
        events = [event for group in self._by_device.values() for event in group]
        answered = 0
        written = started
        # No cyclic GC while answering: held polls free old objects as fast as they make new
        # ones, so the youngest generation's count stays low while its list grows to every
        # held request's objects (a million at 10,000 polls). The collection it ends up
        # running then takes most of a second, and would do so in the middle of the answers;
        # it runs after the last one instead.
        collecting = gc.isenabled()
        gc.disable()
        try:
            later: list[Callable[[], None]] = []
            for event in events:
                if event.deliver is not None and not event.future.done():
                    try:
                        event.answered = event.deliver(later)
                    except Exception as exc:  # the request answers itself
                        log.warning("answering a held request failed: %s", exc)
                    answered += event.answered
                event.set("all")
            written = time.monotonic()
            for step in later:  # each answer's bookkeeping (keep-alive timer, access log)
                try:
                    step()
                except Exception as exc:
                    log.warning("completing a held request failed: %s", exc)
        finally:
            if collecting:
                gc.enable()
        if events and self.on_wake is not None:
            self.on_wake(time.monotonic() - self._woken_at, len(events))
        if events:
            log.info(
                "wake: %d held polls, %d answered at once, in %.1f ms (%.1f ms to write them)",
                len(events),
                answered,
                (time.monotonic() - started) * 1000,
                (written - started) * 1000,
            )

    def _set_all(self) -> None:
        for group in list(self._by_device.values()):
            for event in group:
                event.set("all")

    def drain(self) -> None:
        """The server is stopping: every held request answers now (event-loop thread only)."""
        for group in list(self._by_device.values()):
            for event in group:
                event.set("drain")

    def wake_threadsafe(self, payload: str) -> None:
        """Wake from a worker thread (routes that changed state run in threads)."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.wake, payload)


async def listen(url: str, waiters: Waiters, channel: str, ready: asyncio.Event) -> None:
    """Forward PostgreSQL notifications on ``channel`` to ``waiters`` until cancelled.

    Reconnects after a lost connection, and wakes everyone then, since notifications sent
    while disconnected are gone.
    """
    import psycopg

    url = url.replace("postgresql+psycopg://", "postgresql://", 1)
    delay = 0.5
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                await conn.execute(f"LISTEN {channel}")
                delay = 0.5
                ready.set()
                waiters.wake("all")
                async for note in conn.notifies():
                    waiters.wake(note.payload)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the database went away: retry, never crash the server
            log.warning("notification listener lost its connection: %s; retrying", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
