"""The server's schema as SQLAlchemy Core tables, and the engine for SQLite or PostgreSQL.

The tables here describe the *current* schema for queries; the database itself is created and
upgraded only by the Alembic revisions in ``migrations/`` (run by :func:`migrate`). Times are
stored as POSIX seconds (float) so that SQLite and PostgreSQL compare them the same way.
"""

from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy as sa

__all__ = ["METADATA", "connect", "migrate", "sqlite_url"]

METADATA = sa.MetaData()

tokens = sa.Table(
    "tokens",
    METADATA,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("role", sa.String(20), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False, unique=True),  # sha256 of the token
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("created_by", sa.String(32)),
    sa.Column("revoked_at", sa.Float),
    sa.Column("last_used_at", sa.Float),
    sa.Column("expires_at", sa.Float),  # 0006: None = never
    sa.Column("owner", sa.String(100)),  # 0009: the console account (person) it belongs to
)

connect_keys = sa.Table(
    "connect_keys",
    METADATA,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("key", sa.String(100), nullable=False, unique=True),  # not a secret: it only admits
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("auto_approve", sa.Boolean, nullable=False),
    sa.Column("labels", sa.JSON, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float),
)

devices = sa.Table(
    "devices",
    METADATA,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("hostname", sa.String(255), nullable=False, index=True),
    sa.Column("os", sa.String(20), nullable=False),
    sa.Column("os_version", sa.String(100), nullable=False),
    sa.Column("arch", sa.String(50), nullable=False),
    sa.Column("agent_version", sa.String(50), nullable=False),
    sa.Column("labels", sa.JSON, nullable=False),
    sa.Column("public_key", sa.String(100), nullable=False),  # raw Ed25519, base64
    sa.Column("status", sa.String(20), nullable=False),  # pending | active | revoked
    sa.Column("connect_key_id", sa.String(32)),
    sa.Column("enrolled_at", sa.Float, nullable=False),
    sa.Column("last_seen", sa.Float),
    sa.Column("last_report_at", sa.Float),
    sa.Column("last_report_ok", sa.Boolean),
    sa.Column("last_report_changed", sa.Boolean),
    sa.Column("applied_etag", sa.String(64)),
    sa.Column("facts", sa.JSON),
    # the device's last plan (a converge, or a plan between converges; 0005): drift is "it had
    # changes the device has not applied", last_plan what they were and why each failed
    sa.Column("drift", sa.Boolean),
    sa.Column("last_plan_at", sa.Float),
    sa.Column("last_plan", sa.JSON),
)

