"""A value that must never be printed: password hashes, TOTP secrets, recovery keys."""

from __future__ import annotations

from typing import Any

__all__ = ["REDACTED", "Secret", "redact"]

REDACTED = "(secret)"


class Secret:
    """Wraps a secret string. It prints, logs and serialises as ``(secret)``.

    Equality compares the wrapped values so plans can tell whether a secret changed without
    ever showing it; ``reveal()`` is the single, greppable way to get the value out.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str):
        if isinstance(value, Secret):
            value = value.reveal()
        self._value = str(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return REDACTED

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return REDACTED

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Secret):
            return self._value == other._value
        return NotImplemented

    def __hash__(self) -> int:
        return hash(("jcstate.Secret", self._value))

    def __reduce__(self) -> Any:  # pickling would leak the value into files
        raise TypeError("a Secret cannot be pickled")


def redact(value: Any) -> Any:
    """Return ``value`` with every Secret inside replaced by ``(secret)``, for JSON output."""
    if isinstance(value, Secret):
        return REDACTED
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value
