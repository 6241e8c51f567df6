"""Staged rollouts (issue 15): a revision sent to a canary wave first, then to the rest.

- ``rollouts``: one row per staged push: the new revision, the one the rest stays on, how the
  canary wave was chosen and its devices (fixed at the push), the wait and the halt threshold,
  the state (canary | halted | promoted | aborted) and who or what ended it. ``open_slot`` is
  1 while the rollout is in progress (canary or halted) and NULL afterwards: a unique column,
  so the database itself refuses a second rollout in progress.

Revision ID: 0012
Revises: 0006
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rollouts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("revision", sa.Integer, nullable=False, unique=True),
        sa.Column("previous", sa.Integer, nullable=False),
        sa.Column("canary", sa.String(300), nullable=False),
        sa.Column("devices", sa.JSON, nullable=False),
        sa.Column("wait", sa.Float, nullable=False),
        sa.Column("halt_on", sa.Integer, nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("open_slot", sa.Integer, unique=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("canaries_ok_at", sa.Float),
        sa.Column("ended_at", sa.Float),
        sa.Column("ended_by", sa.String(200)),
        sa.Column("reason", sa.Text),
    )


def downgrade() -> None:
    op.drop_table("rollouts")
