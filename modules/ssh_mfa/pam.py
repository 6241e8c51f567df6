"""The PAM side of SSH MFA: jcstate's block in ``/etc/pam.d/sshd``, and a sanity check of it.

The block goes right after the password step (``@include common-auth`` on Debian, else after
the last ``auth`` line) and reads::

    # BEGIN jcstate sshMfa ...
    auth [success=1 default=ignore] pam_succeed_if.so user notin alice:bob quiet
    auth required pam_google_authenticator.so
    # END jcstate sshMfa

Users not listed skip the code line, so they log in exactly as before; listed users must pass
it, and there is deliberately no ``nullok``: a listed user without a secret file is refused,
never let through. Inserting and removing the block are exact inverses, so disabling MFA gives
back the file byte for byte.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from jcstate.errors import HostError, PlanError

__all__ = [
    "BEGIN",
    "END",
    "MODULE",
    "MODULE_DIRS",
    "PAM_SSHD",
    "block_users",
    "check_stack",
    "render_block",
    "set_block",
]

PAM_SSHD = "/etc/pam.d/sshd"
MODULE = "pam_google_authenticator.so"
BEGIN = "# BEGIN jcstate sshMfa"
END = "# END jcstate sshMfa"
# Where distributions keep PAM modules (multiarch Debian/Ubuntu first, then RPM and others).
MODULE_DIRS = (
    "/usr/lib/x86_64-linux-gnu/security",
    "/lib/x86_64-linux-gnu/security",
    "/usr/lib/aarch64-linux-gnu/security",
    "/lib/aarch64-linux-gnu/security",
    "/usr/lib/arm-linux-gnueabihf/security",
    "/usr/lib/i386-linux-gnu/security",
    "/usr/lib/riscv64-linux-gnu/security",
    "/usr/lib64/security",
    "/lib64/security",
    "/usr/lib/security",
    "/lib/security",
)

_NOTIN = re.compile(r"pam_succeed_if\.so\s+user\s+notin\s+(\S+)")


def render_block(users: Sequence[str]) -> str:
    """The lines jcstate adds for ``users`` (empty string for no users)."""
    if not users:
        return ""
    return (
        f"{BEGIN}: TOTP code after the password for the users below (managed; see jcstate docs)\n"
        f"auth [success=1 default=ignore] pam_succeed_if.so user notin {':'.join(users)} quiet\n"
        f"auth required {MODULE}\n"
        f"{END}\n"
    )


def _split(text: str) -> tuple[list[str], int | None, int | None]:
    """Lines (with ends) and the index range of jcstate's block; PlanError when it is broken."""
    lines = text.splitlines(keepends=True)
    begins = [i for i, line in enumerate(lines) if line.startswith(BEGIN)]
    ends = [i for i, line in enumerate(lines) if line.rstrip("\n") == END]
    if not begins and not ends:
        return lines, None, None
    if len(begins) != 1 or len(ends) != 1 or ends[0] < begins[0]:
        raise PlanError(
            f"{PAM_SSHD}: jcstate's block markers are damaged; remove the lines between "
            f"'{BEGIN}' and '{END}' by hand"
        )
    return lines, begins[0], ends[0]


def block_users(text: str | None) -> tuple[str, ...]:
    """The users named in jcstate's block (none when there is no block)."""
    if not text:
        return ()
    lines, begin, end = _split(text)
    if begin is None or end is None:
        return ()
    for line in lines[begin:end]:
        match = _NOTIN.search(line)
        if match:
            return tuple(sorted(u for u in match.group(1).split(":") if u))
    return ()


def _anchor(lines: list[str]) -> int:
    """Index of the line after which the block goes: the password step of the auth stack."""
    last_auth = None
    for i, line in enumerate(lines):
        words = line.split()
        if words[:2] == ["@include", "common-auth"]:
            return i
        if words and words[0] in ("auth", "-auth"):
            last_auth = i
    if last_auth is None:
        raise PlanError(
            f"{PAM_SSHD}: no 'auth' step found (neither '@include common-auth' nor an auth "
            "line); cannot place the TOTP rule after the password"
        )
    return last_auth


def set_block(text: str, users: Sequence[str]) -> str:
    """``text`` with jcstate's block for ``users`` in place (or removed, for no users)."""
    lines, begin, end = _split(text)
    if begin is not None and end is not None:
        del lines[begin : end + 1]
    block = render_block(users)
    if not block:
        return "".join(lines)
    at = _anchor(lines)
    if not lines[at].endswith("\n"):
        lines[at] += "\n"
    lines.insert(at + 1, block)
    return "".join(lines)


def check_stack(
    text: str,
    users: Sequence[str],
    module_exists: Callable[[str], bool],
    include_exists: Callable[[str], bool],
) -> None:
    """Refuse a PAM file that would not do what we want (raises HostError with the reason).

    ``module_exists(name)`` answers whether a module file is installed; ``include_exists(name)``
    whether ``/etc/pam.d/NAME`` exists. A missing module or include makes PAM fail every login
    on that path, which is the lock-out we must not cause.
    """
    try:
        found = block_users(text)
        _split(text)
    except PlanError as exc:
        raise HostError(str(exc)) from None
    if tuple(sorted(users)) != found:
        raise HostError(
            f"{PAM_SSHD}: expected the TOTP rule for {list(users)}, found it for {list(found)}"
        )
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if words[0].startswith("@include"):
            if len(words) < 2 or not include_exists(words[1]):
                raise HostError(f"{PAM_SSHD}:{number}: included file is missing: {line.strip()}")
            continue
        if words[0].startswith("-"):
            continue  # "-auth ...": PAM skips the line when the module is missing
        module = _module_of(words)
        if module is not None and not module_exists(module):
            raise HostError(f"{PAM_SSHD}:{number}: PAM module not installed: {module}")
        if module == MODULE and "nullok" in words:
            raise HostError(
                f"{PAM_SSHD}:{number}: '{MODULE} nullok' would let users in without a code"
            )


def _module_of(words: list[str]) -> str | None:
    """The module named on a PAM line: the first word after the control that ends in .so."""
    for word in words[1:]:
        if word.endswith(".so"):
            return word
    return None
