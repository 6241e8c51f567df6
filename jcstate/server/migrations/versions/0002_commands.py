"""The security-command queue: one row per (device, command id), delivered in ``seq`` order.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "commands",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("device_id", sa.String(32), nullable=False),
        sa.Column("source", sa.String(10), nullable=False),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("body", sa.JSON, nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("not_after", sa.Float),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("delivered_at", sa.Float),
        sa.Column("deliveries", sa.Integer, nullable=False),
        sa.Column("running_at", sa.Float),
        sa.Column("finished_at", sa.Float),
        sa.Column("exit_code", sa.Integer),
        sa.Column("result", sa.JSON),
        sa.UniqueConstraint("device_id", "id", name="uq_commands_device_id"),
    )
    op.create_index("ix_commands_device_state", "commands", ["device_id", "state", "seq"])


def downgrade() -> None:
    op.drop_index("ix_commands_device_state", "commands")
    op.drop_table("commands")
