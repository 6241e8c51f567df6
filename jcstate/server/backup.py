"""``jcstate server backup FILE`` and ``server restore FILE``: the database and the keys, together.

A backup is one tar file (mode 0600) holding everything a new server needs to carry on where the
old one stopped, so that devices keep their identities and nothing is run twice:

- ``manifest.json``: format, jcstate version, database kind, time;
- the database: ``jcstate.db``, a consistent copy made with SQLite's online backup API while the
  server runs, or ``jcstate.pgdump``, ``pg_dump --format=custom`` of the PostgreSQL database
  (one consistent snapshot as well);
- ``secret-key``: without it the sealed secrets (TOTP seeds, passwords, recovery keys) in the
  database cannot be opened;
- ``admin-token`` and ``connect-key`` when the data directory has them.

The file is as secret as the server: keep it where the data directory's keys may be kept.

Restoring writes into an empty data directory (and, for PostgreSQL, an empty database) and
refuses anything else: a restore never merges into or overwrites a live server's state. The
server migrates the restored database when it starts, so a backup of an older release restores
into a newer one.

PostgreSQL needs ``pg_dump``/``pg_restore`` (Debian: ``postgresql-client``) of a version at
least the server's; without them ``backup`` refuses and says what to run by hand. A password in
the database URL is handed to them in ``PGPASSWORD``, never in their arguments.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
import time
import urllib.parse
from pathlib import Path

from jcstate import __version__
from jcstate.errors import JcstateError

__all__ = ["backup", "restore"]

MANIFEST = "manifest.json"
SQLITE_MEMBER = "jcstate.db"
PG_MEMBER = "jcstate.pgdump"
KEY_FILES = ("secret-key", "admin-token", "connect-key")
BY_HAND = (
    "back the PostgreSQL database up by hand: "
    "pg_dump --format=custom --file jcstate.pgdump DATABASE, and copy the data directory's "
    "secret-key (and admin-token, connect-key) beside it (docs/deploy.md, 'Backup and restore')"
)


def _sqlite_path(database: str) -> str:
    if not database.startswith("sqlite:///"):
        raise JcstateError(f"not a SQLite database URL: {database}")
    return database[len("sqlite:///") :]


def _pg_command(database: str) -> tuple[str, dict[str, str]]:
    """A libpq connection URL without its password, and the environment carrying it."""
    url = database.replace("postgresql+psycopg://", "postgresql://", 1)
    parts = urllib.parse.urlsplit(url)
    env = dict(os.environ)
    if parts.password is not None:
        env["PGPASSWORD"] = urllib.parse.unquote(parts.password)
        netloc = parts.netloc.rsplit("@", 1)
        user = netloc[0].split(":", 1)[0]
        parts = parts._replace(netloc=f"{user}@{netloc[1]}")
    return urllib.parse.urlunsplit(parts), env


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o600
    info.mtime = int(time.time())
    tar.addfile(info, io.BytesIO(data))


def backup(
    out: str, *, database: str, data_dir: str | None, secret_key_file: str | None
) -> list[str]:
    """Write the backup to ``out``; returns the archive's member names."""
    kind = "postgresql" if database.startswith("postgresql") else "sqlite"
    key_file = secret_key_file or (os.path.join(data_dir, "secret-key") if data_dir else None)
    if key_file is None or not os.path.exists(key_file):
        raise JcstateError(
            f"no secret key at {key_file or 'DATA/secret-key'}: the backup would be useless "
            "(give --data DIR or --secret-key-file FILE)"
        )
    if kind == "postgresql" and shutil.which("pg_dump") is None:
        raise JcstateError("pg_dump is not installed (Debian: postgresql-client); " + BY_HAND)
    target = Path(out)
    with tempfile.TemporaryDirectory(prefix="jcstate-backup-") as tmp:
        if kind == "sqlite":
            member, copy = SQLITE_MEMBER, os.path.join(tmp, SQLITE_MEMBER)
            source = _sqlite_path(database)
            if not os.path.exists(source):
                raise JcstateError(f"no database at {source}")
            src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
            dst = sqlite3.connect(copy)
            try:
                src.backup(dst)  # a consistent snapshot, also while the server writes
            finally:
                dst.close()
                src.close()
        else:
            member, copy = PG_MEMBER, os.path.join(tmp, PG_MEMBER)
            url, env = _pg_command(database)
            done = subprocess.run(
                ["pg_dump", "--format=custom", "--no-owner", "--file", copy, "--dbname", url],
                env=env,
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                raise JcstateError(f"pg_dump failed: {done.stderr.strip()}; " + BY_HAND)
        manifest = {
            "format": 1,
            "jcstateVersion": __version__,
            "database": kind,
            "createdAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        partial = target.with_name(target.name + ".partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        names = [MANIFEST, member]
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w") as tar:
            _add_bytes(tar, MANIFEST, json.dumps(manifest, indent=2).encode())
            with open(copy, "rb") as f:
                _add_bytes(tar, member, f.read())
            _add_bytes(tar, "secret-key", Path(key_file).read_bytes())
            names.append("secret-key")
            for name in KEY_FILES[1:]:
                path = os.path.join(data_dir, name) if data_dir else None
                if path and os.path.exists(path):
                    _add_bytes(tar, name, Path(path).read_bytes())
                    names.append(name)
        os.replace(partial, target)
    return names


def _members(path: str) -> dict[str, bytes]:
    try:
        with tarfile.open(path, mode="r") as tar:
            found = {}
            for info in tar.getmembers():
                if not info.isfile() or "/" in info.name or info.name.startswith("."):
                    raise JcstateError(f"{path}: unexpected member {info.name!r} in a backup")
                f = tar.extractfile(info)
                assert f is not None
                found[info.name] = f.read()
    except tarfile.TarError:
        raise JcstateError(f"{path}: not a jcstate backup (not a tar file)") from None
    except OSError as exc:
        raise JcstateError(f"{path}: {exc.strerror}") from None
    if MANIFEST not in found:
        raise JcstateError(f"{path}: not a jcstate backup (no {MANIFEST})")
    return found


def _write_private(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def restore(
    path: str, *, data_dir: str, database: str | None, secret_key_file: str | None
) -> list[str]:
    """Restore the backup ``path`` into the empty ``data_dir`` (and the empty ``database`` for a
    PostgreSQL backup). Returns what was written."""
    from jcstate.server.bootstrap import prepare_data_dir

    members = _members(path)
    manifest = json.loads(members[MANIFEST])
    kind = manifest.get("database")
    if manifest.get("format") != 1 or kind not in ("sqlite", "postgresql"):
        raise JcstateError(f"{path}: unknown backup format {manifest.get('format')!r}")
    key_path = secret_key_file or os.path.join(data_dir, "secret-key")
    for name in ("jcstate.db", *KEY_FILES):
        existing = key_path if name == "secret-key" else os.path.join(data_dir, name)
        if os.path.exists(existing):
            raise JcstateError(
                f"{existing} exists: restore into an empty data directory "
                "(a restore never overwrites a server's state)"
            )
    if kind == "postgresql" and not database:
        raise JcstateError(
            f"{path} holds a PostgreSQL database: give --database URL of an empty database"
        )
    if kind == "sqlite" and database and not database.startswith("sqlite"):
        raise JcstateError(f"{path} holds a SQLite database: restore it with --data DIR only")
    if kind == "postgresql":
        _check_empty_postgres(str(database))
    data_dir = prepare_data_dir(data_dir)
    done = []
    if kind == "sqlite":
        _write_private(os.path.join(data_dir, SQLITE_MEMBER), members[SQLITE_MEMBER])
        done.append(os.path.join(data_dir, SQLITE_MEMBER))
    else:
        if shutil.which("pg_restore") is None:
            raise JcstateError("pg_restore is not installed (Debian: postgresql-client)")
        with tempfile.NamedTemporaryFile(prefix="jcstate-restore-", suffix=".pgdump") as dump:
            dump.write(members[PG_MEMBER])
            dump.flush()
            url, env = _pg_command(str(database))
            ran = subprocess.run(
                ["pg_restore", "--no-owner", "--exit-on-error", "--dbname", url, dump.name],
                env=env,
                capture_output=True,
                text=True,
            )
        if ran.returncode != 0:
            raise JcstateError(f"pg_restore failed: {ran.stderr.strip()}")
        done.append(f"database restored with pg_restore ({len(members[PG_MEMBER])} bytes)")
    for name in KEY_FILES:
        if name in members:
            target = key_path if name == "secret-key" else os.path.join(data_dir, name)
            _write_private(target, members[name])
            done.append(target)
    return done


def _check_empty_postgres(database: str) -> None:
    import sqlalchemy as sa

    from jcstate.server import db

    engine = db.connect(database)
    try:
        tables = sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()
    if tables:
        raise JcstateError(
            f"the database already has tables ({', '.join(sorted(tables)[:5])}…): "
            "restore into an empty database (createdb a new one)"
        )
