"""Queries the console's pages need that the store does not have: one page of a filtered,
sorted device list, and per-device summaries for that page only.

With 10,000 devices the Devices page must answer in well under 300 ms, so filtering, sorting
and paging happen in SQL and everything per device (pending commands, last report) is read
for the page's rows only. The same filters are meant for the fleet API (issue 12).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from jcstate.server import db
from jcstate.server.commands import ACTIVE_STATES
from jcstate.server.store import Store

__all__ = ["DeviceQuery", "find_devices", "last_reports", "pending_commands"]

SORTS = {
    "hostname": db.devices.c.hostname,
    "os": db.devices.c.os,
    "lastSeen": db.devices.c.last_seen,
    "agentVersion": db.devices.c.agent_version,
    "enrolled": db.devices.c.enrolled_at,
}
STATUSES = ("online", "offline", "pending", "revoked")


@dataclass
class DeviceQuery:
    search: str = ""  # part of the hostname
    os: str = ""
    label: str = ""  # KEY=VALUE, or KEY for any value
    status: str = ""  # online | offline | pending | revoked
    sort: str = "hostname"
    descending: bool = False
    page: int = 1
    per_page: int = 50


def find_devices(store: Store, q: DeviceQuery, online_since: float) -> tuple[list[Any], int]:
    """(this page's device rows, how many match in all)."""
    d = db.devices
    where: list[Any] = []
    if q.search:
        escaped = q.search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        where.append(d.c.hostname.ilike(f"%{escaped}%", escape="\\"))
    if q.os:
        where.append(d.c.os == q.os)
    if q.label:
        key, has_value, value = q.label.partition("=")
        field = d.c.labels[key.strip()].as_string()
        where.append(field == value.strip() if has_value else field.is_not(None))
    if q.status == "online":
        where += [d.c.status == "active", d.c.last_seen >= online_since]
    elif q.status == "offline":
        where += [
            d.c.status == "active",
            sa.or_(d.c.last_seen.is_(None), d.c.last_seen < online_since),
        ]
    elif q.status in ("pending", "revoked"):
        where.append(d.c.status == q.status)
    column = SORTS.get(q.sort, d.c.hostname)
    order = column.desc() if q.descending else column.asc()
    if q.descending:
        order = order.nulls_last()
    else:
        order = order.nulls_first()
    query = (
        d.select()
        .where(*where)
        .order_by(order, d.c.hostname, d.c.id)
        .offset((max(q.page, 1) - 1) * q.per_page)
        .limit(q.per_page)
    )
    count = sa.select(sa.func.count()).select_from(d).where(*where)
    with store.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(query)]
        total = int(conn.execute(count).scalar_one())
    return rows, total


def operating_systems(store: Store) -> list[str]:
    d = db.devices
    with store.engine.connect() as conn:
        return [r[0] for r in conn.execute(sa.select(d.c.os).distinct().order_by(d.c.os))]


def pending_commands(store: Store, device_ids: list[str]) -> dict[str, int]:
    """Queued, delivered or running commands per device."""
    c = db.commands
    if not device_ids:
        return {}
    q = (
        sa.select(c.c.device_id, sa.func.count())
        .where(c.c.device_id.in_(device_ids), c.c.state.in_(ACTIVE_STATES))
        .group_by(c.c.device_id)
    )
    with store.engine.connect() as conn:
        return {r[0]: int(r[1]) for r in conn.execute(q)}


def last_reports(store: Store, device_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Each device's newest report body."""
    r = db.reports
    if not device_ids:
        return {}
    newest = (
        sa.select(sa.func.max(r.c.id))
        .where(r.c.device_id.in_(device_ids))
        .group_by(r.c.device_id)
        .scalar_subquery()
    )
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(r.c.device_id, r.c.body).where(r.c.id.in_(newest)))
        return {row[0]: row[1] for row in rows}


def failures(report: dict[str, Any] | None) -> int:
    """How many changes failed or were refused in a report, plus its errors."""
    if not report:
        return 0
    report = report.get("report") or report  # the agent's envelope holds the engine's report
    results = report.get("results") or []
    bad = sum(1 for x in results if isinstance(x, dict) and x.get("status") in ("failed",))
    counts = report.get("counts") or {}
    return bad + int(counts.get("refused", 0) or 0) + len(report.get("errors") or [])


def find_commands(
    store: Store,
    *,
    state: str = "",
    device: str = "",
    action: str = "",
    page: int = 1,
    per_page: int = 100,
) -> tuple[list[dict[str, Any]], int]:
    """(a page of commands, newest first, with their device's hostname; how many match).

    ``device`` is a device id or (part of) a hostname.
    """
    c, d = db.commands, db.devices
    where: list[Any] = []
    if state:
        where.append(c.c.state == state)
    if action:
        where.append(c.c.action == action)
    if device:
        escaped = device.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        where.append(
            sa.or_(c.c.device_id == device, d.c.hostname.ilike(f"%{escaped}%", escape="\\"))
        )
    joined = c.outerjoin(d, d.c.id == c.c.device_id)
    query = (
        sa.select(c, d.c.hostname)
        .select_from(joined)
        .where(*where)
        .order_by(c.c.seq.desc())
        .offset((max(page, 1) - 1) * per_page)
        .limit(per_page)
    )
    count = sa.select(sa.func.count()).select_from(joined).where(*where)
    with store.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(query)]
        total = int(conn.execute(count).scalar_one())
    return rows, total


def find_audit(
    store: Store,
    *,
    actor: str = "",
    action: str = "",
    target: str = "",
    outcome: str = "",
    since: float | None = None,
    until: float | None = None,
    limit: int = 200,
) -> list[dict[str, Any]]:
    """Audit entries, newest first; ``actor``, ``action`` and ``target`` match a part."""
    a = db.audit
    where: list[Any] = []
    for column, text in ((a.c.actor, actor), (a.c.action, action), (a.c.target, target)):
        if text:
            escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where.append(column.ilike(f"%{escaped}%", escape="\\"))
    if outcome:
        where.append(a.c.outcome == outcome)
    if since is not None:
        where.append(a.c.at >= since)
    if until is not None:
        where.append(a.c.at < until)
    query = a.select().where(*where).order_by(a.c.id.desc()).limit(limit)
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]
