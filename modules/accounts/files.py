"""Parsers for the Linux account files, in-process (no process per account, unlike ``id`` loops).

Each parser takes the file's text and returns entries keyed by name. Malformed lines (too few
fields, a non-numeric id) are skipped rather than fatal: the tools themselves ignore them, and
one bad line must not stop every account from being managed. Password hashes become
:class:`~jcstate.secret.Secret` as they are read, so facts can be logged and sent safely.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from jcstate.secret import Secret

__all__ = [
    "Defaults",
    "GroupEntry",
    "ShadowEntry",
    "UserEntry",
    "days_to_date",
    "date_to_days",
    "parse_defaults",
    "parse_group",
    "parse_gshadow",
    "parse_passwd",
    "parse_shadow",
]

_EPOCH = datetime.date(1970, 1, 1)


@dataclass(frozen=True)
class UserEntry:
    """One line of /etc/passwd."""

    name: str
    uid: int
    gid: int
    gecos: str
    home: str
    shell: str


@dataclass(frozen=True)
class ShadowEntry:
    """The parts of an /etc/shadow line jcstate manages. ``expire`` is days since 1970-01-01."""

    name: str
    password: Secret
    expire: int | None


@dataclass(frozen=True)
class GroupEntry:
    """One line of /etc/group."""

    name: str
    gid: int
    members: tuple[str, ...]


@dataclass(frozen=True)
class Defaults:
    """What useradd does when a field is not given (login.defs and /etc/default/useradd)."""

    home_base: str = "/home"
    usergroups: bool = True  # USERGROUPS_ENAB: a group named like the user is its primary group
    group: str = "100"  # GROUP= in /etc/default/useradd: primary group when usergroups is off
    shell: str = "/bin/sh"


def _lines(text: str | None) -> list[list[str]]:
    rows = []
    for line in (text or "").splitlines():
        if not line.strip() or line.startswith(("#", "+", "-")):  # NIS compat lines are not ours
            continue
        rows.append(line.split(":"))
    return rows


def _members(field: str) -> tuple[str, ...]:
    return tuple(m for m in field.split(",") if m)


def parse_passwd(text: str | None) -> dict[str, UserEntry]:
    out: dict[str, UserEntry] = {}
    for f in _lines(text):
        if len(f) < 7 or not f[2].isdigit() or not f[3].isdigit():
            continue
        out.setdefault(f[0], UserEntry(f[0], int(f[2]), int(f[3]), f[4], f[5], f[6]))
    return out


def parse_shadow(text: str | None) -> dict[str, ShadowEntry]:
    out: dict[str, ShadowEntry] = {}
    for f in _lines(text):
        if len(f) < 2:
            continue
        expire = f[7] if len(f) > 7 else ""
        days = int(expire) if expire.lstrip("-").isdigit() and int(expire) >= 0 else None
        out.setdefault(f[0], ShadowEntry(f[0], Secret(f[1]), days))
    return out


def parse_group(text: str | None) -> dict[str, GroupEntry]:
    out: dict[str, GroupEntry] = {}
    for f in _lines(text):
        if len(f) < 4 or not f[2].isdigit():
            continue
        out.setdefault(f[0], GroupEntry(f[0], int(f[2]), _members(f[3])))
    return out


def parse_gshadow(text: str | None) -> dict[str, tuple[str, ...]]:
    """Members by group name as /etc/gshadow lists them (gpasswd keeps them in step with group)."""
    out: dict[str, tuple[str, ...]] = {}
    for f in _lines(text):
        if len(f) >= 4:
            out.setdefault(f[0], _members(f[3]))
    return out


def _key_values(text: str | None, sep: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (text or "").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=") if sep == "=" else _split_ws(line)
        out[key.strip()] = value.strip().strip('"')
    return out


def _split_ws(line: str) -> tuple[str, str, str]:
    parts = line.split(None, 1)
    return (parts[0], " ", parts[1] if len(parts) > 1 else "")


def parse_defaults(login_defs: str | None, useradd: str | None) -> Defaults:
    """Defaults from /etc/login.defs (``KEY value``) and /etc/default/useradd (``KEY=value``)."""
    defs = _key_values(login_defs, None)
    ua = _key_values(useradd, "=")
    base = Defaults()
    return Defaults(
        home_base=ua.get("HOME") or base.home_base,
        usergroups=defs.get("USERGROUPS_ENAB", "yes").lower() == "yes",
        group=ua.get("GROUP") or base.group,
        shell=ua.get("SHELL") or base.shell,
    )


def date_to_days(day: datetime.date) -> int:
    """Days since 1970-01-01, as /etc/shadow stores an expiry date."""
    return (day - _EPOCH).days


def days_to_date(days: int) -> datetime.date:
    return _EPOCH + datetime.timedelta(days=days)
