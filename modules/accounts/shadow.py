"""Command lines for the shadow-utils tools (useradd, usermod, gpasswd, chpasswd, ...).

Every command is an argument vector. Names are placed after ``--`` so that even a name starting
with ``-`` is never read as an option, and names and fields are checked again here (documents
are validated earlier, but a value that reaches ``chpasswd``'s stdin or a ``:``-separated file
must not be able to add a line of its own).

Root prefix: with ``--root DIR`` the tools chroot into DIR before touching any file. The long
option is the same for all of them; the short ones are not (``-R``, but ``gpasswd -Q``, since its
``-R`` restricts access), so only the long form is used (checked against shadow-utils 4.13 on
Debian 12 by tests/modules/test_account_tools.py).

Every run of a shadow-utils tool is built by :func:`run`, which marks the tool's lock failure
as transient: shadow-utils takes ``/etc/passwd.lock`` (and the group, shadow and gshadow locks)
without waiting and exits with "cannot lock /etc/passwd; try again later." when another
``useradd``/``usermod``/``vipw`` holds it. The change is then tried again with a bounded backoff
(:class:`~jcstate.plan.Run`), not failed: an admin's hand-run ``useradd`` must not fail a round.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from jcstate.plan import Run
from jcstate.secret import Secret

__all__ = ["LOCK_BUSY", "bad_field", "bad_name", "command", "run"]

# what every shadow-utils tool prints when another process holds one of its lock files
# ("useradd: cannot lock /etc/passwd; try again later."), whatever the file
LOCK_BUSY = ("; try again later.",)

# shadow-utils' portable name rule (what Debian's useradd accepts without --badname)
_NAME = re.compile(r"[a-z_][a-z0-9_-]*[$]?\Z")
_MAX_NAME = 32


def command(
    tool: str, root: str, options: Sequence[str] = (), operands: Sequence[str] = ()
) -> tuple[str, ...]:
    """``tool [--root ROOT] OPTIONS... [-- OPERANDS...]``."""
    argv = [tool]
    if root != "/":
        argv += ["--root", root]
    argv += list(options)
    if operands:
        argv += ["--", *operands]
    return tuple(argv)


def run(
    tool: str,
    root: str,
    options: Sequence[str] = (),
    operands: Sequence[str] = (),
    *,
    stdin: str | Secret | None = None,
    batch: bool = False,
) -> Run:
    """A run of ``tool`` (see :func:`command`) that is tried again when it lost the lock."""
    return Run(command(tool, root, options, operands), stdin=stdin, batch=batch, retry_on=LOCK_BUSY)


def bad_name(name: str) -> str | None:
    """Why ``name`` cannot be a Linux user or group name, or None when it can."""
    if not name or len(name) > _MAX_NAME or not _NAME.match(name):
        return (
            f"{name!r} is not a portable Linux account name "
            f"([a-z_][a-z0-9_-]*, at most {_MAX_NAME} characters)"
        )
    return None


def bad_field(label: str, value: str) -> str | None:
    """Why ``value`` cannot go into a ``:``-separated account file, or None when it can."""
    if any(ch in value for ch in ":\n\r\0"):
        return f"{label} must not contain ':', a newline or NUL"
    return None
