"""Every exception jcstate raises on purpose.

JcstateError
├── DocumentError          a policy document is invalid (carries Problems with file:line:col)
├── SecretError            a secret is missing, unreadable or stored unsafely
├── HostError              touching the system failed
│   ├── CommandFailed      a command exited non-zero (argv, exit code, stderr)
│   └── UnsafePath         a path component is a symlink or escapes the root
├── PlanError              the plan cannot be made (no backend for this OS, …)
│   └── LedgerError        the ownership ledger is damaged or unreadable (nothing is changed)
└── ServerError            talking to the jcstate server failed (agent and admin CLI)
    └── AuthError          the server refused our credential (401/403)
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Sequence

__all__ = [
    "AuthError",
    "CommandFailed",
    "DocumentError",
    "HostError",
    "JcstateError",
    "LedgerError",
    "PlanError",
    "Problem",
    "SecretError",
    "ServerError",
    "UnsafePath",
]


class JcstateError(Exception):
    """Base of every error jcstate raises on purpose."""


class Problem(namedtuple("Problem", "file line column message")):
    """One thing wrong in a document, at a place a user can jump to: ``file`` (str), ``line``
    and ``column`` (int), ``message`` (str).

    Immutable and ordered by place. A plain namedtuple rather than a dataclass or a
    ``typing.NamedTuple``: every process imports this module, and ``dataclasses`` (with
    ``inspect``) costs the resident agent about 1 MB, ``typing`` 0.4 MB.
    """

    __slots__ = ()
    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class DocumentError(JcstateError):
    """One or more problems in policy documents; nothing was changed."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems = sorted(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class SecretError(JcstateError):
    """A secret is missing, unreadable, or stored where others can read it."""


class HostError(JcstateError):
    """Touching the system failed."""


class CommandFailed(HostError):
    """A command exited with a non-zero status."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str):
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr
        detail = stderr.strip() or "(no output on stderr)"
        super().__init__(f"{argv[0]} exited {returncode}: {detail}")


class UnsafePath(HostError):
    """A path component is a symlink, or the path escapes the managed root."""


class PlanError(JcstateError):
    """The plan cannot be made at all (for example: no backend for this OS)."""


class LedgerError(PlanError):
    """The ownership ledger cannot be trusted; the run changes nothing (never "undo all")."""


class ServerError(JcstateError):
    """Talking to the jcstate server failed."""


class AuthError(ServerError):
    """The server refused our credential."""
