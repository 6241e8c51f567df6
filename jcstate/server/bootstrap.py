"""First start: the data directory, the secret key, the first admin token and connect key.

``jcstate server --data DIR`` on an empty database creates an administrator token and a connect
key and writes them to ``DIR/admin-token`` and ``DIR/connect-key`` (0600); the server prints
the paths of these files, never the secrets (stdout ends in journals). The data directory is
created 0700, and one that group or others may enter is refused.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

import sqlalchemy as sa

from jcstate.errors import JcstateError
from jcstate.server import db
from jcstate.server.store import Store
from jcstate.server.vault import load_or_create_key

__all__ = ["FirstStart", "bootstrap", "prepare_data_dir"]


@dataclass(frozen=True)
class FirstStart:
    admin_token: str
    connect_key: str
    token_file: str | None = None  # where they were written (0600)
    connect_key_file: str | None = None


def prepare_data_dir(path: str) -> str:
    """Create ``path`` 0700; refuse an existing one that group or others may read or enter."""
    path = os.path.abspath(path)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise JcstateError(f"--data {path}: cannot create it: {exc.strerror}") from None
    info = os.stat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise JcstateError(f"--data {path}: not a directory")
    wide = stat.S_IMODE(info.st_mode) & 0o077
    if wide:
        raise JcstateError(
            f"--data {path}: mode {stat.S_IMODE(info.st_mode):04o} lets group or others in; "
            "it holds the secret key and token hashes: run chmod 700 on it (and check who "
            "could have read it), then start again"
        )
    if info.st_uid != os.geteuid():
        raise JcstateError(
            f"--data {path}: owned by uid {info.st_uid}, not by this user ({os.geteuid()}); "
            "chown it to the user the server runs as"
        )
    return path


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
    if data_dir is None:
        return FirstStart(token, key)
    token_file = os.path.join(data_dir, "admin-token")
    key_file = os.path.join(data_dir, "connect-key")
    _write_private(token_file, token)
    _write_private(key_file, key)
    return FirstStart(token, key, token_file, key_file)
