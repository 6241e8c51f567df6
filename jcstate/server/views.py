"""One JSON style for everything the admin API returns: camelCase keys, RFC 3339 times.

The database keeps snake_case columns and POSIX seconds (so that SQLite and PostgreSQL compare
times alike); every admin view passes through :func:`wire` on its way out, so a field added to a
view later gets the same treatment without anyone remembering to. Only the top level of a view
is converted: nested data that devices report (facts, reports, documents) is passed as sent.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Mapping
from typing import Any

__all__ = ["camel", "errors", "from_rfc3339", "is_time_key", "rfc3339", "wire"]

_ERRORS = {
    404: "no such object (device, revision, batch, command, secret)",
    409: "conflicts with the current state (a shared hostname, an existing secret, …)",
    422: "invalid input; the detail says what and how to fix it",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of a route that may answer these error codes (OpenAPI documents them:
    ``{"detail": …}``)."""
    return {code: {"description": _ERRORS[code]} for code in codes}


# camelCase keys holding a time that do not end in "At"
_TIME_KEYS = frozenset({"at", "lastSeen", "lastUsed", "expires", "notAfter", "since", "until"})


def camel(key: str) -> str:
    """``created_at`` → ``createdAt``; a key already in camelCase is returned as it is."""
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def is_time_key(key: str) -> bool:
    return key.endswith("At") or key in _TIME_KEYS


def rfc3339(ts: float | None) -> str | None:
    """POSIX seconds as RFC 3339 in UTC with microseconds (``2026-12-06T04:30:24.123456Z``):
    one fixed width, so the strings also sort in time order."""
    if ts is None:
        return None
    text = dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="microseconds")
    return text[:-6] + "Z"  # "+00:00"; isoformat is several times faster than strftime


def from_rfc3339(text: str) -> float:
    """An RFC 3339 time (``Z`` or an offset; a date alone means its midnight UTC) as POSIX
    seconds. Raises ValueError."""
    parsed = dt.datetime.fromisoformat(text.strip().replace("z", "Z").replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


@functools.lru_cache(maxsize=1024)
def _wire_name(key: str) -> tuple[str, bool]:
    name = camel(key)
    return name, is_time_key(name)


def wire(row: Mapping[str, Any]) -> dict[str, Any]:
    """A view as the API sends it: top-level keys in camelCase, numeric times as RFC 3339.

    Runs once per device in a listing of 10,000: key names are looked up once, not parsed."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        name, is_time = _wire_name(key)
        if is_time and value is not None and type(value) in (float, int):
            value = rfc3339(value)
        out[name] = value
    return out