revisions = sa.Table(
    "revisions",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("author", sa.String(200), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("files", sa.JSON, nullable=False),  # path → text
    sa.Column("commit", sa.String(64)),  # 0006: the git commit CI pushed from
    sa.Column("devices", sa.Integer),  # 0006: devices whose document the push changed
    sa.Column("rollback_of", sa.Integer),  # 0006: the revision whose files it pushed again
)

reports = sa.Table(
    "reports",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("device_id", sa.String(32), nullable=False, index=True),
    sa.Column("report_id", sa.String(64), nullable=False),  # chosen by the agent: resends dedupe
    sa.Column("received_at", sa.Float, nullable=False),
    sa.Column("etag", sa.String(64)),
    sa.Column("ok", sa.Boolean, nullable=False),
    sa.Column("changed", sa.Boolean, nullable=False),
    sa.Column("body", sa.JSON, nullable=False),
    sa.UniqueConstraint("device_id", "report_id", name="uq_reports_device_report"),
)

secrets = sa.Table(
    "secrets",
    METADATA,
    sa.Column("kind", sa.String(20), primary_key=True),  # totp | passwords
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("ciphertext", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

nonces = sa.Table(
    "nonces",
    METADATA,
    sa.Column("device_id", sa.String(32), primary_key=True),
    sa.Column("nonce", sa.String(64), primary_key=True),
    sa.Column("expires_at", sa.Float, nullable=False, index=True),
)

audit = sa.Table(
    "audit",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),  # token id, device id or "anonymous"
    sa.Column("role", sa.String(20)),
    sa.Column("action", sa.String(100), nullable=False),  # "POST /api/v1/revisions"
    sa.Column("target", sa.String(255)),
    sa.Column("outcome", sa.String(20), nullable=False),  # ok | denied | failed
    sa.Column("detail", sa.JSON),
)

# The security-command queue (issue 5): admin commands per device, in ``seq`` order, and the
# results of commands from policies (source "policy"), one row per (device, command id).
commands = sa.Table(
    "commands",
    METADATA,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),  # delivery order
    sa.Column("id", sa.String(128), nullable=False),  # the device journal keys on it
    sa.Column("device_id", sa.String(32), nullable=False),
    sa.Column("source", sa.String(10), nullable=False),  # admin | policy
    sa.Column("action", sa.String(20), nullable=False),
    sa.Column("body", sa.JSON, nullable=False),  # the command as the device receives it
    sa.Column("state", sa.String(20), nullable=False),  # queued | delivered | running | …
    sa.Column("cancel_requested", sa.Boolean, nullable=False, default=False),
    sa.Column("not_after", sa.Float),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("delivered_at", sa.Float),  # the device acknowledged it (its cursor, 0005)
    sa.Column("deliveries", sa.Integer, nullable=False, default=0),  # work answers carrying it
    sa.Column("sent_at", sa.Float),  # first carried in a work answer (0005)
    sa.Column("cancel_requested_at", sa.Float),  # 0005
    sa.Column("running_at", sa.Float),
    sa.Column("finished_at", sa.Float),  # when the server stored the final result
    sa.Column("exit_code", sa.Integer),
    sa.Column("result", sa.JSON),  # the device's CommandResult (output tails)
    sa.Column("batch_id", sa.String(32), index=False),  # 0006: queued by one bulk request
    sa.Column("saved", sa.String(100)),  # 0008: the saved command it ran (jcstate.server.saved)
    sa.Column("saved_version", sa.Integer),  # 0008: that saved command's version then
    # 0009: a two-person erase: who asked, who approved or rejected it (jcstate.server.approvals)
    sa.Column("approval", sa.JSON),
    sa.UniqueConstraint("device_id", "id", name="uq_commands_device_id"),
    sa.Index("ix_commands_device_state", "device_id", "state", "seq"),
)


# FileVault personal recovery keys escrowed by devices (issue 6), sealed by the vault with
# ("recovery", "DEVICE/VOLUME") as associated data. A table of their own, not ``secrets``: the
# newest ``secrets.updated_at`` is part of every device's etag, so a key stored there would make
# every device re-download its document.
recovery_keys = sa.Table(
    "recovery_keys",
    METADATA,
    sa.Column("device_id", sa.String(32), primary_key=True),
    sa.Column("volume", sa.String(255), primary_key=True),  # LVGUUID; "" when unknown
    sa.Column("ciphertext", sa.Text, nullable=False),
    sa.Column("escrowed_at", sa.Float, nullable=False),
)


# Releases of the agent (self-update, SPEC 6): wheels uploaded by administrators, kept in the
# database so that every server process behind a load balancer serves the same bytes. Devices
# download a release by its sha256, which the update command carries.
releases = sa.Table(
    "releases",
    METADATA,
    sa.Column("version", sa.String(64), primary_key=True),
    sa.Column("sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("filename", sa.String(255), nullable=False),  # rebuilt from the wheel's metadata
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    # the offline release key's signature (jcstate.agent.release_key); devices verify it
    sa.Column("signature", sa.String(128), nullable=True),
)


# Staged rollouts (issue 15, jcstate.server.rollout): a revision goes to a canary wave first.
# ``open_slot`` is 1 while a rollout is in progress and NULL after: unique, so the database
# refuses a second one in progress whichever server process tries.
rollouts = sa.Table(
    "rollouts",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("revision", sa.Integer, nullable=False, unique=True),  # sent to the canaries
    sa.Column("previous", sa.Integer, nullable=False),  # what the rest stays on meanwhile
    sa.Column("canary", sa.String(300), nullable=False),  # "5%" or "label:ring=0"
    sa.Column("devices", sa.JSON, nullable=False),  # the canary wave's device ids
    sa.Column("wait", sa.Float, nullable=False),  # seconds every canary must stay converged
    sa.Column("halt_on", sa.Integer, nullable=False),  # failed canaries that halt it
    sa.Column("state", sa.String(20), nullable=False),  # canary | halted | promoted | aborted
    sa.Column("open_slot", sa.Integer, unique=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("canaries_ok_at", sa.Float),  # since when every canary has converged ok
    sa.Column("ended_at", sa.Float),
    sa.Column("ended_by", sa.String(200)),  # an admin, or "server" (automatic)
    sa.Column("reason", sa.Text),
)


def sqlite_url(data_dir: str | os.PathLike[str]) -> str:
    return "sqlite:///" + str(Path(data_dir, "jcstate.db").resolve())


def connect(url: str) -> sa.Engine:
    """An engine for ``url``; SQLite gets WAL and a busy timeout so readers never block writers."""
    if url.startswith("postgresql://"):
        # psycopg 3 is the driver we ship; plain postgresql:// would ask SQLAlchemy for psycopg2
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return sa.create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


def migrate(engine: sa.Engine) -> None:
    """Create or upgrade the schema to the newest Alembic revision shipped in this package."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # two servers starting at once must not both create the tables
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(4242001)"))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
