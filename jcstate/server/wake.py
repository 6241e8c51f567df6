"""Long-poll wake-ups: a held ``work`` request returns within a second of a change for it.

Each waiting request registers an :class:`asyncio.Event` under its device id. A change wakes
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
import logging
from collections.abc import Iterator

__all__ = ["Wakeup", "Waiters", "listen"]

log = logging.getLogger(__name__)


class Wakeup(asyncio.Event):
    """An event that also says why it was set: ``all`` and/or ``device``."""

    def __init__(self) -> None:
        super().__init__()
        self.reasons: set[str] = set()


class Waiters:
    """The long-poll requests held by this process, by device id."""

    def __init__(self) -> None:
        self._by_device: dict[str, set[Wakeup]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.wakes_all = 0  # counts "all" wakes: lets caches of global state know they are stale

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def __len__(self) -> int:
        return sum(len(s) for s in self._by_device.values())

    @contextlib.contextmanager
    def register(self, device_id: str) -> Iterator[Wakeup]:
        """An event set on the next wake for this device; register *before* reading state."""
        event = Wakeup()
        self._by_device.setdefault(device_id, set()).add(event)
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
            groups = list(self._by_device.values())
            reason = "all"
        elif payload.startswith("device:"):
            groups = [self._by_device.get(payload[7:], set())]
            reason = "device"
        else:
            return
        for group in groups:
            for event in group:
                event.reasons.add(reason)
                event.set()

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
