"""A user's ``~/.google_authenticator``: the file pam_google_authenticator reads the secret from.

Format (google-authenticator-libpam): the base32 secret on the first line, then option lines
starting with ``"``. jcstate writes only ``" TOTP_AUTH`` (time-based codes) and a marker line
the module ignores, so a later plan knows the file is jcstate's to remove. It adds no
``DISALLOW_REUSE``/``RATE_LIMIT``: those make the module rewrite the file on each login, which
would look like drift on every run.
"""

from __future__ import annotations

import hashlib
import re

from jcstate.errors import SecretError
from jcstate.secret import Secret

__all__ = ["FILE_NAME", "MARKER", "digest", "is_managed", "normalise", "render", "secret_path"]

FILE_NAME = ".google_authenticator"
MARKER = '" JCSTATE_MANAGED'
MODE = 0o400
_BASE32 = re.compile(r"[A-Z2-7]{16,128}")


def secret_path(home: str) -> str:
    return home.rstrip("/") + "/" + FILE_NAME


def normalise(secret: Secret) -> Secret:
    """The secret in canonical base32 (upper case, no spaces or padding); SecretError if not."""
    value = secret.reveal().replace(" ", "").rstrip("=").upper()
    if not _BASE32.fullmatch(value):
        # never quote the value: the message ends up in plans and logs
        raise SecretError("TOTP secret is not base32 text of 16 to 128 characters")
    return Secret(value)


def render(secret: Secret) -> Secret:
    """The file's whole content; a Secret, so plans and logs show ``(secret)``."""
    return Secret(f'{normalise(secret).reveal()}\n" TOTP_AUTH\n{MARKER}\n')


def digest(content: bytes | str) -> str:
    """A SHA-256 of the content: lets facts tell "same file" without holding the secret."""
    raw = content.encode() if isinstance(content, str) else content
    return hashlib.sha256(raw).hexdigest()


def is_managed(content: bytes) -> bool:
    """Whether jcstate wrote this file (a user's own enrolment is never removed by jcstate)."""
    return MARKER.encode() in content.splitlines()
