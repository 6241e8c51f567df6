"""``GET /metrics``: this server process's state in the Prometheus text format.

Two kinds of series, so that the long poll's fast path pays nothing:

- *Read at scrape time* (a collector): held polls (this process), devices online and offline,
  commands by state (the database). Nothing counts them while requests are served.
- *Observed as things happen*: request latency by route (the route's template, never an id or a
  query string), push latency (``POST /api/v1/revisions``), the wake of a push (from the
  notification to the last held poll answered, one observation per wake, not per poll) and
  converge results as reports arrive. The long poll itself (``GET /api/v1/device/work``) is
  not timed: its duration is the hold, and its answers are written by the wake
  (:mod:`jcstate.server.wake`), which the wake histogram covers.

Every server process keeps its own series (a registry per application), so with several
processes on PostgreSQL each is scraped on its own; the database-backed gauges are the same in
all of them, the others are that process's share. Access: a bearer metrics token
(``--metrics-token-file``) or a client address on loopback (after ``--trusted-proxy``
resolution, so a request relayed by a local proxy is judged by its real client).
"""

from __future__ import annotations

import hmac
import ipaddress
import time
from typing import Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from jcstate.server import db
from jcstate.server.commands import ACTIVE_STATES, FINAL_STATES

__all__ = ["CONTENT_TYPE", "Metrics", "allowed"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PUSH_ROUTE = "POST /api/v1/revisions"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _StateCollector(Collector):
    """Gauges read when scraped: held polls, devices online/offline, commands by state."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.held = 0  # set on the event loop just before the scrape (see Metrics.render)

    def collect(self) -> Any:
        held = GaugeMetricFamily(
            "jcstate_held_polls", "Long polls this server process holds right now"
        )
        held.add_metric([], self.held)
        yield held
        store = self.ctx.store
        cutoff = time.time() - self.ctx.online_after
        d, c = db.devices, db.commands
        with store.engine.connect() as conn:
            rows = conn.execute(
                sa.select(d.c.id, d.c.status, d.c.last_seen).where(d.c.status != "revoked")
            ).all()
            by_state = dict(
                conn.execute(sa.select(c.c.state, sa.func.count()).group_by(c.c.state)).all()
            )
        devices = GaugeMetricFamily(
            "jcstate_devices",
            f"Devices by status (active ones are online when seen in the last "
            f"{self.ctx.online_after:g} s)",
            labels=["status"],
        )
        noted = store._seen  # this process's last-seen times not yet written (every 5 s)
        online = offline = pending = 0
        for device_id, status, last_seen in rows:
            if status != "active":
                pending += 1
                continue
            seen = max(last_seen or 0.0, noted.get(device_id) or 0.0)
            if seen >= cutoff:
                online += 1
            else:
                offline += 1
        devices.add_metric(["online"], online)
        devices.add_metric(["offline"], offline)
        devices.add_metric(["pending"], pending)
        yield devices
        commands = GaugeMetricFamily(
            "jcstate_commands", "Security commands by state (all devices)", labels=["state"]
        )
        for state in sorted(set(ACTIVE_STATES + FINAL_STATES) | set(by_state)):
            commands.add_metric([state], by_state.get(state, 0))
        yield commands


class Metrics:
    """One server process's metrics (its own registry: tests run several apps in a process)."""

    def __init__(self, ctx: Any, token: str | None = None) -> None:
        self.token = token
        self.registry = CollectorRegistry()
        self.state = _StateCollector(ctx)
        self.registry.register(self.state)
        self.requests = Histogram(
            "jcstate_request_seconds",
            "Request latency by route (the held long poll is not counted)",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.push = Histogram(
            "jcstate_push_seconds",
            "Push latency: POST /api/v1/revisions from request to answer",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.wake = Histogram(
            "jcstate_wake_seconds",
            "From a push's notification to the last held poll of this process answered",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.woken = Counter(
            "jcstate_woken_polls", "Held polls woken by pushes", registry=self.registry
        )
        self.converges = Counter(
            "jcstate_converge_reports",
            "Converge reports received, by result (ok / failed) and whether anything changed",
            ["result", "changed"],
            registry=self.registry,
        )

    def request(self, scope: Any, status: int, seconds: float) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        method = scope.get("method", "")
        self.requests.labels(method, template, str(status)).observe(seconds)
        if status < 400 and f"{method} {template}" == PUSH_ROUTE:
            self.push.observe(seconds)

    def woke(self, seconds: float, polls: int) -> None:
        self.wake.observe(seconds)
        self.woken.inc(polls)

    def converged(self, ok: bool, changed: bool) -> None:
        self.converges.labels("ok" if ok else "failed", "true" if changed else "false").inc()

    def render(self, held: int) -> bytes:
        """The text exposition (reads the database: call it from a worker thread)."""
        self.state.held = held
        return generate_latest(self.registry)


def allowed(metrics: Metrics, address: str, authorization: str) -> bool:
    """Whether a scrape is let in: the metrics token, or a client on loopback."""
    scheme, _, token = authorization.partition(" ")
    if metrics.token and scheme.lower() == "bearer" and token:
        return hmac.compare_digest(token.strip().encode(), metrics.token.encode())
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False
