"""The device's credential: an Ed25519 key pair made on the device, and the id the server gave.

The private key never leaves the state directory (``key.pem``, 0600, directory 0700); the
server stores only the public key. Losing the state directory means enrolling again as a new
device.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

from jcstate.errors import JcstateError

__all__ = ["Identity"]


def _write_private(path: str, data: bytes) -> None:
    """Write a 0600 file atomically (temporary name, fsync, rename)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


class Identity:
    """Key pair and device id kept in ``state_dir``."""

    def __init__(self, state_dir: str):
        self.state_dir = state_dir
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        os.chmod(state_dir, 0o700)
        self.key_path = os.path.join(state_dir, "key.pem")
        self.device_path = os.path.join(state_dir, "device.json")
        self._key: Any = None

    @property
    def private_key(self) -> Any:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        if self._key is None:
            if os.path.exists(self.key_path):
                if os.stat(self.key_path).st_mode & 0o077:
                    raise JcstateError(f"{self.key_path}: readable by others; refusing to use it")
                with open(self.key_path, "rb") as f:
                    self._key = serialization.load_pem_private_key(f.read(), password=None)
            else:
                self._key = Ed25519PrivateKey.generate()
                pem = self._key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
                _write_private(self.key_path, pem)
        return self._key

    @property
    def public_key_b64(self) -> str:
        from cryptography.hazmat.primitives import serialization

        raw = self.private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return base64.b64encode(raw).decode()

    def device(self) -> dict[str, Any] | None:
        """``{"id": ..., "server": ...}`` once enrolled, else None."""
        try:
            with open(self.device_path) as f:
                data = json.load(f)
        except FileNotFoundError:
            return None
        return data if isinstance(data, dict) and data.get("id") else None

    def save_device(self, device_id: str, server: str) -> None:
        _write_private(self.device_path, json.dumps({"id": device_id, "server": server}).encode())
