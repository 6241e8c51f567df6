"""Where secrets come from: a local secrets file (standalone) or the server's payload (agent).

Secrets never live in the policy repo. A policy names them (``password.secretRef``, a user listed
in ``sshMfa.users``); a :class:`SecretSource` resolves the name to a :class:`Secret` at plan time.

Secrets file format (YAML or JSON, mode 0600 or stricter, owned by the user running jcstate)::

    totp:                      # base32 TOTP secrets by user name (sshMfa)
      alice: JBSWY3DPEHPK3PXP
    passwords:                 # plaintext passwords by secretRef name (macOS/Windows accounts)
      alice-password: "correct horse battery staple"
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from typing import Any, Protocol

from jcstate.errors import SecretError
from jcstate.secret import Secret

__all__ = ["FileSecrets", "MappingSecrets", "NoSecrets", "SecretSource", "load_secrets_file"]

_SECTIONS = ("totp", "passwords")


class SecretSource(Protocol):
    """Resolves secret names for the engine."""

    def totp(self, user: str) -> Secret | None: ...

    def password(self, ref: str) -> Secret | None: ...


class MappingSecrets:
    """Secrets held in memory, e.g. the ``secrets`` part of a document the server sent."""

    def __init__(self, data: Mapping[str, Mapping[str, str]] | None = None):
        data = data or {}
        unknown = set(data) - set(_SECTIONS)
        if unknown:
            raise SecretError(f"unknown secrets section(s): {', '.join(sorted(unknown))}")
        self._data = {
            s: {k: Secret(str(v)) for k, v in (data.get(s) or {}).items()} for s in _SECTIONS
        }

    def totp(self, user: str) -> Secret | None:
        return self._data["totp"].get(user)

    def password(self, ref: str) -> Secret | None:
        return self._data["passwords"].get(ref)

    def set_totp(self, user: str, secret: Secret) -> None:
        self._data["totp"][user] = secret

    def to_plain(self) -> dict[str, dict[str, str]]:
        """The revealed values, for writing back to a 0600 file or sending to a device."""
        return {
            s: {k: v.reveal() for k, v in vals.items()} for s, vals in self._data.items() if vals
        }


class NoSecrets(MappingSecrets):
    """No secrets available: every lookup answers None."""

    def __init__(self) -> None:
        super().__init__({})


class FileSecrets(MappingSecrets):
    """A local secrets file; refused when group or others can read it."""

    def __init__(self, path: str):
        self.path = path
        super().__init__(load_secrets_file(path))


def load_secrets_file(path: str) -> dict[str, Any]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise SecretError(f"{path}: secrets file not found") from exc
    except OSError as exc:
        raise SecretError(f"{path}: cannot open secrets file: {exc.strerror}") from exc
    import yaml  # only standalone runs read a secrets file; the agent never needs a YAML parser

    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SecretError(
                f"{path}: secrets file is accessible by group or others "
                f"(mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {path}"
            )
        if st.st_uid != os.geteuid():
            raise SecretError(f"{path}: secrets file is owned by uid {st.st_uid}, not by you")
        try:
            data = yaml.safe_load(f.read(1 << 20)) or {}
        except yaml.YAMLError as exc:
            # the error text may quote the file's content: keep only the position
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise SecretError(f"{path}: not valid YAML{where}") from None
    if not isinstance(data, dict) or not all(
        isinstance(v, dict) or v is None for v in data.values()
    ):
        raise SecretError(
            f"{path}: expected sections {', '.join(_SECTIONS)} mapping names to values"
        )
    return data
