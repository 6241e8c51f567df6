"""Named admin accounts for the browser console: password, role, TOTP, sign-in failures.

Beside API tokens, people sign in by name. A password is kept only as an scrypt verifier
(``hashlib.scrypt``: memory-hard, in the standard library, so no new dependency); an
administrator's TOTP seed is sealed by the server's vault like every other secret. Failed
sign-ins are rows in the database, so the per-account and per-address limits hold across
every server process on one PostgreSQL.

The tables are created by migration ``0007``; they are declared here, on the same metadata as
:mod:`jcstate.server.db`, because only this module and :mod:`jcstate.server.sessions` query them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import struct
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from jcstate.errors import JcstateError
from jcstate.server import db
from jcstate.server.roles import ALL_ROLES
from jcstate.server.store import Store

__all__ = [
    "AdminAccounts",
    "hash_password",
    "totp_code",
    "verify_password",
]

admins = sa.Table(
    "admins",
    db.METADATA,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("role", sa.String(20), nullable=False),
    sa.Column("password_hash", sa.String(300), nullable=False),  # scrypt$n$r$p$salt$hash
    sa.Column("totp_sealed", sa.Text),  # the administrator's TOTP seed, sealed by the vault
    sa.Column("totp_last_step", sa.Integer),  # a code is accepted once
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("created_by", sa.String(200)),
    sa.Column("password_changed_at", sa.Float, nullable=False),
)

signin_failures = sa.Table(
    "signin_failures",
    db.METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False, index=True),
    sa.Column("account", sa.String(100), nullable=False, index=True),
    sa.Column("address", sa.String(64), nullable=False, index=True),
)

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")
MIN_PASSWORD = 10
# scrypt at N=2**15, r=8: 32 MiB and about 0.1 s per guess on this class of machine
_SCRYPT = {"n": 2**15, "r": 8, "p": 1}
FAILURE_WINDOW = 900.0  # seconds over which failed sign-ins are counted
PER_ACCOUNT = 5  # failures per account in the window before that account is refused
PER_ADDRESS = 20  # failures per client address in the window
TOTP_STEP = 30


def hash_password(password: str) -> str:
    """An scrypt verifier with a fresh salt: ``scrypt$N$r$p$salt$hash`` (base64)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, maxmem=2**26, dklen=32, **_SCRYPT)
    b64 = base64.b64encode
    return "scrypt${n}${r}${p}$".format(**_SCRYPT) + f"{b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=2**26,
            dklen=32,
        )
    except ValueError:
        return False
    return hmac.compare_digest(got, base64.b64decode(digest))


