"""Verify checks for ``spec.sshMfa``: what a machine with (or without) SSH MFA must look like.

Checks use testinfra's vocabulary (``host.file``, ``host.user``, ``host.run``) and raise
:class:`AssertionError` saying what was expected and found. The secret file is checked for
owner, type and mode, never for content: a check's message must not carry a secret.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jcstate.errors import PlanError
from jcstate.modules.ssh_mfa import SshMfa, pam, parse, sshd, totp_file
from jcstate.resource import Check

__all__ = ["checks"]

_KIND = "sshMfa"


def checks(section: Any, os_name: str) -> list[Check]:
    """The checks for a rendered document's ``spec.sshMfa`` on a target running ``os_name``."""
    if section is None or os_name != "linux":
        return []
    model: SshMfa = parse(section)
    users = model.mfa_users
    out = [
        _check(
            "pam",
            f"{pam.PAM_SSHD} asks a TOTP code of exactly {list(users)}",
            lambda host: _pam_users(host, users),
        )
    ]
    if not users:
        return out
    out.append(_check("pam", f"{pam.MODULE} is installed", _module_installed))
    for user in users:
        out.append(
            _check(
                user,
                f"{user}'s TOTP secret file is theirs, a regular file, 0600 or stricter",
                lambda host, u=user: _secret_file(host, u),
            )
        )
        out.append(
            _check(
                user,
                f"sshd asks {user} for keyboard-interactive (password + code) only",
                lambda host, u=user: _sshd_effective(host, u),
            )
        )
    return out


def _check(name: str, description: str, run: Callable[[Any], None]) -> Check:
    return Check(resource=_KIND, name=name, description=description, run=run)


def _pam_users(host: Any, users: tuple[str, ...]) -> None:
    text = host.file(pam.PAM_SSHD).content_string
    try:
        found = pam.block_users(text)
    except PlanError as exc:
        raise AssertionError(str(exc)) from None
    if found != users:
        raise AssertionError(
            f"{pam.PAM_SSHD}: expected the code for {list(users)}, got {list(found)}"
        )


def _module_installed(host: Any) -> None:
    if not any(host.file(f"{d}/{pam.MODULE}").exists for d in pam.MODULE_DIRS):
        raise AssertionError(f"{pam.MODULE}: not installed in any of {', '.join(pam.MODULE_DIRS)}")


def _secret_file(host: Any, user: str) -> None:
    account = host.user(user)
    if not account.exists:
        raise AssertionError(f"user {user} does not exist")
    f = host.file(totp_file.secret_path(account.home))
    if f.is_symlink:
        raise AssertionError(f"{f.path}: is a symlink")
    if not f.is_file:
        raise AssertionError(f"{f.path}: expected a regular file, found none")
    if f.user != user:
        raise AssertionError(f"{f.path}: expected owner {user}, got {f.user}")
    if f.mode & 0o077:
        raise AssertionError(f"{f.path}: expected mode 0600 or stricter, got {f.mode:04o}")


def _sshd_effective(host: Any, user: str) -> None:
    spec = f"user={user},host=localhost,addr=127.0.0.1"
    result = host.run("/usr/sbin/sshd -T -C %s", spec)
    if result.rc != 0:
        raise AssertionError(f"sshd -T -C {spec} failed: {result.stderr.strip()}")
    problem = sshd.check_effective(user, sshd.parse_effective(result.stdout))
    if problem:
        raise AssertionError(problem)
