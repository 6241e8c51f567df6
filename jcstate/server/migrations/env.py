"""Alembic environment: always given a live connection by jcstate.server.db.migrate."""

from alembic import context

from jcstate.server.db import METADATA

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=METADATA, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
