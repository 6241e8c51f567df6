"""Admin roles: a ladder, weakest first, and side roles that are on no rung of it.

On the ladder a role may do everything the roles before it may. A side role may do only what
a route names it for (``require("read-only", "command-runner")``): ``command-runner`` reads
the device list and runs the saved commands assigned to it (docs/security.md, "Command
runners"). :func:`allows` never lets a side role pass a check for a rung, so a route that
asks for ``manager`` stays closed to it without knowing it exists.
"""

from __future__ import annotations

__all__ = ["ALL_ROLES", "COMMAND_RUNNER", "ROLES", "SIDE_ROLES", "allows"]

ROLES = ("read-only", "manager", "administrator")
COMMAND_RUNNER = "command-runner"
SIDE_ROLES = (COMMAND_RUNNER,)
ALL_ROLES = ROLES + SIDE_ROLES  # what a token or a console account may be given


def allows(role: str, needed: str, also: tuple[str, ...] = ()) -> bool:
    """True when ``role`` is on the ladder at ``needed`` or above, or is one of ``also``.

    ``needed`` must be a rung: asking whether a role "is at least command-runner" has no
    answer, so it raises rather than guessing.
    """
    if needed not in ROLES:
        raise ValueError(f"{needed!r} is not a rung of {ROLES}")
    if role in also:
        return True
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)
