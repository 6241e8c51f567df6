"""User-written text made safe for a one-line ``file:line:col: message``.

A problem message is one line on a terminal. Text from a document (a name, a key, a rendered
value) may hold a newline, which would split the line and forge a second ``file:line:col``, or
an escape sequence such as ``\\x1b[2J``, which the terminal would run. So every character that
Python does not call printable (control and format characters, line and paragraph separators,
non-breaking spaces) is written as its escape, the way ``repr`` writes it.

- :func:`quote` is for a value inside a message: ``'root\\nx'`` (quoted, backslashes doubled so
  that a literal ``\\n`` and a newline read differently).
- :func:`one_line` is for a whole message (every problem passes through it once, in
  :meth:`~jcstate.document.loader.Positions.problem`); it leaves backslashes alone, so text
  already quoted is not escaped twice.
"""

from __future__ import annotations

__all__ = ["one_line", "quote"]


def one_line(text: str) -> str:
    """``text`` with every non-printable character written as an escape (``\\n``, ``\\x1b``)."""
    if text.isprintable():
        return text  # the common case: nothing to build
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in text)


def quote(value: object) -> str:
    """``'value'`` for a message: single-quoted, escaped, safe on one terminal line."""
    text = str(value)
    return "'" + one_line(text.replace("\\", "\\\\")) + "'"


def _escape(ch: str) -> str:
    # repr picks the shortest standard form: \n, \t, \x1b, \x85, \u2028, \U000e0001
    return repr(ch)[1:-1]
