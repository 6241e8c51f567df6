"""Saved commands (issue 15, command runners): the commands, their assignments, and which
saved command (name, version) each queued command came from.

Revision ID: 0008
Revises: 0006
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "saved_commands",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("argv", sa.JSON, nullable=False),
        sa.Column("timeout", sa.Integer),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=False),
    )
    op.create_table(
        "saved_assignments",
        sa.Column(
            "saved_name",
            sa.String(100),
            sa.ForeignKey("saved_commands.name", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("kind", sa.String(10), primary_key=True),
        sa.Column("ident", sa.String(100), primary_key=True),
        sa.Column("assigned_at", sa.Float, nullable=False),
        sa.Column("assigned_by", sa.String(200), nullable=False),
    )
    with op.batch_alter_table("commands") as batch:
        batch.add_column(sa.Column("saved", sa.String(100)))
        batch.add_column(sa.Column("saved_version", sa.Integer))


def downgrade() -> None:
    with op.batch_alter_table("commands") as batch:
        batch.drop_column("saved_version")
        batch.drop_column("saved")
    op.drop_table("saved_assignments")
    op.drop_table("saved_commands")
