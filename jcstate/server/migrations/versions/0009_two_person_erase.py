"""Two-person erase (issue 15): tokens that belong to a person, erases awaiting approval.

- ``tokens.owner``: the console account (a person) the token belongs to; None for tokens
  that belong to nobody in particular (CI, the first start's token).
- ``commands.approval``: for an erase on a server started with ``--erase-approvals 2``, who
  asked (person and actor), and who approved or rejected it, when and why.

Revision ID: 0009
Revises: 0006
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        batch.add_column(sa.Column("owner", sa.String(100)))
    with op.batch_alter_table("commands") as batch:
        batch.add_column(sa.Column("approval", sa.JSON))


def downgrade() -> None:
    with op.batch_alter_table("commands") as batch:
        batch.drop_column("approval")
    with op.batch_alter_table("tokens") as batch:
        batch.drop_column("owner")
