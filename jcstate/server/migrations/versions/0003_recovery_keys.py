"""FileVault recovery keys escrowed by devices: one sealed key per (device, volume).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "recovery_keys",
        sa.Column("device_id", sa.String(32), primary_key=True),
        sa.Column("volume", sa.String(255), primary_key=True),
        sa.Column("ciphertext", sa.Text, nullable=False),
        sa.Column("escrowed_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("recovery_keys")
