"""States an admin can believe: commands sent but not yet acknowledged, cancel times, drift.

- ``commands.sent_at``: when a work answer first carried the command (it stays ``queued``
  until the device acknowledges it); ``commands.cancel_requested_at``: when an admin asked to
  cancel a command the device has (a later request without a result settles it).
- ``devices.drift`` / ``last_plan_at`` / ``last_plan``: what the device's last plan (a converge
  or a plan between converges) had that it did not apply, with each failure's message.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("commands") as batch:
        batch.add_column(sa.Column("sent_at", sa.Float))
        batch.add_column(sa.Column("cancel_requested_at", sa.Float))
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("drift", sa.Boolean))
        batch.add_column(sa.Column("last_plan_at", sa.Float))
        batch.add_column(sa.Column("last_plan", sa.JSON))
    # what the old server called delivered was only sent: keep it honest after the upgrade
    op.execute("UPDATE commands SET sent_at = delivered_at WHERE delivered_at IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("last_plan")
        batch.drop_column("last_plan_at")
        batch.drop_column("drift")
    with op.batch_alter_table("commands") as batch:
        batch.drop_column("cancel_requested_at")
        batch.drop_column("sent_at")
