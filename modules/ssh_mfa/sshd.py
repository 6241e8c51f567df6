"""The sshd side of SSH MFA: what jcstate writes to sshd's configuration, and how it is checked.

For the listed users only, sshd must offer keyboard-interactive authentication through PAM and
accept nothing else (``AuthenticationMethods keyboard-interactive``), so the password and then the
code are asked by PAM. Everyone else keeps sshd's settings as they were. Where the main file
has an ``Include`` of a drop-in directory (OpenSSH 7.3+, Debian's default), jcstate owns one
drop-in file, named to sort first because sshd keeps the first value it reads; otherwise it
owns a marked ``Match`` block at the end of ``sshd_config``.

Whatever gets written, the *effective* configuration is what counts: :func:`check_effective`
reads ``sshd -T -C user=...`` output, so an earlier drop-in that overrides ours is caught before
sshd is reloaded.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
from collections.abc import Sequence

__all__ = [
    "BEGIN",
    "DROPIN_NAME",
    "END",
    "SSHD_CONFIG",
    "check_effective",
    "dropin_path",
    "managed_users",
    "parse_effective",
    "render_dropin",
    "set_block",
]

SSHD_CONFIG = "/etc/ssh/sshd_config"
DROPIN_NAME = "00-jcstate-mfa.conf"
BEGIN = "# BEGIN jcstate sshMfa"
END = "# END jcstate sshMfa"
_HEADER = (
    "# Managed by jcstate (sshMfa): the users below must pass a TOTP code after the password.\n"
    "# Local edits are overwritten. Recovery: remove this file and reload sshd.\n"
)
_MATCH = re.compile(r"^\s*Match\s+User\s+(\S+)\s*$", re.IGNORECASE)


def _match_block(users: Sequence[str]) -> str:
    return (
        f"Match User {','.join(users)}\n"
        "\tKbdInteractiveAuthentication yes\n"
        "\tAuthenticationMethods keyboard-interactive\n"
    )


def render_dropin(users: Sequence[str]) -> str | None:
    """The drop-in file's content, or None (no file) when no user needs MFA."""
    if not users:
        return None
    # UsePAM may not appear inside Match; first value wins, and our file is read first.
    return _HEADER + "UsePAM yes\n" + _match_block(users)


def set_block(text: str, users: Sequence[str]) -> str:
    """``sshd_config`` text with jcstate's Match block at the end (or without it, no users).

    At the very end, because a Match block lasts until the next Match or the end of the file.
    """
    lines = text.splitlines(keepends=True)
    begin = next((i for i, line in enumerate(lines) if line.startswith(BEGIN)), None)
    if begin is not None:
        end = next((i for i in range(begin, len(lines)) if lines[i].rstrip("\n") == END), None)
        del lines[begin : (len(lines) if end is None else end + 1)]
    if users:
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        lines.append(f"{BEGIN} (managed; see jcstate docs)\n" + _match_block(users) + f"{END}\n")
    return "".join(lines)


def managed_users(text: str | None) -> tuple[str, ...]:
    """Users named in jcstate's drop-in or block (reads either form)."""
    if not text:
        return ()
    inside = BEGIN not in text  # a drop-in is all ours; in sshd_config only the block is
    for line in text.splitlines():
        if line.startswith(BEGIN):
            inside = True
        elif line.rstrip() == END:
            inside = False
        elif inside:
            match = _MATCH.match(line)
            if match:
                return tuple(sorted(u for u in match.group(1).split(",") if u))
    return ()


def dropin_path(main_text: str | None) -> str | None:
    """Where jcstate's drop-in goes, when ``sshd_config`` includes a drop-in directory globally.

    Only an ``Include`` before the first ``Match`` counts (inside a Match it would be
    conditional), and only a pattern ``DIR/<glob>`` that our file name matches.
    """
    for raw in (main_text or "").splitlines():
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        keyword = words[0].lower()
        if keyword == "match":
            return None
        if keyword != "include":
            continue
        for pattern in words[1:]:
            pattern = pattern.strip('"')
            if not pattern.startswith("/"):
                pattern = "/etc/ssh/" + pattern
            folder = posixpath.dirname(pattern)
            if any(ch in folder for ch in "*?["):
                continue
            candidate = f"{folder}/{DROPIN_NAME}"
            if fnmatch.fnmatchcase(candidate, pattern):
                return candidate
    return None


def parse_effective(output: str) -> dict[str, str]:
    """``sshd -T`` output (``keyword value`` lines) as a dict; repeated keywords keep the first."""
    settings: dict[str, str] = {}
    for line in output.splitlines():
        key, _, value = line.strip().partition(" ")
        if key:
            settings.setdefault(key.lower(), value.strip())
    return settings


def check_effective(user: str, settings: dict[str, str]) -> str | None:
    """Why sshd's effective settings for ``user`` do not require the code, or None when they do."""
    if settings.get("usepam") != "yes":
        return f"UsePAM is {settings.get('usepam', 'unset')} for {user}; PAM must ask the code"
    if settings.get("kbdinteractiveauthentication") != "yes":
        return f"KbdInteractiveAuthentication is not yes for {user}"
    methods = settings.get("authenticationmethods", "any")
    lists = methods.split()
    if methods == "any" or not all(_asks_pam(m) for m in lists):
        return (
            f"AuthenticationMethods for {user} is '{methods}': a login without the code "
            "would still be accepted (another sshd setting overrides jcstate's)"
        )
    return None


def _asks_pam(method_list: str) -> bool:
    """Whether one ``AuthenticationMethods`` list includes keyboard-interactive (maybe ``:pam``)."""
    return any(m.split(":", 1)[0] == "keyboard-interactive" for m in method_list.split(","))
