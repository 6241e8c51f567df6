"""Fleet operations (issue 12): command batches, revision commits, token expiry.

- ``commands.batch_id``: commands queued together by one bulk request (``--where``).
- ``revisions.commit`` (the git commit CI pushed from), ``revisions.devices`` (how many
  devices' documents the push changed) and ``revisions.rollback_of``.
- ``tokens.expires_at``: a token may expire.

Revision ID: 0006
Revises: 0004
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("commands") as batch:
        batch.add_column(sa.Column("batch_id", sa.String(32)))
        batch.create_index("ix_commands_batch", ["batch_id"])
    with op.batch_alter_table("revisions") as batch:
        batch.add_column(sa.Column("commit", sa.String(64)))
        batch.add_column(sa.Column("devices", sa.Integer))
        batch.add_column(sa.Column("rollback_of", sa.Integer))
    with op.batch_alter_table("tokens") as batch:
        batch.add_column(sa.Column("expires_at", sa.Float))


def downgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        batch.drop_column("expires_at")
    with op.batch_alter_table("revisions") as batch:
        batch.drop_column("rollback_of")
        batch.drop_column("devices")
        batch.drop_column("commit")
    with op.batch_alter_table("commands") as batch:
        batch.drop_index("ix_commands_batch")
        batch.drop_column("batch_id")
