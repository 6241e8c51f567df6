"""The browser console: named admin accounts, their sessions, failed sign-ins.

Revision ID: 0007
Revises: 0004
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "admins",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("password_hash", sa.String(300), nullable=False),
        sa.Column("totp_sealed", sa.Text),
        sa.Column("totp_last_step", sa.Integer),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("created_by", sa.String(200)),
        sa.Column("password_changed_at", sa.Float, nullable=False),
    )
    op.create_table(
        "admin_sessions",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column("admin", sa.String(100), nullable=False, index=True),
        sa.Column("stage", sa.String(10), nullable=False),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("last_used_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("pending_totp", sa.Text),
    )
    op.create_table(
        "signin_failures",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Float, nullable=False, index=True),
        sa.Column("account", sa.String(100), nullable=False, index=True),
        sa.Column("address", sa.String(64), nullable=False, index=True),
    )


def downgrade() -> None:
    op.drop_table("signin_failures")
    op.drop_table("admin_sessions")
    op.drop_table("admins")
