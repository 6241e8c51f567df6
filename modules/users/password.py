"""Passwords on Linux: decide whether ``chpasswd`` must run, and build its Secret stdin.

The hash (or plaintext) only ever travels in a :class:`~jcstate.secret.Secret` on ``chpasswd``'s
standard input: never in argv (``useradd -p``/``usermod -p`` would show it in ``ps``), plans or
logs. Idempotence compares the shadow field without its ``!`` lock marker, so locking and
unlocking never counts as a password change.

``secretRef`` gives a plaintext password; whether it still matches the shadow hash is checked
with the system's crypt(3) (Python's ``crypt`` module, deprecated but present through 3.12).
Without it, a secretRef password is set when the account is created and left alone after.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from jcstate.secret import Secret

__all__ = ["can_verify", "matches", "stdin_line", "without_lock"]


@cache
def _crypt() -> Any:
    """The ``crypt`` module, or None; imported on first use (only secretRef passwords need it:
    its import, with the warnings machinery around it, is a few ms of every run otherwise)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt
        except ImportError:  # Python 3.13 removed it
            return None
    return crypt


def without_lock(shadow_field: str) -> str:
    """The hash with one leading ``!`` (usermod -L's marker) removed."""
    return shadow_field.removeprefix("!")


def can_verify() -> bool:
    return _crypt() is not None


def matches(plaintext: Secret, shadow_field: str) -> bool:
    """Whether ``plaintext`` is the password the (possibly locked) shadow hash was made from."""
    hashed = without_lock(shadow_field)
    crypt = _crypt()
    if crypt is None or not hashed.startswith("$"):
        return False
    return crypt.crypt(plaintext.reveal(), hashed) == hashed  # type: ignore[no-any-return]


def stdin_line(name: str, value: Secret) -> Secret:
    """``name:value\\n`` for chpasswd, as a Secret."""
    return Secret(f"{name}:{value.reveal()}\n")