def totp_code(secret_b32: str, step: int) -> str:
    """RFC 6238 (SHA-1, 6 digits, 30 s): what ``jcstate totp`` enrols apps for."""
    key = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8), casefold=True)
    mac = hmac.new(key, struct.pack(">Q", step), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return f"{value % 1_000_000:06d}"


def totp_step(secret_b32: str, code: str, now: float) -> int | None:
    """The time step ``code`` is valid for (one step of clock drift either way), or None."""
    code = code.strip().replace(" ", "")
    if not re.fullmatch(r"\d{6}", code):
        return None
    current = int(now // TOTP_STEP)
    for step in (current, current - 1, current + 1):
        if hmac.compare_digest(totp_code(secret_b32, step), code):
            return step
    return None


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise JcstateError(
            f"admin name {name!r}: use letters, digits and . _ @ - (at most 100, "
            "starting with a letter or digit)"
        )
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise JcstateError(f"the password must be at least {MIN_PASSWORD} characters long")
    return password


class AdminAccounts:
    """Queries on admin accounts and failed sign-ins, on the server's store."""

    def __init__(self, store: Store):
        self.store = store

    def add(self, name: str, role: str, password: str, created_by: str | None) -> dict[str, Any]:
        if role not in ALL_ROLES:
            raise JcstateError(f"role {role!r}: choose one of {', '.join(ALL_ROLES)}")
        check_name(name)
        check_password(password)
        now = time.time()
        row = {
            "name": name,
            "role": role,
            "password_hash": hash_password(password),
            "created_at": now,
            "created_by": created_by,
            "password_changed_at": now,
        }
        try:
            with self.store.transaction() as conn:
                conn.execute(admins.insert().values(**row))
        except IntegrityError:
            raise JcstateError(f"an admin named {name} exists already") from None
        return self.view(self.get(name) or row)

    def get(self, name: str) -> dict[str, Any] | None:
        with self.store.engine.connect() as conn:
            found = conn.execute(admins.select().where(admins.c.name == name)).first()
        return None if found is None else dict(found._mapping)

    def list(self) -> list[dict[str, Any]]:
        with self.store.engine.connect() as conn:
            rows = conn.execute(admins.select().order_by(admins.c.name))
            return [self.view(dict(r._mapping)) for r in rows]

    @staticmethod
    def view(row: dict[str, Any]) -> dict[str, Any]:
        """What anyone may see of an account: never the verifier or the seed."""
        return {
            "name": row["name"],
            "role": row["role"],
            "totpEnrolled": bool(row.get("totp_sealed")),
            "createdAt": row["created_at"],
            "createdBy": row.get("created_by"),
            "passwordChangedAt": row["password_changed_at"],
        }

    def remove(self, name: str) -> bool:
        from jcstate.server.saved import saved_assignments
        from jcstate.server.sessions import admin_sessions

        a = saved_assignments
        with self.store.transaction() as conn:
            gone = conn.execute(admins.delete().where(admins.c.name == name)).rowcount > 0
            conn.execute(admin_sessions.delete().where(admin_sessions.c.admin == name))
            # a later account of the same name must not inherit its saved commands
            conn.execute(a.delete().where(a.c.kind == "admin", a.c.ident == name))
        return gone

    def set_password(self, name: str, password: str) -> bool:
        """A new password ends every session of the account."""
        from jcstate.server.sessions import admin_sessions

        check_password(password)
        with self.store.transaction() as conn:
            done = (
                conn.execute(
                    admins.update()
                    .where(admins.c.name == name)
                    .values(password_hash=hash_password(password), password_changed_at=time.time())
                ).rowcount
                > 0
            )
            conn.execute(admin_sessions.delete().where(admin_sessions.c.admin == name))
        return done

    def set_totp(self, name: str, sealed: str, step: int) -> None:
        with self.store.transaction() as conn:
            conn.execute(
                admins.update()
                .where(admins.c.name == name)
                .values(totp_sealed=sealed, totp_last_step=step)
            )

    def use_totp_step(self, name: str, step: int) -> bool:
        """Spend a code's time step; False when it (or a later one) was used: a replay."""
        a = admins
        with self.store.transaction() as conn:
            res = conn.execute(
                a.update()
                .where(
                    a.c.name == name,
                    sa.or_(a.c.totp_last_step.is_(None), a.c.totp_last_step < step),
                )
                .values(totp_last_step=step)
            )
        return res.rowcount > 0

    def count(self) -> int:
        with self.store.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(admins)).scalar_one())

    # -- failed sign-ins -------------------------------------------------------------------
    def note_failure(self, account: str, address: str) -> None:
        with self.store.transaction() as conn:
            conn.execute(
                signin_failures.insert().values(
                    at=time.time(), account=account[:100], address=address[:64]
                )
            )
            # keep the table small: what is out of every window is of no use
            conn.execute(signin_failures.delete().where(signin_failures.c.at < time.time() - 86400))

    def throttled(self, account: str, address: str) -> str | None:
        """Why sign-in is refused for this account or address now, or None."""
        f = signin_failures
        since = time.time() - FAILURE_WINDOW
        with self.store.engine.connect() as conn:
            by_account = conn.execute(
                sa.select(sa.func.count())
                .select_from(f)
                .where(f.c.account == account[:100], f.c.at >= since)
            ).scalar_one()
            by_address = conn.execute(
                sa.select(sa.func.count())
                .select_from(f)
                .where(f.c.address == address[:64], f.c.at >= since)
            ).scalar_one()
        minutes = int(FAILURE_WINDOW // 60)
        if by_account >= PER_ACCOUNT:
            return f"too many failed sign-ins for this account; try again in {minutes} minutes"
        if by_address >= PER_ADDRESS:
            return f"too many failed sign-ins from this address; try again in {minutes} minutes"
        return None
