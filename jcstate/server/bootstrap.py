"""First start: the data directory, the secret key, the first admin token and connect key.

``jcstate server --data DIR`` on an empty database creates an administrator token and a connect
key, writes them to ``DIR/admin-token`` and ``DIR/connect-key`` (0600) and prints them once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import sqlalchemy as sa

from jcstate.server import db
from jcstate.server.store import Store
from jcstate.server.vault import load_or_create_key

__all__ = ["FirstStart", "bootstrap", "prepare_data_dir"]


@dataclass(frozen=True)
class FirstStart:
    admin_token: str
    connect_key: str


def prepare_data_dir(path: str) -> str:
    os.makedirs(path, mode=0o700, exist_ok=True)
    return os.path.abspath(path)


def _write_private(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(text + "\n")


def secret_key(data_dir: str | None, key_file: str | None) -> bytes:
    if key_file is None:
        if data_dir is None:
            raise SystemExit("jcstate server: give --data DIR or --secret-key-file FILE")
        key_file = os.path.join(data_dir, "secret-key")
    return load_or_create_key(key_file)


def bootstrap(database: str, data_dir: str | None) -> FirstStart | None:
    """Migrate; on an empty database create the first token and key. None when not first."""
    engine = db.connect(database)
    try:
        db.migrate(engine)
        store = Store(engine)
        with engine.connect() as lock_conn:
            if store.is_postgres:  # two servers starting together create one admin token
                lock_conn.execute(sa.text("SELECT pg_advisory_lock(4242002)"))
            try:
                if store.count_tokens() > 0:
                    return None
                _, token = store.create_token("first administrator", "administrator", None)
                key = store.create_connect_key("default")["key"]
                store.audit(
                    "server", "bootstrap", "ok", detail={"created": ["token", "connect key"]}
                )
            finally:
                if store.is_postgres:
                    lock_conn.execute(sa.text("SELECT pg_advisory_unlock(4242002)"))
                    lock_conn.commit()
    finally:
        engine.dispose()
    if data_dir is not None:
        _write_private(os.path.join(data_dir, "admin-token"), token)
        _write_private(os.path.join(data_dir, "connect-key"), key)
    return FirstStart(token, key)
