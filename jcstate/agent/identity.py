"""The device's credential: an Ed25519 key pair made on the device, and the id the server gave.

The private key never leaves the state directory (``key.pem``, 0600, directory 0700); the
server stores only the public key. Losing the state directory means enrolling again as a new
device.

The agent signs with libsodium through PyNaCl's compiled binding (:mod:`jcstate.agent.sodium`),
which costs the resident process far less memory than cryptography's Rust module; the server
verifies with cryptography. ``key.pem`` stays what it
always was, PKCS#8 PEM of an Ed25519 key, as cryptography and ``openssl genpkey -algorithm
ed25519`` write it: one fixed 48-byte DER structure around the 32-byte seed, read and written
here exactly, so older state directories keep working and anything else is refused clearly.
"""

from __future__ import annotations

import base64
import binascii
import json
import os

from jcstate.agent import sodium
from jcstate.errors import JcstateError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (about 0.4 MB)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["DeviceKey", "Identity"]

# PKCS#8 PrivateKeyInfo { version 0, AlgorithmIdentifier { id-Ed25519 1.3.101.112 },
# OCTET STRING { OCTET STRING (32 bytes) } } -- RFC 8410, section 7.
PKCS8_ED25519_PREFIX = bytes.fromhex("302e020100300506032b657004220420")
SEED_BYTES = 32
PEM_BEGIN = "-----BEGIN PRIVATE KEY-----"
PEM_END = "-----END PRIVATE KEY-----"


class DeviceKey:
    """An Ed25519 private key: signs messages, tells its raw public key. Never prints itself."""

    __slots__ = ("_public", "_secret")

    def __init__(self, seed: bytes):
        if len(seed) != SEED_BYTES:
            raise JcstateError(f"an Ed25519 seed has {SEED_BYTES} bytes, not {len(seed)}")
        self._public, self._secret = sodium.seed_keypair(bytes(seed))  # secret: seed + public

    @classmethod
    def generate(cls) -> DeviceKey:
        return cls(os.urandom(SEED_BYTES))

    @classmethod
    def from_pem(cls, data: bytes, source: str = "key") -> DeviceKey:
        """Read PKCS#8 PEM of an Ed25519 key (no password); anything else is refused."""
        try:
            lines = data.decode("ascii").strip().splitlines()
        except UnicodeDecodeError:
            lines = []
        if len(lines) < 3 or lines[0].strip() != PEM_BEGIN or lines[-1].strip() != PEM_END:
            raise JcstateError(f"{source}: not a PEM private key ({PEM_BEGIN} … {PEM_END})")
        try:
            der = base64.b64decode("".join(line.strip() for line in lines[1:-1]), validate=True)
        except (binascii.Error, ValueError):
            raise JcstateError(f"{source}: the PEM body is not valid base64") from None
        if len(der) != len(PKCS8_ED25519_PREFIX) + SEED_BYTES or not der.startswith(
            PKCS8_ED25519_PREFIX
        ):
            raise JcstateError(
                f"{source}: not an unencrypted PKCS#8 Ed25519 key "
                f"(expected {len(PKCS8_ED25519_PREFIX) + SEED_BYTES} bytes of DER "
                f"starting {PKCS8_ED25519_PREFIX.hex()})"
            )
        return cls(der[len(PKCS8_ED25519_PREFIX) :])

    def to_pem(self) -> bytes:
        body = base64.b64encode(PKCS8_ED25519_PREFIX + self._secret[:SEED_BYTES]).decode()
        return f"{PEM_BEGIN}\n{body}\n{PEM_END}\n".encode()

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message``."""
        return sodium.sign(message, self._secret)

    def public_bytes(self) -> bytes:
        """The raw 32-byte public key."""
        return self._public

    def __repr__(self) -> str:
        return f"<DeviceKey public={base64.b64encode(self.public_bytes()).decode()}>"


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
        self._key: DeviceKey | None = None

    @property
    def private_key(self) -> DeviceKey:
        """The device's key, made and saved (0600) the first time."""
        if self._key is None:
            if os.path.exists(self.key_path):
                if os.stat(self.key_path).st_mode & 0o077:
                    raise JcstateError(f"{self.key_path}: readable by others; refusing to use it")
                with open(self.key_path, "rb") as f:
                    self._key = DeviceKey.from_pem(f.read(), self.key_path)
            else:
                self._key = DeviceKey.generate()
                _write_private(self.key_path, self._key.to_pem())
        return self._key

    @property
    def public_key_b64(self) -> str:
        return base64.b64encode(self.private_key.public_bytes()).decode()

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
