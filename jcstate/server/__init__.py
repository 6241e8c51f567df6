"""The jcstate server: policies, device inventory, enrollment, long-poll work, reports, audit.

Layout (data flows one way: request → auth → store → render → response):

- ``db.py``       the schema (SQLAlchemy Core tables) and the engine for SQLite or PostgreSQL
- ``migrations/`` Alembic revisions, shipped inside the package and run on start
- ``store.py``    every query the routes need, one method per question
- ``auth.py``     admin tokens and roles, device request signatures, replay refusal
- ``vault.py``    encryption at rest of TOTP secrets and passwords
- ``render.py``   a device's document: select, merge, render, plus the secrets it needs
- ``wake.py``     long-poll wake-ups, in process and across processes (PostgreSQL NOTIFY)
- ``routes/``     the HTTP API (device routes, admin routes)
- ``app.py``      the FastAPI application factory
- ``bootstrap.py``first start: data directory, admin token, connect key
- ``certs.py``    a self-signed CA and server certificate for trying TLS out

Importing this package is cheap; the web framework loads only from ``app.py``.
"""
