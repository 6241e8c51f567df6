"""Every query the server makes, one method per question, on SQLite or PostgreSQL alike.

Methods are synchronous (SQLAlchemy Core); async routes call them in a worker thread. Each method
is one transaction. Rows come back as plain dicts.

The hot path is a device's poll, thousands per minute, so it writes nothing per request: the
"last seen" times are kept in memory and written in one batch every few seconds
(:meth:`Store.flush_seen`), and on SQLite (one server process by design) spent request nonces
are kept in memory too. On PostgreSQL nonces go to the database, so that a replay is refused
by every server process. SQLite writers queue on a lock in this process instead of in SQLite's
busy handler, which sleeps and collapses under contention.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from jcstate.server import db
from jcstate.server.peer import current_address

__all__ = ["NOTIFY_CHANNEL", "Store", "hash_token"]

NOTIFY_CHANNEL = "jcstate"
Row = dict[str, Any]


def hash_token(token: str) -> str:
    """Tokens are 256-bit random strings, so one round of SHA-256 is a safe verifier."""
    return hashlib.sha256(token.encode()).hexdigest()


def _new_id() -> str:
    return secrets.token_hex(8)


def _rows(result: Iterable[Any]) -> list[Row]:
    return [dict(r._mapping) for r in result]


class Store:
    """The server's data, behind one SQLAlchemy engine."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine
        self.is_postgres = engine.dialect.name == "postgresql"
        self._write_lock = threading.Lock()
        self._seen: dict[str, float] = {}  # device id → last request, not yet written
        self._nonces: dict[tuple[str, str], float] = {}  # SQLite only: spent nonce → expiry
        self._nonce_lock = threading.Lock()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        """A write transaction; on SQLite one at a time per process."""
        lock = contextlib.nullcontext() if self.is_postgres else self._write_lock
        with lock, self.engine.begin() as conn:
            yield conn

    def transaction(self) -> contextlib.AbstractContextManager[sa.Connection]:
        """A write transaction for the server's other tables (the command queue)."""
        return self._write()

    def notify(self, conn: sa.Connection, payload: str) -> None:
        """Wake long polls in every server process once ``conn``'s transaction commits."""
        self._notify(conn, payload)

    # -- change notification ---------------------------------------------------------------
    def _notify(self, conn: sa.Connection, payload: str) -> None:
        """Tell every server process (LISTEN/NOTIFY) once this transaction commits."""
        if self.is_postgres:
            conn.execute(sa.select(sa.func.pg_notify(NOTIFY_CHANNEL, payload)))

    # -- admin tokens ----------------------------------------------------------------------
    def create_token(
        self,
        name: str,
        role: str,
        created_by: str | None,
        expires_at: float | None = None,
        owner: str | None = None,
    ) -> tuple[Row, str]:
        token_id = _new_id()
        plain = f"jcs_{token_id}_{secrets.token_urlsafe(32)}"
        row = {
            "id": token_id,
            "name": name,
            "role": role,
            "hash": hash_token(plain),
            "created_at": time.time(),
            "created_by": created_by,
            "expires_at": expires_at,
            "owner": owner,
        }
        with self._write() as conn:
            conn.execute(db.tokens.insert().values(**row))
        return self.token(token_id) or row, plain

    def token(self, token_id: str) -> Row | None:
        with self.engine.connect() as conn:
            rows = _rows(conn.execute(db.tokens.select().where(db.tokens.c.id == token_id)))
        return rows[0] if rows else None

    def token_for(self, plain: str) -> Row | None:
        """The live token whose secret is ``plain``, or None."""
        t = db.tokens
        with self.engine.connect() as conn:
            rows = _rows(
                conn.execute(
                    t.select().where(t.c.hash == hash_token(plain), t.c.revoked_at.is_(None))
                )
            )
        return rows[0] if rows else None

    def token_by_secret(self, plain: str) -> Row | None:
        """The token whose secret is ``plain``, live, revoked or expired alike (so that a
        refusal can say which, and the audit can name the token)."""
        t = db.tokens
        with self.engine.connect() as conn:
            rows = _rows(conn.execute(t.select().where(t.c.hash == hash_token(plain))))
        return rows[0] if rows else None

    def token_used(self, token_id: str, now: float) -> None:
        """Note a token's use; written at most once a minute per token."""
        t = db.tokens
        with self._write() as conn:
            conn.execute(
                t.update()
                .where(
                    t.c.id == token_id,
                    sa.or_(t.c.last_used_at.is_(None), t.c.last_used_at < now - 60),
                )
                .values(last_used_at=now)
            )

    def token_names(self) -> dict[str, str]:
        """Token id → name, for showing actors by name."""
        t = db.tokens
        with self.engine.connect() as conn:
            return {r.id: r.name for r in conn.execute(sa.select(t.c.id, t.c.name))}

    def list_tokens(self) -> list[Row]:
        with self.engine.connect() as conn:
            return _rows(conn.execute(db.tokens.select().order_by(db.tokens.c.created_at)))

    def revoke_token(self, token_id: str) -> bool:
        t = db.tokens
        with self._write() as conn:
            res = conn.execute(
                t.update()
                .where(t.c.id == token_id, t.c.revoked_at.is_(None))
                .values(revoked_at=time.time())
            )
        return res.rowcount > 0

    def count_tokens(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(db.tokens)).scalar_one())

    # -- connect keys ----------------------------------------------------------------------
    def create_connect_key(
        self, name: str, *, auto_approve: bool = True, labels: dict[str, str] | None = None
    ) -> Row:
        row = {
            "id": _new_id(),
            "key": "jck_" + secrets.token_urlsafe(24),
            "name": name,
            "auto_approve": auto_approve,
            "labels": dict(labels or {}),
            "created_at": time.time(),
        }
        with self._write() as conn:
            conn.execute(db.connect_keys.insert().values(**row))
        return {**row, "revoked_at": None}

    def connect_key(self, key: str) -> Row | None:
        """The live connect key with this value, or None (revoked keys admit nobody)."""
        k = db.connect_keys
        with self.engine.connect() as conn:
            rows = _rows(conn.execute(k.select().where(k.c.key == key, k.c.revoked_at.is_(None))))
        return rows[0] if rows else None

    def list_connect_keys(self) -> list[Row]:
        with self.engine.connect() as conn:
            return _rows(
                conn.execute(db.connect_keys.select().order_by(db.connect_keys.c.created_at))
            )

    def revoke_connect_key(self, key_id: str) -> bool:
        k = db.connect_keys
        with self._write() as conn:
            res = conn.execute(
                k.update()
                .where(k.c.id == key_id, k.c.revoked_at.is_(None))
                .values(revoked_at=time.time())
            )
        return res.rowcount > 0

    # -- devices ---------------------------------------------------------------------------
    def enroll(self, *, public_key: str, key_row: Row, info: dict[str, str]) -> tuple[Row, bool]:
        """Create a device for a new public key; the same key again gets its own record back.

        Ids are chosen here, never by the device, so a second enrollment can never claim an
        existing record: only the holder of that record's private key reaches it.
        """
        d = db.devices
        with self._write() as conn:
            existing = _rows(conn.execute(d.select().where(d.c.public_key == public_key)))
            if existing:
                return existing[0], False
            row = {
                "id": _new_id(),
                "hostname": info["hostname"],
                "os": info["os"],
                "os_version": info.get("osVersion", ""),
                "arch": info.get("arch", ""),
                "agent_version": info.get("agentVersion", ""),
                "labels": dict(key_row.get("labels") or {}),
                "public_key": public_key,
                "status": "active" if key_row["auto_approve"] else "pending",
                "connect_key_id": key_row["id"],
                "enrolled_at": time.time(),
            }
            conn.execute(d.insert().values(**row))
        return self.device(row["id"]) or row, True

    def device(self, device_id: str) -> Row | None:
        with self.engine.connect() as conn:
            rows = _rows(conn.execute(db.devices.select().where(db.devices.c.id == device_id)))
        return rows[0] if rows else None

    def devices_named(self, ref: str) -> list[Row]:
        """Devices whose id is ``ref``, else whose hostname is ``ref`` (possibly several)."""
        d = db.devices
        with self.engine.connect() as conn:
            rows = _rows(conn.execute(d.select().where(d.c.id == ref)))
            if not rows:
                rows = _rows(
                    conn.execute(d.select().where(d.c.hostname == ref).order_by(d.c.enrolled_at))
                )
        return rows

    def list_devices(self) -> list[Row]:
        d = db.devices
        with self.engine.connect() as conn:
            return _rows(conn.execute(d.select().order_by(d.c.hostname, d.c.enrolled_at)))

    _DEVICE_SORTS = {
        "hostname": "hostname",
        "id": "id",
        "os": "os",
        "status": "status",
        "agentVersion": "agent_version",
        "enrolledAt": "enrolled_at",
        "lastSeen": "last_seen",
        "lastReportAt": "last_report_at",
    }

    # what decides a device's document (its etag) and its drift
    _LIGHT = (
        "id",
        "hostname",
        "os",
        "os_version",
        "arch",
        "labels",
        "status",
        "applied_etag",
        "last_report_at",
        "last_report_ok",
        "last_report_changed",
    )

    def query_devices(
        self,
        *,
        labels: dict[str, str] | None = None,
        os: str | None = None,
        status: str | None = None,
        search: str | None = None,
        seen_since: float | None = None,
        unseen_since: float | None = None,
        failed: bool | None = None,
        reported: bool | None = None,
        drift: bool | None = None,
        ids: list[str] | None = None,
        sort: str = "hostname",
        limit: int | None = None,
        offset: int = 0,
        light: bool = False,
    ) -> tuple[list[Row], int]:
        """(one page of devices, how many match), filtered and sorted in the database.

        ``labels``: every key equal (AND); ``search``: hostname (any case) or id prefix;
        ``seen_since``/``unseen_since``: last seen at or after / never or before that time;
        ``drift``: the device's last plan had changes it has not applied (the ``drift`` column,
        :mod:`jcstate.server.states`); ``sort``: a field of the device view, ``-`` in front for
        descending; ``light``: only
        the columns that decide a document and drift (no facts). Raises ValueError for an
        unknown sort.
        """
        d = db.devices
        desc = sort.startswith("-")
        column = self._DEVICE_SORTS.get(sort.lstrip("-"))
        if column is None:
            raise ValueError(
                f"unknown sort {sort!r}: one of {', '.join(self._DEVICE_SORTS)} (- for descending)"
            )
        conds: list[Any] = []
        for key, value in (labels or {}).items():
            conds.append(d.c.labels[key].as_string() == value)
        if os is not None:
            conds.append(d.c.os == os)
        if status is not None:
            conds.append(d.c.status == status)
        if search:
            pattern = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            conds.append(
                sa.or_(
                    sa.func.lower(d.c.hostname).like(pattern.lower(), escape="\\"),
                    d.c.id.like(pattern, escape="\\"),
                )
            )
        if seen_since is not None or unseen_since is not None:
            self.flush_seen()  # this process's newest "last seen" times, so the filter sees them
        if seen_since is not None:
            conds.append(d.c.last_seen >= seen_since)
        if unseen_since is not None:
            conds.append(sa.or_(d.c.last_seen.is_(None), d.c.last_seen < unseen_since))
        if failed is not None:
            conds.append(d.c.last_report_ok == (not failed))
        if reported is not None:
            conds.append(
                d.c.last_report_at.is_not(None) if reported else d.c.last_report_at.is_(None)
            )
        if drift is not None:
            conds.append(d.c.drift.is_(True) if drift else d.c.drift.is_not(True))
        if ids is not None:
            conds.append(d.c.id.in_(ids))
        order = d.c[column].desc() if desc else d.c[column].asc()
        columns = [d.c[name] for name in self._LIGHT] if light else list(d.c)
        q = sa.select(*columns).where(*conds).order_by(order, d.c.hostname, d.c.id)
        if limit is not None:
            q = q.limit(limit).offset(offset)
        count = sa.select(sa.func.count()).select_from(d).where(*conds)
        with self.engine.connect() as conn:
            result = conn.execute(q)
            keys = list(result.keys())
            rows = [dict(zip(keys, r, strict=True)) for r in result]  # 10,000 rows: no _mapping
            total = int(conn.execute(count).scalar_one())
        return rows, total

    def update_labels(
        self, device_ids: list[str], add: dict[str, str], remove: list[str]
    ) -> list[Row]:
        """Add (or change) and remove labels on each device, in one transaction; wakes them."""
        d = db.devices
        changed: list[Row] = []
        with self._write() as conn:
            for start in range(0, len(device_ids), 500):
                chunk = device_ids[start : start + 500]
                rows = conn.execute(sa.select(d.c.id, d.c.labels).where(d.c.id.in_(chunk)))
                for row in rows:
                    labels = {k: v for k, v in (row.labels or {}).items() if k not in remove}
                    labels.update(add)
                    if labels != (row.labels or {}):
                        conn.execute(d.update().where(d.c.id == row.id).values(labels=labels))
                    changed.append({"id": row.id, "labels": labels})
            self._notify(conn, "all" if len(device_ids) > 1 else f"device:{device_ids[0]}")
        return changed

    def set_device(self, device_id: str, **values: Any) -> None:
        """Update a device's admin-controlled fields (status, labels) and wake its agent."""
        with self._write() as conn:
            conn.execute(db.devices.update().where(db.devices.c.id == device_id).values(**values))
            self._notify(conn, f"device:{device_id}")

    def seen_at(self, row: Row) -> float | None:
        """A device's last request: the newer of the database's and this process's note."""
        noted = self._seen.get(row["id"])
        stored = row.get("last_seen")
        if noted is None or (stored is not None and stored > noted):
            return stored
        return noted

    # -- request nonces --------------------------------------------------------------------
    def use_nonce(self, device_id: str, nonce: str, expires_at: float) -> bool:
        """Record a request nonce; False when it was used before (a replay)."""
        if not self.is_postgres:
            with self._nonce_lock:
                if (device_id, nonce) in self._nonces:
                    return False
                self._nonces[(device_id, nonce)] = expires_at
            return True
        try:
            with self._write() as conn:
                conn.execute(
                    db.nonces.insert().values(
                        device_id=device_id, nonce=nonce, expires_at=expires_at
                    )
                )
        except IntegrityError:
            return False
        return True

    def flush_seen(self) -> int:
        """Write the "last seen" times noted since the last flush, in one transaction."""
        pending, self._seen = self._seen, {}
        if not pending:
            return 0
        d = db.devices
        stmt = (
            d.update()
            .where(d.c.id == sa.bindparam("b_id"))
            .values(last_seen=sa.bindparam("b_seen"))
        )
        with self._write() as conn:
            conn.execute(stmt, [{"b_id": k, "b_seen": v} for k, v in pending.items()])
        return len(pending)

    def accept_request(
        self, device_id: str, nonce: str, expires_at: float, now: float
    ) -> Row | None:
        """Spend a signed request's nonce, note the device as seen and return its current row.

        None when the nonce was spent before: the request is a replay.
        """
        if not self.use_nonce(device_id, nonce, expires_at):
            return None
        self._seen[device_id] = now
        return self.device(device_id)

    def public_key(self, device_id: str) -> str | None:
        d = db.devices
        with self.engine.connect() as conn:
            return conn.execute(sa.select(d.c.public_key).where(d.c.id == device_id)).scalar()

    def prune_nonces(self, now: float) -> int:
        with self._nonce_lock:
            self._nonces = {k: v for k, v in self._nonces.items() if v >= now}
        if not self.is_postgres:
            return 0
        with self._write() as conn:
            return conn.execute(db.nonces.delete().where(db.nonces.c.expires_at < now)).rowcount

    # -- policy revisions ------------------------------------------------------------------
    def add_revision(
        self,
        files: dict[str, str],
        author: str,
        message: str,
        *,
        commit: str | None = None,
        devices: int | None = None,
        rollback_of: int | None = None,
        rollout: dict[str, Any] | None = None,
    ) -> int:
        """Store a revision; refused (RolloutInProgress) while a staged rollout is in progress.

        ``rollout``: the keyword arguments of :func:`jcstate.server.rollout.plan`: the
        revision goes to a canary wave first (RolloutError, nothing stored, when it cannot)."""
        from jcstate.server import rollout as staged

        with self._write() as conn:
            if self.is_postgres:
                # one push at a time across server processes: the check below must hold
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(4242012)"))
            staged.refuse_if_open(conn)
            planned = None if rollout is None else staged.plan(conn, **rollout)
            res = conn.execute(
                db.revisions.insert().values(
                    created_at=time.time(),
                    author=author,
                    message=message,
                    files=files,
                    commit=commit,
                    devices=devices,
                    rollback_of=rollback_of,
                )
            )
            rev_id = int(res.inserted_primary_key[0])
            if planned is not None:
                staged.start(conn, rev_id, planned)
            self._notify(conn, "all")
        return rev_id

    def set_revision_devices(self, rev_id: int, devices: int) -> None:
        """How many devices revision ``rev_id`` changed: counted after the push woke them."""
        with self._write() as conn:
            conn.execute(
                db.revisions.update().where(db.revisions.c.id == rev_id).values(devices=devices)
            )

    def latest_revision_id(self) -> int | None:
        with self.engine.connect() as conn:
            value = conn.execute(sa.select(sa.func.max(db.revisions.c.id))).scalar()
        return None if value is None else int(value)

    def previous_revision_id(self, rev_id: int) -> int | None:
        """The newest revision before ``rev_id`` (None for the first)."""
        r = db.revisions
        with self.engine.connect() as conn:
            value = conn.execute(sa.select(sa.func.max(r.c.id)).where(r.c.id < rev_id)).scalar()
        return None if value is None else int(value)

    def revision(self, rev_id: int) -> Row | None:
        with self.engine.connect() as conn:
            rows = _rows(conn.execute(db.revisions.select().where(db.revisions.c.id == rev_id)))
        return rows[0] if rows else None

    def list_revisions(self, limit: int = 100) -> list[Row]:
        r = db.revisions
        cols = [r.c.id, r.c.created_at, r.c.author, r.c.message, r.c.files, r.c.commit]
        cols += [r.c.devices, r.c.rollback_of]
        with self.engine.connect() as conn:
            return _rows(conn.execute(sa.select(*cols).order_by(r.c.id.desc()).limit(limit)))

    # -- reports ---------------------------------------------------------------------------
    def add_report(self, device_id: str, report: dict[str, Any]) -> bool:
        """Store a report once; False when this report id was already stored (a resend).

        A converge's report is kept whole; a plan between converges (``kind: plan``) only
        updates the device's drift and last plan (:mod:`jcstate.server.states`).
        """
        from jcstate.server.states import last_plan

        now = time.time()
        facts = report.get("facts")
        d = db.devices
        if report.get("kind") == "plan":
            with self._write() as conn:
                previous = conn.execute(sa.select(d.c.last_plan).where(d.c.id == device_id))
                drift, kept = last_plan(report, now, previous.scalar())
                conn.execute(
                    d.update()
                    .where(d.c.id == device_id)
                    .values(drift=drift, last_plan=kept, last_plan_at=now, last_seen=now)
                )
            return True
        drift, kept = last_plan(report, now)
        try:
            with self._write() as conn:
                conn.execute(
                    db.reports.insert().values(
                        device_id=device_id,
                        report_id=report["reportId"],
                        received_at=now,
                        etag=report.get("etag"),
                        ok=bool(report.get("ok")),
                        changed=bool(report.get("changed")),
                        body=report,
                    )
                )
                values: dict[str, Any] = {
                    "last_report_at": now,
                    "last_report_ok": bool(report.get("ok")),
                    "last_report_changed": bool(report.get("changed")),
                    "applied_etag": report.get("etag"),
                    "last_seen": now,
                    "drift": drift,
                    "last_plan": kept,
                    "last_plan_at": now,
                }
                if isinstance(facts, dict):
                    values["facts"] = facts
                    if isinstance(facts.get("agentVersion"), str) and facts["agentVersion"]:
                        values["agent_version"] = facts["agentVersion"][:50]  # after an update
                conn.execute(d.update().where(d.c.id == device_id).values(**values))
        except IntegrityError:
            return False
        return True

    def last_report(self, device_id: str) -> Row | None:
        r = db.reports
        with self.engine.connect() as conn:
            rows = _rows(
                conn.execute(
                    r.select().where(r.c.device_id == device_id).order_by(r.c.id.desc()).limit(1)
                )
            )
        return rows[0] if rows else None

    def count_reports(self, device_id: str) -> int:
        r = db.reports
        with self.engine.connect() as conn:
            q = sa.select(sa.func.count()).select_from(r).where(r.c.device_id == device_id)
            return int(conn.execute(q).scalar_one())

    # -- secrets (sealed by the vault) -----------------------------------------------------
    def set_secret(self, kind: str, name: str, sealed: str) -> None:
        s = db.secrets
        with self._write() as conn:
            conn.execute(s.delete().where(s.c.kind == kind, s.c.name == name))
            conn.execute(
                s.insert().values(kind=kind, name=name, ciphertext=sealed, updated_at=time.time())
            )
            self._notify(conn, "all")

    def delete_secret(self, kind: str, name: str) -> bool:
        """Forget a secret. Every device's document depends on the newest ``updated_at`` of
        the secrets (:meth:`generation`); deleting a row that was not the newest would leave it
        unchanged, and devices would keep a cached document still carrying the secret. So a
        deletion is recorded as a row of its own kind, which moves the generation on."""
        s = db.secrets
        with self._write() as conn:
            res = conn.execute(s.delete().where(s.c.kind == kind, s.c.name == name))
            if res.rowcount:
                conn.execute(s.delete().where(s.c.kind == "deleted", s.c.name == "generation"))
                conn.execute(
                    s.insert().values(
                        kind="deleted", name="generation", ciphertext="", updated_at=time.time()
                    )
                )
            self._notify(conn, "all")
        return res.rowcount > 0

    def sealed_secret(self, kind: str, name: str) -> str | None:
        s = db.secrets
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(s.c.ciphertext).where(s.c.kind == kind, s.c.name == name)
            ).scalar()

    def secret_names(self, kind: str) -> list[Row]:
        s = db.secrets
        with self.engine.connect() as conn:
            q = sa.select(s.c.name, s.c.updated_at).where(s.c.kind == kind).order_by(s.c.name)
            return _rows(conn.execute(q))

    def generation(self) -> tuple[int | None, float]:
        """(revision, newest secret change) of every device outside a staged rollout's canary
        wave: what their documents depend on (:func:`jcstate.server.rollout.serving` has the
        canaries' too)."""
        from jcstate.server.rollout import serving

        return serving(self).of(None)

    # -- escrowed recovery keys (sealed by the vault) ---------------------------------------
    def set_recovery_key(self, device_id: str, volume: str, sealed: str) -> float:
        """Store (or replace) a device's sealed recovery key for ``volume``; returns the time.

        No notify and no effect on :meth:`generation`: no device's document depends on it.
        """
        k = db.recovery_keys
        now = time.time()
        with self._write() as conn:
            conn.execute(k.delete().where(k.c.device_id == device_id, k.c.volume == volume))
            conn.execute(
                k.insert().values(
                    device_id=device_id, volume=volume, ciphertext=sealed, escrowed_at=now
                )
            )
        return now

    def recovery_keys(self, device_id: str) -> list[Row]:
        """A device's sealed recovery keys, newest first."""
        k = db.recovery_keys
        with self.engine.connect() as conn:
            q = k.select().where(k.c.device_id == device_id).order_by(k.c.escrowed_at.desc())
            return _rows(conn.execute(q))

    # -- agent releases (self-update) --------------------------------------------------------
    _RELEASE_COLUMNS = (
        "version",
        "sha256",
        "size",
        "filename",
        "created_at",
        "created_by",
        "signature",
    )

    def add_release(
        self,
        *,
        version: str,
        sha256: str,
        filename: str,
        data: bytes,
        created_by: str,
        signature: str | None = None,
    ) -> Row | None:
        """Store a release; None when its version (or the same bytes) is already stored."""
        row = {
            "version": version,
            "sha256": sha256,
            "size": len(data),
            "filename": filename,
            "created_at": time.time(),
            "created_by": created_by,
            "signature": signature,
        }
        try:
            with self._write() as conn:
                conn.execute(db.releases.insert().values(data=data, **row))
        except IntegrityError:
            return None
        return row

    def list_releases(self) -> list[Row]:
        """Every release without its bytes, newest upload first."""
        r = db.releases
        cols = [r.c[name] for name in self._RELEASE_COLUMNS]
        with self.engine.connect() as conn:
            return _rows(conn.execute(sa.select(*cols).order_by(r.c.created_at.desc())))

    def release(self, version: str) -> Row | None:
        """One release by version, without its bytes."""
        r = db.releases
        cols = [r.c[name] for name in self._RELEASE_COLUMNS]
        with self.engine.connect() as conn:
            rows = _rows(conn.execute(sa.select(*cols).where(r.c.version == version)))
        return rows[0] if rows else None

    def has_release(self, sha256: str) -> bool:
        r = db.releases
        with self.engine.connect() as conn:
            return (
                conn.execute(sa.select(r.c.version).where(r.c.sha256 == sha256)).first() is not None
            )

    def release_data(self, sha256: str) -> tuple[str, bytes] | None:
        """(file name, wheel bytes) of the release with this digest."""
        r = db.releases
        with self.engine.connect() as conn:
            found = conn.execute(
                sa.select(r.c.filename, r.c.data).where(r.c.sha256 == sha256)
            ).first()
        return None if found is None else (str(found.filename), bytes(found.data))

    def delete_release(self, version: str) -> bool:
        r = db.releases
        with self._write() as conn:
            return conn.execute(r.delete().where(r.c.version == version)).rowcount > 0

    # -- audit -----------------------------------------------------------------------------
    def audit(
        self,
        actor: str,
        action: str,
        outcome: str,
        *,
        role: str | None = None,
        target: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        address = current_address.get()  # the client of the request being served, if any
        if address:
            detail = {**(detail or {}), "address": address}
        with self._write() as conn:
            conn.execute(
                db.audit.insert().values(
                    at=time.time(),
                    actor=actor,
                    role=role,
                    action=action,
                    target=target,
                    outcome=outcome,
                    detail=detail or {},
                )
            )

    def list_audit(
        self,
        limit: int = 200,
        *,
        actors: list[str] | None = None,
        actions: list[str] | None = None,
        target: str | None = None,
        outcome: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[Row]:
        """The newest entries first; each filter given narrows (``actors``/``actions``: any of)."""
        a = db.audit
        q = a.select().order_by(a.c.id.desc()).limit(limit)
        if actors is not None:
            q = q.where(a.c.actor.in_(actors))
        if actions is not None:
            q = q.where(a.c.action.in_(actions))
        if target is not None:
            q = q.where(a.c.target == target)
        if outcome is not None:
            q = q.where(a.c.outcome == outcome)
        if since is not None:
            q = q.where(a.c.at >= since)
        if until is not None:
            q = q.where(a.c.at < until)
        with self.engine.connect() as conn:
            return _rows(conn.execute(q))
