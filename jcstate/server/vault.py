"""Encryption at rest for the secrets the server holds (TOTP seeds, passwords).

AES-256-GCM with a key kept outside the database (``DATA/secret-key``, 0600, or the file named by
``--secret-key-file``), so a copy of the database alone does not reveal a secret. The secret's
kind and name are the associated data: a ciphertext cannot be moved to another user's row.
Several servers on one PostgreSQL must share the same key file.
"""

from __future__ import annotations

import base64
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from jcstate.errors import SecretError
from jcstate.secret import Secret

__all__ = ["Vault", "load_or_create_key"]


class Vault:
    """Seals and opens secrets with one key."""

    def __init__(self, key: bytes):
        if len(key) != 32:
            raise SecretError("the server's secret key must be 32 bytes")
        self._aead = AESGCM(key)

    def seal(self, kind: str, name: str, value: Secret) -> str:
        nonce = os.urandom(12)
        ct = self._aead.encrypt(nonce, value.reveal().encode(), f"{kind}/{name}".encode())
        return "v1:" + base64.b64encode(nonce + ct).decode()

    def open(self, kind: str, name: str, sealed: str) -> Secret:
        if not sealed.startswith("v1:"):
            raise SecretError(f"{kind}/{name}: unknown secret format")
        raw = base64.b64decode(sealed[3:])
        try:
            plain = self._aead.decrypt(raw[:12], raw[12:], f"{kind}/{name}".encode())
        except Exception as exc:  # InvalidTag: wrong key or tampered row
            raise SecretError(f"{kind}/{name}: cannot decrypt (wrong secret key?)") from exc
        return Secret(plain.decode())


def load_or_create_key(path: str) -> bytes:
    """Read the key file, creating it (0600) with a fresh random key when it does not exist."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        with open(path, "rb") as f:
            return base64.b64decode(f.read().strip())
    with os.fdopen(fd, "wb") as f:
        key = AESGCM.generate_key(bit_length=256)
        f.write(base64.b64encode(key) + b"\n")
        return key
