"""Browser sessions of named admins, kept in the database (every server process sees them).

The cookie holds a random id; the table keeps only its SHA-256, so a copy of the database
cannot be replayed as a cookie. A session ends at sign-out, after ``idle`` seconds without a
request, after ``lifetime`` seconds in all, and when its admin is removed or changes password.

A session has a stage: ``totp`` or ``enrol`` after the password of an administrator (who must
still give a TOTP code, or scan one first), ``ok`` once signed in. Only ``ok`` sessions reach
pages. Each session has its own CSRF token, which every state-changing form carries.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

import sqlalchemy as sa

from jcstate.server import db
from jcstate.server.store import Store

__all__ = ["Session", "Sessions"]

admin_sessions = sa.Table(
    "admin_sessions",
    db.METADATA,
    sa.Column("id_hash", sa.String(64), primary_key=True),  # sha256 of the cookie's value
    sa.Column("admin", sa.String(100), nullable=False, index=True),
    sa.Column("stage", sa.String(10), nullable=False),  # totp | enrol | ok
    sa.Column("csrf", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("last_used_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),  # the absolute end
    sa.Column("pending_totp", sa.Text),  # enrol: the offered seed, sealed, until confirmed
)


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


@dataclass(frozen=True)
class Session:
    id_hash: str
    admin: str
    stage: str
    csrf: str
    pending_totp: str | None


class Sessions:
    """Create, find (and touch), upgrade and end sessions."""

    def __init__(self, store: Store, *, idle: float, lifetime: float):
        self.store, self.idle, self.lifetime = store, idle, lifetime

    def create(self, admin: str, stage: str, pending_totp: str | None = None) -> str:
        """A new session; returns the cookie's value (shown nowhere else)."""
        session_id = secrets.token_urlsafe(32)
        now = time.time()
        with self.store.transaction() as conn:
            conn.execute(
                admin_sessions.insert().values(
                    id_hash=_hash(session_id),
                    admin=admin,
                    stage=stage,
                    csrf=secrets.token_urlsafe(32),
                    created_at=now,
                    last_used_at=now,
                    expires_at=now + self.lifetime,
                    pending_totp=pending_totp,
                )
            )
            # sessions past their end are of no use to anyone
            conn.execute(admin_sessions.delete().where(admin_sessions.c.expires_at < now))
        return session_id

    def find(self, session_id: str | None, *, touch: bool = True) -> Session | None:
        """The live session for a cookie value, its idle clock reset unless ``touch`` is
        False (a page's own refreshes are not the admin's activity); None when ended."""
        if not session_id:
            return None
        s = admin_sessions
        now = time.time()
        key = _hash(session_id)
        alive = (s.c.id_hash == key, s.c.expires_at > now, s.c.last_used_at > now - self.idle)
        if not touch:
            with self.store.engine.connect() as conn:
                row = conn.execute(s.select().where(*alive)).first()
            if row is None:
                return None
            return Session(row.id_hash, row.admin, row.stage, row.csrf, row.pending_totp)
        with self.store.transaction() as conn:
            res = conn.execute(s.update().where(*alive).values(last_used_at=now))
            if res.rowcount == 0:
                conn.execute(s.delete().where(s.c.id_hash == key))
                return None
            row = conn.execute(s.select().where(s.c.id_hash == key)).first()
        if row is None:
            return None
        return Session(row.id_hash, row.admin, row.stage, row.csrf, row.pending_totp)

    def end(self, session: Session | str) -> None:
        key = session.id_hash if isinstance(session, Session) else _hash(session)
        with self.store.transaction() as conn:
            conn.execute(admin_sessions.delete().where(admin_sessions.c.id_hash == key))
