"""Admin roles, weakest first; a role may do everything the roles before it may."""

from __future__ import annotations

__all__ = ["ROLES", "allows"]

ROLES = ("read-only", "manager", "administrator")


def allows(role: str, needed: str) -> bool:
    """True when a token of ``role`` may call a route that needs ``needed``."""
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)
