"""Which user and group names each OS accepts: one table, one rule per OS.

A later issue extends darwin and windows here (reserved names, case folding) without touching
the rules that call :func:`name_problem`.

- linux: the shadow-utils portable rule ``^[a-z_][a-z0-9_-]*[$]?$``, at most 32 characters
  (what ``useradd`` accepts without ``--badname``).
- windows: at most 20 characters, none of ``"/\\[]:;|=,+*?<>@``, no control characters, and
  not made only of dots and spaces (the SAM account name rules).
- darwin: a short name of letters, digits, ``_``, ``-`` and ``.``, starting with a letter or
  ``_``, at most 31 characters (what ``sysadminctl -addUser`` and the login window accept).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["NAME_RULES", "OSES", "NameRule", "name_problem"]

OSES = ("linux", "darwin", "windows")

_WINDOWS_FORBIDDEN = set('"/\\[]:;|=,+*?<>@')


@dataclass(frozen=True)
class NameRule:
    """How one OS constrains account and group names."""

    os: str
    max_length: int
    describe: str  # shown to the user when a name breaks the rule
    accepts: Callable[[str], bool]

    def problem(self, name: str) -> str | None:
        """None when ``name`` is acceptable, else why not."""
        if len(name) > self.max_length:
            return f"is longer than {self.max_length} characters"
        if not self.accepts(name):
            return f"is not a valid name: {self.describe}"
        return None


_LINUX = re.compile(r"[a-z_][a-z0-9_-]*[$]?")
_DARWIN = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")


def _windows_accepts(name: str) -> bool:
    if not name or set(name) <= {".", " "}:
        return False
    return not any(c in _WINDOWS_FORBIDDEN or ord(c) < 32 or ord(c) == 127 for c in name)


NAME_RULES: dict[str, NameRule] = {
    "linux": NameRule(
        "linux",
        32,
        "use lower-case letters, digits, '_' and '-', starting with a letter or '_' "
        "(shadow-utils rule ^[a-z_][a-z0-9_-]*[$]?$)",
        lambda name: _LINUX.fullmatch(name) is not None,
    ),
    "darwin": NameRule(
        "darwin",
        31,
        "use letters, digits, '_', '-' and '.', starting with a letter or '_'",
        lambda name: _DARWIN.fullmatch(name) is not None,
    ),
    "windows": NameRule(
        "windows",
        20,
        'none of "/\\[]:;|=,+*?<>@ or control characters, and not only dots and spaces',
        _windows_accepts,
    ),
}


def name_problem(os_name: str, name: str) -> str | None:
    """Why ``name`` is not acceptable on ``os_name``, or None when it is (or the OS is unknown)."""
    rule = NAME_RULES.get(os_name)
    return None if rule is None else rule.problem(name)
