"""Alembic revisions of the server's schema (run by :func:`jcstate.server.db.migrate`)."""
