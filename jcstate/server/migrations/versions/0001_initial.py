"""Initial schema: tokens, connect keys, devices, revisions, reports, secrets, nonces, audit.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tokens",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("created_by", sa.String(32)),
        sa.Column("revoked_at", sa.Float),
        sa.Column("last_used_at", sa.Float),
    )
    op.create_table(
        "connect_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("key", sa.String(100), nullable=False, unique=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("auto_approve", sa.Boolean, nullable=False),
        sa.Column("labels", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("revoked_at", sa.Float),
    )
    op.create_table(
        "devices",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("os", sa.String(20), nullable=False),
        sa.Column("os_version", sa.String(100), nullable=False),
        sa.Column("arch", sa.String(50), nullable=False),
        sa.Column("agent_version", sa.String(50), nullable=False),
        sa.Column("labels", sa.JSON, nullable=False),
        sa.Column("public_key", sa.String(100), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("connect_key_id", sa.String(32)),
        sa.Column("enrolled_at", sa.Float, nullable=False),
        sa.Column("last_seen", sa.Float),
        sa.Column("last_report_at", sa.Float),
        sa.Column("last_report_ok", sa.Boolean),
        sa.Column("last_report_changed", sa.Boolean),
        sa.Column("applied_etag", sa.String(64)),
        sa.Column("facts", sa.JSON),
    )
    op.create_index("ix_devices_hostname", "devices", ["hostname"])
    op.create_table(
        "revisions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("author", sa.String(200), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("files", sa.JSON, nullable=False),
    )
    op.create_table(
        "reports",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("device_id", sa.String(32), nullable=False),
        sa.Column("report_id", sa.String(64), nullable=False),
        sa.Column("received_at", sa.Float, nullable=False),
        sa.Column("etag", sa.String(64)),
        sa.Column("ok", sa.Boolean, nullable=False),
        sa.Column("changed", sa.Boolean, nullable=False),
        sa.Column("body", sa.JSON, nullable=False),
        sa.UniqueConstraint("device_id", "report_id", name="uq_reports_device_report"),
    )
    op.create_index("ix_reports_device_id", "reports", ["device_id"])
    op.create_table(
        "secrets",
        sa.Column("kind", sa.String(20), primary_key=True),
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("ciphertext", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "nonces",
        sa.Column("device_id", sa.String(32), primary_key=True),
        sa.Column("nonce", sa.String(64), primary_key=True),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    op.create_index("ix_nonces_expires_at", "nonces", ["expires_at"])
    op.create_table(
        "audit",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("role", sa.String(20)),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("target", sa.String(255)),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("detail", sa.JSON),
    )


def downgrade() -> None:
    for table in (
        "audit",
        "nonces",
        "secrets",
        "reports",
        "revisions",
        "devices",
        "connect_keys",
        "tokens",
    ):
        op.drop_table(table)
