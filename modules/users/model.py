"""The users model: what a ``spec.users`` entry means, independent of any OS.

``None`` means "not managed" (the system's value is left alone); an empty list means "manage to
empty" (``sshAuthorizedKeys: []`` empties the file). In the same way ``expires: never`` is
:data:`NEVER`, "manage to no expiry", distinct from an omitted ``expires`` (None). The password
hash becomes a :class:`~jcstate.secret.Secret` here, at parse time, so it can never be printed
later.

The comparisons that are the same on every OS live here too (the type decides what changes, the
backend says how): :func:`state_change` reads ``state`` from each lock mechanism on its own.
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final, Literal

from jcstate.plan import FieldChange
from jcstate.secret import Secret

__all__ = [
    "NEVER",
    "Expiry",
    "UserSpec",
    "admin_at",
    "expiry_text",
    "instant_text",
    "parse",
    "parse_instant",
    "state_change",
]

State = Literal["present", "absent", "locked"]
OnRemoval = Literal["lock", "delete", "keep"]


class Expiry(enum.Enum):
    """An expiry that is not a date. One member: an enum keeps ``is NEVER`` checks typed."""

    NEVER = "never"


NEVER: Final = Expiry.NEVER  # ``expires: never``: the account must not expire (clears an expiry)


@dataclass(frozen=True)
class UserSpec:
    """One entry of ``spec.users``."""

    name: str
    uid: int | None = None
    full_name: str | None = None
    shell: str | None = None
    home: str | None = None
    primary_group: str | None = None
    groups: tuple[str, ...] | None = None  # additive supplementary groups
    admin: bool | None = None
    # ``admin: {until: T}``: admin is True before T; :func:`admin_at` turns it into True or None
    # (not managed: the undo layer takes back what jcstate granted) for the instant a plan runs
    admin_until: datetime.datetime | None = None
    password_hash: Secret | None = None
    password_ref: str | None = None  # name of a secret the SecretSource resolves (plaintext)
    ssh_authorized_keys: tuple[str, ...] | None = None
    expires: datetime.date | Expiry | None = None  # None: not managed; NEVER: no expiry
    state: State = "present"
    remove_home: bool = False
    allow_lockout: bool = False
    hidden: bool | None = None  # macOS service accounts; not managed on Linux
    # what happens to the account, if jcstate created it, once no policy lists it any more
    # (the policy's ``onRemoval``; kept in the ownership ledger, see jcstate/undo.py)
    on_removal: OnRemoval = "lock"
    # supplementary groups to leave: set only by the undo layer (jcstate/undo.py), never by a
    # policy, for memberships jcstate added that no policy gives any more
    leave_groups: tuple[str, ...] = ()


def _expiry(value: Any) -> datetime.date | Expiry | None:
    if value is None:
        return None
    if value == NEVER.value:
        return NEVER
    if isinstance(value, datetime.datetime):
        return value.date()
    if isinstance(value, datetime.date):
        return value
    return datetime.date.fromisoformat(str(value))


def parse_instant(value: Any) -> datetime.datetime:
    """An RFC 3339 instant with its offset (``2027-01-31T18:00:00Z``), as an aware datetime.

    Raises ValueError naming what is wrong: a time without an offset is refused, since the
    device would read it in its own time zone and two devices would end the right at
    different instants.
    """
    if isinstance(value, datetime.datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.datetime.fromisoformat(value.strip().replace("z", "Z"))
        except ValueError:
            raise ValueError(
                f"admin.until {value!r} is not an RFC 3339 date-time (e.g. 2027-01-31T18:00:00Z)"
            ) from None
    else:
        raise ValueError(f"admin.until must be an RFC 3339 date-time, got {value!r}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(
            f"admin.until {value!s} has no UTC offset: add Z (UTC) or +HH:MM "
            "(e.g. 2027-01-31T18:00:00Z)"
        )
    return moment


def instant_text(moment: datetime.datetime) -> str:
    """How plans, reports and the agent show an instant: UTC, ``2027-01-31T18:00:00Z``."""
    utc = moment.astimezone(datetime.UTC).replace(microsecond=0)
    return utc.isoformat().replace("+00:00", "Z")


def _admin(value: Any) -> tuple[bool | None, datetime.datetime | None]:
    if isinstance(value, dict):
        return True, parse_instant(value.get("until"))
    return value, None


def admin_at(spec: UserSpec, now: datetime.datetime) -> UserSpec:
    """``spec`` with a time-bound admin right resolved at ``now``: admin before ``until``;
    at and after it ``admin`` is not managed, so the undo layer takes back only what jcstate
    granted (the ledger's ``adminBefore``) and a right given by hand stays."""
    if spec.admin_until is None:
        return spec
    return replace(spec, admin=True if now < spec.admin_until else None)


def _strings(value: Any) -> tuple[str, ...] | None:
    return None if value is None else tuple(str(v) for v in value)


def _one(entry: Mapping[str, Any]) -> UserSpec:
    password = entry.get("password") or {}
    hashed = password.get("hash")
    admin, until = _admin(entry.get("admin"))
    return UserSpec(
        name=str(entry["name"]),
        uid=None if entry.get("uid") is None else int(entry["uid"]),
        full_name=entry.get("fullName"),
        shell=entry.get("shell"),
        home=entry.get("home"),
        primary_group=entry.get("primaryGroup"),
        groups=_strings(entry.get("groups")),
        admin=admin,
        admin_until=until,
        password_hash=None if hashed is None else Secret(hashed),
        password_ref=password.get("secretRef"),
        ssh_authorized_keys=_strings(entry.get("sshAuthorizedKeys")),
        expires=_expiry(entry.get("expires")),
        state=entry.get("state") or "present",
        remove_home=bool(entry.get("removeHome", False)),
        allow_lockout=bool(entry.get("allowLockout", False)),
        hidden=entry.get("hidden"),
        on_removal=entry.get("onRemoval") or "lock",
    )


def expiry_text(value: datetime.date | Expiry | None) -> str | None:
    """How plans and checks show an expiry: ``2027-06-30``, ``never``, or None (none set)."""
    if value is None:
        return None
    return value.value if isinstance(value, Expiry) else value.isoformat()


def parse(section: list[Mapping[str, Any]] | None) -> list[UserSpec]:
    """``spec.users`` (schema-validated plain data) → models, in document order."""
    return [_one(entry) for entry in section or []]


def state_change(wanted: State, lock: Mapping[str, bool]) -> FieldChange | None:
    """The ``state`` field change, or None when every lock fact already matches ``wanted``.

    ``lock`` holds each fact the OS uses to lock an account, read on its own (Linux: ``"password
    locked"``, the ``!`` on the shadow hash, and ``"expired by the lock"``; macOS and Windows:
    one ``"disabled"``). ``locked`` needs every one of them and ``present`` none, so one fact can
    never stand in for another: an account whose lock expiry is set but whose hash has no ``!``
    reads ``partly locked (expired by the lock)``, and a plan (or the re-read after apply) says
    so instead of taking it for locked.
    """
    want = wanted == "locked"
    if all(holds == want for holds in lock.values()):
        return None
    held = [what for what, holds in lock.items() if holds]
    if not held:
        before = "present"
    elif len(held) == len(lock):
        before = "locked"
    else:
        before = f"partly locked ({', '.join(held)})"
    return FieldChange("state", before, wanted)
